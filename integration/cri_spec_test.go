package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/mine-runtime/mine/integration/testbed"
)

// TestCRIKubeletShapedContainer runs a container configured as kubelet
// configures every container, and checks what the workload sees of the
// spec: what containerd's CRI plugin gives, point by point.
func TestCRIKubeletShapedContainer(t *testing.T) {
	c := newCRI(t)
	img, err := uniqueImage("kubeletshaped")
	if err == nil {
		// root is in wheel, as in Alpine's /etc/group; the image has a /run
		// of its own.
		img, err = testbed.WithFiles(img, map[string]string{
			"etc/group":  "root:x:0:\nwheel:x:10:root\nnogroup:x:65534:\n",
			"run/marker": "the image's /run\n",
		})
	}
	if err != nil {
		t.Fatal(err)
	}
	c.pullImage(t, "kubeletshaped:1", img)

	pod := podConfig(t, "kubeletshaped")
	podID := c.runPod(t, pod)
	hostDir := t.TempDir()
	for _, d := range []string{"a/b", "b"} {
		if err := os.MkdirAll(filepath.Join(hostDir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(hostDir, "b", "child"), []byte("child\n"), 0o644)

	cfg := containerConfig("main", "exec sleep 600")
	cfg.Image = &runtimeapi.ImageSpec{Image: "kubeletshaped:1"}
	cfg.Linux = &runtimeapi.LinuxContainerConfig{
		Resources: &runtimeapi.LinuxContainerResources{
			CpuPeriod: 100000, CpuShares: 2, OomScoreAdj: 1000,
			// kubelet sends one per page size the node has, 0 when the pod
			// asks for none; this node has no v1 hugetlb controller.
			HugepageLimits: []*runtimeapi.HugepageLimit{{PageSize: "2MB"}, {PageSize: "1GB"}},
		},
		SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER},
			MaskedPaths:      []string{"/proc/kcore"},
			ReadonlyPaths:    []string{"/proc/sys"},
		},
	}
	// The child listed before its parent, as a pod spec may list them.
	cfg.Mounts = []*runtimeapi.Mount{
		{HostPath: filepath.Join(hostDir, "b"), ContainerPath: "/data/a/b"},
		{HostPath: filepath.Join(hostDir, "a"), ContainerPath: "/data/a"},
	}
	id := c.startContainer(t, podID, pod, cfg)

	status := mustExec(t, c, id, "cat", "/proc/self/status")
	if !strings.Contains(status, "NoNewPrivs:\t0") {
		t.Error("no_new_privs is set although nobody asked for it: setuid binaries would not work")
	}
	if out := mustExec(t, c, id, "sh", "-c", "ulimit -n"); strings.TrimSpace(out) == "1024" {
		t.Error("RLIMIT_NOFILE is capped at 1024")
	}
	if out := mustExec(t, c, id, "cat", "/run/marker"); out != "the image's /run\n" {
		t.Errorf("the image's /run is hidden: %q", out)
	}
	if out := mustExec(t, c, id, "id", "-G"); strings.TrimSpace(out) != "0 10" {
		t.Errorf("groups %q, want \"0 10\" (root, wheel)", strings.TrimSpace(out))
	}
	if out := mustExec(t, c, id, "sh", "-c", "echo $HOSTNAME"); strings.TrimSpace(out) != "kubeletshaped" {
		t.Errorf("HOSTNAME=%q", strings.TrimSpace(out))
	}
	if resp, _ := c.execSync(t, id, 10, "sh", "-c", "[ -e /dev/console ] && cat /dev/console </dev/null"); resp == nil || resp.ExitCode == 0 {
		t.Error("the container can use /dev/console")
	}
	if resp, _ := c.execSync(t, id, 10, "mknod", "/tmp/console", "c", "5", "1"); resp != nil && resp.ExitCode == 0 {
		if resp, _ := c.execSync(t, id, 10, "sh", "-c", "echo x > /tmp/console"); resp == nil || resp.ExitCode == 0 {
			t.Error("a console node made with CAP_MKNOD opens: the device cgroup allows c 5:1")
		}
	}
	mounts := mustExec(t, c, id, "cat", "/proc/mounts")
	if !strings.Contains(mounts, " /sys/fs/cgroup ") {
		t.Errorf("/sys/fs/cgroup is not mounted:\n%s", mounts)
	}
	if resp, _ := c.execSync(t, id, 10, "mkdir", "/sys/fs/cgroup/memory/x"); resp == nil || resp.ExitCode == 0 {
		t.Error("/sys/fs/cgroup is writable in an unprivileged container")
	}
	if out := mustExec(t, c, id, "cat", "/data/a/b/child"); out != "child\n" {
		t.Errorf("the child mount is hidden by its parent: %q", out)
	}
}

