package integration

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	cgroupsv1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	cgroupsv2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	eventstypes "github.com/containerd/containerd/api/events"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/mine-runtime/mine/extension"
)

// startTask creates and starts a container's task with the given stdio
// and returns it with the channel its exit arrives on.
func startTask(t *testing.T, container containerd.Container, creator cio.Creator) (containerd.Task, <-chan containerd.ExitStatus) {
	t.Helper()
	ctx := testContext(t)
	task, err := container.NewTask(ctx, creator)
	if err != nil {
		t.Fatal(err)
	}
	exitC, err := task.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return task, exitC
}

// startExec starts a process in a running container, with the container's
// process settings but the given arguments, and returns it with the
// channel its exit arrives on.
func startExec(t *testing.T, container containerd.Container, task containerd.Task, id string, terminal bool, args []string, creator cio.Creator) (containerd.Process, <-chan containerd.ExitStatus) {
	t.Helper()
	ctx := testContext(t)
	spec, err := container.Spec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pspec := *spec.Process
	pspec.Terminal = terminal
	pspec.Args = args
	proc, err := task.Exec(ctx, id, &pspec, creator)
	if err != nil {
		t.Fatal(err)
	}
	exitC, err := proc.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := proc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return proc, exitC
}

func waitExit(t *testing.T, exitC <-chan containerd.ExitStatus) uint32 {
	t.Helper()
	select {
	case st := <-exitC:
		if err := st.Error(); err != nil {
			t.Fatal(err)
		}
		return st.ExitCode()
	case <-time.After(time.Minute):
		t.Fatal("process did not exit within a minute")
		return 0
	}
}

func TestRunReadsStdoutStderrAndExitCode(t *testing.T) {
	c := newClient(t)
	container := newContainer(t, c, containerID(t, ""),
		oci.WithProcessArgs("sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 3"))
	var stdout, stderr buffer
	task, exitC := startTask(t, container, cio.NewCreator(cio.WithFIFODir(t.TempDir()), cio.WithStreams(nil, &stdout, &stderr)))
	if code := waitExit(t, exitC); code != 3 {
		t.Fatalf("exit code %d, want 3", code)
	}
	st, err := task.Delete(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	if st.ExitCode() != 3 {
		t.Fatalf("delete reports exit code %d, want 3", st.ExitCode())
	}
	if stdout.String() != "to-stdout\n" || stderr.String() != "to-stderr\n" {
		t.Fatalf("stdout %q, stderr %q", stdout.String(), stderr.String())
	}
}

func TestContainerRunsUnderOurShim(t *testing.T) {
	c := newClient(t)
	container := newContainer(t, c, containerID(t, ""), oci.WithProcessArgs("sleep", "600"))
	task, _ := startTask(t, container, cio.NullIO)
	shimOf(t, task.Pid()) // fails unless the parent is containerd-shim-mine-v2
}

func TestExecWithStdin(t *testing.T) {
	ctx := testContext(t)
	c := newClient(t)
	container := newContainer(t, c, containerID(t, ""), oci.WithProcessArgs("sleep", "600"))
	task, _ := startTask(t, container, cio.NullIO)
	var stdout, stderr buffer
	proc, exitC := startExec(t, container, task, "cat", false, []string{"sh", "-c", "cat; echo exec-stderr >&2; exit 5"},
		cio.NewCreator(cio.WithFIFODir(t.TempDir()), cio.WithStreams(strings.NewReader("hello through stdin\n"), &stdout, &stderr)))
	if err := proc.CloseIO(ctx, containerd.WithStdinCloser); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, exitC); code != 5 {
		t.Fatalf("exec exit code %d, want 5", code)
	}
	if _, err := proc.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	if stdout.String() != "hello through stdin\n" || stderr.String() != "exec-stderr\n" {
		t.Fatalf("stdout %q, stderr %q", stdout.String(), stderr.String())
	}
	// The container itself is untouched by its exec's exit.
	if st, err := task.Status(ctx); err != nil || st.Status != containerd.Running {
		t.Fatalf("container status %v, %v; want running", st.Status, err)
	}
}

