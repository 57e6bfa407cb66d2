package integration

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/mine-runtime/mine/config"
	"github.com/mine-runtime/mine/integration/testbed"
)

// startOwnDaemon starts d for one test, routes docker.io to the loopback
// registry, makes it the daemon the CRI helpers talk to, and tears it
// down (failing the test on leftovers) at the end.
func startOwnDaemon(t *testing.T, d *testbed.Daemon, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.RouteRegistry("docker.io", registry().Host); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(testContext(t)); err != nil {
		d.Teardown()
		t.Fatal(err)
	}
	saved := daemon
	daemon = d
	t.Cleanup(func() {
		daemon = saved
		if err := d.Teardown(); err != nil {
			t.Errorf("teardown: %v (log in %s)", err, d.Log)
		}
	})
}

// stockDefaultConfig is containerd 2.4's own `config default`, with only
// what any node sets differently: the daemon's root, state and sockets,
// the node's CNI configuration and registry hosts.
func stockDefaultConfig(d *testbed.Daemon) ([]byte, error) {
	data, err := os.ReadFile("../config/testdata/containerd-2.4-default.toml")
	if err != nil {
		return nil, err
	}
	var cfg map[string]any
	if err := toml.Unmarshal(data, &cfg); err != nil {
		return nil, err
	}
	table := func(path ...string) map[string]any {
		m := cfg
		for _, k := range path {
			m = m[k].(map[string]any)
		}
		return m
	}
	cfg["root"] = filepath.Join(d.Dir, "root")
	cfg["state"] = filepath.Join(d.Dir, "state")
	cfg["imports"] = []string{}
	table("plugins", "io.containerd.server.v1.grpc")["address"] = d.Address
	table("plugins", "io.containerd.server.v1.ttrpc")["address"] = d.Address + ".ttrpc"
	table("plugins", "io.containerd.server.v1.debug")["address"] = d.DebugAddress
	table("plugins", "io.containerd.internal.v1.opt")["path"] = filepath.Join(d.Dir, "opt")
	table("plugins", "io.containerd.nri.v1.nri")["disable"] = true
	table("plugins", "io.containerd.cri.v1.runtime", "cni")["conf_dir"] = d.CNIConfDir()
	table("plugins", "io.containerd.cri.v1.images", "registry")["config_path"] = d.RegistryHostsDir()
	return toml.Marshal(cfg)
}

// A node running stock containerd 2.4 with its default config swaps the
// binary: no mine section, and crictl runs a pod as before, on the runc
// handler the config names, through mine's shim.
func TestStockDefaultConfigServesPods(t *testing.T) {
	d, err := testbed.NewDaemonWithConfig(t.TempDir(), binDir, stockDefaultConfig)
	startOwnDaemon(t, d, err)
	addr := d.Address

	logDir := t.TempDir()
	pod := writeJSON(t, map[string]any{
		"metadata":      map[string]any{"name": "stock-config", "namespace": "default", "uid": "stock-config-uid"},
		"log_directory": logDir,
		"linux":         map[string]any{},
	})
	ctr := writeJSON(t, map[string]any{
		"metadata": map[string]any{"name": "app"},
		"image":    map[string]any{"image": "busybox"},
		"command":  []string{"sh", "-c", "echo hello from a stock config; exec sleep 600"},
		"log_path": "app/0.log",
		"linux":    map[string]any{},
	})
	crictlAt(t, addr, "pull", "busybox")
	podID := crictlAt(t, addr, "runp", "--runtime", "runc", pod)
	t.Cleanup(func() { execCommand("crictl", "--runtime-endpoint", "unix://"+addr, "rmp", "-f", podID) })
	ctrID := crictlAt(t, addr, "create", podID, ctr, pod)
	crictlAt(t, addr, "start", ctrID)
	if out := crictlAt(t, addr, "exec", "-s", ctrID, "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"); out != "0" {
		t.Errorf("ip_unprivileged_port_start = %q, want 0 (enable_unprivileged_ports, on in the config)", out)
	}
	if out := crictlAt(t, addr, "inspect", ctrID); !strings.Contains(out, `"runtimeType": "io.containerd.mine.v2"`) {
		t.Errorf("the container does not run on mine's shim:\n%s", out)
	}
	waitFor(t, "the container's log line", 10*time.Second, func() bool {
		data, _ := os.ReadFile(filepath.Join(logDir, "app/0.log"))
		return strings.Contains(string(data), " stdout F hello from a stock config\n")
	})
	if shims := d.Shims(); len(shims) != 1 {
		t.Errorf("%d of mine's shims for one pod, want 1", len(shims))
	}
	crictlAt(t, addr, "stopp", podID)
	crictlAt(t, addr, "rmp", podID)

	log, _ := os.ReadFile(d.Log)
	for _, want := range []string{"taken from containerd's CRI sections", "pinned_images.sandbox"} {
		if !strings.Contains(string(log), want) {
			t.Errorf("the daemon's log does not say %q", want)
		}
	}
}

// `containerd mine-config` prints a section that, put in place of the CRI
// sections, the daemon loads to the same configuration.
func TestMineConfigCommand(t *testing.T) {
	out, err := execCommand(filepath.Join(binDir, "containerd"), "--config", "../config/testdata/kubeadm.toml", "mine-config")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{
		`[plugins.'io.containerd.grpc.v1.mine'.runtimes.runc]`,
		"SystemdCgroup = true",
		`#   plugins."io.containerd.grpc.v1.cri".sandbox_image = registry.k8s.io/pause:3.9 (pods hold their namespaces without a pause image)`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("mine-config output lacks %q:\n%s", want, out)
		}
	}
	path := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(path, []byte("version = 3\n"+out), 0o644); err != nil {
		t.Fatal(err)
	}
	from, err := config.Load(testContext(t), "../config/testdata/kubeadm.toml")
	if err != nil {
		t.Fatal(err)
	}
	back, err := config.Load(testContext(t), path)
	if err != nil {
		t.Fatal(err)
	}
	if back.Source != config.FromMineSection || !reflect.DeepEqual(back.Config, from.Config) {
		t.Fatalf("the printed section loads as %+v, want %+v", back.Config, from.Config)
	}
	// The positional argument names another file.
	if again, err := execCommand(filepath.Join(binDir, "containerd"), "mine-config", "../config/testdata/kubeadm.toml"); err != nil || again != out {
		t.Fatalf("mine-config FILE differs from --config FILE mine-config: %v", err)
	}
}
