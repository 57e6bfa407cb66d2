package cdi

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestRequested(t *testing.T) {
	cfg := &runtimeapi.ContainerConfig{
		CDIDevices: []*runtimeapi.CDIDevice{{Name: "vendor.com/gpu=1"}, {Name: "vendor.com/gpu=0"}, {Name: "vendor.com/gpu=1"}},
		Annotations: map[string]string{
			"cdi.k8s.io/plugin_b": "vendor.com/nic=b",
			"cdi.k8s.io/plugin_a": "vendor.com/gpu=0,vendor.com/nic=a",
			"other":               "vendor.com/gpu=9",
		},
	}
	got, err := Requested(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// The config's first, in its order, then the annotations', each once.
	want := []string{"vendor.com/gpu=1", "vendor.com/gpu=0", "vendor.com/nic=a", "vendor.com/nic=b"}
	if !slices.Equal(got, want) {
		t.Errorf("Requested = %q, want %q", got, want)
	}
	if got, err := Requested(&runtimeapi.ContainerConfig{}); err != nil || got != nil {
		t.Errorf("no devices: %q, %v", got, err)
	}
	for _, cfg := range []*runtimeapi.ContainerConfig{
		{CDIDevices: []*runtimeapi.CDIDevice{{Name: "gpu0"}}},
		{CDIDevices: []*runtimeapi.CDIDevice{{Name: "vendor.com/gpu="}}},
		{Annotations: map[string]string{"cdi.k8s.io/x": "not a device"}},
	} {
		if _, err := Requested(cfg); !errdefs.IsInvalidArgument(err) {
			t.Errorf("Requested(%v) = %v, want InvalidArgument", cfg, err)
		}
	}
}

const vendorSpec = `cdiVersion: "0.6.0"
kind: "mine.test/dev"
containerEdits:
  env: ["MINE_CDI_VENDOR=1"]
devices:
- name: one
  containerEdits:
    env: ["MINE_CDI=one"]
    deviceNodes:
    - path: /dev/mine-cdi
      hostPath: /dev/null
    mounts:
    - hostPath: /etc/hostname
      containerPath: /etc/mine-cdi
      options: [bind, ro]
- name: two
  containerEdits:
    env: ["MINE_CDI=two"]
`

func writeSpec(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestInject(t *testing.T) {
	etc, run := t.TempDir(), t.TempDir()
	writeSpec(t, etc, "mine.yaml", vendorSpec)
	// Another vendor's broken spec does not stop this one's devices.
	writeSpec(t, etc, "broken.yaml", "cdiVersion: [\n")
	s := &specs.Spec{Process: &specs.Process{Env: []string{"PATH=/bin"}}, Linux: &specs.Linux{}}
	if err := Inject(s, []string{etc, run}, []string{"mine.test/dev=one"}); err != nil {
		t.Fatal(err)
	}
	for _, env := range []string{"PATH=/bin", "MINE_CDI_VENDOR=1", "MINE_CDI=one"} {
		if !slices.Contains(s.Process.Env, env) {
			t.Errorf("env %q lacks %s", s.Process.Env, env)
		}
	}
	if len(s.Linux.Devices) != 1 || s.Linux.Devices[0].Path != "/dev/mine-cdi" || s.Linux.Devices[0].Major != 1 || s.Linux.Devices[0].Minor != 3 {
		t.Errorf("devices %+v, want /dev/mine-cdi as /dev/null (1:3)", s.Linux.Devices)
	}
	allowed := slices.ContainsFunc(s.Linux.Resources.Devices, func(r specs.LinuxDeviceCgroup) bool {
		return r.Allow && r.Major != nil && *r.Major == 1 && r.Minor != nil && *r.Minor == 3
	})
	if !allowed {
		t.Errorf("device cgroup rules %+v do not allow 1:3", s.Linux.Resources.Devices)
	}
	if !slices.ContainsFunc(s.Mounts, func(m specs.Mount) bool { return m.Destination == "/etc/mine-cdi" && m.Source == "/etc/hostname" }) {
		t.Errorf("mounts %+v lack /etc/mine-cdi", s.Mounts)
	}

	// A spec written after the first injection is seen by the next, and
	// the later directory's wins for a device both describe.
	writeSpec(t, run, "mine.yaml", `cdiVersion: "0.6.0"
kind: "mine.test/dev"
devices:
- name: two
  containerEdits:
    env: ["MINE_CDI=two-from-run"]
`)
	s = &specs.Spec{Process: &specs.Process{}}
	if err := Inject(s, []string{etc, run}, []string{"mine.test/dev=two"}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(s.Process.Env, []string{"MINE_CDI=two-from-run"}) {
		t.Errorf("env %q, want the later directory's device alone", s.Process.Env)
	}

	err := Inject(&specs.Spec{Process: &specs.Process{}}, []string{etc, run}, []string{"mine.test/dev=one", "mine.test/dev=three"})
	if !errdefs.IsFailedPrecondition(err) {
		t.Errorf("an undescribed device: %v, want FailedPrecondition", err)
	}
	if err := Inject(nil, []string{"/nonexistent"}, nil); err != nil {
		t.Errorf("no device: %v", err)
	}
}
