package cri

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/mine-runtime/mine/plugin/podns"
)

// StopPodSandbox stops the pod's containers and releases its network and
// namespaces. Stopping a stopped or unknown pod does nothing.
func (s *Service) StopPodSandbox(ctx context.Context, r *runtimeapi.StopPodSandboxRequest) (*runtimeapi.StopPodSandboxResponse, error) {
	ctx = s.nsContext(ctx)
	defer s.nri.BlockSync()() // a plugin that connects meanwhile hears of what this does
	id, err := s.names.resolve(kindSandbox, r.GetPodSandboxId())
	if errdefs.IsNotFound(err) {
		// A pod that is gone is as stopped as it gets: the CRI wants
		// StopPodSandbox idempotent.
		return &runtimeapi.StopPodSandboxResponse{}, nil
	}
	if err != nil {
		return nil, toStatus(err)
	}
	if err := s.stopSandbox(ctx, id); err != nil && !errdefs.IsNotFound(err) {
		return nil, toStatus(err)
	}
	return &runtimeapi.StopPodSandboxResponse{}, nil
}

func (s *Service) stopSandbox(ctx context.Context, id string) error {
	// An init starting in the background is waited for, then stopped.
	unlockInit := s.lock(initLock(id))
	defer unlockInit()
	unlock := s.lock(id)
	defer unlock()
	c, m, err := s.loadSandbox(ctx, id)
	if err != nil {
		return err
	}
	// The containers are killed at once, not one after another; then the
	// init goes while CNI DEL runs: the netns is pinned, so the network's
	// teardown needs no process of the pod, and a pod's stop costs its
	// slowest step rather than the sum of them.
	var stops errgroup.Group
	for _, cid := range s.containersOf(ctx, id) {
		stops.Go(func() error {
			if err := s.stopContainer(ctx, cid, 0); err != nil {
				return fmt.Errorf("stop container %s of pod %s: %w", cid, id, err)
			}
			return nil
		})
	}
	if err := stops.Wait(); err != nil {
		return err
	}
	// A ready pod holds its namespaces and network; so does one kept,
	// NOTREADY, after a failed RunPodSandbox whose CNI DEL failed too.
	holds := m.Ready || m.NetworkLeft
	if m.Ready {
		// Only the stop that ends the pod: a second is not news.
		s.nriPodStopped(ctx, m)
		// Listed NOTREADY from here on; its init's exit is no news
		// either (watchExits): this stop publishes the pod stopped.
		s.records.markLost(id)
	}
	var teardown errgroup.Group
	teardown.Go(func() error {
		// The pod's shim goes with its init: its figures, read otherwise
		// only when scraped, are read a last time, so that its log lines
		// are all counted.
		if st, ok := s.shimFiguresVia(ctx, id); ok {
			s.shims.observe(id, st, time.Now())
		}
		if err := deleteTask(ctx, c); err != nil {
			return fmt.Errorf("stop the init of pod %s: %w", id, err)
		}
		return nil
	})
	if holds && m.Namespaces.Net != "" {
		teardown.Go(func() error { return s.network.teardown(ctx, id, m.Namespaces.Net, m.config) })
	}
	if err := teardown.Wait(); err != nil || !holds {
		return err
	}
	state := s.sandboxStateDir(id)
	if err := unix.Unmount(filepath.Join(state, "shm"), unix.MNT_DETACH); err != nil && err != unix.EINVAL && !os.IsNotExist(err) {
		log.G(ctx).WithError(err).Warn("unmount pod /dev/shm")
	}
	if err := podns.Remove(m.Namespaces); err != nil {
		return err
	}
	m.Ready, m.NetworkLeft = false, false
	if err := s.saveSandbox(ctx, c, m); err != nil {
		return err
	}
	s.publish(ctx, id, id, runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT)
	return nil
}
