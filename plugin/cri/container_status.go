package cri

import (
	"context"
	"encoding/json"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/log"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ContainerStatus reports a container's state, exit, image, user, stop
// signal, mounts and log path; verbose, also its OCI spec and where it
// runs.
func (s *Service) ContainerStatus(ctx context.Context, r *runtimeapi.ContainerStatusRequest) (*runtimeapi.ContainerStatusResponse, error) {
	ctx = s.nsContext(ctx)
	c, m, err := s.findContainer(ctx, r.GetContainerId())
	if err != nil {
		return nil, toStatus(err)
	}
	m, state, pid, err := s.observeContainer(ctx, c, m)
	if err != nil {
		return nil, toStatus(err)
	}
	cfg := m.config
	image, imageRef := s.containerImage(ctx, m)
	// The spec says which user the process runs as, after the image's
	// user name was resolved and groups were added.
	spec, err := c.Spec(ctx)
	if err != nil {
		log.G(ctx).WithError(err).WithField("id", m.ID).Debug("no spec to read the container's user from")
	}
	st := &runtimeapi.ContainerStatus{
		Id:          m.ID,
		Metadata:    cfg.GetMetadata(),
		State:       state,
		CreatedAt:   m.CreatedAt,
		StartedAt:   m.StartedAt,
		FinishedAt:  m.FinishedAt,
		ExitCode:    m.ExitCode,
		Image:       image,
		ImageRef:    imageRef,
		ImageId:     m.ImageID,
		Reason:      m.Reason,
		Message:     m.Message,
		Labels:      cfg.GetLabels(),
		Annotations: cfg.GetAnnotations(),
		Mounts:      withImageVolumeRefs(cfg.GetMounts(), m.ImageVolumes),
		LogPath:     m.LogPath,
		User:        containerUser(spec),
		StopSignal:  criSignal(stopSignal(m)),
	}
	if res := cfg.GetLinux().GetResources(); res != nil {
		st.Resources = &runtimeapi.ContainerResources{Linux: res}
	}
	resp := &runtimeapi.ContainerStatusResponse{Status: st}
	if r.Verbose {
		info, err := s.containerInfo(ctx, c, m, pid, imageRef, spec)
		if err != nil {
			return nil, toStatus(err)
		}
		resp.Info = map[string]string{"info": info}
	}
	return resp, nil
}

// containerImage is the image a container runs, as kubelet shows it, and
// its reference by digest, as containerd's CRI reports them: the image's
// first tag, else what the config named (kubelet names images by ID);
// its first repo digest, the one ImageStatus lists first, which kubelet
// copies into the pod's imageID. An image removed since has only its ID.
func (s *Service) containerImage(ctx context.Context, m *containerMeta) (*runtimeapi.ImageSpec, string) {
	spec := m.config.GetImage()
	ci, err := s.images.find(ctx, m.ImageID)
	if err != nil || ci.id != m.ImageID {
		return spec, m.ImageID
	}
	if len(ci.tags) > 0 {
		spec = proto.Clone(spec).(*runtimeapi.ImageSpec)
		spec.Image = ci.tags[0]
	}
	ref := m.ImageID
	if len(ci.digests) > 0 {
		ref = ci.digests[0]
	}
	return spec, ref
}

// containerUser is the user a container's process runs as, from its OCI
// spec; empty without one.
func containerUser(spec *oci.Spec) *runtimeapi.ContainerUser {
	if spec == nil || spec.Process == nil {
		return &runtimeapi.ContainerUser{}
	}
	u := spec.Process.User
	var groups []int64
	for _, g := range u.AdditionalGids {
		groups = append(groups, int64(g))
	}
	return &runtimeapi.ContainerUser{Linux: &runtimeapi.LinuxContainerUser{
		Uid:                int64(u.UID),
		Gid:                int64(u.GID),
		SupplementalGroups: groups,
	}}
}

// containerInfo is the verbose status, with the keys containerd's CRI
// uses, which crictl inspect and tools read.
type containerInfo struct {
	SandboxID      string                      `json:"sandboxID"`
	Pid            uint32                      `json:"pid"`
	ImageRef       string                      `json:"imageRef"`
	SnapshotKey    string                      `json:"snapshotKey"`
	Snapshotter    string                      `json:"snapshotter"`
	RuntimeType    string                      `json:"runtimeType"`
	RuntimeOptions any                         `json:"runtimeOptions"`
	Config         *runtimeapi.ContainerConfig `json:"config"`
	RuntimeSpec    *oci.Spec                   `json:"runtimeSpec"`
}

func (s *Service) containerInfo(ctx context.Context, c containerd.Container, m *containerMeta, pid uint32, imageRef string, spec *oci.Spec) (string, error) {
	rec, err := c.Info(ctx, containerd.WithoutRefreshedMetadata)
	if err != nil {
		return "", err
	}
	info := containerInfo{
		SandboxID:   m.SandboxID,
		Pid:         pid,
		ImageRef:    imageRef,
		SnapshotKey: rec.SnapshotKey,
		Snapshotter: rec.Snapshotter,
		RuntimeType: rec.Runtime.Name,
		Config:      m.config,
		RuntimeSpec: spec,
	}
	if rec.Runtime.Options != nil {
		if opts, err := typeurl.UnmarshalAny(rec.Runtime.Options); err == nil {
			info.RuntimeOptions = opts
		}
	}
	data, err := json.Marshal(info)
	return string(data), err
}

// recordedState is a container's state as recorded in containerd.
func recordedState(m *containerMeta) runtimeapi.ContainerState {
	switch {
	case m.FinishedAt != 0:
		return runtimeapi.ContainerState_CONTAINER_EXITED
	case m.StartedAt == 0:
		return runtimeapi.ContainerState_CONTAINER_CREATED
	}
	return runtimeapi.ContainerState_CONTAINER_RUNNING
}

// containerState is a container's CRI state, from its record and its
// containerd task, and the task's pid while it runs.
func (s *Service) containerState(ctx context.Context, c containerd.Container, m *containerMeta) (runtimeapi.ContainerState, uint32) {
	_, state, pid, err := s.observeContainer(ctx, c, m)
	if err != nil {
		return runtimeapi.ContainerState_CONTAINER_UNKNOWN, 0
	}
	return state, pid
}

// observeContainer derives the CRI state from the record and the
// containerd task. A start or an exit the task shows and the record does
// not yet is recorded first (containerd may have died before it was, or
// its event may not be handled yet), so the record returned agrees with
// the state. The pid is the task's while it runs.
func (s *Service) observeContainer(ctx context.Context, c containerd.Container, m *containerMeta) (*containerMeta, runtimeapi.ContainerState, uint32, error) {
	if noticed, err := s.noticeStartIfIdle(ctx, c, m); err != nil {
		log.G(ctx).WithError(err).WithField("id", m.ID).Warn("look for an unrecorded start")
	} else {
		m = noticed
	}
	if state := recordedState(m); state != runtimeapi.ContainerState_CONTAINER_RUNNING {
		return m, state, 0, nil
	}
	task, err := c.Task(ctx, nil)
	if err != nil {
		return m, runtimeapi.ContainerState_CONTAINER_UNKNOWN, 0, nil
	}
	st, err := task.Status(ctx)
	if err != nil {
		return m, runtimeapi.ContainerState_CONTAINER_UNKNOWN, 0, nil
	}
	switch st.Status {
	case containerd.Running, containerd.Paused, containerd.Pausing:
		return m, runtimeapi.ContainerState_CONTAINER_RUNNING, task.Pid(), nil
	case containerd.Stopped:
		// Exited, and the event saying so not handled yet: the exit is
		// recorded now, so that the status carries its code and reason.
		if err := s.reap(ctx, c); err != nil {
			return m, 0, 0, err
		}
		_, m, err = s.loadContainer(ctx, c.ID())
		if err != nil {
			return m, 0, 0, err
		}
		return m, recordedState(m), 0, nil
	}
	return m, runtimeapi.ContainerState_CONTAINER_UNKNOWN, 0, nil
}
