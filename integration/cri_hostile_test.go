package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestCRIHostileRequests: requests that would reach the node are refused
// with InvalidArgument naming what was wrong, and leave nothing behind.
func TestCRIHostileRequests(t *testing.T) {
	c := newCRI(t)
	ctx := testContext(t)
	c.pullBusybox(t)
	before, err := c.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	refused := func(what string, err error, mention string) {
		t.Helper()
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), mention) {
			t.Errorf("%s: %v, want InvalidArgument mentioning %q", what, err, mention)
		}
	}
	for _, tc := range []struct {
		what, mention string
		change        func(*runtimeapi.PodSandboxConfig)
	}{
		{"a sysctl of the node's", "kernel.panic", func(p *runtimeapi.PodSandboxConfig) {
			p.Linux.Sysctls = map[string]string{"kernel.panic": "1"}
		}},
		{"a network sysctl with host networking", "net.core.somaxconn", func(p *runtimeapi.PodSandboxConfig) {
			p.Linux.Sysctls = map[string]string{"net.core.somaxconn": "1024"}
			p.Linux.SecurityContext.NamespaceOptions.Network = runtimeapi.NamespaceMode_NODE
		}},
		{"a malformed sysctl", "net/ipv4/../../kernel/panic", func(p *runtimeapi.PodSandboxConfig) {
			p.Linux.Sysctls = map[string]string{"net/ipv4/../../kernel/panic": "1"}
		}},
		{"a NUL in the pod's name", "control character", func(p *runtimeapi.PodSandboxConfig) {
			p.Metadata.Name = "evil\x00name"
		}},
		{"a relative log directory", "log_directory", func(p *runtimeapi.PodSandboxConfig) {
			p.LogDirectory = "../../tmp/x"
		}},
	} {
		pod := podConfig(t, "hostile")
		tc.change(pod)
		_, err := c.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: pod})
		refused(tc.what, err, tc.mention)
	}
	after, err := c.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(after.Items) != len(before.Items) {
		t.Errorf("refused pods were made: %d pods before, %d after", len(before.Items), len(after.Items))
	}
	if entries, _ := os.ReadDir(filepath.Join(daemon.Dir, "state", "io.containerd.grpc.v1.mine", "sandboxes")); len(entries) > len(before.Items) {
		t.Errorf("refused pods left state directories: %d", len(entries))
	}

	pod := podConfig(t, "hostile-logs")
	podID := c.runPod(t, pod)
	outside := t.TempDir()
	for _, p := range []string{filepath.Join("..", "..", "..", "..", "..", "..", outside, "evil"), filepath.Join(outside, "evil")} {
		cfg := containerConfig("main", "exec sleep 600")
		cfg.LogPath = p
		_, err := c.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
		refused("log_path "+p, err, "log_path")
	}
	procMount := containerConfig("proc", "exec sleep 600")
	procMount.Mounts = []*runtimeapi.Mount{{HostPath: t.TempDir(), ContainerPath: "/proc"}}
	_, err = c.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: procMount, SandboxConfig: pod})
	refused("a plain directory mounted onto /proc", err, "/proc")
	huge := containerConfig("huge", "exec sleep 600")
	huge.Annotations = map[string]string{"huge": strings.Repeat("x", 300<<10)}
	_, err = c.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: huge, SandboxConfig: pod})
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("300 KiB of annotations: %v, want ResourceExhausted", err)
	}
	if err := os.Symlink(outside, filepath.Join(pod.LogDirectory, "escape")); err != nil {
		t.Fatal(err)
	}
	cfg := containerConfig("main", "exec sleep 600")
	cfg.LogPath = "escape/evil"
	_, err = c.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
	refused("a log path through a symlink", err, "symlink")
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("files written outside the log directory: %v", entries)
	}
	list, err := c.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{PodSandboxId: podID}})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Containers) != 0 {
		t.Errorf("refused containers were made: %v", list.Containers)
	}
}
