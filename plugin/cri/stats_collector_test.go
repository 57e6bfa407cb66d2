package cri

import (
	"os"
	"os/exec"
	"testing"

	cgroupsv1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	cgroupsv2 "github.com/containerd/cgroups/v3/cgroup2/stats"
)

// The collector reads a container's cgroup from its init's pid, keeps it
// while that init lives, refuses an init that is gone, and forgets the
// cgroups of containers no longer recorded.
func TestCollectorCgroupMetrics(t *testing.T) {
	sc := newStatsCollector(0)
	self := *processIdentity(uint32(os.Getpid()))
	data, err := sc.cgroupMetrics("self", self)
	if err != nil {
		t.Fatal(err)
	}
	u, err := metricsUsage(data)
	if err != nil {
		t.Fatal(err)
	}
	switch data.(type) {
	case *cgroupsv1.Metrics, *cgroupsv2.Metrics:
	default:
		t.Fatalf("metrics of type %T", data)
	}
	if u.cpuNanos == 0 || u.memUsage == 0 {
		t.Fatalf("this process's cgroup read as %+v", u)
	}
	if len(sc.cgroups) != 1 {
		t.Fatalf("%d cgroups kept, want 1", len(sc.cgroups))
	}

	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	gone := process{Pid: cmd.Process.Pid, StartTime: "1"}
	if _, err := sc.cgroupMetrics("gone", gone); err == nil {
		t.Fatal("read the cgroup of an init that is gone")
	}
	// A pid taken by another process: its start time is not the init's.
	if _, err := sc.cgroupMetrics("reused", process{Pid: os.Getpid(), StartTime: "1"}); err == nil {
		t.Fatal("read another process's cgroup as a container's")
	}

	sc.keepCgroupsOf([]*containerMeta{{ID: "other"}})
	if len(sc.cgroups) != 0 {
		t.Fatalf("%d cgroups kept after their containers were removed", len(sc.cgroups))
	}
}
