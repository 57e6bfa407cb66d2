package cri

import (
	"context"
	"os"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// RemoveContainer removes a container, stopping it first if it runs.
// Removing a container that is gone does nothing.
func (s *Service) RemoveContainer(ctx context.Context, r *runtimeapi.RemoveContainerRequest) (*runtimeapi.RemoveContainerResponse, error) {
	ctx = s.nsContext(ctx)
	defer s.nri.BlockSync()() // a plugin that connects meanwhile hears of what this does
	id, err := s.names.resolve(kindContainer, r.GetContainerId())
	if errdefs.IsNotFound(err) {
		return &runtimeapi.RemoveContainerResponse{}, nil
	}
	if err != nil {
		return nil, toStatus(err)
	}
	if err := s.removeContainer(ctx, id); err != nil {
		return nil, toStatus(err)
	}
	return &runtimeapi.RemoveContainerResponse{}, nil
}

func (s *Service) removeContainer(ctx context.Context, id string) error {
	if err := s.stopContainer(ctx, id, 0); err != nil && !errdefs.IsNotFound(err) {
		return err
	}
	unlock := s.lock(id)
	defer unlock()
	c, m, err := s.loadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if task, err := c.Task(ctx, nil); err == nil {
		if _, err := task.Delete(ctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			return err
		}
	}
	switch {
	case m.StartedAt == 0 && m.FinishedAt == 0:
		// Never ran: NRI plugins hear it stopped before it goes, as of
		// any other container.
		s.nriContainerStopped(ctx, c, m)
	case m.FinishedAt == 0:
		// Started, its exit not recorded (its task went under it): the
		// exit is recorded now, which tells NRI plugins of it once.
		if err := s.reap(ctx, c); err != nil && !errdefs.IsNotFound(err) {
			return err
		}
	}
	s.nriContainerRemoved(ctx, c, m)
	deleted := s.deletionEvent(ctx, id, m.SandboxID)
	if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		return err
	}
	s.removeImageVolumes(ctx, m.ImageVolumes)
	s.stdins.close(id)
	s.cpu.forget(id)
	s.oomKilled.Delete(id)
	s.stopSignaled.Delete(id)
	s.unpinTargetPIDNamespace(id)
	os.RemoveAll(s.containerDir(id))
	os.RemoveAll(s.containerRootDir(id))
	s.records.remove(id)
	s.stats.forget(id)
	s.names.release(kindContainer, m.Name, id)
	s.queueEvent(ctx, deleted)
	return nil
}

// containersOf lists the IDs of a pod's containers.
func (s *Service) containersOf(ctx context.Context, sandboxID string) []string {
	list, err := s.client.Containers(ctx, `labels."`+labelSandboxID+`"==`+sandboxID)
	if err != nil {
		return nil
	}
	var ids []string
	for _, c := range list {
		ids = append(ids, c.ID())
	}
	return ids
}