func TestExecWithTTYAndResize(t *testing.T) {
	ctx := testContext(t)
	c := newClient(t)
	container := newContainer(t, c, containerID(t, ""), oci.WithProcessArgs("sleep", "600"))
	task, _ := startTask(t, container, cio.NullIO)
	stdinR, stdinW := io.Pipe()
	var out buffer
	// The shell waits for a line, so the size it prints is the one set by
	// Resize, not the console's initial one.
	proc, exitC := startExec(t, container, task, "tty", true, []string{"sh", "-c", "read go; [ -t 0 ] && echo is-a-tty; stty size"},
		cio.NewCreator(cio.WithFIFODir(t.TempDir()), cio.WithStreams(stdinR, &out, nil), cio.WithTerminal))
	if err := proc.Resize(ctx, 123, 45); err != nil {
		t.Fatal(err)
	}
	if _, err := stdinW.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, exitC); code != 0 {
		t.Fatalf("exit code %d, output %q", code, out.String())
	}
	stdinW.Close()
	if _, err := proc.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	if !strings.Contains(got, "is-a-tty") || !strings.Contains(got, "45 123") {
		t.Fatalf("terminal output %q lacks is-a-tty and the size 45 123", got)
	}
}

func TestKillDeliversSignals(t *testing.T) {
	c := newClient(t)
	container := newContainer(t, c, containerID(t, ""), oci.WithProcessArgs("sh", "-c",
		`trap 'echo got-usr1' USR1; trap 'exit 42' TERM; echo ready; while true; do sleep 0.05; done`))
	var out buffer
	task, exitC := startTask(t, container, cio.NewCreator(cio.WithFIFODir(t.TempDir()), cio.WithStreams(nil, &out, nil)))
	ctx := testContext(t)
	waitFor(t, "the traps to be set", 10*time.Second, func() bool { return strings.Contains(out.String(), "ready") })
	if err := task.Kill(ctx, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "SIGUSR1 to reach the container", 10*time.Second, func() bool { return strings.Contains(out.String(), "got-usr1") })
	if err := task.Kill(ctx, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, exitC); code != 42 {
		t.Fatalf("exit code after SIGTERM %d, want 42", code)
	}
	// A stopped task has nobody to signal.
	if err := task.Kill(ctx, syscall.SIGKILL); err == nil {
		t.Fatal("killing an exited task succeeded")
	}

	other := newContainer(t, c, containerID(t, "sigkill"), oci.WithProcessArgs("sleep", "600"))
	task2, exitC2 := startTask(t, other, cio.NullIO)
	if err := task2.Kill(ctx, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, exitC2); code != 137 {
		t.Fatalf("exit code after SIGKILL %d, want 137", code)
	}
}

func TestPauseAndResume(t *testing.T) {
	ctx := testContext(t)
	c := newClient(t)
	id := containerID(t, "")
	container := newContainer(t, c, id, oci.WithProcessArgs("sleep", "600"))
	task, _ := startTask(t, container, cio.NullIO)

	next := subscribe(t, c, `topic~="/tasks/(paused|resumed)"`)

	if err := task.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := task.Status(ctx); err != nil || st.Status != containerd.Paused {
		t.Fatalf("status after pause %v, %v", st.Status, err)
	}
	if err := task.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := task.Status(ctx); err != nil || st.Status != containerd.Running {
		t.Fatalf("status after resume %v, %v", st.Status, err)
	}
	if e, ok := next("TaskPaused").(*eventstypes.TaskPaused); !ok || e.ContainerID != id {
		t.Fatalf("first event %+v, want TaskPaused for %s", e, id)
	}
	if e, ok := next("TaskResumed").(*eventstypes.TaskResumed); !ok || e.ContainerID != id {
		t.Fatalf("second event %+v, want TaskResumed for %s", e, id)
	}
}

