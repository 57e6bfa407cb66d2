package cgroup

import (
	"os"
	"testing"

	"github.com/containerd/cgroups/v3/cgroup1"
)

// PidPath finds the same cgroup in every hierarchy as cgroup1.PidPath.
func TestPidPathAsCgroup1(t *testing.T) {
	if Unified() {
		t.Skip("cgroup v2 host: no v1 cgroup is loaded")
	}
	ours, theirs := PidPath(os.Getpid()), cgroup1.PidPath(os.Getpid())
	subsystems, err := cgroup1.Default()
	if err != nil || len(subsystems) == 0 {
		t.Fatalf("cgroup v1 hierarchies: %d, %v", len(subsystems), err)
	}
	for _, s := range subsystems {
		got, gotErr := ours(s.Name())
		want, wantErr := theirs(s.Name())
		if got != want || (gotErr == nil) != (wantErr == nil) {
			t.Errorf("%s: %q, %v; cgroup1.PidPath: %q, %v", s.Name(), got, gotErr, want, wantErr)
		}
	}
	if _, err := PidPath(1 << 30)(cgroup1.Memory); err == nil {
		t.Error("no error for a pid that does not exist")
	}
}

// A container's cgroup is where runc put it, whatever its init made below.
func TestCutAtTheContainersCgroup(t *testing.T) {
	for path, want := range map[string]string{
		"/kubepods/burstable/pod1/abc":                                "/kubepods/burstable/pod1/abc",
		"/kubepods/burstable/pod1/abc/init.scope":                     "/kubepods/burstable/pod1/abc",
		"/kubepods.slice/kubepods-pod1.slice/cri-mine-abc.scope/init": "/kubepods.slice/kubepods-pod1.slice/cri-mine-abc.scope",
		"/kubepods/pod1/abc/abc-child":                                "/kubepods/pod1/abc",
	} {
		if got, err := cut(path, "abc"); err != nil || got != want {
			t.Errorf("cut(%q) = %q, %v; want %q", path, got, err, want)
		}
	}
	if _, err := cut("/kubepods/pod1/other", "abc"); err == nil {
		t.Error("cut a cgroup that is not the container's")
	}
}
