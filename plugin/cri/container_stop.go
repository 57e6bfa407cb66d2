package cri

import (
	"context"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"
	"github.com/moby/sys/signal"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// StopContainer sends the container's stop signal (its config's, else its
// image's, else SIGTERM), once in its life, and SIGKILL once the timeout
// has passed.
// Stopping a stopped or unknown container does nothing.
func (s *Service) StopContainer(ctx context.Context, r *runtimeapi.StopContainerRequest) (*runtimeapi.StopContainerResponse, error) {
	ctx = s.nsContext(ctx)
	defer s.nri.BlockSync()() // a plugin that connects meanwhile hears of what this does
	id, err := s.names.resolve(kindContainer, r.GetContainerId())
	if errdefs.IsNotFound(err) {
		return &runtimeapi.StopContainerResponse{}, nil // idempotent, as the CRI wants
	}
	if err != nil {
		return nil, toStatus(err)
	}
	if err := s.stopContainer(ctx, id, time.Duration(r.GetTimeout())*time.Second); err != nil && !errdefs.IsNotFound(err) {
		return nil, toStatus(err)
	}
	return &runtimeapi.StopContainerResponse{}, nil
}

func (s *Service) stopContainer(ctx context.Context, id string, timeout time.Duration) error {
	c, m, err := s.loadContainer(ctx, id)
	if err != nil {
		return err
	}
	task, err := c.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	// The container's exit may be handled meanwhile, and its task deleted
	// under our feet (its connection then closes): a task gone is a
	// container stopped.
	goneNow := func(err error) bool {
		if errdefs.IsNotFound(err) {
			return true
		}
		_, terr := c.Task(ctx, nil)
		return errdefs.IsNotFound(terr)
	}
	exitC, err := task.Wait(ctx)
	if err != nil {
		if goneNow(err) {
			return s.reap(ctx, c)
		}
		return err
	}
	st, err := task.Status(ctx)
	if err == nil && st.Status != containerd.Stopped {
		if timeout > 0 {
			// Sent once: many programs take a second for "now", and the
			// grace period kubelet gives again is for the shutdown the
			// first one began, as containerd has it.
			if _, sent := s.stopSignaled.LoadOrStore(id, true); !sent {
				sig := syscall.SIGTERM
				if parsed, err := signal.ParseSignal(stopSignal(m)); err == nil {
					sig = parsed
				}
				if err := task.Kill(ctx, sig); err != nil && !goneNow(err) {
					s.stopSignaled.Delete(id)
					return err
				}
			}
			select {
			case <-exitC:
			case <-time.After(timeout):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if err := task.Kill(ctx, syscall.SIGKILL); err != nil && !goneNow(err) {
			return err
		}
		select {
		case <-exitC:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	// Record the exit now, not when the event arrives: the caller reads
	// the container's status next.
	return s.reap(ctx, c)
}
