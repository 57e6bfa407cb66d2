package integration

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/mine-runtime/mine/integration/testbed"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestCRIBadRequests(t *testing.T) {
	c := newCRI(t)
	ctx := testContext(t)
	c.pullBusybox(t)
	pod := podConfig(t, "badreq")
	podID := c.runPod(t, pod)

	check := func(what string, err error, want codes.Code) {
		t.Helper()
		if status.Code(err) != want {
			t.Errorf("%s: %v, want %s", what, err, want)
		} else if err != nil && status.Convert(err).Message() == "" {
			t.Errorf("%s: %s without a message", what, want)
		}
	}
	_, err := c.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: &runtimeapi.PodSandboxConfig{}})
	check("pod without metadata", err, codes.InvalidArgument)
	_, err = c.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: podConfig(t, "badhandler"), RuntimeHandler: "no-such-handler"})
	check("unknown runtime handler", err, codes.InvalidArgument)
	_, err = c.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: "no-such-pod", Config: containerConfig("x", "true")})
	check("container in an unknown pod", err, codes.NotFound)
	noImage := containerConfig("x", "true")
	noImage.Image = &runtimeapi.ImageSpec{}
	_, err = c.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: noImage})
	check("container without an image", err, codes.InvalidArgument)
	missing := containerConfig("x", "true")
	missing.Image = &runtimeapi.ImageSpec{Image: "not-pulled:1"}
	_, err = c.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: missing})
	check("container of an image not pulled", err, codes.NotFound)
	_, err = c.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: &runtimeapi.ContainerConfig{Image: &runtimeapi.ImageSpec{Image: "busybox"}}})
	check("container without metadata", err, codes.InvalidArgument)
	_, err = c.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: "no-such-container"})
	check("status of an unknown container", err, codes.NotFound)
	_, err = c.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: "no-such-container"})
	check("start of an unknown container", err, codes.NotFound)
	_, err = c.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: "no-such-pod"})
	check("status of an unknown pod", err, codes.NotFound)
	_, err = c.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: "no-such-container"})
	check("removing an unknown container", err, codes.OK)
	_, err = c.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: "no-such-pod"})
	check("removing an unknown pod", err, codes.OK)
	_, err = c.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{}})
	check("pull without an image", err, codes.InvalidArgument)
	if _, err := os.Stat("/sys/module/apparmor/parameters/enabled"); os.IsNotExist(err) {
		aa := containerConfig("aa", "true")
		aa.Linux.SecurityContext = &runtimeapi.LinuxContainerSecurityContext{Apparmor: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "my-profile"}}
		_, err = c.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: aa})
		check("an AppArmor profile on a kernel without AppArmor", err, codes.FailedPrecondition)
	}
	_, err = c.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "bad//ref"}})
	check("pull of a malformed reference", err, codes.InvalidArgument)
	_, err = c.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "no-such-image:1"}})
	check("pull of an image the registry lacks", err, codes.NotFound)

	// A command that does not exist fails StartContainer, and leaves no
	// task, shim process or mount behind.
	resp, err := c.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "nocmd"},
		Image:    &runtimeapi.ImageSpec{Image: "busybox"},
		Command:  []string{"/no/such/binary"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: resp.ContainerId})
	if err == nil || !strings.Contains(err.Error(), "/no/such/binary") {
		t.Fatalf("start of a missing command: %v", err)
	}
	if isMounted(t, filepath.Join(daemon.Dir, "state/io.containerd.runtime.v2.task/k8s.io", resp.ContainerId, "rootfs")) {
		t.Fatal("the failed container's rootfs is still mounted")
	}
	if _, err := c.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: resp.ContainerId}); err != nil {
		t.Fatal(err)
	}
}

func TestCRINamesAreUniqueAndRetriesIdempotent(t *testing.T) {
	c := newCRI(t)
	ctx := testContext(t)
	c.pullBusybox(t)
	pod := podConfig(t, "names")
	podID := c.runPod(t, pod)
	// A retry of the same request gets the same pod.
	again, err := c.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: pod})
	if err != nil || again.PodSandboxId != podID {
		t.Fatalf("retried RunPodSandbox: %v, %v; want %s", again, err, podID)
	}
	// Another pod with the same name is refused.
	other := podConfig(t, "names")
	other.Hostname = "different"
	if _, err := c.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: other}); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("second pod with the same name: %v, want AlreadyExists", err)
	}

	cfg := containerConfig("app", "exec sleep 600")
	first, err := c.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
	if err != nil {
		t.Fatal(err)
	}
	retry, err := c.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
	if err != nil || retry.ContainerId != first.ContainerId {
		t.Fatalf("retried CreateContainer: %v, %v", retry, err)
	}
	changed := containerConfig("app", "exec sleep 601")
	if _, err := c.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: changed, SandboxConfig: pod}); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("second container with the same name: %v, want AlreadyExists", err)
	}
}

