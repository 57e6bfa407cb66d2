package failpoints

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	fp "github.com/mine-runtime/mine/failpoint"
)

// settled waits until the host is back to before (a shim leaves a moment
// after its last task is deleted), and fails the test if it does not get
// there.
func settled(t *testing.T, c *cri, logDir string, before hostState, after string) {
	t.Helper()
	// A shim that containerd, crashing in its `start`, never heard of
	// leaves on its own after claimTTL (30 s, shim/claims.go).
	settledWithin(t, c, logDir, before, after, 40*time.Second)
}

func settledWithin(t *testing.T, c *cri, logDir string, before hostState, after string, timeout time.Duration) {
	t.Helper()
	var now hostState
	deadline := time.Now().Add(timeout)
	for {
		now = takeState(t, c, logDir)
		if same(before, now) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	before.same(t, now, after)
}

func same(a, b hostState) bool {
	for k, v := range b {
		if a[k] != v {
			return false
		}
	}
	return true
}

// retryPod runs the pod again, as kubelet retries, and removes it: the
// retry succeeds and its removal leaves nothing.
func retryPod(t *testing.T, c *cri, pod *runtimeapi.PodSandboxConfig, before hostState) {
	t.Helper()
	removePod(t, c, runPod(t, c, pod))
	settled(t, c, "", before, "after the retried pod's removal")
}

func pull(t *testing.T, c *cri) {
	t.Helper()
	if _, err := c.PullImage(testContext(t), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "busybox"}}); err != nil {
		t.Fatal(err)
	}
}

// crashed waits for the daemon a crash failpoint killed, and disarms it.
func crashed(t *testing.T) {
	t.Helper()
	select {
	case <-bed.Daemon.Exited():
	case <-time.After(10 * time.Second):
		t.Fatal("the daemon did not crash")
	}
	disarm()
}

func removePod(t *testing.T, c *cri, id string) {
	t.Helper()
	ctx := testContext(t)
	if _, err := c.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
		t.Fatalf("stop pod: %v", err)
	}
	if _, err := c.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
		t.Fatalf("remove pod: %v", err)
	}
}

func runPod(t *testing.T, c *cri, pod *runtimeapi.PodSandboxConfig) string {
	t.Helper()
	resp, err := c.RunPodSandbox(testContext(t), &runtimeapi.RunPodSandboxRequest{Config: pod})
	if err != nil {
		t.Fatal(err)
	}
	return resp.PodSandboxId
}