func memoryAndCPU(t *testing.T, task containerd.Task) (usage, limit, cpu uint64) {
	t.Helper()
	m, err := task.Metrics(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	data, err := typeurl.UnmarshalAny(m.Data)
	if err != nil {
		t.Fatal(err)
	}
	switch s := data.(type) {
	case *cgroupsv1.Metrics:
		return s.GetMemory().GetUsage().GetUsage(), s.GetMemory().GetUsage().GetLimit(), s.GetCPU().GetUsage().GetTotal()
	case *cgroupsv2.Metrics:
		return s.GetMemory().GetUsage(), s.GetMemory().GetUsageLimit(), s.GetCPU().GetUsageUsec()
	default:
		t.Fatalf("metrics of unexpected type %T", data)
		return 0, 0, 0
	}
}

func TestStatsAndUpdate(t *testing.T) {
	c := newClient(t)
	container := newContainer(t, c, containerID(t, ""),
		oci.WithProcessArgs("sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; echo busy-done; sleep 600"),
		oci.WithMemoryLimit(256<<20))
	var out buffer
	task, _ := startTask(t, container, cio.NewCreator(cio.WithFIFODir(t.TempDir()), cio.WithStreams(nil, &out, nil)))
	waitFor(t, "the busy loop", 30*time.Second, func() bool { return strings.Contains(out.String(), "busy-done") })

	usage, limit, cpu := memoryAndCPU(t, task)
	if usage == 0 || cpu == 0 {
		t.Fatalf("stats report memory usage %d and CPU %d; want both non-zero", usage, cpu)
	}
	if limit != 256<<20 {
		t.Fatalf("memory limit %d, want %d", limit, 256<<20)
	}

	newLimit := int64(128 << 20)
	if err := task.Update(testContext(t), containerd.WithResources(&specs.LinuxResources{
		Memory: &specs.LinuxMemory{Limit: &newLimit},
	})); err != nil {
		t.Fatal(err)
	}
	if _, limit, _ = memoryAndCPU(t, task); limit != uint64(newLimit) {
		t.Fatalf("memory limit after update %d, want %d", limit, newLimit)
	}
}

func TestOOMKillIsReported(t *testing.T) {
	c := newClient(t)
	id := containerID(t, "")
	const limit = 32 << 20
	container := newContainer(t, c, id,
		// dd fills a 128 MiB buffer: four times the limit.
		oci.WithProcessArgs("dd", "if=/dev/zero", "of=/dev/null", "bs=128M", "count=4"),
		oci.WithMemoryLimit(limit), oci.WithMemorySwap(limit))

	next := subscribe(t, c, `topic=="/tasks/oom"`)

	_, exitC := startTask(t, container, cio.NullIO)
	if code := waitExit(t, exitC); code != 137 {
		t.Fatalf("exit code %d, want 137 (killed by the OOM killer)", code)
	}
	v := next("TaskOOM")
	if oom, ok := v.(*eventstypes.TaskOOM); !ok || oom.ContainerID != id {
		t.Fatalf("got %T %+v, want TaskOOM for %q", v, v, id)
	}
}

func TestMissingCommandFailsCleanly(t *testing.T) {
	ctx := testContext(t)
	c := newClient(t)
	id := containerID(t, "")
	container := newContainer(t, c, id, oci.WithProcessArgs("/no/such/binary"))
	task, err := container.NewTask(ctx, cio.NullIO)
	if err == nil {
		err = task.Start(ctx)
	}
	if err == nil {
		t.Fatal("a container with a missing command started")
	}
	if !strings.Contains(err.Error(), "/no/such/binary") {
		t.Fatalf("error %q does not say which command is missing", err)
	}
	if task != nil {
		if _, err := task.Delete(ctx, containerd.WithProcessKill); err != nil {
			t.Fatal(err)
		}
	}
	if isMounted(t, filepath.Join(bundleDir(id), "rootfs")) {
		t.Fatal("the failed container's rootfs is still mounted")
	}
	waitFor(t, "no shim left for the failed container", 10*time.Second, func() bool {
		for _, pid := range daemon.Shims() {
			if cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); strings.Contains(string(cmdline), id) {
				return false
			}
		}
		return true
	})
}

// endsWith checks the end of a task that wrote a line to each of stdout and
// stderr: its exit code, its deletion with that code, its output, and
// runc's forgetting it.
func endsWith(t *testing.T, task containerd.Task, exitC <-chan containerd.ExitStatus, code uint32, stdout, stderr *buffer) {
	t.Helper()
	if got := waitExit(t, exitC); got != code {
		t.Fatalf("exit code %d, want %d", got, code)
	}
	if exit, err := task.Delete(testContext(t)); err != nil || exit.ExitCode() != code {
		t.Fatalf("delete: %v, exit code %d", err, exit.ExitCode())
	}
	if stdout.String() != "to-stdout\n" || stderr.String() != "to-stderr\n" {
		t.Fatalf("stdout %q, stderr %q", stdout.String(), stderr.String())
	}
	if runcKnows(task.ID()) {
		t.Fatal("runc still holds the deleted container")
	}
}

// runcKnows tells whether runc has state for a container of the daemon's
// namespace.
func runcKnows(id string) bool {
	_, err := os.Stat(filepath.Join("/run/containerd/runc", namespace, id))
	return err == nil
}

