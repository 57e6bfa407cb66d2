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
// config, so they hold after a restart and show in ContainerStatus. NRI
// plugins may change them on the way.
func (s *Service) UpdateContainerResources(ctx context.Context, r *runtimeapi.UpdateContainerResourcesRequest) (*runtimeapi.UpdateContainerResourcesResponse, error) {
	ctx = s.nsContext(ctx)
	defer s.nri.BlockSync()() // a plugin that connects meanwhile hears of what this does
	id, err := s.names.resolve(kindContainer, r.GetContainerId())
	if err != nil {
		return nil, toStatus(err)
	}
	res := r.GetLinux()
	if res == nil {
		return &runtimeapi.UpdateContainerResourcesResponse{}, nil
	}
	c, m, err := s.updateResources(ctx, id, func(c containerd.Container, m *containerMeta, spec *specs.Spec, updated *specs.LinuxResources) (*specs.LinuxResources, error) {
		ocispec.ApplyResources(updated, res, s.host)
		return s.nriUpdateContainer(ctx, c, m, spec, updated)
	}, res)
	if err != nil {
		return nil, toStatus(err)
	}
	s.nriContainerUpdated(ctx, c, m)
	return &runtimeapi.UpdateContainerResourcesResponse{}, nil
}

// updateResources changes a container's resources, in its cgroup if it
// runs and in its spec, and, given them, its CRI config's.
func (s *Service) updateResources(ctx context.Context, id string, change func(containerd.Container, *containerMeta, *specs.Spec, *specs.LinuxResources) (*specs.LinuxResources, error), cri *runtimeapi.LinuxContainerResources) (containerd.Container, *containerMeta, error) {
	unlock := s.lock(id)
	defer unlock()
	c, m, err := s.loadContainer(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	spec, err := c.Spec(ctx)
	if err != nil {
		return nil, nil, err
	}
	if spec.Linux == nil {
		spec.Linux = &specs.Linux{}
	}
	updated := spec.Linux.Resources
	if updated == nil {
		updated = &specs.LinuxResources{}
	}
	if updated, err = change(c, m, spec, updated); err != nil {
		return nil, nil, err
	}
	if task, err := c.Task(ctx, nil); err == nil {
		if err := task.Update(ctx, containerd.WithResources(updated)); err != nil && !errdefs.IsNotFound(err) {
			return nil, nil, fmt.Errorf("update resources of %s: %w", id, err)
		}
	}
	spec.Linux.Resources = updated
	m, err = s.updateContainerMeta(ctx, c, func(m *containerMeta) {
		if cri == nil {
			return
		}
		if m.config.Linux == nil {
			m.config.Linux = &runtimeapi.LinuxContainerConfig{}
		}
		m.config.Linux.Resources = cri
		if raw, err := proto.Marshal(m.config); err == nil {
			m.Config = raw
		}
	}, containerd.UpdateContainerOpts(containerd.WithSpec(spec)))
	return c, m, err
}