func createContainer(t *testing.T, c *cri, podID string, pod *runtimeapi.PodSandboxConfig, cfg *runtimeapi.ContainerConfig) string {
	t.Helper()
	resp, err := c.CreateContainer(testContext(t), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
	if err != nil {
		t.Fatal(err)
	}
	return resp.ContainerId
}

// startContainer creates and starts a container.
func startContainer(t *testing.T, c *cri, podID string, pod *runtimeapi.PodSandboxConfig, cfg *runtimeapi.ContainerConfig) string {
	t.Helper()
	id := createContainer(t, c, podID, pod, cfg)
	if _, err := c.StartContainer(testContext(t), &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	return id
}

// removeContainer removes a container as kubelet does: its log file
// first (kubelet deletes it itself), then the container.
func removeContainer(t *testing.T, c *cri, id string) {
	t.Helper()
	ctx := testContext(t)
	st, err := c.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
	if err != nil {
		t.Fatal(err)
	}
	if p := st.Status.GetLogPath(); p != "" {
		os.Remove(p)
	}
	if _, err := c.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
		t.Fatalf("remove container: %v", err)
	}
}

// Steps of RunPodSandbox, the pod's init included (its containers share
// its PID namespace): each fails the call and leaves nothing.
func TestRunPodSandbox(t *testing.T) {
	c := newCRI(t)
	for _, name := range []string{fp.PodNamespaces, fp.CNIAdd, fp.PodRecord, fp.ShimStart, fp.Mount, fp.RuncCreate, fp.RuncStart} {
		t.Run(name, func(t *testing.T) {
			pod := podConfig(t, "run-"+name)
			before := baseline(t, c, "")
			arm(t, name+" error")
			_, err := c.RunPodSandbox(testContext(t), &runtimeapi.RunPodSandboxRequest{Config: pod})
			if name == fp.Mount {
				// A pod's init has no root file system to mount: the
				// step is not taken, and the pod runs.
				if err != nil {
					t.Fatal(err)
				}
				pods, _ := c.ListPodSandbox(testContext(t), &runtimeapi.ListPodSandboxRequest{})
				for _, p := range pods.Items {
					if p.Metadata.Name == pod.Metadata.Name {
						removePod(t, c, p.Id)
					}
				}
				settled(t, c, "", before, "after the pod's removal")
				return
			}
			failed(t, "RunPodSandbox", err, name)
			settled(t, c, "", before, "by the failed RunPodSandbox")
			retryPod(t, c, pod, before)
		})
	}
}

// A RunPodSandbox that fails after CNI ADD, and whose CNI DEL then fails
// too, keeps the pod, listed NOTREADY, as containerd keeps it: kubelet's
// StopPodSandbox tears its network down (its IP and host port rules go),
// its removal leaves nothing, and the same request made again is refused
// rather than handed the broken pod.
func TestFailedRunWhoseTeardownFails(t *testing.T) {
	c := newCRI(t)
	ctx := testContext(t)
	pod := podConfig(t, "run-del-fails")
	pod.PortMappings = []*runtimeapi.PortMapping{{ContainerPort: 80, HostPort: 30081}}
	before := baseline(t, c, "")
	arm(t, fp.CNIAdd+" error", fp.CNIDel+" error")
	_, err := c.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: pod})
	failed(t, "RunPodSandbox", err, fp.CNIAdd)
	disarm()
	pods, err := c.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var id string
	for _, p := range pods.Items {
		if p.Metadata.Name == pod.Metadata.Name {
			if id != "" || p.State != runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
				t.Fatalf("the kept pod listed again, or %s", p.State)
			}
			id = p.Id
		}
	}
	if id == "" {
		t.Fatal("the pod whose network could not be torn down is not listed")
	}
	now := takeState(t, c, "")
	if now["IP allocations"] != before["IP allocations"]+1 || now["host port chains"] != before["host port chains"]+1 {
		t.Fatalf("the kept pod's IP and host port rules: %v, before %v", now, before)
	}
	if _, err := c.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: pod}); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("the same request again: %v, want AlreadyExists", err)
	}
	removePod(t, c, id)
	settled(t, c, "", before, "after the kept pod's removal")
	retryPod(t, c, pod, before)
}

// Steps of CreateContainer and StartContainer: each fails the call; the
// failed container removed as kubelet removes it leaves nothing; a new
// container, kubelet's retry, runs.
func TestContainerCreateAndStart(t *testing.T) {
	c := newCRI(t)
	pull(t, c)
	pod := podConfig(t, "containers")
	podID := runPod(t, c, pod)
	defer removePod(t, c, podID)
	for _, name := range []string{fp.ContainerRecord, fp.ShimStart, fp.Mount, fp.RuncCreate, fp.LogOpen, fp.RuncStart} {
		t.Run(name, func(t *testing.T) {
			ctx := testContext(t)
			cfg := containerConfig("c-"+name, "echo hello; exec sleep 600")
			before := takeState(t, c, pod.LogDirectory)
			arm(t, name+" error")
			if name == fp.ContainerRecord {
				_, err := c.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
				failed(t, "CreateContainer", err, name)
			} else {
				id := createContainer(t, c, podID, pod, cfg)
				_, err := c.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: id})
				failed(t, "StartContainer", err, name)
				st, err := c.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
				if err != nil {
					t.Fatal(err)
				}
				if st.Status.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.Status.Reason != "StartError" {
					t.Fatalf("after the failed start: %s, %q", st.Status.State, st.Status.Reason)
				}
				removeContainer(t, c, id)
			}
			settled(t, c, pod.LogDirectory, before, "by the failed container")
			id := createContainer(t, c, podID, pod, cfg)
			if _, err := c.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
				t.Fatalf("retry: %v", err)
			}
			if _, err := c.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: id}); err != nil {
				t.Fatal(err)
			}
			removeContainer(t, c, id)
			settled(t, c, pod.LogDirectory, before, "after the retried container's removal")
		})
	}
}

