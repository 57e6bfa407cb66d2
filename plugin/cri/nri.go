package cri

import (
	"context"
	"errors"
	"fmt"
	"maps"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/containerd/nri/pkg/adaptation"
	"github.com/containerd/nri/pkg/api"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/mine-runtime/mine/plugin/cdi"
	"github.com/mine-runtime/mine/plugin/nri"
	ocispec "github.com/mine-runtime/mine/plugin/spec"
)

// NRI at the points of a pod's and a container's life where containerd's
// CRI tells it, so that NRI plugins written for containerd work as they
// do there:
//   - RunPodSandbox: once the pod's network and init are up, before it is
//     recorded; a plugin's error fails the pod, which is undone.
//   - CreateContainer: with the spec built, before the container is
//     recorded; plugins' adjustments go into the spec, their updates to
//     other containers are applied. A plugin's error fails the create.
//   - StartContainer: between runc create and start; PostStart after.
//   - UpdateContainerResources / UpdatePodSandboxResources: plugins may
//     change the resources before they are applied.
//   - StopContainer: once per container, when its exit is recorded (its
//     own, or StopContainer's), or at removal for one that never ran.
//   - StopPodSandbox: after the pod's containers stopped, before its
//     network goes, on the stop that ends a ready pod only.
//   - RemoveContainer / RemovePodSandbox: before the records go.
// Notifications (stop, remove, post-*) are logged when a plugin fails
// them: the pod or container is going or has gone regardless.

// nriPod is a pod as NRI plugins see it.
func (s *Service) nriPod(m *sandboxMeta) *api.PodSandbox {
	cfg := m.config
	md := cfg.GetMetadata()
	p := &api.PodSandbox{
		Id:             m.ID,
		Name:           md.GetName(),
		Uid:            md.GetUid(),
		Namespace:      md.GetNamespace(),
		Labels:         maps.Clone(cfg.GetLabels()),
		Annotations:    maps.Clone(cfg.GetAnnotations()),
		RuntimeHandler: m.RuntimeHandler,
		Ips:            m.IPs,
		Linux: &api.LinuxPodSandbox{
			CgroupParent: cfg.GetLinux().GetCgroupParent(),
			PodResources: s.nriResources(cfg.GetLinux().GetResources()),
			PodOverhead:  s.nriResources(cfg.GetLinux().GetOverhead()),
		},
	}
	for _, ns := range [][2]string{{"network", m.Namespaces.Net}, {"ipc", m.Namespaces.IPC}, {"uts", m.Namespaces.UTS}, {"pid", m.Namespaces.PID}, {"user", m.Namespaces.User}} {
		if ns[1] != "" {
			p.Linux.Namespaces = append(p.Linux.Namespaces, &api.LinuxNamespace{Type: ns[0], Path: ns[1]})
		}
	}
	if m.Init != nil {
		p.Pid = uint32(m.Init.Pid)
	}
	return p
}

// nriResources turns CRI resources into NRI's; nil stays nil.
func (s *Service) nriResources(r *runtimeapi.LinuxContainerResources) *api.LinuxResources {
	if r == nil {
		return nil
	}
	oci := &specs.LinuxResources{}
	ocispec.ApplyResources(oci, r, s.host)
	return api.FromOCILinuxResources(oci, nil)
}

