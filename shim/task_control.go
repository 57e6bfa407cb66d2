package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/console"
	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/core/runtime"
	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	"github.com/mine-runtime/mine/extension"
	"github.com/mine-runtime/mine/failpoint"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

func (s *service) Kill(ctx context.Context, r *taskAPI.KillRequest) (*emptyResponse, error) {
	if r.ExecID == "" {
		if err := failpoint.Inject(ctx, failpoint.RuncKill); err != nil {
			return nil, err
		}
	}
	s.mu.Lock()
	c, p, err := s.lookup(r.ID, r.ExecID)
	// An exec that has exited has no pid any more: its old one may belong
	// to another process by now. Only the init goes through runc, which
	// knows whether the container still has processes for --all.
	if err == nil && (!r.All || !p.isInit()) {
		err = p.checkAlive()
	}
	// A signal for a running or created init goes to its pid, as an exec's
	// does: runc kill would start a process to do the same. That covers
	// --all too when the init is its PID namespace's: the kernel ends
	// the namespace's other processes with it. The pid cannot be
	// another's while it is not reaped, and the lock keeps the exit
	// handler from marking it so meanwhile. runc still signals the
	// processes of a shared PID namespace, and a paused container, which
	// it thaws for SIGKILL (cgroup v1 holds a frozen process's signal).
	direct := err == nil && p.isInit() && (!r.All || (c.ownPIDNamespace && r.Signal == uint32(unix.SIGKILL))) && p.pid > 0 &&
		(p.status == task.Status_RUNNING || p.status == task.Status_CREATED)
	if direct {
		if kerr := unix.Kill(p.pid, unix.Signal(r.Signal)); kerr != nil {
			err = killError(kerr)
		}
	}
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if direct {
		return empty, nil
	}
	if p.isInit() {
		if err := c.runc.Kill(ctx, c.id, int(r.Signal), &runc.KillOpts{All: r.All}); err != nil {
			return nil, killError(runcError(c.bundle, err))
		}
		return empty, nil
	}
	if p.pid == 0 {
		return nil, errdefs.ErrFailedPrecondition.WithMessage("exec " + p.execID + " has not been started")
	}
	if err := unix.Kill(p.pid, unix.Signal(r.Signal)); err != nil {
		return nil, killError(err)
	}
	return empty, nil
}

// killError maps "nobody to signal" to NotFound, as containerd expects.
func killError(err error) error {
	if errors.Is(err, unix.ESRCH) || strings.Contains(err.Error(), "not running") || strings.Contains(err.Error(), "does not exist") {
		return errdefs.ErrNotFound.WithMessage("process already finished")
	}
	return err
}

func syscallKill(pid int) error { return unix.Kill(pid, unix.SIGKILL) }

func (s *service) Pause(ctx context.Context, r *taskAPI.PauseRequest) (*emptyResponse, error) {
	return s.setPaused(ctx, r.ID, true)
}

func (s *service) Resume(ctx context.Context, r *taskAPI.ResumeRequest) (*emptyResponse, error) {
	return s.setPaused(ctx, r.ID, false)
}

func (s *service) setPaused(ctx context.Context, id string, pause bool) (*emptyResponse, error) {
	s.mu.Lock()
	c, p, err := s.lookup(id, "")
	from, to := task.Status_RUNNING, task.Status_PAUSED
	if !pause {
		from, to = to, from
	}
	if err == nil && p.status != from {
		err = errdefs.ErrFailedPrecondition.WithMessage(fmt.Sprintf("container %s is %s, not %s", id, p.status, from))
	}
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if pause {
		err = c.runc.Pause(ctx, id)
	} else {
		err = c.runc.Resume(ctx, id)
	}
	if err != nil {
		return nil, runcError(c.bundle, err)
	}
	s.mu.Lock()
	if p.status == from {
		p.status = to
	}
	s.mu.Unlock()
	if pause {
		s.publish(runtime.TaskPausedEventTopic, &eventstypes.TaskPaused{ContainerID: id})
	} else {
		s.publish(runtime.TaskResumedEventTopic, &eventstypes.TaskResumed{ContainerID: id})
	}
	return empty, nil
}

func (s *service) CloseIO(ctx context.Context, r *taskAPI.CloseIORequest) (*emptyResponse, error) {
	s.mu.Lock()
	_, p, err := s.lookup(r.ID, r.ExecID)
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if r.Stdin && p.io != nil {
		p.io.closeStdin()
	}
	return empty, nil
}

func (s *service) ResizePty(ctx context.Context, r *taskAPI.ResizePtyRequest) (*emptyResponse, error) {
	s.mu.Lock()
	_, p, err := s.lookup(r.ID, r.ExecID)
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if p.io == nil || p.io.console == nil {
		return nil, errdefs.ErrFailedPrecondition.WithMessage("process " + p.id() + " has no terminal")
	}
	if err := p.io.console.Resize(console.WinSize{Width: uint16(r.Width), Height: uint16(r.Height)}); err != nil {
		return nil, err
	}
	return empty, nil
}