func TestCRIPodSharesOnePIDNamespace(t *testing.T) {
	c := newCRI(t)
	c.pullBusybox(t)
	pod := podConfig(t, "sharedpid")
	pod.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_POD
	podID := c.runPod(t, pod)
	shared := &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_POD}
	a := containerConfig("a", "exec sleep 600")
	a.Linux.SecurityContext = &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: shared}
	b := containerConfig("b", "exec sleep 601")
	b.Linux.SecurityContext = &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: shared}
	aID := c.startContainer(t, podID, pod, a)
	c.startContainer(t, podID, pod, b)
	// Each sees the other's process and the pod's init as PID 1.
	out := mustExec(t, c, aID, "ps", "-o", "pid,args")
	if !strings.Contains(out, "sleep 601") || !strings.Contains(out, "1 /pod-init") {
		t.Fatalf("processes seen from container a:\n%s", out)
	}
	// The init reaps an orphan: the exec's shell leaves a sleep behind,
	// which lands on PID 1 when the shell exits; unreaped, it would stay
	// in /proc as a zombie.
	orphan := strings.TrimSpace(mustExec(t, c, aID, "sh", "-c", "sleep 1 >/dev/null 2>&1 & echo $!"))
	waitFor(t, "the pod init to reap orphan "+orphan, 10*time.Second, func() bool {
		resp, err := c.execSync(t, aID, 10, "test", "-e", "/proc/"+orphan)
		return err == nil && resp.ExitCode != 0
	})

	// Without its init the pod is not ready, and no container joins a PID
	// namespace that is gone.
	// Read once: container a dies with the init, and other pods' inits
	// may come after it in /proc.
	podPIDNS := mustReadlink(t, fmt.Sprintf("/proc/%d/ns/pid", c.pid(t, aID)))
	for _, e := range procEntries(t) {
		if cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", e)); strings.HasPrefix(string(cmd), "/pod-init\x00") {
			if ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", e)); ns == podPIDNS {
				syscall.Kill(e, syscall.SIGKILL) // the test's own pod init
			}
		}
	}
	ctx := testContext(t)
	// The list first: it answers from memory, which the init's exit event
	// must have changed without any PodSandboxStatus looking.
	waitFor(t, "the pod to be listed not ready", 10*time.Second, func() bool {
		l, err := c.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{Id: podID}})
		return err == nil && len(l.Items) == 1 && l.Items[0].State == runtimeapi.PodSandboxState_SANDBOX_NOTREADY
	})
	st, err := c.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: podID})
	if err != nil || st.Status.State != runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
		t.Fatalf("status after the init's death: %v, %v", st, err)
	}
}

func procEntries(t *testing.T) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

func mustReadlink(t *testing.T, path string) string {
	t.Helper()
	target, err := os.Readlink(path)
	if err != nil {
		t.Fatal(err)
	}
	return target
}

func TestCRIHostNamespacesPod(t *testing.T) {
	c := newCRI(t)
	c.pullBusybox(t)
	pod := podConfig(t, "hostns")
	host := &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE, Pid: runtimeapi.NamespaceMode_NODE, Ipc: runtimeapi.NamespaceMode_NODE}
	pod.Linux.SecurityContext.NamespaceOptions = host
	podID := c.runPod(t, pod)
	cfg := containerConfig("main", "exec sleep 600")
	cfg.Linux.SecurityContext = &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: host}
	id := c.startContainer(t, podID, pod, cfg)
	pid := c.pid(t, id)
	for _, ns := range []string{"net", "pid", "ipc"} {
		want, err := os.Readlink("/proc/self/ns/" + ns)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, ns))
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("container's %s namespace %s, host's %s", ns, got, want)
		}
	}
}

func TestCRIOOMScoreIsClampedNotFailed(t *testing.T) {
	c := newCRI(t)
	c.pullBusybox(t)
	pod := podConfig(t, "oomscore")
	podID := c.runPod(t, pod)
	cfg := containerConfig("main", "exec sleep 600")
	cfg.Linux.Resources = &runtimeapi.LinuxContainerResources{OomScoreAdj: -999}
	id := c.startContainer(t, podID, pod, cfg)
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/oom_score_adj", c.pid(t, id)))
	if err != nil {
		t.Fatal(err)
	}
	own, _ := os.ReadFile(fmt.Sprintf("/proc/%d/oom_score_adj", daemon.Pid()))
	got, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	floor, _ := strconv.Atoi(strings.TrimSpace(string(own)))
	if got != max(-999, floor) && got != -999 {
		t.Fatalf("oom_score_adj %d; want -999, or the daemon's %d where it may not go lower", got, floor)
	}
	// The shim is one step likelier an OOM victim than the daemon.
	data, err = os.ReadFile(fmt.Sprintf("/proc/%d/oom_score_adj", shimOf(t, uint32(c.pid(t, id)))))
	if err != nil {
		t.Fatal(err)
	}
	if shim, _ := strconv.Atoi(strings.TrimSpace(string(data))); shim != min(floor+1, 1000) {
		t.Errorf("shim's oom_score_adj %d; want the daemon's %d + 1", shim, floor)
	}
}

