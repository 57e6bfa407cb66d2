package failpoints

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// hostState is what a CRI call may leave on the host, counted.
type hostState map[string]int

// takeState counts pods and containers as the CRI lists them, containerd's
// records and snapshots, mounts below the daemon's directory, the plugin's
// pod directories (pinned namespaces among them), the shim task bundles,
// runc's states, IP addresses host-local holds, containers' cgroups,
// shims, and the files in logDir.
func takeState(t *testing.T, c *cri, logDir string) hostState {
	t.Helper()
	ctx := testContext(t)
	h := hostState{}
	pods, err := c.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	h["CRI pods"] = len(pods.Items)
	ctrs, err := c.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	h["CRI containers"] = len(ctrs.Containers)
	client, err := bed.Daemon.Client("k8s.io")
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	records, err := client.ContainerService().List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	h["containerd records"] = len(records)
	n := 0
	if err := client.SnapshotService("overlayfs").Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		if info.Kind == snapshots.KindActive {
			n++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	h["active snapshots"] = n
	mounts, err := bed.Daemon.Mounts()
	if err != nil {
		t.Fatal(err)
	}
	h["mounts"] = len(mounts)
	state := filepath.Join(bed.Daemon.Dir, "state")
	h["pod state dirs"] = entries(filepath.Join(state, "io.containerd.grpc.v1.mine", "sandboxes"))
	h["task bundles"] = entries(filepath.Join(state, "io.containerd.runtime.v2.task", "k8s.io"))
	h["runc states"] = entries("/run/containerd/runc/k8s.io")
	ips := 0
	for _, name := range names("/var/lib/cni/networks/mine-test") {
		if name != "lock" && !strings.HasPrefix(name, "last_reserved_ip") {
			ips++
		}
	}
	h["IP allocations"] = ips
	h["host port chains"] = hostPortChains(t)
	h["cgroups"] = subdirs("/sys/fs/cgroup/pids/k8s.io")
	h["shims"] = len(bed.Daemon.Shims())
	if logDir != "" {
		var logs int
		filepath.WalkDir(logDir, func(_ string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				logs++
			}
			return nil
		})
		h["log files"] = logs
	}
	return h
}

// hostPortChains counts portmap's per-pod chains (CNI-DN-*), one for each
// pod with host ports.
func hostPortChains(t *testing.T) int {
	t.Helper()
	out, err := exec.Command("iptables", "-w", "-t", "nat", "-S").Output()
	if err != nil {
		t.Fatalf("iptables -t nat -S: %v", err)
	}
	n := 0
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "-N CNI-DN-") {
			n++
		}
	}
	return n
}

func entries(dir string) int { return len(names(dir)) }

func subdirs(dir string) int {
	es, _ := os.ReadDir(dir)
	n := 0
	for _, e := range es {
		if e.IsDir() {
			n++
		}
	}
	return n
}

func names(dir string) []string {
	es, _ := os.ReadDir(dir)
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

// baseline is the host's state between tests: no pod, so no shim (one
// from the test before may still be on its way out).
func baseline(t *testing.T, c *cri, logDir string) hostState {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		h := takeState(t, c, logDir)
		if h["shims"] == 0 || time.Now().After(deadline) {
			return h
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// same fails the test where now differs from before.
func (before hostState) same(t *testing.T, now hostState, after string) {
	t.Helper()
	var diffs []string
	for k, v := range now {
		if before[k] != v {
			diffs = append(diffs, fmt.Sprintf("%s %d -> %d", k, before[k], v))
		}
	}
	if len(diffs) > 0 {
		slices.Sort(diffs)
		if data, err := os.ReadFile(bed.Daemon.Log); err == nil {
			os.WriteFile(filepath.Join(os.TempDir(), "mine-failpoints-daemon.log"), data, 0o600)
		}
		t.Fatalf("left behind %s: %s (cgroups %v, shims %v; the daemon's log is copied to $TMPDIR/mine-failpoints-daemon.log)", after, strings.Join(diffs, ", "), names("/sys/fs/cgroup/pids/k8s.io"), bed.Daemon.Shims())
	}
}
