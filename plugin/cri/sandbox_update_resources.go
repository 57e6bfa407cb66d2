package cri

import (
	"context"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// UpdatePodSandboxResources takes note of a pod's new resources after
// kubelet resized it in place. kubelet sets the pod's cgroup itself; as
// containerd's CRI does (without NRI), the runtime records the pod's
// resources and overhead, here in its CRI config, so that they survive a
// restart and show in the verbose status. NRI plugins are asked first.
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