// Steps of StopContainer, RemoveContainer and StopPodSandbox: the call
// fails (or, for runc delete, the shim's forced retry covers it), the
// retry succeeds, and nothing is left.
func TestStopAndRemove(t *testing.T) {
	c := newCRI(t)
	pull(t, c)
	for _, name := range []string{fp.RuncKill, fp.RuncDelete, fp.Unmount, fp.CNIDel} {
		t.Run(name, func(t *testing.T) {
			ctx := testContext(t)
			before := baseline(t, c, "")
			pod := podConfig(t, "stop-"+name)
			podID := runPod(t, c, pod)
			id := createContainer(t, c, podID, pod, containerConfig("main", "exec sleep 600"))
			if _, err := c.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
				t.Fatal(err)
			}
			// The exit's handler deletes the stopped task first; its
			// failure there is retried by RemoveContainer: twice, then.
			if name == fp.Unmount {
				arm(t, name+" error 2")
			} else {
				arm(t, name+" error")
			}
			switch name {
			case fp.RuncKill:
				_, err := c.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 1})
				failed(t, "StopContainer", err, name)
				if _, err := c.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 1}); err != nil {
					t.Fatalf("retry: %v", err)
				}
				removeContainer(t, c, id)
			case fp.RuncDelete:
				removeContainer(t, c, id)
			case fp.Unmount:
				_, err := c.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: id})
				failed(t, "RemoveContainer", err, name)
				removeContainer(t, c, id)
			case fp.CNIDel:
				_, err := c.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID})
				failed(t, "StopPodSandbox", err, name)
			}
			if fired, _ := os.ReadFile(armed + ".fired"); !strings.Contains(string(fired), name) {
				t.Fatalf("failpoint %s was not reached", name)
			}
			removePod(t, c, podID)
			settled(t, c, "", before, "after the pod's removal")
		})
	}
}

// The stream server failing an exec session: the client is told, no exec
// process is left in the container, and the next exec works.
func TestExecStream(t *testing.T) {
	c := newCRI(t)
	pull(t, c)
	pod := podConfig(t, "stream")
	podID := runPod(t, c, pod)
	defer removePod(t, c, podID)
	id := startContainer(t, c, podID, pod, containerConfig("main", "exec sleep 600"))
	ctx := testContext(t)
	crictl := func() (string, string, error) {
		cmd := exec.Command("crictl", "--runtime-endpoint", "unix://"+bed.Daemon.Address, "--timeout", "30s",
			"exec", id, "sh", "-c", "echo streamed")
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		return strings.TrimSpace(string(out)), stderr.String(), err
	}
	arm(t, fp.StreamServer+" error")
	if _, stderr, err := crictl(); err == nil || !strings.Contains(stderr, "failpoint "+fp.StreamServer) {
		t.Fatalf("exec with the stream server failing: %v: %s", err, stderr)
	}
	resp, err := c.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"ps", "-o", "args"}, Timeout: 10})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(resp.Stdout), "echo streamed") {
		t.Fatalf("the failed session left its process:\n%s", resp.Stdout)
	}
	if out, stderr, err := crictl(); err != nil || out != "streamed" {
		t.Fatalf("retry: %v: %s%s", err, out, stderr)
	}
}

// An exit event that never reaches the plugin (dropped) is found by the
// periodic reconcile: the list, which reads only the plugin's records,
// shows the container exited within seconds.
func TestDroppedExitIsReconciled(t *testing.T) {
	c := newCRI(t)
	pull(t, c)
	pod := podConfig(t, "dropped-exit")
	podID := runPod(t, c, pod)
	defer removePod(t, c, podID)
	arm(t, fp.ExitEvent+" error")
	id := createContainer(t, c, podID, pod, containerConfig("main", "exit 3"))
	ctx := testContext(t)
	if _, err := c.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitFor(t, "the dropped exit to be reconciled", 20*time.Second, func() bool {
		resp, err := c.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{Id: id}})
		return err == nil && len(resp.Containers) == 1 && resp.Containers[0].State == runtimeapi.ContainerState_CONTAINER_EXITED
	})
	if fired, _ := os.ReadFile(armed + ".fired"); !strings.Contains(string(fired), fp.ExitEvent) {
		t.Fatal("no exit event was dropped")
	}
	st, err := c.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
	if err != nil || st.Status.ExitCode != 3 {
		t.Fatalf("status %v, %v", st, err)
	}
	t.Logf("exit found %v after the start", time.Since(start).Round(100*time.Millisecond))
}