func TestCRIOOMKilledReason(t *testing.T) {
	c := newCRI(t)
	c.pullBusybox(t)
	pod := podConfig(t, "oomkilled")
	podID := c.runPod(t, pod)
	cfg := containerConfig("main", "exec dd if=/dev/zero of=/dev/null bs=128M count=4")
	cfg.Linux.Resources = &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 32 << 20, MemorySwapLimitInBytes: 32 << 20}
	id := c.startContainer(t, podID, pod, cfg)
	waitFor(t, "the container to be OOM killed", 30*time.Second, func() bool {
		return c.status(t, id).State == runtimeapi.ContainerState_CONTAINER_EXITED
	})
	if st := c.status(t, id); st.ExitCode != 137 || st.Reason != "OOMKilled" {
		t.Fatalf("exit %d, reason %q; want 137, OOMKilled", st.ExitCode, st.Reason)
	}
}

func TestCRIReopenContainerLog(t *testing.T) {
	c := newCRI(t)
	ctx := testContext(t)
	c.pullBusybox(t)
	pod := podConfig(t, "reopen")
	podID := c.runPod(t, pod)
	id := c.startContainer(t, podID, pod, containerConfig("main", "i=0; while true; do i=$((i+1)); echo line $i; sleep 0.05; done"))
	path := filepath.Join(pod.LogDirectory, "main.log")
	waitFor(t, "log lines", 10*time.Second, func() bool { data, _ := os.ReadFile(path); return len(data) > 0 })
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ReopenContainerLog(ctx, &runtimeapi.ReopenContainerLogRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "lines in the reopened log", 10*time.Second, func() bool { data, _ := os.ReadFile(path); return len(data) > 0 })
	old, now := logEntries(t, path+".1"), logEntries(t, path)
	last, _ := strconv.Atoi(strings.TrimPrefix(old[len(old)-1][2], "line "))
	first, _ := strconv.Atoi(strings.TrimPrefix(now[0][2], "line "))
	if first != last+1 {
		t.Fatalf("rotated log ends with line %d, new log starts with line %d: a line was lost or repeated", last, first)
	}
}

// TestCRIRestartRecovery kills the daemon under running pods and starts it
// again: the same pods and containers come back in the same states,
// running containers never stop, logs keep flowing while containerd is
// down, an exit that happened meanwhile is reported with its code, and
// exec works after.
func TestCRIRestartRecovery(t *testing.T) {
	c := newCRI(t)
	ctx := testContext(t)
	c.pullBusybox(t)
	pod := podConfig(t, "restart")
	podID := c.runPod(t, pod)
	runID := c.startContainer(t, podID, pod, containerConfig("ticker", "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.05; done"))
	exitID := c.startContainer(t, podID, pod, containerConfig("exiter", "while [ ! -e /exit-now ]; do sleep 0.05; done; exit 7"))
	runPid, exitPid := c.pid(t, runID), c.pid(t, exitID)
	logPath := filepath.Join(pod.LogDirectory, "ticker.log")
	pods, err := c.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}

	if err := daemon.Kill(); err != nil {
		t.Fatal(err)
	}
	size := func() int64 { fi, _ := os.Stat(logPath); return fi.Size() }
	before := size()
	waitFor(t, "log lines written while containerd is down", 10*time.Second, func() bool { return size() > before })
	trigger := filepath.Join(daemon.Dir, "state/io.containerd.runtime.v2.task/k8s.io", exitID, "rootfs/exit-now")
	if err := os.WriteFile(trigger, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the container to exit while containerd is down", 10*time.Second, func() bool { return !processAlive(exitPid) })
	if err := daemon.Start(ctx); err != nil {
		t.Fatal(err)
	}

	c = newCRI(t)
	after, err := c.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(after.Items) != len(pods.Items) {
		t.Fatalf("%d pods before the restart, %d after", len(pods.Items), len(after.Items))
	}
	if st := c.status(t, runID); st.State != runtimeapi.ContainerState_CONTAINER_RUNNING || c.pid(t, runID) != runPid {
		t.Fatalf("running container after restart: %v", st.State)
	}
	if st := c.status(t, exitID); st.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.ExitCode != 7 || st.Reason != "Error" {
		t.Fatalf("container that exited while containerd was down: %v, exit %d, reason %q", st.State, st.ExitCode, st.Reason)
	}
	if out := mustExec(t, c, runID, "echo", "exec after restart"); out != "exec after restart\n" {
		t.Fatalf("exec after restart: %q", out)
	}
	// No tick lost: the log's numbers run on without a gap.
	entries := logEntries(t, logPath)
	for i, e := range entries {
		if want := fmt.Sprintf("tick %d", i+1); e[2] != want {
			t.Fatalf("log line %d is %q, want %q", i+1, e[2], want)
		}
	}
}

