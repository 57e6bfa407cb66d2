package integration

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/mine-runtime/mine/integration/testbed"
)

// daemonLogSince waits until the daemon's log, past offset, has a line
// with every one of want, and returns that line.
func daemonLogSince(t *testing.T, d *testbed.Daemon, offset int64, want ...string) string {
	t.Helper()
	var found string
	waitFor(t, fmt.Sprintf("a log line with %q", want), 15*time.Second, func() bool {
		data, _ := os.ReadFile(d.Log)
		if int64(len(data)) < offset {
			return false
		}
		for _, line := range strings.Split(string(data[offset:]), "\n") {
			if !slices.ContainsFunc(want, func(w string) bool { return !strings.Contains(line, w) }) {
				found = line
				return true
			}
		}
		return false
	})
	return found
}

func logSize(d *testbed.Daemon) int64 {
	st, err := os.Stat(d.Log)
	if err != nil {
		return 0
	}
	return st.Size()
}

func (c *cri) handlers(t *testing.T) []string {
	t.Helper()
	st, err := c.Status(testContext(t), &runtimeapi.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, h := range st.RuntimeHandlers {
		names = append(names, h.Name)
	}
	return names
}

// A reload, on SIGHUP or when config.toml changes, puts registry hosts and
// credentials, runtime handlers, the log line size, pull timeouts and the
// log level in force for what comes next, and leaves running pods alone;
// a configuration that does not validate, or that removes a handler in
// use, is refused with the old one kept.
func TestConfigReload(t *testing.T) {
	d, err := testbed.NewDaemon(t.TempDir(), binDir, "")
	startOwnDaemon(t, d, err)
	c := newCRI(t)
	ctx := testContext(t)
	c.pullBusybox(t)

	img, err := uniqueImage("reload-private")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := registry().Push("private/reload:1", img); err != nil {
		t.Fatal(err)
	}
	private := &runtimeapi.ImageSpec{Image: "private/reload:1"}
	mirrored := &runtimeapi.ImageSpec{Image: "mirrored.invalid/library/busybox:latest"}
	for _, img := range []*runtimeapi.ImageSpec{private, mirrored} {
		if _, err := c.PullImage(ctx, &runtimeapi.PullImageRequest{Image: img}); err == nil {
			t.Fatalf("pulled %s before the configuration that allows it", img.Image)
		}
	}

	pod := podConfig(t, "reload")
	podID := c.runPod(t, pod)
	line := strings.Repeat("x", 100)
	before := c.startContainer(t, podID, pod, containerConfig("before", "echo "+line+"; exec sleep 600"))
	pidBefore := c.pid(t, before)

	// SIGHUP, which ends stock containerd, reloads (here, the same file).
	offset := logSize(d)
	if err := syscall.Kill(d.Pid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	daemonLogSince(t, d, offset, "mine configuration in force", "trigger=SIGHUP")

	// A changed file is picked up by itself.
	offset = logSize(d)
	if err := d.WriteConfig("info", fmt.Sprintf(`
[plugins."io.containerd.grpc.v1.mine"]
  max_container_log_line_size = 40
  image_pull_timeout = "2m"
  [plugins."io.containerd.grpc.v1.mine".runtimes.mine]
    runtime_type = "io.containerd.mine.v2"
  [plugins."io.containerd.grpc.v1.mine".runtimes.second]
    runtime_type = "io.containerd.mine.v2"
    [plugins."io.containerd.grpc.v1.mine".runtimes.second.options]
      BinaryName = "runc"
  [plugins."io.containerd.grpc.v1.mine".registry.mirrors."mirrored.invalid"]
    endpoint = ["http://%[1]s"]
  [plugins."io.containerd.grpc.v1.mine".registry.configs."%[1]s".auth]
    username = %[2]q
    password = %[3]q
`, registry().Host, testbed.PrivateUser, testbed.PrivatePassword)); err != nil {
		t.Fatal(err)
	}
	daemonLogSince(t, d, offset, "configuration reloaded")
	if got := c.handlers(t); !slices.Contains(got, "second") {
		t.Fatalf("handlers after the reload: %q", got)
	}
	for _, img := range []*runtimeapi.ImageSpec{private, mirrored} {
		if _, err := c.PullImage(ctx, &runtimeapi.PullImageRequest{Image: img}); err != nil {
			t.Errorf("pull %s after the reload: %v", img.Image, err)
		}
	}
	c.startContainer(t, podID, pod, containerConfig("after", "echo "+line+"; exec sleep 600"))
	waitFor(t, "the new container's split line", 10*time.Second, func() bool {
		data, _ := os.ReadFile(pod.LogDirectory + "/after.log")
		return strings.Count(string(data), " stdout P ") == 2 && strings.Contains(string(data), " stdout F "+line[80:]+"\n")
	})
	data, _ := os.ReadFile(pod.LogDirectory + "/before.log")
	if !strings.Contains(string(data), " stdout F "+line+"\n") {
		t.Errorf("the container from before the reload logged:\n%s", data)
	}
	if pid := c.pid(t, before); pid != pidBefore {
		t.Errorf("the running container's pid went from %d to %d across the reload", pidBefore, pid)
	}
	second := podConfig(t, "reload-second")
	secondID, err := c.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: second, RuntimeHandler: "second"})
	if err != nil {
		t.Fatalf("a pod on the added handler: %v", err)
	}
	t.Cleanup(func() {
		c.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: secondID.PodSandboxId})
		c.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: secondID.PodSandboxId})
	})
	c.startContainer(t, secondID.PodSandboxId, second, containerConfig("on-second", "exec sleep 600"))

	// [debug] level went from debug to info: no more debug lines, though
	// a container start logs some at debug.
	offset = logSize(d)
	c.startContainer(t, podID, pod, containerConfig("quiet", "exec sleep 600"))
	if data, _ := os.ReadFile(d.Log); strings.Contains(string(data[offset:]), "level=debug") {
		t.Errorf("debug lines after the level went to info:\n%s", data[offset:])
	}

	// Refused: a bad value, named; a handler in use removed. The old
	// configuration stays: handler "second" is still there.
	for _, tc := range []struct{ config, want string }{
		{`
[plugins."io.containerd.grpc.v1.mine"]
  image_pull_timeout = "soon"
`, `image_pull_timeout: must be a duration`},
		{`
[plugins."io.containerd.grpc.v1.mine"]
  max_container_log_line_size = 40
`, "handler second is used by running pods and cannot be removed"},
	} {
		offset = logSize(d)
		if err := d.WriteConfig("info", tc.config); err != nil {
			t.Fatal(err)
		}
		daemonLogSince(t, d, offset, "configuration not reloaded", tc.want)
		if got := c.handlers(t); !slices.Contains(got, "second") {
			t.Fatalf("handlers after a refused reload: %q", got)
		}
	}
	// An editor that moves config.toml away, or truncates it, before it
	// writes the new one: a missing or empty file is no configuration of
	// defaults, and the one in force stays.
	saved, err := os.ReadFile(d.Config)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		what  string
		empty func() error
	}{
		{"moved away", func() error { return os.Rename(d.Config, d.Config+".bak") }},
		{"truncated", func() error { return os.Truncate(d.Config, 0) }},
	} {
		offset = logSize(d)
		if err := tc.empty(); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Kill(d.Pid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		daemonLogSince(t, d, offset, "config.toml is missing or empty")
		if got := c.handlers(t); !slices.Contains(got, "second") {
			t.Fatalf("handlers with config.toml %s: %q", tc.what, got)
		}
		os.Remove(d.Config + ".bak")
		if err := os.WriteFile(d.Config, saved, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if !processAlive(d.Pid()) {
		t.Fatal("the daemon exited")
	}
}