// A step that hangs: the call answers DeadlineExceeded when the client's
// deadline passes. RunPodSandbox goes on without the client (so that a
// client giving up never leaves half a pod), and kubelet's retry, the
// same request, is answered with the pod the abandoned call made once the
// step no longer hangs: one pod, and nothing left after its removal.
func TestHang(t *testing.T) {
	c := newCRI(t)
	pull(t, c)
	for _, name := range []string{fp.CNIAdd, fp.RuncCreate} {
		t.Run(name, func(t *testing.T) {
			pod := podConfig(t, "hang-"+name)
			before := baseline(t, c, "")
			arm(t, name+" hang")
			ctx, cancel := context.WithTimeout(testContext(t), 2*time.Second)
			defer cancel()
			_, err := c.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: pod})
			if status.Code(err) != codes.DeadlineExceeded {
				t.Fatalf("RunPodSandbox with %s hanging: %v", name, err)
			}
			disarm()
			id := runPod(t, c, pod)
			pods, err := c.ListPodSandbox(testContext(t), &runtimeapi.ListPodSandboxRequest{})
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, p := range pods.Items {
				if p.Metadata.Name == pod.Metadata.Name {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("%d pods named %s after the retry, want 1", n, pod.Metadata.Name)
			}
			removePod(t, c, id)
			settled(t, c, "", before, "after the pod's removal")
		})
	}
}

// A daemon that crashes at a step: after its restart, nothing of the
// interrupted call is left (or what is, is a pod kubelet removes as any
// pod it does not know), and the retry succeeds.
func TestCrash(t *testing.T) {
	pull(t, newCRI(t))
	for _, name := range []string{fp.PodNamespaces, fp.CNIAdd, fp.PodRecord, fp.ContainerRecord, fp.CNIDel} {
		t.Run(name, func(t *testing.T) {
			tc := struct{ name string }{name}
			c := newCRI(t)
			pod := podConfig(t, "crash-"+tc.name)
			// portmap's rules go only with a CNI DEL told the pod's
			// port mappings, after a restart too.
			pod.PortMappings = []*runtimeapi.PortMapping{{ContainerPort: 80, HostPort: 30080}}
			before := baseline(t, c, "")
			var podID string
			if tc.name == fp.ContainerRecord || tc.name == fp.CNIDel {
				podID = runPod(t, c, pod)
			}
			arm(t, tc.name+" crash")
			ctx := testContext(t)
			var err error
			switch tc.name {
			case fp.ContainerRecord:
				_, err = c.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: containerConfig("main", "exec sleep 600"), SandboxConfig: pod})
			case fp.CNIDel:
				_, err = c.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID})
			default:
				_, err = c.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: pod})
			}
			if err == nil {
				t.Fatal("the call succeeded; the daemon was to crash")
			}
			crashed(t)
			if err := bed.Daemon.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			c = newCRI(t)
			// kubelet, relisting, removes what it does not know of.
			pods, err := c.ListPodSandbox(testContext(t), &runtimeapi.ListPodSandboxRequest{})
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range pods.Items {
				if p.Metadata.Name == pod.Metadata.Name && p.Id != podID {
					t.Logf("after restart: pod %s listed %s; removed as kubelet would", p.Id, p.State)
					removePod(t, c, p.Id)
				}
			}
			if podID != "" {
				removePod(t, c, podID)
			}
			settled(t, c, "", before, "by the crash, once restarted")
			id := runPod(t, c, pod)
			if tc.name == fp.ContainerRecord {
				startContainer(t, c, id, pod, containerConfig("main", "exec sleep 600"))
			}
			removePod(t, c, id)
			settled(t, c, "", before, "after the retried pod's removal")
		})
	}
}

