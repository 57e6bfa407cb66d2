package cri

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/mine-runtime/mine/extension"
)

// StartContainer starts a created container. Its output goes to its CRI
// log, written by the shim. A start that fails ends the container, as
// with containerd's CRI: it is recorded as exited with StartError and the
// runtime's message, and nothing of it is left running, so that kubelet
// applies the pod's restart policy and back-off to it instead of trying
// to start it again at every sync.
func (s *Service) StartContainer(ctx context.Context, r *runtimeapi.StartContainerRequest) (_ *runtimeapi.StartContainerResponse, retErr error) {
	ctx = s.nsContext(ctx)
	defer s.nri.BlockSync()() // a plugin that connects meanwhile hears of what this does
	defer s.starts.begin()()
	c, m, err := s.findContainer(ctx, r.GetContainerId())
	if err != nil {
		return nil, toStatus(err)
	}
	id := m.ID
	// The pod, then the container: the pod cannot be stopped under a
	// container starting in it.
	unlockPod := s.lock(m.SandboxID)
	defer unlockPod()
	unlock := s.lock(id)
	defer unlock()
	if _, m, err = s.loadContainer(ctx, id); err != nil {
		return nil, toStatus(err)
	}
	// A start containerd died in before it was recorded has left a task:
	// one that runs or ran is the start, recorded now and never made
	// twice. containerd's CRI also refuses to start a container it finds
	// running after a restart ("container is in CONTAINER_RUNNING state").
	if m, err = s.noticeStart(ctx, c, m); err != nil {
		return nil, toStatus(err)
	}
	if m.StartedAt != 0 || m.FinishedAt != 0 {
		return nil, toStatus(errdefs.ErrFailedPrecondition.WithMessage("container " + id + " has already been started"))
	}
	// A task that was created and never started is replaced, as
	// containerd's CRI deletes it when it recovers: under the container's
	// lock it can only be what a start cut short left.
	if err := deleteTask(ctx, c); err != nil {
		return nil, toStatus(fmt.Errorf("delete the task of an interrupted start: %w", err))
	}

	var task containerd.Task
	defer func() {
		if retErr == nil {
			return
		}
		// The failure is recorded before the task goes: the exit of its
		// killed init must not be taken for the container's.
		ctx := context.WithoutCancel(ctx)
		s.recordStartError(ctx, c, retErr)
		if task != nil {
			if _, err := task.Delete(ctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
				log.G(ctx).WithError(err).WithField("id", id).Warn("delete the task of a failed start; RemoveContainer will retry")
			}
		}
		s.stdins.close(id)
	}()
	if _, sb, err := s.loadSandbox(ctx, m.SandboxID); err != nil || !sb.Ready {
		return nil, toStatus(errdefs.ErrFailedPrecondition.WithMessage("pod sandbox " + m.SandboxID + " is not ready"))
	}
	var stdin string
	if m.config.GetStdin() {
		if stdin, err = s.stdins.open(s.containerDir(id), id); err != nil {
			return nil, toStatus(fmt.Errorf("stdin: %w", err))
		}
		if !m.config.GetStdinOnce() {
			stdin = extension.KeptOpenStdinURI(stdin)
		}
	}
	var restore []containerd.NewTaskOpts
	if m.Restore != "" {
		restore = append(restore, containerd.WithRestoreImagePath(m.Restore))
	}
	if task, err = c.NewTask(ctx, s.logIO(m, stdin), restore...); err != nil {
		return nil, toStatus(fmt.Errorf("create task: %w", err))
	}
	if err := s.nriStartContainer(ctx, c, m, task.Pid()); err != nil {
		return nil, toStatus(err)
	}
	if err := task.Start(ctx); err != nil {
		return nil, toStatus(fmt.Errorf("start container: %w", err))
	}
	started := processIdentity(task.Pid())
	if m, err = s.updateContainerMeta(ctx, c, func(m *containerMeta) { m.StartedAt, m.Process = nowNano(), started }); err != nil {
		return nil, toStatus(err)
	}
	if m.Restore != "" {
		// A copy of its processes' memory: not kept once they run again.
		os.RemoveAll(m.Restore)
	}
	s.nriContainerStarted(ctx, c, m)
	s.initTriggers.fire(m.SandboxID)
	s.observePodStart(m)
	return &runtimeapi.StartContainerResponse{}, nil
}

