package shim

import (
	"sync"
	"time"

	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/errdefs"
)

// process is one process the shim supervises: a container's init or one of
// its execs. Its fields change under the service lock; exited is closed once
// the exit has been recorded and its output drained, which is what Wait
// blocks on.
type process struct {
	containerID string
	execID      string // "" for the init process
	stdio       stdioPaths
	spec        []byte // OCI process JSON of an exec

	pid       int
	status    task.Status
	io        *processIO
	exitCode  int
	exitedAt  time.Time
	exited    chan struct{}
	exitOnce  sync.Once
	startGate chan struct{} // closed when TaskStart/TaskExecStarted is out
}

func newProcess(containerID, execID string, stdio stdioPaths) *process {
	return &process{
		containerID: containerID,
		execID:      execID,
		stdio:       stdio,
		status:      task.Status_CREATED,
		exited:      make(chan struct{}),
	}
}

// id is the process ID the task API uses in events: the container ID for
// the init, the exec ID otherwise.
func (p *process) id() string {
	if p.execID == "" {
		return p.containerID
	}
	return p.execID
}

func (p *process) isInit() bool { return p.execID == "" }

func (p *process) hasExited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// neverRanStatus is the exit status of a process that never ran: Wait and
// Delete report it for an exec whose start failed or that was deleted
// before it started.
const neverRanStatus = 255

// abandonLocked ends a process that never ran, so that its waiters return:
// nothing else ever would, there being no exit to reap. No TaskExit is
// published, as no process started. The caller holds the service lock.
func (p *process) abandonLocked() {
	if p.pid != 0 || p.hasExited() {
		return
	}
	p.status = task.Status_STOPPED
	p.exitCode = neverRanStatus
	p.exitedAt = time.Now()
	p.markExited()
}

// startUnderway tells whether a Start of the process has begun and not
// returned yet. The caller holds the service lock.
func (p *process) startUnderway() bool {
	if p.startGate == nil {
		return false
	}
	select {
	case <-p.startGate:
		return false
	default:
		return true
	}
}

// checkAlive answers NotFound for a process that has already exited: the
// task API's way of saying a signal had nobody to go to.
func (p *process) checkAlive() error {
	if p.status == task.Status_STOPPED {
		return errdefs.ErrNotFound.WithMessage("process already finished")
	}
	return nil
}
