package cri

import (
	"context"
	"encoding/json"

	containerd "github.com/containerd/containerd/v2/client"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ContainerStatus reports a container's state, exit, mounts and log path.
func (s *Service) ContainerStatus(ctx context.Context, r *runtimeapi.ContainerStatusRequest) (*runtimeapi.ContainerStatusResponse, error) {
	ctx = s.nsContext(ctx)
	c, m, err := s.findContainer(ctx, r.GetContainerId())
	if err != nil {
		return nil, toStatus(err)
	}
	id := m.ID
	state, pid := s.containerState(ctx, c, m)
	if state == runtimeapi.ContainerState_CONTAINER_EXITED && m.FinishedAt == 0 {
		// Exited, and the event saying so not handled yet: record the exit
		// now, so the status carries its code and reason.
		if err := s.reap(ctx, c); err != nil {
			return nil, toStatus(err)
		}
		if _, m, err = s.loadContainer(ctx, id); err != nil {
			return nil, toStatus(err)
		}
	}
	cfg := m.config
	st := &runtimeapi.ContainerStatus{
		Id:          id,
		Metadata:    cfg.GetMetadata(),
		State:       state,
		CreatedAt:   m.CreatedAt,
		StartedAt:   m.StartedAt,
		FinishedAt:  m.FinishedAt,
		ExitCode:    m.ExitCode,
		Image:       cfg.GetImage(),
		ImageRef:    m.ImageID,
		ImageId:     m.ImageID,
		Reason:      m.Reason,
		Message:     m.Message,
		Labels:      cfg.GetLabels(),
		Annotations: cfg.GetAnnotations(),
		Mounts:      cfg.GetMounts(),
		LogPath:     m.LogPath,
	}
	if res := cfg.GetLinux().GetResources(); res != nil {
		st.Resources = &runtimeapi.ContainerResources{Linux: res}
	}
	resp := &runtimeapi.ContainerStatusResponse{Status: st}
	if r.Verbose {
		info, _ := json.Marshal(map[string]any{"sandboxID": m.SandboxID, "pid": pid, "imageRef": m.ImageRef})
		resp.Info = map[string]string{"info": string(info)}
	}
	return resp, nil
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

// containerState derives the CRI state from the recorded exit and the
// containerd task, and returns the task's pid while it runs.
func (s *Service) containerState(ctx context.Context, c containerd.Container, m *containerMeta) (runtimeapi.ContainerState, uint32) {
	if m.FinishedAt != 0 {
		return runtimeapi.ContainerState_CONTAINER_EXITED, 0
	}
	if m.StartedAt == 0 {
		return runtimeapi.ContainerState_CONTAINER_CREATED, 0
	}
	task, err := c.Task(ctx, nil)
	if err != nil {
		return runtimeapi.ContainerState_CONTAINER_UNKNOWN, 0
	}
	st, err := task.Status(ctx)
	if err != nil {
		return runtimeapi.ContainerState_CONTAINER_UNKNOWN, 0
	}
	switch st.Status {
	case containerd.Running, containerd.Paused, containerd.Pausing:
		return runtimeapi.ContainerState_CONTAINER_RUNNING, task.Pid()
	case containerd.Stopped:
		return runtimeapi.ContainerState_CONTAINER_EXITED, 0
	}
	return runtimeapi.ContainerState_CONTAINER_UNKNOWN, 0
}