func TestCRIPullWithCredentials(t *testing.T) {
	c := newCRI(t)
	ctx := testContext(t)
	img, err := uniqueImage("private")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := registry().Push("private/app:1", img); err != nil {
		t.Fatal(err)
	}
	spec := &runtimeapi.ImageSpec{Image: "private/app:1"}
	if _, err := c.PullImage(ctx, &runtimeapi.PullImageRequest{Image: spec}); err == nil {
		t.Fatal("pulled a private image without credentials")
	}
	resp, err := c.PullImage(ctx, &runtimeapi.PullImageRequest{Image: spec, Auth: &runtimeapi.AuthConfig{Username: testbed.PrivateUser, Password: testbed.PrivatePassword}})
	if err != nil {
		t.Fatal(err)
	}
	c.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: resp.ImageRef}})
	// Credentials go only to the registry they were given for: not to this
	// one, for another's; to it, named as kubelet's docker config names it.
	other := &runtimeapi.AuthConfig{Username: testbed.PrivateUser, Password: testbed.PrivatePassword, ServerAddress: "https://registry.example.com"}
	if _, err := c.PullImage(ctx, &runtimeapi.PullImageRequest{Image: spec, Auth: other}); err == nil {
		t.Fatal("credentials given for another registry were sent to this one")
	}
	own := &runtimeapi.AuthConfig{Username: testbed.PrivateUser, Password: testbed.PrivatePassword, ServerAddress: "https://index.docker.io/v1/"}
	if resp, err = c.PullImage(ctx, &runtimeapi.PullImageRequest{Image: spec, Auth: own}); err != nil {
		t.Fatal(err)
	}
	c.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: resp.ImageRef}})
	// The docker config form: base64 of user:password.
	auth := base64.StdEncoding.EncodeToString([]byte(testbed.PrivateUser + ":" + testbed.PrivatePassword))
	resp, err = c.PullImage(ctx, &runtimeapi.PullImageRequest{Image: spec, Auth: &runtimeapi.AuthConfig{Auth: auth}})
	if err != nil {
		t.Fatal(err)
	}
	c.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: resp.ImageRef}})
}

func TestCRIPullTimeouts(t *testing.T) {
	c := newCRI(t)
	ctx := testContext(t)
	for _, repo := range []string{"stall", "drip"} {
		img, err := uniqueImage(repo)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := registry().Push(repo+"/app:1", img); err != nil {
			t.Fatal(err)
		}
	}
	// The test daemon has image_pull_progress_timeout 2s, image_pull_timeout 6s.
	_, err := c.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "stall/app:1"}})
	if err == nil || !strings.Contains(err.Error(), "made no progress for image_pull_progress_timeout (2s)") {
		t.Fatalf("pull of a stuck image: %v", err)
	}
	_, err = c.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "drip/app:1"}})
	if err == nil || !strings.Contains(err.Error(), "took longer than image_pull_timeout (6s)") {
		t.Fatalf("pull of an endless image: %v", err)
	}
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("pull past its deadline: %s, want DeadlineExceeded", status.Code(err))
	}
}

func TestCRISecurityContextAndResources(t *testing.T) {
	c := newCRI(t)
	c.pullBusybox(t)
	pod := podConfig(t, "security")
	pod.Linux.Sysctls = map[string]string{"net.ipv4.ip_unprivileged_port_start": "1000"}
	pod.Linux.CgroupParent = "/mine-test-pods"
	podID := c.runPod(t, pod)

	hostDir := t.TempDir()
	os.WriteFile(filepath.Join(hostDir, "data"), []byte("from the host\n"), 0o644)
	cfg := containerConfig("locked", "exec sleep 600")
	cfg.Linux.SecurityContext = &runtimeapi.LinuxContainerSecurityContext{
		RunAsUsername:      "nobody",
		SupplementalGroups: []int64{1234},
		ReadonlyRootfs:     true,
		NoNewPrivs:         true,
		Capabilities:       &runtimeapi.Capability{DropCapabilities: []string{"ALL"}, AddCapabilities: []string{"NET_BIND_SERVICE"}},
		Seccomp:            &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault},
		MaskedPaths:        []string{"/proc/kcore"},
		ReadonlyPaths:      []string{"/proc/sys"},
	}
	cfg.Linux.Resources = &runtimeapi.LinuxContainerResources{CpuShares: 512, CpuQuota: 50000, CpuPeriod: 100000, MemoryLimitInBytes: 64 << 20}
	cfg.Mounts = []*runtimeapi.Mount{{HostPath: hostDir, ContainerPath: "/data", Readonly: true}}
	cfg.Devices = []*runtimeapi.Device{{HostPath: "/dev/null", ContainerPath: "/dev/mynull", Permissions: "rwm"}}
	id := c.startContainer(t, podID, pod, cfg)

	status := mustExec(t, c, id, "cat", "/proc/self/status")
	field := func(name string) string {
		for _, line := range strings.Split(status, "\n") {
			if v, ok := strings.CutPrefix(line, name+":"); ok {
				return strings.TrimSpace(v)
			}
		}
		return ""
	}
	// NET_BIND_SERVICE alone is bit 10.
	checks := map[string]string{"Uid": "65534\t65534\t65534\t65534", "NoNewPrivs": "1", "Seccomp": "2", "CapEff": "0000000000000000", "CapBnd": "0000000000000400"}
	for name, want := range checks {
		if got := field(name); got != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
	if groups := field("Groups"); !strings.Contains(groups, "1234") || !strings.Contains(groups, "65534") {
		t.Errorf("supplementary groups %q lack 1234 and nobody's group", groups)
	}
	if resp, _ := c.execSync(t, id, 10, "touch", "/newfile"); resp == nil || resp.ExitCode == 0 {
		t.Error("wrote to a read-only root file system")
	}
	if out := mustExec(t, c, id, "cat", "/data/data"); out != "from the host\n" {
		t.Errorf("host mount: %q", out)
	}
	if resp, _ := c.execSync(t, id, 10, "sh", "-c", "echo x > /data/x"); resp == nil || resp.ExitCode == 0 {
		t.Error("wrote to a read-only mount")
	}
	if out := mustExec(t, c, id, "sh", "-c", "[ -c /dev/mynull ] && echo device"); out != "device\n" {
		t.Errorf("device: %q", out)
	}
	if out := mustExec(t, c, id, "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"); out != "1000\n" {
		t.Errorf("pod sysctl: %q", out)
	}
	// Resources reach the cgroup, under the pod's cgroup parent.
	procCgroup, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", c.pid(t, id)))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(procCgroup), ":/mine-test-pods/"+id) {
		t.Errorf("container cgroups are not under the pod's parent:\n%s", procCgroup)
	}
	cg := cgroupFile(t, c.pid(t, id), "memory", "memory.limit_in_bytes", "memory.max")
	if strings.TrimSpace(cg) != strconv.Itoa(64<<20) {
		t.Errorf("memory limit %q", cg)
	}
}