// nriContainer is a container as NRI plugins see it, from its record and
// spec (nil: its record's, read now).
func (s *Service) nriContainer(ctx context.Context, c containerd.Container, m *containerMeta, spec *specs.Spec) *api.Container {
	if spec == nil && c != nil {
		spec, _ = c.Spec(ctx)
	}
	out := &api.Container{
		Id:            m.ID,
		PodSandboxId:  m.SandboxID,
		Name:          m.config.GetMetadata().GetName(),
		Labels:        maps.Clone(m.config.GetLabels()),
		CreatedAt:     m.CreatedAt,
		StartedAt:     m.StartedAt,
		FinishedAt:    m.FinishedAt,
		ExitCode:      m.ExitCode,
		StatusReason:  m.Reason,
		StatusMessage: m.Message,
	}
	switch {
	case m.FinishedAt != 0:
		out.State = api.ContainerState_CONTAINER_STOPPED
	case m.StartedAt != 0:
		out.State = api.ContainerState_CONTAINER_RUNNING
		if m.Process != nil {
			out.Pid = uint32(m.Process.Pid)
		}
	default:
		out.State = api.ContainerState_CONTAINER_CREATED
	}
	if spec == nil {
		out.Annotations = maps.Clone(m.config.GetAnnotations())
		return out
	}
	out.Annotations = maps.Clone(spec.Annotations)
	if p := spec.Process; p != nil {
		out.Args = append([]string(nil), p.Args...)
		out.Env = append([]string(nil), p.Env...)
		for _, l := range p.Rlimits {
			out.Rlimits = append(out.Rlimits, &api.POSIXRlimit{Type: l.Type, Hard: l.Hard, Soft: l.Soft})
		}
	}
	out.Mounts = api.FromOCIMounts(spec.Mounts)
	out.Hooks = api.FromOCIHooks(spec.Hooks)
	if l := spec.Linux; l != nil {
		out.Linux = &api.LinuxContainer{
			Namespaces:  api.FromOCILinuxNamespaces(l.Namespaces),
			Devices:     api.FromOCILinuxDevices(l.Devices),
			Resources:   api.FromOCILinuxResources(l.Resources, spec.Annotations),
			CgroupsPath: l.CgroupsPath,
			Sysctl:      maps.Clone(l.Sysctl),
		}
		if p := spec.Process; p != nil {
			if p.OOMScoreAdj != nil {
				out.Linux.OomScoreAdj = api.Int(*p.OOMScoreAdj)
			}
			out.Linux.IoPriority = api.FromOCILinuxIOPriority(p.IOPriority)
		}
	}
	return out
}

// nriPodOf is the pod of a container for an NRI request, as recorded.
func (s *Service) nriPodOf(sandboxID string) *api.PodSandbox {
	if sb, ok := s.records.sandbox(sandboxID); ok {
		return s.nriPod(sb)
	}
	return &api.PodSandbox{Id: sandboxID}
}

// nriRunPod asks plugins about a pod being made.
func (s *Service) nriRunPod(ctx context.Context, m *sandboxMeta) error {
	if !s.nri.Active() {
		return nil
	}
	if err := s.nri.RunPodSandbox(ctx, &api.RunPodSandboxRequest{Pod: s.nriPod(m)}); err != nil {
		return fmt.Errorf("NRI: %w", err)
	}
	return nil
}

// nriPodStopped tells plugins a pod stopped, nriPodRemoved that it is
// removed.
func (s *Service) nriPodStopped(ctx context.Context, m *sandboxMeta) {
	if s.nri.Active() {
		notified(ctx, "StopPodSandbox", m.ID, s.nri.StopPodSandbox(ctx, &api.StopPodSandboxRequest{Pod: s.nriPod(m)}))
	}
}

func (s *Service) nriPodRemoved(ctx context.Context, m *sandboxMeta) {
	if s.nri.Active() {
		notified(ctx, "RemovePodSandbox", m.ID, s.nri.RemovePodSandbox(ctx, &api.RemovePodSandboxRequest{Pod: s.nriPod(m)}))
	}
}

// nriUpdatePod asks plugins about a pod's new resources; nriPodUpdated
// tells them they are recorded.
func (s *Service) nriUpdatePod(ctx context.Context, m *sandboxMeta, overhead, resources *runtimeapi.LinuxContainerResources) error {
	if !s.nri.Active() {
		return nil
	}
	_, err := s.nri.UpdatePodSandbox(ctx, &api.UpdatePodSandboxRequest{
		Pod:                    s.nriPod(m),
		OverheadLinuxResources: s.nriResources(overhead),
		LinuxResources:         s.nriResources(resources),
	})
	if err != nil {
		return fmt.Errorf("NRI: %w", err)
	}
	return nil
}

