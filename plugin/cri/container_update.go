package cri

import (
	"context"
	"fmt"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	ocispec "github.com/mine-runtime/mine/plugin/spec"
)

// UpdateContainerResources changes a container's CPU and memory
// resources: at once in its cgroup if it runs, and in its spec and CRI
// config, so they hold after a restart and show in ContainerStatus.
func (s *Service) UpdateContainerResources(ctx context.Context, r *runtimeapi.UpdateContainerResourcesRequest) (*runtimeapi.UpdateContainerResourcesResponse, error) {
	ctx = s.nsContext(ctx)
	id, err := s.names.resolve(kindContainer, r.GetContainerId())
	if err != nil {
		return nil, toStatus(err)
	}
	res := r.GetLinux()
	if res == nil {
		return &runtimeapi.UpdateContainerResourcesResponse{}, nil
	}
	unlock := s.lock(id)
	defer unlock()
	c, err := s.client.LoadContainer(ctx, id)
	if err != nil {
		return nil, toStatus(err)
	}
	spec, err := c.Spec(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	updated := spec.Linux.Resources
	if updated == nil {
		updated = &specs.LinuxResources{}
	}
	ocispec.ApplyResources(updated, res, s.host)
	if task, err := c.Task(ctx, nil); err == nil {
		if err := task.Update(ctx, containerd.WithResources(updated)); err != nil && !errdefs.IsNotFound(err) {
			return nil, toStatus(fmt.Errorf("update resources of %s: %w", id, err))
		}
	}
	spec.Linux.Resources = updated
	_, err = s.updateContainerMeta(ctx, c, func(m *containerMeta) {
		if m.config.Linux == nil {
			m.config.Linux = &runtimeapi.LinuxContainerConfig{}
		}
		m.config.Linux.Resources = res
		if raw, err := proto.Marshal(m.config); err == nil {
			m.Config = raw
		}
	}, containerd.UpdateContainerOpts(containerd.WithSpec(spec)))
	if err != nil {
		return nil, toStatus(err)
	}
	return &runtimeapi.UpdateContainerResourcesResponse{}, nil
}
