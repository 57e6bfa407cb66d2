package cri

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/mine-runtime/mine/cgroup"
)

// The collector reads a container's cgroup from its init's pid, keeps it
// while that init lives, refuses an init that is gone, and forgets the
// cgroups of containers no longer recorded.
func TestCollectorCgroupMetrics(t *testing.T) {
	const limit = 64 << 20
	id := fmt.Sprintf("mine-collector-test-%d", os.Getpid())
	init := containerInCgroup(t, id, limit)
	sc := newStatsCollector(time.Minute)

	if _, err := sc.cgroupMetrics("no-such-container", init); err == nil {
		t.Fatal("read a cgroup not named after the container")
	}
	data, err := sc.cgroupMetrics(id, init)
	if err != nil {
		t.Fatal(err)
	}
	u, err := metricsUsage(data)
	if err != nil {
		t.Fatal(err)
	}
	if u.limit != limit {
		t.Fatalf("memory limit read as %d, want the container cgroup's %d", u.limit, limit)
	}
	if len(sc.cgroups) != 1 {
		t.Fatalf("%d cgroups kept, want 1", len(sc.cgroups))
	}

	// A pid taken by another process: its start time is not the init's.
	if _, err := sc.cgroupMetrics(id, process{Pid: init.Pid, StartTime: "1"}); err == nil {
		t.Fatal("read another process's cgroup as a container's")
	}
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if _, err := sc.cgroupMetrics("gone", process{Pid: cmd.Process.Pid, StartTime: "1"}); err == nil {
		t.Fatal("read the cgroup of an init that is gone")
	}

	sc.keepCgroupsOf([]*containerMeta{{ID: "other"}})
	if len(sc.cgroups) != 0 {
		t.Fatalf("%d cgroups kept after their containers were removed", len(sc.cgroups))
	}
}

// containerInCgroup runs a process in a new cgroup named id, with a memory
// limit, as runc places a container's init: the test's container.
func containerInCgroup(t *testing.T, id string, limit int64) process {
	t.Helper()
	cmd := exec.Command("sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var remove func() error
	if cgroup.Unified() {
		max := limit
		m, err := cgroup2.NewManager("/sys/fs/cgroup", "/"+id, &cgroup2.Resources{Memory: &cgroup2.Memory{Max: &max}})
		if err == nil {
			err = m.AddProc(uint64(cmd.Process.Pid))
		}
		if err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatal(err)
		}
		remove = m.Delete
	} else {
		cg, err := cgroup1.New(cgroup1.StaticPath("/"+id), &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}})
		if err == nil {
			err = cg.Add(cgroup1.Process{Pid: cmd.Process.Pid})
		}
		if err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			if cg != nil {
				cg.Delete()
			}
			t.Fatal(err)
		}
		remove = cg.Delete
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if err := remove(); err != nil {
			t.Errorf("remove the test's cgroup %s: %v", id, err)
		}
	})
	return *processIdentity(uint32(cmd.Process.Pid))
}

// UsageNanoCores comes from two samples, the later one's time its own; a
// first sample, or one older than the last (read at once by a collector
// pass and a call), gives none, and the older one is not kept.
func TestCPURate(t *testing.T) {
	var c cpuSamples
	t0 := time.Now()
	if r := c.rate("c", cpuSample{at: t0, usage: 1e9}); r != nil {
		t.Fatalf("first sample: %v, want none", r)
	}
	if r := c.rate("c", cpuSample{at: t0.Add(2 * time.Second), usage: 2e9}); r.GetValue() != 5e8 {
		t.Fatalf("rate %v, want half a core", r)
	}
	if r := c.rate("c", cpuSample{at: t0.Add(time.Second), usage: 15e8}); r != nil {
		t.Fatalf("an older sample: %v, want none", r)
	}
	if r := c.rate("c", cpuSample{at: t0.Add(4 * time.Second), usage: 4e9}); r.GetValue() != 1e9 {
		t.Fatalf("rate %v after an older sample, want one core from the kept one", r)
	}
}
