package cri

import (
	"context"
	"fmt"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	ocispec "github.com/mine-runtime/mine/plugin/spec"
)

// UpdatePodSandboxResources applies a pod's new resources after kubelet
// resized it in place: to the pod's cgroup (its cgroup parent, which
// kubelet has usually set already: writing the same values again changes
// nothing, and a pod whose cgroup kubelet left behind gets them), and to
// its CRI config, so that they survive a restart and show in the verbose
// status. NRI plugins are asked first. containerd's CRI only records them;
// the CRI asks for both.
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
	if parent := m.config.GetLinux().GetCgroupParent(); parent != "" && r.GetResources() != nil {
		res := &specs.LinuxResources{}
		ocispec.ApplyResources(res, r.GetResources(), s.host)
		if err := applyCgroup(parent, res); err != nil {
			return nil, toStatus(fmt.Errorf("pod cgroup %s: %w", parent, err))
		}
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

// applyCgroup sets CPU and memory resources on an existing cgroup path
// (kubelet's cgroupfs parent, or a systemd slice's whole path).
func applyCgroup(path string, res *specs.LinuxResources) error {
	if cgroups.Mode() == cgroups.Unified {
		m, err := cgroup2.Load(path)
		if err != nil {
			return err
		}
		return m.Update(cgroup2.ToResources(res))
	}
	cg, err := cgroup1.Load(cgroup1.StaticPath(path))
	if err != nil {
		return err
	}
	return cg.Update(res)
}
