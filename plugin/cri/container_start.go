package cri

import (
	"context"
	"fmt"

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
	id, err := s.names.resolve(kindContainer, r.GetContainerId())
	if err != nil {
		return nil, toStatus(err)
	}
	unlock := s.lock(id)
	defer unlock()
	c, m, err := s.loadContainer(ctx, id)
	if err != nil {
		return nil, toStatus(err)
	}
	if m.StartedAt != 0 || m.FinishedAt != 0 {
		return nil, toStatus(errdefs.ErrFailedPrecondition.WithMessage("container " + id + " has already been started"))
	}
	if _, sb, err := s.loadSandbox(ctx, m.SandboxID); err != nil || !sb.Ready {
		return nil, toStatus(errdefs.ErrFailedPrecondition.WithMessage("pod sandbox " + m.SandboxID + " is not ready"))
	}
	task, err := c.NewTask(ctx, s.logIO(m))
	if err != nil {
		return nil, toStatus(fmt.Errorf("create task: %w", err))
	}
	defer func() {
		if retErr != nil {
			task.Delete(context.WithoutCancel(ctx), containerd.WithProcessKill)
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

// logIO hands the container's stdio to the shim as a CRI log (package
// extension), or to nowhere without a log path.
func (s *Service) logIO(m *containerMeta) cio.Creator {
	var stdout, stderr string
	if m.LogPath != "" {
		stdout = extension.LogURI(m.LogPath, s.config.MaxContainerLogLineSize)
		if !m.config.GetTty() {
			stderr = stdout
		}
	}
	return func(string) (cio.IO, error) {
		return &uriIO{cfg: cio.Config{Stdout: stdout, Stderr: stderr, Terminal: m.config.GetTty()}}, nil
	}
}

// uriIO is stdio the shim handles alone: there is nothing to copy here.
type uriIO struct{ cfg cio.Config }

func (u *uriIO) Config() cio.Config { return u.cfg }
func (u *uriIO) Cancel()            {}
func (u *uriIO) Wait()              {}
func (u *uriIO) Close() error       { return nil }
