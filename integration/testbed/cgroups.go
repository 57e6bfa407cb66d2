package testbed

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cgroupRoot is where the cgroup hierarchies are mounted.
const cgroupRoot = "/sys/fs/cgroup"

// cgroupSnapshot is the set of top-level cgroups that existed before a
// bed: runc removes a container's cgroup but leaves its parents (/k8s.io,
// /default, ...), which the bed then removes.
type cgroupSnapshot map[string]bool

func takeCgroupSnapshot() cgroupSnapshot {
	snap := cgroupSnapshot{}
	for _, dir := range topLevelCgroups() {
		snap[dir] = true
	}
	return snap
}

// topLevelCgroups lists the cgroups directly below each hierarchy's root,
// on cgroup v1 (a hierarchy per controller) and v2 alike.
func topLevelCgroups() []string {
	var out []string
	for _, root := range hierarchies() {
		entries, err := os.ReadDir(root)
		if err != nil {
			continue
		}
		for _, e := range entries {
			p := filepath.Join(root, e.Name())
			if _, err := os.Stat(filepath.Join(p, "cgroup.procs")); err == nil && e.IsDir() && !strings.HasSuffix(e.Name(), ".slice") {
				out = append(out, p)
			}
		}
	}
	return out
}

// hierarchies lists the roots of the mounted cgroup hierarchies: one per
// controller on v1 (and cgroup2 at unified/ on a hybrid host), or the one
// on v2.
func hierarchies() []string {
	roots := []string{cgroupRoot}
	if entries, err := os.ReadDir(cgroupRoot); err == nil {
		for _, e := range entries {
			if _, err := os.Stat(filepath.Join(cgroupRoot, e.Name(), "cgroup.procs")); err == nil {
				roots = append(roots, filepath.Join(cgroupRoot, e.Name()))
			}
		}
	}
	return roots
}

// removeNew removes the top-level cgroups made since the snapshot, with
// their descendants. Processes still in them are the bed's own containers,
// outliving a shim that teardown had to kill: they are killed, by PID, and
// reported.
//
// A kubelet's cgroup root of another live test process is left alone: a
// bed that ends while another runs must not kill that one's pods.
func (snap cgroupSnapshot) removeNew() error {
	var errs []error
	for _, dir := range topLevelCgroups() {
		if !snap[dir] && !othersKubeletRoot(filepath.Base(dir)) {
			errs = append(errs, removeCgroupTree(dir))
		}
	}
	return errors.Join(errs...)
}

// kubeletCgroupPrefix starts the name of a Kubelet's cgroup root, which
// goes on with the PID of the test process that owns it.
const kubeletCgroupPrefix = "mine-e2e-"

// othersKubeletRoot tells whether a top-level cgroup is the cgroup root of
// a Kubelet started by another test process that still runs.
func othersKubeletRoot(name string) bool {
	rest, ok := strings.CutPrefix(name, kubeletCgroupPrefix)
	if !ok {
		return false
	}
	pid, err := strconv.Atoi(strings.SplitN(rest, "-", 2)[0])
	if err != nil || pid == os.Getpid() {
		return false
	}
	return syscall.Kill(pid, 0) == nil
}

// removeCgroupTree removes a cgroup and its descendants. Processes still
// in them are killed, by PID, and reported: whoever made the cgroup should
// have ended them.
func removeCgroupTree(dir string) error {
	var errs []error
	var dirs []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for _, d := range dirs {
		data, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		for _, f := range strings.Fields(string(data)) {
			if pid, err := strconv.Atoi(f); err == nil {
				errs = append(errs, fmt.Errorf("process %d left in cgroup %s", pid, d))
				syscall.Kill(pid, syscall.SIGKILL)
				waitGone(pid)
			}
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(dirs))) // children first
	for _, d := range dirs {
		if err := os.Remove(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("cgroup %s left behind: %w", d, err))
			break
		}
	}
	return errors.Join(errs...)
}

// waitGone waits, boundedly, for a killed process to disappear.
func waitGone(pid int) {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil || strings.Contains(string(data), ") Z ") {
			return
		}
	}
}