// A node that goes down while RunPodSandbox is past CNI ADD comes back
// with /run wiped: the pod's state (its pinned namespaces, its files) is
// gone, but not its IP allocation nor its host port rules. The restarted
// daemon releases them with a CNI DEL of the pod's config, without a
// network namespace, as containerd does for a pod whose namespace is gone.
func TestCrashThenReboot(t *testing.T) {
	c := newCRI(t)
	pod := podConfig(t, "crash-reboot")
	// Its init starts after RunPodSandbox: no shim runs at the crash.
	pod.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_CONTAINER
	pod.PortMappings = []*runtimeapi.PortMapping{{ContainerPort: 80, HostPort: 30082}}
	before := baseline(t, c, "")
	arm(t, fp.CNIAdd+" crash")
	if _, err := c.RunPodSandbox(testContext(t), &runtimeapi.RunPodSandboxRequest{Config: pod}); err == nil {
		t.Fatal("the call succeeded; the daemon was to crash")
	}
	crashed(t)
	// The reboot's wiping of /run, for the pod's state.
	sandboxes := filepath.Join(bed.Daemon.Dir, "state", "io.containerd.grpc.v1.mine", "sandboxes")
	mounts, err := bed.Daemon.Mounts()
	if err != nil {
		t.Fatal(err)
	}
	slices.Reverse(mounts) // children first
	for _, m := range mounts {
		if strings.HasPrefix(m, sandboxes+"/") {
			if err := unix.Unmount(m, unix.MNT_DETACH); err != nil {
				t.Fatalf("unmount %s: %v", m, err)
			}
		}
	}
	if err := os.RemoveAll(sandboxes); err != nil {
		t.Fatal(err)
	}
	if err := bed.Daemon.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	c = newCRI(t)
	settled(t, c, "", before, "by the crash, once the node is back")
	retryPod(t, c, pod, before)
}

// A daemon that dies while the shim creates a pod's init (with runc run,
// for a pod sharing its PID namespace), before runc made it: restarted,
// containerd finds no task in the shim, deletes the container, shuts the
// shim down and, the shim gone from its view, runs `shim delete`, which
// finds no runc container yet. The Create goes on meanwhile (runc is not
// cut short). The Delete waits for the Create and deletes what it made.
// If containerd stops waiting first (its shim clean-up timeout, 5 s by
// default), it removes the bundle and forgets the shim; the Create, ending
// later, then fails (what one that succeeds made is deleted too:
// TestAbandonedCreateIsDeletedWhenOver, in package shim), and the shim,
// which nobody will tell, must leave by itself. Either way nothing is
// left, and the retry succeeds.
func TestCrashInCreate(t *testing.T) {
	pull(t, newCRI(t))
	for _, tc := range []struct {
		name string
		// givesUp restarts containerd with a 1 s shim clean-up timeout
		// and disarms once it serves; otherwise it is disarmed while
		// containerd's start-up waits for the Delete.
		givesUp bool
	}{
		{name: "create-ends-first"},
		{name: "containerd-gives-up-first", givesUp: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCRI(t)
			pod := podConfig(t, "crash-in-create-"+tc.name)
			before := baseline(t, c, "")
			arm(t, fp.RuncStart+" hang")
			go c.RunPodSandbox(testContext(t), &runtimeapi.RunPodSandboxRequest{Config: pod})
			waitFor(t, "the init's Create to reach "+fp.RuncStart, 20*time.Second, func() bool { return fired(t) == 1 })
			logged, err := os.Stat(bed.Daemon.Log)
			if err != nil {
				t.Fatal(err)
			}
			if err := bed.Daemon.Kill(); err != nil {
				t.Fatal(err)
			}
			if tc.givesUp {
				if err := bed.Daemon.WriteConfig("debug", "\n[timeouts]\n  \"io.containerd.timeout.shim.cleanup\" = \"1s\"\n"); err != nil {
					t.Fatal(err)
				}
				// containerd reads its timeouts at start-up only: the
				// daemon is restarted with the suite's config afterwards.
				t.Cleanup(func() {
					if err := bed.Daemon.WriteConfig("debug", ""); err != nil {
						t.Error(err)
					}
					if err := bed.Daemon.Stop(); err != nil {
						t.Error(err)
					}
					if err := bed.Daemon.Start(context.Background()); err != nil {
						t.Error(err)
					}
				})
			}
			started := make(chan error, 1)
			go func() { started <- bed.Daemon.Start(context.Background()) }()
			// containerd's start-up deletes the container it finds no
			// task for (containerd/containerd#6860).
			waitFor(t, "containerd to take the shim for a leaked one", 20*time.Second, func() bool {
				return strings.Contains(logSince(t, logged.Size()), "cleaning leaked shim process")
			})
			if tc.givesUp {
				if err := <-started; err != nil {
					t.Fatal(err)
				}
			}
			disarm()
			if !tc.givesUp {
				if err := <-started; err != nil {
					t.Fatal(err)
				}
			}
			// Which of the two ran: containerd logs the clean-up it gave
			// up on.
			if gaveUp := strings.Contains(logSince(t, logged.Size()), "failed to clean up leaked shim"); gaveUp != tc.givesUp {
				t.Fatalf("containerd gave up its clean-up: %v; the test wants %v", gaveUp, tc.givesUp)
			}
			c = newCRI(t)
			// The shim leaves once the container is deleted, not on its
			// own claimTTL later.
			settledWithin(t, c, "", before, "by the crash in the init's Create, once restarted", 10*time.Second)
			retryPod(t, c, pod, before)
		})
	}
}

