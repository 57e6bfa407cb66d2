package cri

import (
	"context"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// UpdatePodSandboxResources records a pod's new resources after kubelet
// resized it in place, in its CRI config, so that they survive a restart
// and show in the verbose status; NRI plugins are asked first. It leaves
// the pod's cgroup alone, as containerd's CRI does: kubelet has set it
// before the call, to the resources plus the overhead, while Resources
// here leaves the overhead out (and writing a memory limit would also
// set swap to it, undoing kubelet's per-container swap).
func (s *Service) UpdatePodSandboxResources(ctx context.Context, r *runtimeapi.UpdatePodSandboxResourcesRequest) (*runtimeapi.UpdatePodSandboxResourcesResponse, error) {
	ctx = s.nsContext(ctx)
	id, err := s.names.resolve(kindSandbox, r.GetPodSandboxId())
	if err != nil {
		return nil, toStatus(err)
	}
	unlock := s.lock(id)
	defer unlock()
	c, m, err := s.loadSandbox(ctx, id)
	if err != nil {
		return nil, toStatus(err)
	}
	if err := s.nriUpdatePod(ctx, m, r.GetOverhead(), r.GetResources()); err != nil {
		return nil, toStatus(err)
	}
	if m.config.Linux == nil {
		m.config.Linux = &runtimeapi.LinuxPodSandboxConfig{}
	}
	m.config.Linux.Overhead = r.GetOverhead()
	m.config.Linux.Resources = r.GetResources()
	if m.Config, err = proto.Marshal(m.config); err != nil {
		return nil, toStatus(err)
	}
	if err := s.saveSandbox(ctx, c, m); err != nil {
		return nil, toStatus(err)
	}
	s.nriPodUpdated(ctx, m)
	return &runtimeapi.UpdatePodSandboxResourcesResponse{}, nil
}