// observePodStart records a pod's start latency at its first container's
// start: the first of its containers the records show started, so that
// a restart of the daemon or of a container does not count again.
func (s *Service) observePodStart(started *containerMeta) {
	for _, c := range s.records.podContainers(started.SandboxID) {
		if c.ID != started.ID && c.StartedAt != 0 {
			return
		}
	}
	if sb, ok := s.records.sandbox(started.SandboxID); ok {
		podStartLatency.Observe(time.Since(time.Unix(0, sb.CreatedAt)).Seconds())
	}
}

// What a container whose start failed exits with, as in containerd's CRI.
const (
	startErrorExitCode = 128
	startErrorReason   = "StartError"
)

// recordStartError records a failed start as the container's exit, with
// the error's message (runc's, for a command that cannot be run).
func (s *Service) recordStartError(ctx context.Context, c containerd.Container, startErr error) {
	// The exit lock keeps a concurrent reap from recording another exit
	// in between.
	unlock := s.lock(c.ID() + "/exit")
	defer unlock()
	if _, err := s.updateContainerMeta(ctx, c, func(m *containerMeta) {
		m.FinishedAt = nowNano()
		m.ExitCode = startErrorExitCode
		m.Reason = startErrorReason
		m.Message = status.Convert(startErr).Message()
	}); err != nil {
		log.G(ctx).WithError(err).WithField("id", c.ID()).Warn("record a failed start")
	}
}

// deleteTask deletes a container's task (or a pod's init), if it has
// one, killing its process.
func deleteTask(ctx context.Context, c containerd.Container) error {
	task, err := c.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if _, err := task.Delete(ctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
		return err
	}
	return nil
}

// logIO hands the container's output to the shim as a CRI log (package
// extension), or to nowhere without a log path, and its input, if it has
// any, from the stdin FIFO Attach writes to.
func (s *Service) logIO(m *containerMeta, stdin string) cio.Creator {
	// A container kubelet gave no log path still logs, to a small file of
	// ours that starts over at internalLogSize: Attach reads it.
	var maxSize int64
	if m.LogPath == "" {
		maxSize = internalLogSize
	}
	stdout := extension.LogURI(s.outputLog(m), s.logBeneath(m), s.config().MaxContainerLogLineSize, maxSize)
	stderr := stdout
	if m.config.GetTty() {
		stderr = ""
	}
	return func(string) (cio.IO, error) {
		return &uriIO{cfg: cio.Config{Stdin: stdin, Stdout: stdout, Stderr: stderr, Terminal: m.config.GetTty()}}, nil
	}
}

// internalLogSize bounds the log of a container without a log path.
const internalLogSize = 1 << 20

// outputLog is where a container's output is logged: its log path, or a
// file of the plugin's.
func (s *Service) outputLog(m *containerMeta) string {
	if m.LogPath != "" {
		return m.LogPath
	}
	return filepath.Join(s.containerDir(m.ID), "output.log")
}

// logBeneath is the directory a container's log must stay in.
func (s *Service) logBeneath(m *containerMeta) string {
	if m.LogPath != "" {
		return m.LogDirectory
	}
	return s.containerDir(m.ID)
}

// uriIO is stdio the shim handles alone: there is nothing to copy here.
type uriIO struct{ cfg cio.Config }

func (u *uriIO) Config() cio.Config { return u.cfg }
func (u *uriIO) Cancel()            {}
func (u *uriIO) Wait()              {}
func (u *uriIO) Close() error       { return nil }