// A daemon that dies in StartContainer, while the shim runs the
// container's runc run (not cut short by the caller going away): once
// restarted, it records the start it never saw answered, so that kubelet's
// relist finds the container running and a retried start is refused as
// for any started container; the pod's removal leaves nothing.
func TestCrashInStart(t *testing.T) {
	c := newCRI(t)
	pull(t, c)
	pod := podConfig(t, "crash-in-start")
	before := baseline(t, c, "")
	podID := runPod(t, c, pod)
	id := createContainer(t, c, podID, pod, containerConfig("main", "exec sleep 600"))
	arm(t, fp.RuncStart+" hang")
	go c.StartContainer(testContext(t), &runtimeapi.StartContainerRequest{ContainerId: id})
	waitFor(t, "the start to reach "+fp.RuncStart, 20*time.Second, func() bool { return fired(t) == 1 })
	if err := bed.Daemon.Kill(); err != nil {
		t.Fatal(err)
	}
	disarm()
	if err := bed.Daemon.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	c = newCRI(t)
	waitFor(t, "the container listed running after the restart", 20*time.Second, func() bool {
		st, err := c.ContainerStatus(testContext(t), &runtimeapi.ContainerStatusRequest{ContainerId: id})
		return err == nil && st.Status.State == runtimeapi.ContainerState_CONTAINER_RUNNING && st.Status.StartedAt > 0
	})
	if _, err := c.StartContainer(testContext(t), &runtimeapi.StartContainerRequest{ContainerId: id}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("StartContainer of the container started across the crash: %v, want FailedPrecondition", err)
	}
	removePod(t, c, podID)
	settled(t, c, "", before, "after the pod's removal")
}

// logSince is what the daemon logged after the first offset bytes.
func logSince(t *testing.T, offset int64) string {
	t.Helper()
	data, err := os.ReadFile(bed.Daemon.Log)
	if err != nil {
		t.Fatal(err)
	}
	return string(data[min(offset, int64(len(data))):])
}

// A shim that dies at a step of RunPodSandbox's init (the shim's own
// start; after and before the runc run that makes and starts the init in
// its Create): the call fails, nothing is left once
// containerd has cleaned up after the dead shim, and the retry succeeds.
func TestShimCrash(t *testing.T) {
	c := newCRI(t)
	for _, name := range []string{fp.ShimStart, fp.RuncCreate, fp.RuncStart} {
		t.Run(name, func(t *testing.T) {
			pod := podConfig(t, "shim-crash-"+name)
			before := baseline(t, c, "")
			arm(t, name+" crash")
			if _, err := c.RunPodSandbox(testContext(t), &runtimeapi.RunPodSandboxRequest{Config: pod}); err == nil {
				t.Fatal("RunPodSandbox succeeded with the shim crashing")
			} else if code := status.Code(err); code == codes.Unknown {
				t.Fatalf("code %s: %v", code, err)
			}
			// containerd deletes what it knows of at once, and a shim
			// whose `start` died leaves at once: none waits claimTTL.
			settledWithin(t, c, "", before, "by the shim's crash", 10*time.Second)
			retryPod(t, c, pod, before)
		})
	}
}

