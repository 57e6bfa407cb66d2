package integration

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/api/types/runc/options"

	taskv2 "github.com/containerd/containerd/api/runtime/task/v2"
	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"

	eventstypes "github.com/containerd/containerd/api/events"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
)

func TestContainersOfOnePodShareOneShim(t *testing.T) {
	ctx := testContext(t)
	c := newClient(t)
	pod := map[string]string{"io.kubernetes.cri.sandbox-id": containerID(t, "pod")}
	first := newContainer(t, c, containerID(t, "a"), oci.WithProcessArgs("sleep", "600"), oci.WithAnnotations(pod))
	second := newContainer(t, c, containerID(t, "b"), oci.WithProcessArgs("sleep", "600"), oci.WithAnnotations(pod))
	other := newContainer(t, c, containerID(t, "other"), oci.WithProcessArgs("sleep", "600"))
	task1, exit1 := startTask(t, first, cio.NullIO)
	task2, exit2 := startTask(t, second, cio.NullIO)
	task3, _ := startTask(t, other, cio.NullIO)

	shim := shimOf(t, task1.Pid())
	if s2 := shimOf(t, task2.Pid()); s2 != shim {
		t.Fatalf("containers of one pod run under shims %d and %d", shim, s2)
	}
	if s3 := shimOf(t, task3.Pid()); s3 == shim {
		t.Fatalf("a container of another pod shares shim %d", shim)
	}

	// Deleting one container leaves the shim serving the other.
	if err := task1.Kill(ctx, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitExit(t, exit1)
	if _, err := task1.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	if !processAlive(shim) {
		t.Fatal("the shim exited while the pod still has a container")
	}
	if st, err := task2.Status(ctx); err != nil || st.Status != containerd.Running {
		t.Fatalf("second container %v, %v; want running", st.Status, err)
	}

	// The shim exits after its last container is deleted.
	if err := task2.Kill(ctx, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitExit(t, exit2)
	if _, err := task2.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the pod's shim to exit", 10*time.Second, func() bool { return !processAlive(shim) })
}

// bundleDir is where containerd keeps a task's bundle.
func bundleDir(id string) string {
	return filepath.Join(daemon.Dir, "state", "io.containerd.runtime.v2.task", namespace, id)
}

func TestShimKilledIsCleanedUp(t *testing.T) {
	ctx := testContext(t)
	c := newClient(t)
	id := containerID(t, "")
	container := newContainer(t, c, id, oci.WithProcessArgs("sleep", "600"))

	next := subscribe(t, c, `topic=="/tasks/exit"`)

	task, _ := startTask(t, container, cio.NullIO)
	pid := int(task.Pid())
	shim := shimOf(t, task.Pid())
	rootfs := filepath.Join(bundleDir(id), "rootfs")
	if !isMounted(t, rootfs) {
		t.Fatalf("%s is not mounted while the container runs", rootfs)
	}
	socket, err := os.ReadFile(filepath.Join(bundleDir(id), "shim-socket"))
	if err != nil {
		t.Fatal(err)
	}

	if err := syscall.Kill(shim, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	v := next("containerd reported no exit after the shim was killed")
	if exit, ok := v.(*eventstypes.TaskExit); !ok || exit.ContainerID != id || exit.ExitStatus != 137 {
		t.Fatalf("got %+v, want TaskExit for %s with status 137", v, id)
	}
	if _, err := task.Status(ctx); !errdefs.IsNotFound(err) {
		t.Fatalf("task status after its shim died: %v, want NotFound", err)
	}
	waitFor(t, "the container's init to be gone", 10*time.Second, func() bool { return !processAlive(pid) })
	if isMounted(t, rootfs) {
		t.Fatalf("%s is still mounted", rootfs)
	}
	if _, err := os.Stat(filepath.Join("/run/containerd/runc", namespace, id)); !os.IsNotExist(err) {
		t.Fatalf("runc state of %s left behind (%v)", id, err)
	}
	waitFor(t, "the dead shim's socket to be removed", 10*time.Second, func() bool {
		_, err := os.Stat(string(socket))
		return os.IsNotExist(err)
	})
}

func isMounted(t *testing.T, path string) bool {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == path {
			return true
		}
	}
	return false
}

func TestDaemonRestartKeepsContainers(t *testing.T) {
	ctx := testContext(t)
	c := newClient(t)
	runningID, exitingID := containerID(t, "running"), containerID(t, "exiting")
	running := newContainer(t, c, runningID, oci.WithProcessArgs("sleep", "600"))
	// Exits with 7 once the host drops a file into its root filesystem:
	// that is how it is told to exit while containerd is down.
	exiting := newContainer(t, c, exitingID, oci.WithProcessArgs("sh", "-c",
		"while [ ! -e /exit-now ]; do sleep 0.05; done; exit 7"))
	runTask, _ := startTask(t, running, cio.NullIO)
	exitTask, _ := startTask(t, exiting, cio.NullIO)
	runPid, exitPid := int(runTask.Pid()), int(exitTask.Pid())
	c.Close()

	if err := daemon.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bundleDir(exitingID), "rootfs", "exit-now"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the container to exit while containerd is down", 10*time.Second, func() bool { return !processAlive(exitPid) })
	if !processAlive(runPid) {
		t.Fatal("a running container stopped with containerd")
	}
	if err := daemon.Start(ctx); err != nil {
		t.Fatal(err)
	}

	c = newClient(t)
	running, err := c.LoadContainer(ctx, runningID)
	if err != nil {
		t.Fatal(err)
	}
	runTask, err = running.Task(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := runTask.Status(ctx); err != nil || st.Status != containerd.Running || int(runTask.Pid()) != runPid {
		t.Fatalf("after restart: status %v (%v), pid %d; want running, pid %d", st.Status, err, runTask.Pid(), runPid)
	}
	var out buffer
	proc, exitC := startExec(t, running, runTask, "after-restart", false, []string{"echo", "exec after restart"},
		cio.NewCreator(cio.WithFIFODir(t.TempDir()), cio.WithStreams(nil, &out, nil)))
	if code := waitExit(t, exitC); code != 0 {
		t.Fatalf("exec after restart exited %d", code)
	}
	if _, err := proc.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	if out.String() != "exec after restart\n" {
		t.Fatalf("exec output %q", out.String())
	}

	exiting, err = c.LoadContainer(ctx, exitingID)
	if err != nil {
		t.Fatal(err)
	}
	exitTask, err = exiting.Task(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := exitTask.Status(ctx)
	if err != nil || st.Status != containerd.Stopped || st.ExitStatus != 7 {
		t.Fatalf("container that exited while containerd was down: %+v (%v); want stopped with 7", st, err)
	}
	del, err := exitTask.Delete(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if del.ExitCode() != 7 {
		t.Fatalf("delete reports exit code %d, want 7", del.ExitCode())
	}
}

func TestCtrRunPrintsOutput(t *testing.T) {
	ctr := func(args ...string) string {
		t.Helper()
		args = append([]string{"--address", daemon.Address}, args...)
		out, err := execCommand("ctr", args...)
		if err != nil {
			t.Fatalf("ctr %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	ctr("images", "pull", "--plain-http", imageRef)
	t.Cleanup(func() { ctr("images", "rm", imageRef) })
	id := containerID(t, "")
	out := ctr("run", "--rm", "--runtime", runtimeName, imageRef, id, "echo", "hi")
	if out != "hi\n" {
		t.Fatalf("ctr run printed %q, want %q", out, "hi\n")
	}
	if list := ctr("containers", "ls", "-q"); strings.Contains(list, id) {
		t.Fatalf("ctr run --rm left container %s: %s", id, list)
	}
}

func execCommand(name string, args ...string) (string, error) {
	cmd := newCommand(name, args...)
	var stdout, stderr buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String() + stderr.String(), fmt.Errorf("%w: %s", err, stderr.String())
	}
	return stdout.String(), nil
}

// TestShimServesTaskAPIv2AndV3 talks to the shim directly, as containerd
// does, under both task API versions.
func TestShimServesTaskAPIv2AndV3(t *testing.T) {
	ctx := testContext(t)
	c := newClient(t)
	id := containerID(t, "")
	container := newContainer(t, c, id, oci.WithProcessArgs("sleep", "600"))
	task, _ := startTask(t, container, cio.NullIO)

	data, err := os.ReadFile(filepath.Join(bundleDir(id), "bootstrap.json"))
	if err != nil {
		t.Fatal(err)
	}
	var boot struct {
		Address string `json:"address"`
	}
	if err := json.Unmarshal(data, &boot); err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("unix", strings.TrimPrefix(boot.Address, "unix://"))
	if err != nil {
		t.Fatal(err)
	}
	client := ttrpc.NewClient(conn)
	defer client.Close()

	v3, err := taskv3.NewTTRPCTaskClient(client).State(ctx, &taskv3.StateRequest{ID: id})
	if err != nil {
		t.Fatal(err)
	}
	v2, err := taskv2.NewTTRPCTaskClient(client).State(ctx, &taskv2.StateRequest{ID: id})
	if err != nil {
		t.Fatal(err)
	}
	if v3.Pid != task.Pid() || v2.Pid != task.Pid() || v2.Status != v3.Status {
		t.Fatalf("v3 state %v pid %d, v2 state %v pid %d; want running pid %d", v3.Status, v3.Pid, v2.Status, v2.Pid, task.Pid())
	}
	if _, err := taskv2.NewTTRPCTaskClient(client).State(ctx, &taskv2.StateRequest{ID: "no-such-container"}); !errdefs.IsNotFound(errgrpc.ToNative(err)) {
		t.Fatalf("state of an unknown container: %v, want NotFound", err)
	}
}

// TestRuntimeOptionsChooseTheOCIRuntime runs a container with a BinaryName
// and Root of its own: any OCI runtime with runc's CLI (crun, say) can be
// dropped in this way.
func TestRuntimeOptionsChooseTheOCIRuntime(t *testing.T) {
	ctx := testContext(t)
	c := newClient(t)
	id := containerID(t, "")
	dir := t.TempDir()
	calls := filepath.Join(dir, "calls")
	wrapper := filepath.Join(dir, "my-runc")
	runcPath, err := exec.LookPath("runc")
	if err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf("#!/bin/sh\necho \"$*\" >> %s\nexec %s \"$@\"\n", calls, runcPath)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "state")
	image, err := c.GetImage(ctx, imageRef)
	if err != nil {
		t.Fatal(err)
	}
	container, err := c.NewContainer(ctx, id,
		containerd.WithNewSnapshot(id+"-rootfs", image),
		containerd.WithRuntime(runtimeName, &options.Options{BinaryName: wrapper, Root: root}),
		containerd.WithNewSpec(oci.WithImageConfig(image), oci.WithProcessArgs("sleep", "600")))
	if err != nil {
		t.Fatal(err)
	}
	defer container.Delete(ctx, containerd.WithSnapshotCleanup)
	task, err := container.NewTask(ctx, cio.NullIO)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, namespace, id, "state.json")); err != nil {
		t.Fatalf("runc state is not under the configured Root: %v", err)
	}
	if _, err := task.Delete(ctx, containerd.WithProcessKill); err != nil {
		t.Fatal(err)
	}
	log, err := os.ReadFile(calls)
	if err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"create", "start", "delete"} {
		if !strings.Contains(string(log), cmd) {
			t.Errorf("the configured binary was not run for %s; it ran for:\n%s", cmd, log)
		}
	}
}
