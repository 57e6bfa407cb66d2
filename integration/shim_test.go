package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

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
		cio.NewCreator(cio.WithStreams(nil, &out, nil)))
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
