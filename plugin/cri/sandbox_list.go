package cri

import (
	"context"
	"google.golang.org/grpc"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ListPodSandbox lists pods, filtered by ID (or prefix), state and labels,
// from the records in memory.
func (s *Service) ListPodSandbox(ctx context.Context, r *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	f := r.GetFilter()
	var metas []*sandboxMeta
	if f.GetId() != "" {
		id, err := s.names.resolve(kindSandbox, f.GetId())
		if err != nil {
			return &runtimeapi.ListPodSandboxResponse{}, nil
		}
		if m, ok := s.records.sandbox(id); ok {
			metas = append(metas, m)
		}
	} else {
		metas = s.records.allSandboxes()
	}
	resp := &runtimeapi.ListPodSandboxResponse{Items: make([]*runtimeapi.PodSandbox, 0, len(metas))}
	for _, m := range metas {
		state := s.listedSandboxState(m)
		if f.GetState() != nil && f.GetState().GetState() != state {
			continue
		}
		if !labelsMatch(m.config.GetLabels(), f.GetLabelSelector()) {
			continue
		}
		resp.Items = append(resp.Items, &runtimeapi.PodSandbox{
			Id:             m.ID,
			Metadata:       m.config.GetMetadata(),
			State:          state,
			CreatedAt:      m.CreatedAt,
			Labels:         m.config.GetLabels(),
			Annotations:    m.config.GetAnnotations(),
			RuntimeHandler: m.RuntimeHandler,
		})
	}
	return resp, nil
}

func labelsMatch(labels, selector map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// StreamPodSandboxes is ListPodSandbox in pages.
func (s *Service) StreamPodSandboxes(r *runtimeapi.StreamPodSandboxesRequest, stream grpc.ServerStreamingServer[runtimeapi.StreamPodSandboxesResponse]) error {
	resp, err := s.ListPodSandbox(stream.Context(), &runtimeapi.ListPodSandboxRequest{Filter: r.GetFilter()})
	if err != nil {
		return err
	}
	return sendPages(stream, resp.GetItems(), func(p []*runtimeapi.PodSandbox) *runtimeapi.StreamPodSandboxesResponse {
		return &runtimeapi.StreamPodSandboxesResponse{PodSandboxes: p}
	})
}
