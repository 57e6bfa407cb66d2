package cri

import (
	"context"
	"fmt"
	"path/filepath"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/mine-runtime/mine/extension"
)

// StartContainer starts a created container. Its output goes to its CRI
// log, written by the shim.
func (s *Service) StartContainer(ctx context.Context, r *runtimeapi.StartContainerRequest) (_ *runtimeapi.StartContainerResponse, retErr error) {
	ctx = s.nsContext(ctx)
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
	if m.StartedAt != 0 || m.FinishedAt != 0 {
		return nil, toStatus(errdefs.ErrFailedPrecondition.WithMessage("container " + id + " has already been started"))
	}
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
	task, err := c.NewTask(ctx, s.logIO(m, stdin))
	if err != nil {
		s.stdins.close(id)
		return nil, toStatus(fmt.Errorf("create task: %w", err))
	}
	defer func() {
		if retErr != nil {
			task.Delete(context.WithoutCancel(ctx), containerd.WithProcessKill)
			s.stdins.close(id)
		}
	}()
	if err := task.Start(ctx); err != nil {
		return nil, toStatus(fmt.Errorf("start container: %w", err))
	}
	if _, err := s.updateContainerMeta(ctx, c, func(m *containerMeta) { m.StartedAt = nowNano() }); err != nil {
		return nil, toStatus(err)
	}
	return &runtimeapi.StartContainerResponse{}, nil
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
	stdout := extension.LogURI(s.outputLog(m), s.config.MaxContainerLogLineSize, maxSize)
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

// uriIO is stdio the shim handles alone: there is nothing to copy here.
type uriIO struct{ cfg cio.Config }

func (u *uriIO) Config() cio.Config { return u.cfg }
func (u *uriIO) Cancel()            {}
func (u *uriIO) Wait()              {}
func (u *uriIO) Close() error       { return nil }
