package cri

import (
	"context"
	"os"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// RemovePodSandbox stops the pod if need be and removes it with its
// containers. Removing a pod that is gone does nothing.
func (s *Service) RemovePodSandbox(ctx context.Context, r *runtimeapi.RemovePodSandboxRequest) (*runtimeapi.RemovePodSandboxResponse, error) {
	ctx = s.nsContext(ctx)
	defer s.nri.BlockSync()() // a plugin that connects meanwhile hears of what this does
	id, err := s.names.resolve(kindSandbox, r.GetPodSandboxId())
	if errdefs.IsNotFound(err) {
		return &runtimeapi.RemovePodSandboxResponse{}, nil
	}
	if err != nil {
		return nil, toStatus(err)
	}
	if err := s.stopSandbox(ctx, id); err != nil && !errdefs.IsNotFound(err) {
		return nil, toStatus(err)
	}
	for _, cid := range s.containersOf(ctx, id) {
		if err := s.removeContainer(ctx, cid); err != nil {
			return nil, toStatus(err)
		}
	}
	unlock := s.lock(id)
	defer unlock()
	c, m, err := s.loadSandbox(ctx, id)
	if err == nil {
		deleted := s.deletionEvent(ctx, id, id)
		if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
			return nil, toStatus(err)
		}
		// Once, after the pod is gone: a retried removal is no news. A
		// pod kept after a failed RunPodSandbox is none to plugins: they
		// heard of it removed then, or never of it.
		if !m.NetworkLeft {
			s.nriPodRemoved(ctx, m)
		}
		s.records.remove(id)
		s.shims.removed(id)
		s.names.release(kindSandbox, m.Name, id)
		s.queueEvent(ctx, deleted)
	} else if !errdefs.IsNotFound(err) {
		return nil, toStatus(err)
	}
	os.RemoveAll(s.sandboxStateDir(id))
	os.RemoveAll(s.sandboxDir(id))
	return &runtimeapi.RemovePodSandboxResponse{}, nil
}