func (s *Service) nriPodUpdated(ctx context.Context, m *sandboxMeta) {
	if s.nri.Active() {
		notified(ctx, "PostUpdatePodSandbox", m.ID, s.nri.PostUpdatePodSandbox(ctx, &api.PostUpdatePodSandboxRequest{Pod: s.nriPod(m)}))
	}
}

// nriCreateContainer asks plugins about a container being created and
// applies their adjustments to its spec. The caller holds NRI's sync
// block until the container is recorded, and the pod's lock: the updates
// of other containers are applied here, taking their locks after the
// pod's, as every path takes them.
func (s *Service) nriCreateContainer(ctx context.Context, sb *sandboxMeta, m *containerMeta, spec *specs.Spec) error {
	if !s.nri.Active() {
		return nil
	}
	resp, err := s.nri.CreateContainer(ctx, &api.CreateContainerRequest{Pod: s.nriPod(sb), Container: s.nriContainer(ctx, nil, m, spec)})
	if err != nil {
		return fmt.Errorf("NRI: %w", err)
	}
	dirs := s.config().CDISpecDirs
	if err := nri.Adjust(spec, resp.GetAdjust(), func(spec *specs.Spec, names []string) error { return cdi.Inject(spec, dirs, names) }); err != nil {
		return errdefs.ErrInvalidArgument.WithMessage(fmt.Sprintf("NRI adjustment: %v", err))
	}
	if failed := s.applyNRIUpdates(ctx, resp.GetUpdate()); len(failed) > 0 {
		return fmt.Errorf("NRI: update of container %s failed", failed[0].GetContainerId())
	}
	s.evict(ctx, resp.GetEvict())
	return nil
}

// nriContainerCreated, nriStartContainer, nriContainerStarted tell plugins
// a container was created, is about to start (a failure fails the start),
// has started.
func (s *Service) nriContainerCreated(ctx context.Context, m *containerMeta, spec *specs.Spec) {
	if s.nri.Active() {
		notified(ctx, "PostCreateContainer", m.ID, s.nri.PostCreateContainer(ctx, &api.PostCreateContainerRequest{
			Pod: s.nriPodOf(m.SandboxID), Container: s.nriContainer(ctx, nil, m, spec)}))
	}
}

func (s *Service) nriStartContainer(ctx context.Context, c containerd.Container, m *containerMeta, pid uint32) error {
	if !s.nri.Active() {
		return nil
	}
	ctr := s.nriContainer(ctx, c, m, nil)
	ctr.Pid = pid
	if err := s.nri.StartContainer(ctx, &api.StartContainerRequest{Pod: s.nriPodOf(m.SandboxID), Container: ctr}); err != nil {
		return fmt.Errorf("NRI: %w", err)
	}
	return nil
}

func (s *Service) nriContainerStarted(ctx context.Context, c containerd.Container, m *containerMeta) {
	if s.nri.Active() {
		notified(ctx, "PostStartContainer", m.ID, s.nri.PostStartContainer(ctx, &api.PostStartContainerRequest{
			Pod: s.nriPodOf(m.SandboxID), Container: s.nriContainer(ctx, c, m, nil)}))
	}
}

// nriContainerStopped tells plugins a container stopped; the updates of
// other containers they answer with are applied off this path, which
// holds the container's locks.
func (s *Service) nriContainerStopped(ctx context.Context, c containerd.Container, m *containerMeta) {
	if !s.nri.Active() {
		return
	}
	resp, err := s.nri.StopContainer(ctx, &api.StopContainerRequest{Pod: s.nriPodOf(m.SandboxID), Container: s.nriContainer(ctx, c, m, nil)})
	notified(ctx, "StopContainer", m.ID, err)
	if updates := resp.GetUpdate(); len(updates) > 0 {
		go s.applyNRIUpdates(context.WithoutCancel(ctx), updates)
	}
}

