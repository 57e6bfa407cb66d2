package cri

import (
	"context"
	"google.golang.org/grpc"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ListContainers lists containers, filtered by ID (or prefix), state, pod
// and labels. kubelet asks every second: the answer comes from the records
// in memory, kept current by every change and by the exit watch, without
// asking containerd's store or any shim.
func (s *Service) ListContainers(ctx context.Context, r *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	ctx = s.nsContext(ctx)
	f := r.GetFilter()
	var metas []*containerMeta
	if f.GetId() != "" {
		id, err := s.names.resolve(kindContainer, f.GetId())
		if err != nil {
			return &runtimeapi.ListContainersResponse{}, nil
		}
		if m, ok := s.records.container(id); ok {
			metas = append(metas, m)
		}
	} else {
		metas = s.records.allContainers()
	}
	sandboxID := f.GetPodSandboxId()
	if sandboxID != "" {
		full, err := s.names.resolve(kindSandbox, sandboxID)
		if err != nil {
			return &runtimeapi.ListContainersResponse{}, nil
		}
		sandboxID = full
	}
	resp := &runtimeapi.ListContainersResponse{Containers: make([]*runtimeapi.Container, 0, len(metas))}
	for _, m := range metas {
		if sandboxID != "" && m.SandboxID != sandboxID {
			continue
		}
		// Only a container recorded as created is looked at further: its
		// start may have gone unrecorded, and kubelet must not see a
		// running one as created.
		if recordedState(m) == runtimeapi.ContainerState_CONTAINER_CREATED {
			if noticed, err := s.noticeStartIfIdleByID(ctx, m); err == nil {
				m = noticed
			}
		}
		state := recordedState(m)
		if f.GetState() != nil && f.GetState().GetState() != state {
			continue
		}
		if !labelsMatch(m.config.GetLabels(), f.GetLabelSelector()) {
			continue
		}
		resp.Containers = append(resp.Containers, &runtimeapi.Container{
			Id:           m.ID,
			PodSandboxId: m.SandboxID,
			Metadata:     m.config.GetMetadata(),
			Image:        m.config.GetImage(),
			ImageRef:     m.ImageID,
			ImageId:      m.ImageID,
			State:        state,
			CreatedAt:    m.CreatedAt,
			Labels:       m.config.GetLabels(),
			Annotations:  m.config.GetAnnotations(),
		})
	}
	return resp, nil
}

// StreamContainers is ListContainers in pages.
func (s *Service) StreamContainers(r *runtimeapi.StreamContainersRequest, stream grpc.ServerStreamingServer[runtimeapi.StreamContainersResponse]) error {
	resp, err := s.ListContainers(stream.Context(), &runtimeapi.ListContainersRequest{Filter: r.GetFilter()})
	if err != nil {
		return err
	}
	return sendPages(stream, resp.GetContainers(), func(p []*runtimeapi.Container) *runtimeapi.StreamContainersResponse {
		return &runtimeapi.StreamContainersResponse{Containers: p}
	})
}
