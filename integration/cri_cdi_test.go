package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/nri/pkg/api"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/mine-runtime/mine/integration/testbed"
)

// cdiSpec describes devices of kind mine.test/dev: each sets
// MINE_CDI_<NAME> and gives /dev/mine-<name>, the host's /dev/fuse (which
// the device cgroup allows no container by default) for "one", else the
// host's /dev/null.
func cdiSpec(t *testing.T, dir, file string, devices ...string) {
	t.Helper()
	var b strings.Builder
	b.WriteString("cdiVersion: \"0.6.0\"\nkind: mine.test/dev\ndevices:\n")
	for _, name := range devices {
		host := "/dev/null"
		if name == "one" {
			host = "/dev/fuse"
		}
		fmt.Fprintf(&b, "- name: %s\n  containerEdits:\n    env: [\"MINE_CDI_%s=yes\"]\n    deviceNodes:\n    - path: /dev/mine-%s\n      hostPath: %s\n", name, strings.ToUpper(name), name, host)
	}
	if err := os.WriteFile(filepath.Join(dir, file), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// CDI devices, as kubelet asks for them for device plugins and DRA (the
// config's CDI devices), as older device plugins did (cdi.k8s.io/
// annotations) and as NRI plugins add them, are in the container: their
// environment and device nodes, usable through the device cgroup. A device
// no spec file describes yet is FailedPrecondition, leaves no container,
// and kubelet's retry succeeds once its driver has written the spec.
func TestCRICDIDevices(t *testing.T) {
	dir := t.TempDir()
	etc, run := filepath.Join(dir, "etc-cdi"), filepath.Join(dir, "run-cdi")
	for _, d := range []string{etc, run, filepath.Join(dir, "daemon")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cdiSpec(t, etc, "mine.yaml", "one", "two", "nri")
	d, err := testbed.NewDaemon(filepath.Join(dir, "daemon"), binDir, fmt.Sprintf(`
[plugins."io.containerd.grpc.v1.mine"]
  cdi_spec_dirs = [%q, %q]
`, etc, run))
	startOwnDaemon(t, d, err)
	c := newCRI(t)
	ctx := testContext(t)
	c.pullBusybox(t)
	pod := podConfig(t, "cdi")
	podID := c.runPod(t, pod)

	cfg := containerConfig("devices", "exec sleep 600")
	cfg.CDIDevices = []*runtimeapi.CDIDevice{{Name: "mine.test/dev=one"}}
	cfg.Annotations = map[string]string{"cdi.k8s.io/mine-test": "mine.test/dev=two"}
	id := c.startContainer(t, podID, pod, cfg)
	got := mustExec(t, c, id, "sh", "-c", `tr '\0' '\n' < /proc/1/environ | grep ^MINE_CDI | sort; stat -c '%n %t:%T' /dev/mine-one /dev/mine-two; true < /dev/mine-one && echo opened`)
	want := "MINE_CDI_ONE=yes\nMINE_CDI_TWO=yes\n/dev/mine-one a:e5\n/dev/mine-two 1:3\nopened\n"
	if got != want {
		t.Errorf("in the container:\n%s\nwant\n%s", got, want)
	}

	// Not yet described: refused, nothing made; described by a spec file
	// written after the daemon started: the same request succeeds.
	cfg = containerConfig("late", "exec sleep 600")
	cfg.CDIDevices = []*runtimeapi.CDIDevice{{Name: "mine.test/dev=late"}}
	req := &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod}
	before, err := criClient(t).Containers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.CreateContainer(ctx, req)
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "mine.test/dev=late") {
		t.Fatalf("an undescribed CDI device: %v, want FailedPrecondition naming it", err)
	}
	if after, _ := criClient(t).Containers(ctx); len(after) != len(before) {
		t.Fatalf("a refused container left a record: %d containers, %d before", len(after), len(before))
	}
	cdiSpec(t, run, "late.yaml", "late")
	resp, err := c.CreateContainer(ctx, req)
	if err != nil {
		t.Fatalf("the retry once the spec is written: %v", err)
	}
	if _, err := c.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: resp.ContainerId}); err != nil {
		t.Fatal(err)
	}
	if got := mustExec(t, c, resp.ContainerId, "stat", "-c", "%t:%T", "/dev/mine-late"); got != "1:3\n" {
		t.Errorf("/dev/mine-late: %q", got)
	}
	// The device cgroup lets only the container that was given the device
	// open it.
	if got := mustExec(t, c, resp.ContainerId, "sh", "-c", "mknod /tmp/fuse c 10 229 || exit 1; if true 2>/dev/null < /tmp/fuse; then echo opened; else echo refused; fi"); got != "refused\n" {
		t.Errorf("a container without the device, opening it: %q, want refused", got)
	}

	cfg = containerConfig("bad", "exec sleep 600")
	cfg.CDIDevices = []*runtimeapi.CDIDevice{{Name: "gpu0"}}
	if _, err := c.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("a device name that is not qualified: %v, want InvalidArgument", err)
	}

	connectNRIPlugin(t, "cdi", func(p *nriPlugin) {
		p.adjust = func(a *api.ContainerAdjustment) {
			a.AddCDIDevice(&api.CDIDevice{Name: "mine.test/dev=nri"})
		}
	})
	id = c.startContainer(t, podID, pod, containerConfig("nri", "exec sleep 600"))
	if got := mustExec(t, c, id, "sh", "-c", "echo $MINE_CDI_NRI; stat -c %t:%T /dev/mine-nri"); got != "yes\n1:3\n" {
		t.Errorf("the NRI plugin's CDI device: %q", got)
	}
	if spec := containerSpec(t, id); !slices.ContainsFunc(spec.Linux.Devices, func(d specs.LinuxDevice) bool { return d.Path == "/dev/mine-nri" }) {
		t.Errorf("the NRI plugin's device is not in the spec: %+v", spec.Linux.Devices)
	}

	// The spec directories are reloaded with config.toml.
	moved := filepath.Join(dir, "moved-cdi")
	if err := os.Mkdir(moved, 0o755); err != nil {
		t.Fatal(err)
	}
	cdiSpec(t, moved, "mine.yaml", "moved", "nri") // the NRI plugin still adds its device
	offset := logSize(d)
	if err := d.WriteConfig("debug", fmt.Sprintf("\n[plugins.\"io.containerd.grpc.v1.mine\"]\n  cdi_spec_dirs = [%q]\n", moved)); err != nil {
		t.Fatal(err)
	}
	daemonLogSince(t, d, offset, "configuration reloaded")
	cfg = containerConfig("moved", "exec sleep 600")
	cfg.CDIDevices = []*runtimeapi.CDIDevice{{Name: "mine.test/dev=moved"}}
	if got := mustExec(t, c, c.startContainer(t, podID, pod, cfg), "stat", "-c", "%t:%T", "/dev/mine-moved"); got != "1:3\n" {
		t.Errorf("/dev/mine-moved after the reload: %q", got)
	}
}