func (s *Service) nriContainerRemoved(ctx context.Context, c containerd.Container, m *containerMeta) {
	if s.nri.Active() {
		notified(ctx, "RemoveContainer", m.ID, s.nri.RemoveContainer(ctx, &api.RemoveContainerRequest{
			Pod: s.nriPodOf(m.SandboxID), Container: s.nriContainer(ctx, c, m, nil)}))
	}
}

// nriUpdateContainer asks plugins about a container's new resources and
// returns them as the plugins left them; the other containers' updates
// they ask for are applied.
func (s *Service) nriUpdateContainer(ctx context.Context, c containerd.Container, m *containerMeta, spec *specs.Spec, res *specs.LinuxResources) (*specs.LinuxResources, error) {
	if !s.nri.Active() {
		return res, nil
	}
	resp, err := s.nri.UpdateContainer(ctx, &api.UpdateContainerRequest{
		Pod:            s.nriPodOf(m.SandboxID),
		Container:      s.nriContainer(ctx, c, m, spec),
		LinuxResources: api.FromOCILinuxResources(res, spec.Annotations),
	})
	if err != nil {
		return nil, fmt.Errorf("NRI: %w", err)
	}
	var others []*api.ContainerUpdate
	for _, u := range resp.GetUpdate() {
		if u.GetContainerId() == m.ID {
			if r := u.GetLinux().GetResources(); r != nil {
				mergeResources(res, r.ToOCI())
			}
			continue
		}
		others = append(others, u)
	}
	if len(others) > 0 {
		// Off this path, which holds the container's lock: the others'
		// updates take theirs.
		go s.applyNRIUpdates(context.WithoutCancel(ctx), others)
	}
	s.evict(ctx, resp.GetEvict())
	return res, nil
}

func (s *Service) nriContainerUpdated(ctx context.Context, c containerd.Container, m *containerMeta) {
	if s.nri.Active() {
		notified(ctx, "PostUpdateContainer", m.ID, s.nri.PostUpdateContainer(ctx, &api.PostUpdateContainerRequest{
			Pod: s.nriPodOf(m.SandboxID), Container: s.nriContainer(ctx, c, m, nil)}))
	}
}

// nriSync hands a plugin that connects every pod and container there is.
// It runs with NRI's sync lock held: no pod or container is being made.
func (s *Service) nriSync(ctx context.Context, cb adaptation.SyncCB) error {
	ctx = s.nsContext(ctx)
	var pods []*api.PodSandbox
	for _, m := range s.records.allSandboxes() {
		pods = append(pods, s.nriPod(m))
	}
	var ctrs []*api.Container
	for _, m := range s.records.allContainers() {
		c, err := s.client.LoadContainer(ctx, m.ID)
		if err != nil {
			continue // removed meanwhile
		}
		ctrs = append(ctrs, s.nriContainer(ctx, c, m, nil))
	}
	updates, err := cb(ctx, pods, ctrs)
	if err != nil {
		return err
	}
	// A failed update is logged (applyNRIUpdates) and the plugin kept, as
	// containerd keeps it: failing the sync would drop it, and a
	// pre-installed plugin's would fail the daemon's start.
	s.applyNRIUpdates(ctx, updates)
	return nil
}

// nriUpdate applies the updates a plugin asks for of its own accord and
// returns those that failed.
func (s *Service) nriUpdate(ctx context.Context, updates []*api.ContainerUpdate) ([]*api.ContainerUpdate, error) {
	return s.applyNRIUpdates(s.nsContext(ctx), updates), nil
}