// cgroupFile reads a cgroup file of a process, v1 controller or v2.
func cgroupFile(t *testing.T, pid int, controller, v1, v2 string) string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == controller {
				out, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", controller, parts[2], v1))
				if err != nil {
					t.Fatal(err)
				}
				return string(out)
			}
		}
		if parts[0] == "0" && parts[1] == "" {
			if out, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", parts[2], v2)); err == nil {
				return string(out)
			}
		}
	}
	t.Fatalf("no %s cgroup for %d", controller, pid)
	return ""
}

func TestCRIPortMapping(t *testing.T) {
	c := newCRI(t)
	ctx := testContext(t)
	c.pullBusybox(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hostPort := l.Addr().(*net.TCPAddr).Port
	l.Close()
	pod := podConfig(t, "ports")
	pod.PortMappings = []*runtimeapi.PortMapping{{Protocol: runtimeapi.Protocol_TCP, ContainerPort: 8080, HostPort: int32(hostPort)}}
	podID := c.runPod(t, pod)
	c.startContainer(t, podID, pod, containerConfig("server", "exec nc -ll -p 8080 -e echo hello-from-the-pod"))

	// The bridge's address is the host's own: portmap's DNAT applies.
	gateway := strings.TrimSuffix(daemon.Network.Subnet, "0/24") + "1"
	addr := net.JoinHostPort(gateway, strconv.Itoa(hostPort))
	if reply := firstReply(t, "the pod to answer on its host port", addr); reply != "hello-from-the-pod\n" {
		t.Fatalf("host port %d answered %q", hostPort, reply)
	}
	if _, err := c.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatal(err)
	}
	out, err := execCommand("iptables", "-w", "-t", "nat", "-S")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "--dport "+strconv.Itoa(hostPort)) {
		t.Fatalf("the host port's DNAT rule outlived StopPodSandbox:\n%s", out)
	}
}

func TestCRIStopUsesTheImageStopSignal(t *testing.T) {
	c := newCRI(t)
	ctx := testContext(t)
	img, err := uniqueImage("stopsignal")
	if err == nil {
		img, err = testbed.WithConfig(img, func(c *v1.Config) { c.StopSignal = "SIGUSR1" })
	}
	if err != nil {
		t.Fatal(err)
	}
	c.pullImage(t, "stopsignal:1", img)
	pod := podConfig(t, "stopsignal")
	podID := c.runPod(t, pod)
	cfg := containerConfig("main", `trap 'exit 42' USR1; echo ready; while true; do sleep 0.05; done`)
	cfg.Image = &runtimeapi.ImageSpec{Image: "stopsignal:1"}
	id := c.startContainer(t, podID, pod, cfg)
	waitFor(t, "the trap to be set", 10*time.Second, func() bool {
		data, _ := os.ReadFile(filepath.Join(pod.LogDirectory, "main.log"))
		return strings.Contains(string(data), "ready")
	})
	if _, err := c.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 30}); err != nil {
		t.Fatal(err)
	}
	if st := c.status(t, id); st.ExitCode != 42 {
		t.Fatalf("exit code %d: the image's stop signal SIGUSR1 should have made it 42", st.ExitCode)
	}
}