func TestCRIPrivilegedContainerNeedsPrivilegedPod(t *testing.T) {
	c := newCRI(t)
	ctx := testContext(t)
	c.pullBusybox(t)
	pod := podConfig(t, "unprivileged")
	podID := c.runPod(t, pod)
	cfg := containerConfig("main", "exec sleep 600")
	cfg.Linux.SecurityContext = &runtimeapi.LinuxContainerSecurityContext{Privileged: true}
	_, err := c.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("err = %v, want InvalidArgument", err)
	}
	list, err := c.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{PodSandboxId: podID}})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Containers) != 0 {
		t.Errorf("a refused container was left behind: %v", list.Containers)
	}
}

func TestCRIUnresolvableHostPathFails(t *testing.T) {
	c := newCRI(t)
	ctx := testContext(t)
	c.pullBusybox(t)
	pod := podConfig(t, "hostpath")
	podID := c.runPod(t, pod)
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := containerConfig("main", "exec sleep 600")
	cfg.Mounts = []*runtimeapi.Mount{{HostPath: filepath.Join(file, "below"), ContainerPath: "/data"}}
	_, err := c.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("err = %v, want InvalidArgument", err)
	}
}

// TestCRITargetPIDNamespace joins a running container's PID namespace as
// kubectl debug does, and only a running container's of the same pod.
func TestCRITargetPIDNamespace(t *testing.T) {
	c := newCRI(t)
	ctx := testContext(t)
	c.pullBusybox(t)
	pod := podConfig(t, "target")
	podID := c.runPod(t, pod)
	target := c.startContainer(t, podID, pod, containerConfig("target", "exec sleep 600"))

	targeting := func(name, targetID string) *runtimeapi.ContainerConfig {
		cfg := containerConfig(name, "exec sleep 600")
		cfg.Linux.SecurityContext = &runtimeapi.LinuxContainerSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_TARGET, TargetId: targetID},
		}
		return cfg
	}
	debug := c.startContainer(t, podID, pod, targeting("debug", target))
	if out := mustExec(t, c, debug, "ps", "-o", "args"); !strings.Contains(out, "sleep 600") || strings.Count(out, "sleep 600") != 2 {
		t.Errorf("the debug container does not see the target's process:\n%s", out)
	}

	other := podConfig(t, "target-other")
	otherID := c.runPod(t, other)
	_, err := c.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: otherID, Config: targeting("intruder", target), SandboxConfig: other})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("a container of another pod targeting %s: %v, want InvalidArgument", target, err)
	}

	created, err := c.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: containerConfig("idle", "exec sleep 600"), SandboxConfig: pod})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: targeting("late", created.ContainerId), SandboxConfig: pod})
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("targeting a container that does not run: %v, want FailedPrecondition", err)
	}
}

// TestCRIPodInitForStatistics: a pod whose containers do not share a PID
// namespace still gets its init, in the background, as the task of its
// containerd record: kubelet's cAdvisor reads the pod's network statistics
// from it. A pod stopped while that init starts leaves nothing behind.
func TestCRIPodInitForStatistics(t *testing.T) {
	c := newCRI(t)
	ctx := testContext(t)
	client, err := daemon.Client("k8s.io")
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	pod := podConfig(t, "statsinit")
	pod.Labels = map[string]string{"io.kubernetes.pod.name": "statsinit", "io.kubernetes.pod.namespace": "test"}
	podID := c.runPod(t, pod)
	record, err := client.LoadContainer(ctx, podID)
	if err != nil {
		t.Fatal(err)
	}
	labels, err := record.Labels(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"io.cri-containerd.kind": "sandbox", "io.kubernetes.pod.name": "statsinit", "io.kubernetes.pod.namespace": "test"} {
		if labels[k] != want {
			t.Errorf("label %s=%q, want %q", k, labels[k], want)
		}
	}
	var pid uint32
	waitFor(t, "the pod's init to run", 30*time.Second, func() bool {
		task, err := record.Task(ctx, nil)
		if err != nil {
			return false
		}
		st, err := task.Status(ctx)
		pid = task.Pid()
		return err == nil && st.Status == "running"
	})
	// It is in the pod's network namespace: its net/dev is the pod's.
	out := mustExecPodNetDev(t, pid)
	if !strings.Contains(out, "eth0") {
		t.Errorf("the init's network namespace has no eth0:\n%s", out)
	}

	shims := len(daemon.Shims())
	quick := podConfig(t, "statsinit-quick")
	resp, err := c.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: quick})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: resp.PodSandboxId}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: resp.PodSandboxId}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the stopped pod's shim to exit", 30*time.Second, func() bool { return len(daemon.Shims()) <= shims })
	if _, err := client.LoadContainer(ctx, resp.PodSandboxId); err == nil {
		t.Error("the removed pod's record is left")
	}
}

func mustExecPodNetDev(t *testing.T, pid uint32) string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/dev", pid))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