// applyNRIUpdates applies plugins' resource updates to containers and
// returns those that failed, ignore_failure ones aside.
func (s *Service) applyNRIUpdates(ctx context.Context, updates []*api.ContainerUpdate) []*api.ContainerUpdate {
	var failed []*api.ContainerUpdate
	for _, u := range updates {
		res := u.GetLinux().GetResources()
		if res == nil {
			continue
		}
		_, _, err := s.updateResources(ctx, u.GetContainerId(), func(_ containerd.Container, _ *containerMeta, _ *specs.Spec, r *specs.LinuxResources) (*specs.LinuxResources, error) {
			mergeResources(r, res.ToOCI())
			return r, nil
		}, nil)
		if err != nil {
			log.G(ctx).WithError(err).WithField("id", u.GetContainerId()).Warn("NRI plugin's update of a container failed")
			if !u.GetIgnoreFailure() {
				failed = append(failed, u)
			}
		}
	}
	return failed
}

// evict stops the containers plugins ask to be evicted; kubelet then
// applies the pod's restart policy.
func (s *Service) evict(ctx context.Context, evictions []*api.ContainerEviction) {
	for _, e := range evictions {
		log.G(ctx).WithField("id", e.GetContainerId()).WithField("reason", e.GetReason()).Warn("NRI plugin evicts container")
		go func() {
			if err := s.stopContainer(context.WithoutCancel(ctx), e.GetContainerId(), 0); err != nil && !errdefs.IsNotFound(err) {
				log.G(ctx).WithError(err).WithField("id", e.GetContainerId()).Warn("evict container")
			}
		}()
	}
}

// notified logs a plugin's failure of a notification.
func notified(ctx context.Context, event, id string, err error) {
	if err != nil && !errors.Is(err, context.Canceled) {
		log.G(ctx).WithError(err).WithField("id", id).Warnf("NRI %s", event)
	}
}

// mergeResources sets in dst what src sets: NRI's updates name the
// resources they change.
func mergeResources(dst, src *specs.LinuxResources) {
	if src == nil {
		return
	}
	if c := src.CPU; c != nil {
		if dst.CPU == nil {
			dst.CPU = &specs.LinuxCPU{}
		}
		d := dst.CPU
		set(&d.Shares, c.Shares)
		set(&d.Quota, c.Quota)
		set(&d.Period, c.Period)
		set(&d.RealtimeRuntime, c.RealtimeRuntime)
		set(&d.RealtimePeriod, c.RealtimePeriod)
		if c.Cpus != "" {
			d.Cpus = c.Cpus
		}
		if c.Mems != "" {
			d.Mems = c.Mems
		}
	}
	if m := src.Memory; m != nil {
		if dst.Memory == nil {
			dst.Memory = &specs.LinuxMemory{}
		}
		d := dst.Memory
		swapFollowed := d.Swap != nil && d.Limit != nil && *d.Swap == *d.Limit
		set(&d.Limit, m.Limit)
		set(&d.Reservation, m.Reservation)
		set(&d.Swap, m.Swap)
		// A new limit alone: memory+swap follows it where it equalled the
		// old limit (no swap, as the spec was made) or would now be below
		// it, which runc refuses.
		if m.Limit != nil && m.Swap == nil && d.Swap != nil && (swapFollowed || (*d.Swap >= 0 && *d.Swap < *d.Limit)) {
			limit := *d.Limit
			d.Swap = &limit
		}
		set(&d.Swappiness, m.Swappiness)
		set(&d.DisableOOMKiller, m.DisableOOMKiller)
		set(&d.UseHierarchy, m.UseHierarchy)
	}
	if src.Pids != nil {
		dst.Pids = src.Pids
	}
	if src.BlockIO != nil {
		dst.BlockIO = src.BlockIO
	}
	if len(src.HugepageLimits) > 0 {
		dst.HugepageLimits = src.HugepageLimits
	}
	if len(src.Unified) > 0 {
		if dst.Unified == nil {
			dst.Unified = map[string]string{}
		}
		maps.Copy(dst.Unified, src.Unified)
	}
}

func set[T any](dst **T, src *T) {
	if src != nil {
		*dst = src
	}
}