// The daemon crashing while it serves a streamed exec, and when a
// container's exit arrives: after the restart the running container is
// untouched and execs work, and the exit is recorded.
func TestCrashWithRunningContainers(t *testing.T) {
	c := newCRI(t)
	pull(t, c)
	before := baseline(t, c, "")
	pod := podConfig(t, "crash-running")
	podID := runPod(t, c, pod)
	ctx := testContext(t)
	long := startContainer(t, c, podID, pod, containerConfig("long", "exec sleep 600"))
	short := startContainer(t, c, podID, pod, containerConfig("short", "exec sleep 600"))
	restart := func() {
		t.Helper()
		crashed(t)
		if err := bed.Daemon.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		c = newCRI(t)
		ctx = testContext(t)
	}

	arm(t, fp.StreamServer+" crash")
	// crictl may end without an error when its stream is cut: the
	// command's output is what tells.
	if out, _ := exec.Command("crictl", "--runtime-endpoint", "unix://"+bed.Daemon.Address, "--timeout", "10s",
		"exec", long, "echo", "streamed").Output(); strings.Contains(string(out), "streamed") {
		t.Fatalf("the exec ran though the daemon crashed: %s", out)
	}
	restart()
	resp, err := c.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: long, Cmd: []string{"ps", "-o", "args"}, Timeout: 10})
	if err != nil {
		t.Fatalf("exec after the restart: %v", err)
	}
	if strings.Contains(string(resp.Stdout), "echo streamed") {
		t.Fatalf("the interrupted session left its process:\n%s", resp.Stdout)
	}

	// short is stopped; handling its exit crashes the daemon.
	arm(t, fp.ExitEvent+" crash")
	// The stop may answer before the exit's event arrives, or not at all.
	c.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: short, Timeout: 0})
	restart()
	waitFor(t, "the exit recorded after the restart", 20*time.Second, func() bool {
		st, err := c.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: short})
		return err == nil && st.Status.State == runtimeapi.ContainerState_CONTAINER_EXITED
	})
	if st, err := c.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: long}); err != nil || st.Status.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Fatalf("the long-running container after two crashes: %v, %v", st, err)
	}
	removePod(t, c, podID)
	settled(t, c, "", before, "after the pod's removal")
}

// The statistics collector reads containers' cgroups in the daemon: with
// every shim's Stats failing, the collector's passes still give a running
// container's CPU and memory, and no shim has served a Stats call. The
// shim's Stats, asked through containerd, does fail: the failpoint acts.
func TestCollectorLeavesShimsIdle(t *testing.T) {
	c := newCRI(t)
	pull(t, c)
	pod := podConfig(t, "idle-shim")
	podID := runPod(t, c, pod)
	defer removePod(t, c, podID)
	id := startContainer(t, c, podID, pod, containerConfig("main", "exec sleep 600"))
	arm(t, fp.ShimStats+" error 1000")
	armedAt := time.Now()
	var stats *runtimeapi.ContainerStats
	// A reading after arming: a pass of the collector (every 10 s), or a
	// read of a container no pass has reached yet, the same way.
	waitFor(t, "a reading after arming", 30*time.Second, func() bool {
		resp, err := c.ListContainerStats(testContext(t), &runtimeapi.ListContainerStatsRequest{Filter: &runtimeapi.ContainerStatsFilter{Id: id}})
		if err != nil || len(resp.Stats) != 1 {
			return false
		}
		stats = resp.Stats[0]
		return stats.GetCpu().GetTimestamp() > armedAt.UnixNano()
	})
	if stats.GetCpu().GetUsageCoreNanoSeconds() == nil || stats.GetMemory().GetWorkingSetBytes().GetValue() == 0 {
		t.Fatalf("stats of a running container without CPU or memory: %v", stats)
	}
	if n := fired(t); n != 0 {
		t.Fatalf("the shim served %d Stats calls during the collector's pass", n)
	}

	client, err := bed.Daemon.Client("k8s.io")
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctr, err := client.LoadContainer(testContext(t), id)
	if err != nil {
		t.Fatal(err)
	}
	task, err := ctr.Task(testContext(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	// containerd's tasks service logs a shim's Stats error and answers
	// with no metrics.
	if _, err := task.Metrics(testContext(t)); err == nil {
		t.Fatalf("the shim's Stats answered with %s armed", fp.ShimStats)
	}
	if n := fired(t); n != 1 {
		t.Fatalf("%s fired %d times for one Stats call", fp.ShimStats, n)
	}
}

// fired counts how many times the armed failpoints have acted.
func fired(t *testing.T) int {
	t.Helper()
	data, err := os.ReadFile(armed + ".fired")
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(data), "\n")
}
