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