// A task whose spec carries extension.RunAtStartAnnotation (every CRI
// container's, with no NRI plugin) is made by runc only at Start: CREATED
// with pid 0 and unknown to runc before it, then run in one runc run with
// its stdio, exit code and deletion as any task's; one deleted unstarted
// leaves nothing in runc. Without the annotation (ctr) the task has its
// pid and runc's container from Create on.
func TestRunAtStart(t *testing.T) {
	c := newClient(t)
	ctx := testContext(t)
	runAtStart := oci.WithAnnotations(map[string]string{extension.RunAtStartAnnotation: "true"})

	id := containerID(t, "run")
	container := newContainer(t, c, id, runAtStart,
		oci.WithProcessArgs("sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 3"))
	var stdout, stderr buffer
	task, err := container.NewTask(ctx, cio.NewCreator(cio.WithFIFODir(t.TempDir()), cio.WithStreams(nil, &stdout, &stderr)))
	if err != nil {
		t.Fatal(err)
	}
	st, err := task.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if task.Pid() != 0 || st.Status != containerd.Created || runcKnows(id) {
		t.Fatalf("before Start: pid %d, %s, known to runc %v; want pid 0, created, unknown", task.Pid(), st.Status, runcKnows(id))
	}
	exitC, err := task.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if task.Pid() == 0 {
		t.Fatal("no pid after Start")
	}
	endsWith(t, task, exitC, 3, &stdout, &stderr)

	unstarted := newContainer(t, c, containerID(t, "unstarted"), runAtStart, oci.WithProcessArgs("sleep", "600"))
	task, err = unstarted.NewTask(ctx, cio.NullIO)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := task.Delete(ctx); err != nil {
		t.Fatalf("delete an unstarted run-at-start task: %v", err)
	}

	created := newContainer(t, c, containerID(t, "created"), oci.WithProcessArgs("sleep", "600"))
	task, err = created.NewTask(ctx, cio.NullIO)
	if err != nil {
		t.Fatal(err)
	}
	if task.Pid() == 0 || !runcKnows(created.ID()) {
		t.Fatalf("a task without the annotation: pid %d, known to runc %v after Create", task.Pid(), runcKnows(created.ID()))
	}
}

// A task whose spec carries extension.RunAtCreateAnnotation (every pod
// init's) is made and run by one runc run at Create: it has its pid, its
// process runs and runc knows it before Start, and it is CREATED until
// Start reports it RUNNING. Its exit, stdio and deletion are any task's;
// an init that exits before Start is reaped and reported with its code,
// and one deleted unstarted (with its process killed, as a created task
// is) is gone from runc.
func TestRunAtCreate(t *testing.T) {
	c := newClient(t)
	ctx := testContext(t)
	alive := func(pid uint32) bool { return unix.Kill(int(pid), 0) == nil }
	runAtCreate := oci.WithAnnotations(map[string]string{extension.RunAtCreateAnnotation: "true"})

	id := containerID(t, "run")
	container := newContainer(t, c, id, runAtCreate,
		oci.WithProcessArgs("sh", "-c", "echo to-stdout; echo to-stderr >&2; exec sleep 600"))
	var stdout, stderr buffer
	task, err := container.NewTask(ctx, cio.NewCreator(cio.WithFIFODir(t.TempDir()), cio.WithStreams(nil, &stdout, &stderr)))
	if err != nil {
		t.Fatal(err)
	}
	pid := task.Pid()
	st, err := task.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if pid == 0 || !alive(pid) || st.Status != containerd.Created || !runcKnows(id) {
		t.Fatalf("after Create: pid %d (alive %v), %s, known to runc %v; want a live pid, created, known", pid, pid != 0 && alive(pid), st.Status, runcKnows(id))
	}
	exitC, err := task.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := task.Status(ctx); err != nil || st.Status != containerd.Running || task.Pid() != pid {
		t.Fatalf("after Start: %v %v, pid %d; want running, pid %d", st.Status, err, task.Pid(), pid)
	}
	if err := task.Kill(ctx, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	endsWith(t, task, exitC, 137, &stdout, &stderr)

	early := newContainer(t, c, containerID(t, "early"), runAtCreate, oci.WithProcessArgs("sh", "-c", "exit 3"))
	task, err = early.NewTask(ctx, cio.NullIO)
	if err != nil {
		t.Fatal(err)
	}
	exitC, err = task.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, exitC); code != 3 {
		t.Fatalf("an init that exits before Start: exit code %d, want 3", code)
	}
	if err := task.Start(ctx); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("Start after the init exited: %v, want FailedPrecondition", err)
	}
	if exit, err := task.Delete(ctx); err != nil || exit.ExitCode() != 3 {
		t.Fatalf("delete the exited init: %v, exit code %d", err, exit.ExitCode())
	}

	unstarted := newContainer(t, c, containerID(t, "unstarted"), runAtCreate, oci.WithProcessArgs("sleep", "600"))
	task, err = unstarted.NewTask(ctx, cio.NullIO)
	if err != nil {
		t.Fatal(err)
	}
	pid = task.Pid()
	// As for a task runc created: it has a process.
	if _, err := task.Delete(ctx, containerd.WithProcessKill); err != nil {
		t.Fatalf("delete an unstarted run-at-create task: %v", err)
	}
	if runcKnows(unstarted.ID()) {
		t.Fatal("runc still holds the deleted unstarted container")
	}
	waitFor(t, "the unstarted task's init gone", 10*time.Second, func() bool { return !alive(pid) })
}
