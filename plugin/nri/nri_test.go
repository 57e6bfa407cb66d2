package nri

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/containerd/nri/pkg/api"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// containerd's section type, as its TOML keys have it.
type containerdSection struct {
	Disable              bool   `toml:"disable"`
	SocketPath           string `toml:"socket_path"`
	PluginRequestTimeout string `toml:"plugin_request_timeout"`
	DisableConnections   bool   `toml:"disable_connections"`
}

func TestConfigFrom(t *testing.T) {
	cfg, err := ConfigFrom(nil)
	if err != nil || cfg != DefaultConfig() || cfg.SocketPath != "/var/run/nri/nri.sock" || cfg.Disable {
		t.Errorf("no section: %+v, %v; want containerd's defaults", cfg, err)
	}
	cfg, err = ConfigFrom(&containerdSection{SocketPath: "/run/x/nri.sock", PluginRequestTimeout: "5s", DisableConnections: true})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.SocketPath != "/run/x/nri.sock" || time.Duration(cfg.PluginRequestTimeout) != 5*time.Second || !cfg.DisableConnections {
		t.Errorf("section not taken: %+v", cfg)
	}
	if cfg.PluginPath != "/opt/nri/plugins" {
		t.Errorf("a key the section does not set keeps its default: %q", cfg.PluginPath)
	}
	if _, err := ConfigFrom(&containerdSection{PluginRequestTimeout: "soon"}); err == nil {
		t.Error("a bad duration should be refused")
	}
	if r, err := New(Config{Disable: true}, "mine", "test", nil, nil); r != nil || err != nil || r.Active() {
		t.Errorf("disabled NRI: %v, %v; want a nil runtime, inactive", r, err)
	}
}

func TestAdjust(t *testing.T) {
	shares := uint64(2)
	spec := &specs.Spec{
		Process: &specs.Process{Args: []string{"sh"}, Env: []string{"PATH=/bin", "KEEP=1"}},
		Mounts:  []specs.Mount{{Destination: "/data", Type: "bind", Source: "/src"}},
		Linux:   &specs.Linux{Resources: &specs.LinuxResources{CPU: &specs.LinuxCPU{Shares: &shares}}},
	}
	a := &api.ContainerAdjustment{}
	a.AddEnv("PATH", "/usr/bin")
	a.AddEnv("NEW", "x")
	a.AddAnnotation("k", "v")
	a.AddMount(&api.Mount{Destination: "/nri", Type: "tmpfs", Source: "tmpfs"})
	a.RemoveMount("/data")
	a.SetLinuxCPUShares(512)
	a.SetLinuxMemoryLimit(1 << 20)
	a.AddRlimit("RLIMIT_NOFILE", 100, 50)
	noCDI := func(*specs.Spec, []string) error { t.Error("CDI injector called with no CDI device"); return nil }
	if err := Adjust(spec, a, noCDI); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(spec.Process.Env, []string{"PATH=/usr/bin", "KEEP=1", "NEW=x"}) {
		t.Errorf("env: %q", spec.Process.Env)
	}
	if spec.Annotations["k"] != "v" {
		t.Errorf("annotations: %v", spec.Annotations)
	}
	if len(spec.Mounts) != 1 || spec.Mounts[0].Destination != "/nri" {
		t.Errorf("mounts: %+v", spec.Mounts)
	}
	r := spec.Linux.Resources
	if *r.CPU.Shares != 512 || r.Memory == nil || *r.Memory.Limit != 1<<20 {
		t.Errorf("resources: cpu %+v memory %+v", r.CPU, r.Memory)
	}
	if len(spec.Process.Rlimits) != 1 || spec.Process.Rlimits[0].Hard != 100 {
		t.Errorf("rlimits: %+v", spec.Process.Rlimits)
	}

	// A plugin's CDI devices go to the injector, which edits the spec;
	// its failure fails the adjustment.
	cdi := &api.ContainerAdjustment{}
	cdi.AddCDIDevice(&api.CDIDevice{Name: "vendor.com/gpu=0"})
	var injected []string
	inject := func(s *specs.Spec, names []string) error {
		injected = names
		s.Process.Env = append(s.Process.Env, "GPU=0")
		return nil
	}
	if err := Adjust(spec, cdi, inject); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(injected, []string{"vendor.com/gpu=0"}) || !slices.Contains(spec.Process.Env, "GPU=0") {
		t.Errorf("injected %v, env %q", injected, spec.Process.Env)
	}
	if err := Adjust(spec, cdi, func(*specs.Spec, []string) error { return errors.New("no such device") }); err == nil {
		t.Error("a failed CDI injection should fail the adjustment")
	}
}
