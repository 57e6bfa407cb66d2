package cri

import (
	"os"
	"strconv"
	"strings"
)

// capSysResource is the capability needed to lower an oom_score_adj.
const capSysResource = 24

// oomScoreFloor is the lowest oom_score_adj containers may be given. Where
// the daemon lacks CAP_SYS_RESOURCE, lowering a score below its own fails,
// so containers are clamped to the daemon's score instead of failing to
// start; restrict_oom_score_adj asks for the same clamp everywhere.
func oomScoreFloor(restrict bool) int {
	own := 0
	if data, err := os.ReadFile("/proc/self/oom_score_adj"); err == nil {
		own, _ = strconv.Atoi(strings.TrimSpace(string(data)))
	}
	if restrict || !hasCapability(capSysResource) {
		return own
	}
	return -1000
}

func hasCapability(bit uint) bool {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && caps&(1<<bit) != 0
		}
	}
	return false
}