// A StopContainer that kubelet gives up on (the pod's grace period
// shortened, say) and makes again does not send the stop signal a second
// time: the container's shutdown goes on, and SIGKILL ends it when the new
// timeout passes.
func TestCRIStopSignalIsSentOnce(t *testing.T) {
	c := newCRI(t)
	ctx := testContext(t)
	c.pullBusybox(t)
	pod := podConfig(t, "stop-once")
	podID := c.runPod(t, pod)
	id := c.startContainer(t, podID, pod, containerConfig("main", `trap 'echo got-term' TERM; echo ready; while true; do sleep 0.05; done`))
	logFile := filepath.Join(pod.LogDirectory, "main.log")
	waitFor(t, "the trap to be set", 10*time.Second, func() bool {
		data, _ := os.ReadFile(logFile)
		return strings.Contains(string(data), "ready")
	})
	first, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := c.StopContainer(first, &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 60})
		done <- err
	}()
	waitFor(t, "the stop signal", 10*time.Second, func() bool {
		data, _ := os.ReadFile(logFile)
		return strings.Contains(string(data), "got-term")
	})
	cancel()
	if err := <-done; status.Code(err) != codes.Canceled {
		t.Fatalf("the abandoned stop: %v, want Canceled", err)
	}
	if _, err := c.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 1}); err != nil {
		t.Fatal(err)
	}
	if st := c.status(t, id); st.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.ExitCode != 137 {
		t.Fatalf("after the second stop: %s, exit %d; want exited by SIGKILL", st.State, st.ExitCode)
	}
	data, _ := os.ReadFile(logFile)
	if n := strings.Count(string(data), "got-term"); n != 1 {
		t.Errorf("the stop signal arrived %d times, want once:\n%s", n, data)
	}
}

// TestCRIPauseImageMode runs a daemon configured with sandbox_image: pods
// then get a classic pause container, pulled on first use.
func TestCRIPauseImageMode(t *testing.T) {
	img, err := uniqueImage("pause")
	if err == nil {
		img, err = testbed.WithConfig(img, func(c *v1.Config) { c.Cmd = []string{"sleep", "2147483647"} })
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := registry().Push("library/pause:3", img); err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "mine-pause-")
	if err != nil {
		t.Fatal(err)
	}
	d, err := testbed.NewDaemon(dir, binDir, `
[plugins."io.containerd.grpc.v1.mine"]
  sandbox_image = "pause:3"
`)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.RouteRegistry("docker.io", registry().Host); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(testContext(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Teardown(); err != nil {
			t.Errorf("teardown: %v (log in %s)", err, d.Log)
		} else {
			os.RemoveAll(dir)
		}
	})

	saved := daemon
	daemon = d // the CRI helpers talk to the package's daemon
	t.Cleanup(func() { daemon = saved })
	c := newCRI(t)
	ctx := testContext(t)
	c.pullBusybox(t)
	// Pulled through the CRI before any pod (as kubeadm pre-pulls it),
	// and again, which replaces its record's labels: pinned all the same,
	// so kubelet's image garbage collection leaves it alone.
	pause := &runtimeapi.ImageSpec{Image: "pause:3"}
	for range 2 {
		if _, err := c.PullImage(ctx, &runtimeapi.PullImageRequest{Image: pause}); err != nil {
			t.Fatal(err)
		}
		st, err := c.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: pause})
		if err != nil || st.Image == nil || !st.Image.Pinned {
			t.Fatalf("the sandbox image pulled through the CRI is not pinned: %v, %v", st, err)
		}
	}
	pod := podConfig(t, "paused")
	pod.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_POD
	podID := c.runPod(t, pod)
	cfg := containerConfig("main", "exec sleep 600")
	cfg.Linux.SecurityContext = &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_POD}}
	id := c.startContainer(t, podID, pod, cfg)
	if out := mustExec(t, c, id, "ps", "-o", "pid,args"); !strings.Contains(out, "1 sleep 2147483647") {
		t.Fatalf("the pause container is not the pod's PID 1:\n%s", out)
	}
	st, err := c.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: "pause:3"}})
	if err != nil || st.Image == nil || !st.Image.Pinned {
		t.Fatalf("the pause image was not pulled and pinned: %v, %v", st, err)
	}
}