// runningContainer returns a container whose init has not exited.
func (s *service) runningContainer(id string) (*container, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, p, err := s.lookup(id, "")
	if err != nil {
		return nil, err
	}
	return c, p.checkAlive()
}

// Update applies new resources. containerd sends them as the runtime-spec
// LinuxResources in JSON, whatever registry the sender used for the type.
func (s *service) Update(ctx context.Context, r *taskAPI.UpdateTaskRequest) (*emptyResponse, error) {
	if _, ok := r.Annotations[extension.ReopenLogAnnotation]; ok {
		return s.reopenLog(r.ID)
	}
	c, err := s.runningContainer(r.ID)
	if err != nil {
		return nil, err
	}
	if r.Resources == nil || !strings.HasSuffix(r.Resources.TypeUrl, "LinuxResources") {
		return nil, errdefs.ErrInvalidArgument.WithMessage("update needs runtime-spec LinuxResources")
	}
	var res specs.LinuxResources
	if err := json.Unmarshal(r.Resources.Value, &res); err != nil {
		return nil, errdefs.ErrInvalidArgument.WithMessage("resources: " + err.Error())
	}
	if err := c.runc.Update(ctx, c.id, &res); err != nil {
		return nil, runcError(c.bundle, err)
	}
	return empty, nil
}

// reopenLog is ReopenContainerLog, through the extension: the container's
// CRI log is closed and opened again at its path.
func (s *service) reopenLog(id string) (*emptyResponse, error) {
	s.mu.Lock()
	_, p, err := s.lookup(id, "")
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if p.io == nil || p.io.log == nil {
		return nil, errdefs.ErrFailedPrecondition.WithMessage("container " + id + " does not write a CRI log")
	}
	if err := p.io.log.reopen(); err != nil {
		return nil, err
	}
	return empty, nil
}

func (s *service) Checkpoint(ctx context.Context, r *taskAPI.CheckpointTaskRequest) (*emptyResponse, error) {
	c, err := s.runningContainer(r.ID)
	if err != nil {
		return nil, err
	}
	if _, err := exec.LookPath("criu"); err != nil {
		return nil, errdefs.ErrFailedPrecondition.WithMessage("checkpointing needs CRIU, which is not installed on this host")
	}
	// Not cut short: CRIU killed half way may leave the processes seized.
	if err := c.runc.Checkpoint(context.WithoutCancel(ctx), c.id, &runc.CheckpointOpts{
		ImagePath: r.Path,
		WorkDir:   filepath.Join(c.bundle, "criu-work"),
	}, runc.LeaveRunning); err != nil {
		return nil, runcError(c.bundle, err)
	}
	s.publish(runtime.TaskCheckpointedEventTopic, &eventstypes.TaskCheckpointed{ContainerID: c.id, Checkpoint: r.Path})
	return empty, nil
}

// Shutdown ends the shim once it has no container left: containerd asks
// after every task delete, and the shim serves the whole pod.
// Shutdown ends the shim once it serves no container, unless a container
// was handed to it and its Create is still to come (claims.go).
func (s *service) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*emptyResponse, error) {
	if r.Now || s.socket == "" {
		if r.Now || s.idle() {
			s.shutdown()
		}
		return empty, nil
	}
	if !s.idle() {
		return empty, nil
	}
	if !ownsSocket(s.socket, s.socketIno) {
		// Its start failed, and took the group's files with it.
		s.leave()
		return empty, nil
	}
	unlock, err := lockGroup(s.socket)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if freshClaims(s.socket) > 0 {
		// Looked at again once the claims are stale: a Create that never
		// comes must not keep the shim up for ever.
		s.leaveIfIdleLater()
		return empty, nil
	}
	// A Create counts in creating before it removes its claim: a shim
	// idle here, claims looked at, is handed nothing more.
	if !s.idle() {
		return empty, nil
	}
	if err := removeGroupFiles(s.socket, s.socketIno); err != nil {
		return nil, err
	}
	s.leave()
	return empty, nil
}

// leaveIfIdleLater makes sure a shim left with no container leaves even
// if nobody tells it to: containerd asks for Shutdown after each delete,
// but one that died in between, or before it sent the first container
// to a shim it had just started, never will.
func (s *service) leaveIfIdleLater() {
	time.AfterFunc(claimTTL, func() { _, _ = s.Shutdown(context.Background(), &taskAPI.ShutdownRequest{}) })
}

// leave ends the shim, its group's files dealt with.
func (s *service) leave() {
	s.mu.Lock()
	s.left = true
	s.mu.Unlock()
	s.shutdown()
}

// idle tells whether the shim serves no container and creates none.
func (s *service) idle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.containers)+len(s.creating) == 0
}