func TestCRIStatsAndResourceUpdates(t *testing.T) {
	c := newCRI(t)
	ctx := testContext(t)
	c.pullBusybox(t)
	pod := podConfig(t, "stats")
	podID := c.runPod(t, pod)
	// A pod's network is read in its own namespace: before any of its
	// containers runs too.
	if ps, err := c.PodSandboxStats(ctx, &runtimeapi.PodSandboxStatsRequest{PodSandboxId: podID}); err != nil || ps.Stats.Linux.Network.GetDefaultInterface().GetName() != "eth0" {
		t.Fatalf("network stats of a pod without a running container: %v, %v", ps, err)
	}
	cfg := containerConfig("busy", "i=0; while [ $i -lt 30000 ]; do i=$((i+1)); done; echo > /tmp/written; exec sleep 600")
	cfg.Linux.Resources = &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 256 << 20}
	id := c.startContainer(t, podID, pod, cfg)
	waitFor(t, "the busy loop", 30*time.Second, func() bool {
		resp, err := c.execSync(t, id, 10, "test", "-e", "/tmp/written")
		return err == nil && resp.ExitCode == 0
	})

	st, err := c.ContainerStats(ctx, &runtimeapi.ContainerStatsRequest{ContainerId: id})
	if err != nil {
		t.Fatal(err)
	}
	s := st.Stats
	if s.Cpu.GetUsageCoreNanoSeconds().GetValue() == 0 || s.Memory.GetWorkingSetBytes().GetValue() == 0 || s.Memory.GetUsageBytes().GetValue() == 0 {
		t.Fatalf("cpu %v, memory %v", s.Cpu, s.Memory)
	}
	if s.WritableLayer.GetUsedBytes().GetValue() == 0 {
		t.Fatalf("writable layer %v: the container wrote a file", s.WritableLayer)
	}
	// A second reading gives a rate.
	waitFor(t, "a CPU rate", 10*time.Second, func() bool {
		st, err := c.ContainerStats(ctx, &runtimeapi.ContainerStatsRequest{ContainerId: id})
		return err == nil && st.Stats.Cpu.GetUsageNanoCores() != nil
	})
	list, err := c.ListContainerStats(ctx, &runtimeapi.ListContainerStatsRequest{Filter: &runtimeapi.ContainerStatsFilter{PodSandboxId: podID}})
	if err != nil || len(list.Stats) != 1 || list.Stats[0].Attributes.Id != id {
		t.Fatalf("list stats: %v, %v", list, err)
	}
	ps, err := c.PodSandboxStats(ctx, &runtimeapi.PodSandboxStatsRequest{PodSandboxId: podID})
	if err != nil {
		t.Fatal(err)
	}
	linux := ps.Stats.Linux
	if len(linux.Containers) != 1 || linux.Memory.GetWorkingSetBytes().GetValue() == 0 || linux.Process.GetProcessCount().GetValue() == 0 {
		t.Fatalf("pod stats %v", linux)
	}
	if linux.Network.GetDefaultInterface().GetName() != "eth0" {
		t.Fatalf("pod network stats %v", linux.Network)
	}

	if _, err := c.UpdateContainerResources(ctx, &runtimeapi.UpdateContainerResourcesRequest{
		ContainerId: id, Linux: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 128 << 20, CpuShares: 256},
	}); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(cgroupFile(t, c.pid(t, id), "memory", "memory.limit_in_bytes", "memory.max")); got != strconv.Itoa(128<<20) {
		t.Fatalf("memory limit after update %s", got)
	}
	if got := c.status(t, id).Resources.GetLinux().GetMemoryLimitInBytes(); got != 128<<20 {
		t.Fatalf("status reports memory limit %d after update", got)
	}
}

// TestCRIListStatsFromCollector: the list stats RPCs answer from the
// collector's last pass (two calls in a row give the same reading), a
// container the collector has not reached is read when asked for, and the
// passes go on (a later reading has a later timestamp and a CPU rate).
func TestCRIListStatsFromCollector(t *testing.T) {
	c := newCRI(t)
	ctx := testContext(t)
	c.pullBusybox(t)
	pod := podConfig(t, "collected")
	podID := c.runPod(t, pod)
	id := c.startContainer(t, podID, pod, containerConfig("spin", "while :; do :; done"))
	list := func() *runtimeapi.ContainerStats {
		t.Helper()
		resp, err := c.ListContainerStats(ctx, &runtimeapi.ListContainerStatsRequest{Filter: &runtimeapi.ContainerStatsFilter{Id: id}})
		if err != nil || len(resp.Stats) != 1 {
			t.Fatalf("list stats: %v, %v", resp, err)
		}
		return resp.Stats[0]
	}
	first := list()
	if first.Cpu == nil || first.Memory.GetWorkingSetBytes().GetValue() == 0 {
		t.Fatalf("a new container's stats have no CPU or memory: %v", first)
	}
	if again := list(); again.Cpu.Timestamp != first.Cpu.Timestamp {
		// Not a failure of the reading, but of the answer's source: the
		// period is 1 s, so two calls in a row almost always share a pass;
		// one falling across a pass boundary is retried once.
		if third := list(); third.Cpu.Timestamp != again.Cpu.Timestamp {
			t.Fatalf("three list calls in a row gave three readings (%d, %d, %d): not from the collector", first.Cpu.Timestamp, again.Cpu.Timestamp, third.Cpu.Timestamp)
		}
	}
	waitFor(t, "a later pass with a CPU rate", 10*time.Second, func() bool {
		s := list()
		return s.Cpu.Timestamp > first.Cpu.Timestamp && s.Cpu.GetUsageNanoCores().GetValue() > 0
	})
	pods, err := c.ListPodSandboxStats(ctx, &runtimeapi.ListPodSandboxStatsRequest{Filter: &runtimeapi.PodSandboxStatsFilter{Id: podID}})
	if err != nil || len(pods.Stats) != 1 || len(pods.Stats[0].Linux.GetContainers()) != 1 || pods.Stats[0].Linux.Cpu.GetUsageCoreNanoSeconds().GetValue() == 0 {
		t.Fatalf("pod stats: %v, %v", pods, err)
	}
}

// TestCRIPodSandboxMetrics: cAdvisor's container metrics through the CRI,
// every one with as many label values as its descriptor has keys, for the
// running container and, on the pod, its network.
func TestCRIPodSandboxMetrics(t *testing.T) {
	c := newCRI(t)
	ctx := testContext(t)
	c.pullBusybox(t)
	pod := podConfig(t, "metrics")
	podID := c.runPod(t, pod)
	// Three processes, each with its three standard streams open.
	id := c.startContainer(t, podID, pod, containerConfig("app", "sleep 600 & sleep 600 & exec sleep 600"))
	descs, err := c.ListMetricDescriptors(ctx, &runtimeapi.ListMetricDescriptorsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]int{}
	for _, d := range descs.Descriptors {
		keys[d.Name] = len(d.LabelKeys)
	}
	resp, err := c.ListPodSandboxMetrics(ctx, &runtimeapi.ListPodSandboxMetricsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var pm *runtimeapi.PodSandboxMetrics
	for _, p := range resp.PodMetrics {
		if p.PodSandboxId == podID {
			pm = p
		}
	}
	if pm == nil || len(pm.ContainerMetrics) != 1 || pm.ContainerMetrics[0].ContainerId != id {
		t.Fatalf("pod metrics %v", pm)
	}
	got := map[string]*runtimeapi.Metric{}
	for _, m := range append(slices.Clone(pm.Metrics), pm.ContainerMetrics[0].Metrics...) {
		if n, ok := keys[m.Name]; !ok || n != len(m.LabelValues) {
			t.Errorf("%s: %d label values, descriptor has %d keys (described: %v)", m.Name, len(m.LabelValues), n, ok)
		}
		got[m.Name] = m
	}
	for _, name := range []string{"container_cpu_usage_seconds_total", "container_memory_working_set_bytes", "container_network_receive_bytes_total", "container_fs_usage_bytes", "container_spec_memory_limit_bytes", "container_start_time_seconds", "container_processes"} {
		if got[name] == nil {
			t.Errorf("no %s", name)
		}
	}
	if ws := got["container_memory_working_set_bytes"].GetValue().GetValue(); ws == 0 {
		t.Error("a running container's working set is 0")
	}
	// Counted over the container's processes, not its init's alone.
	if fds := got["container_file_descriptors"].GetValue().GetValue(); fds < 9 {
		t.Errorf("%d file descriptors, want the three processes' (9 at least)", fds)
	}
	if rx := got["container_network_receive_bytes_total"]; rx != nil && rx.LabelValues[len(rx.LabelValues)-1] != "eth0" {
		t.Errorf("network metric on interface %v", rx.LabelValues)
	}
	stream, err := recvAll(c.StreamPodSandboxMetrics(ctx, &runtimeapi.StreamPodSandboxMetricsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	streamed := 0
	for _, msg := range stream {
		streamed += len(msg.PodSandboxMetrics)
	}
	if streamed != len(resp.PodMetrics) {
		t.Errorf("streamed %d pods' metrics, listed %d", streamed, len(resp.PodMetrics))
	}
}

// TestCRIExecSyncNeverLosesOutput: a quick command's output is in every
// answer. The containerd client's Process.Delete closes the output FIFOs
// before it reads them to their end, which lost it about once in 300
// (make soak found it).
func TestCRIExecSyncNeverLosesOutput(t *testing.T) {
	c := newCRI(t)
	c.pullBusybox(t)
	pod := podConfig(t, "execout")
	podID := c.runPod(t, pod)
	id := c.startContainer(t, podID, pod, containerConfig("app", "exec sleep 600"))
	// A hundred tries catch the old race about one run in four here;
	// make soak's thousand cycles, nearly always.
	for i := range 100 {
		resp, err := c.execSync(t, id, 10, "echo", "probe")
		if err != nil || resp.ExitCode != 0 || string(resp.Stdout) != "probe\n" {
			t.Fatalf("exec %d: %q, exit %d, %v", i, resp.GetStdout(), resp.GetExitCode(), err)
		}
	}
}

// A pod whose statistics init was still due when containerd died gets it
// after the restart: kubelet takes the pod's network statistics from it.
func TestCRIRestartStartsStatsInit(t *testing.T) {
	c := newCRI(t)
	ctx := testContext(t)
	podID := c.runPod(t, podConfig(t, "restart-init"))
	// Killed at once: the init is due only after the pod's first container
	// starts, or two seconds after RunPodSandbox.
	if err := daemon.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := daemon.Start(ctx); err != nil {
		t.Fatal(err)
	}
	client := criClient(t)
	waitFor(t, "the pod's init running after the restart", 30*time.Second, func() bool {
		container, err := client.LoadContainer(ctx, podID)
		if err != nil {
			return false
		}
		task, err := container.Task(ctx, nil)
		if err != nil {
			return false
		}
		st, err := task.Status(ctx)
		return err == nil && st.Status == containerd.Running
	})
}
