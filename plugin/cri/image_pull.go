package cri

import (
	"context"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// PullImage pulls through containerd into the configured snapshotter.
func (s *Service) PullImage(ctx context.Context, r *runtimeapi.PullImageRequest) (*runtimeapi.PullImageResponse, error) {
	ctx = s.nsContext(ctx)
	named, err := normalize(r.GetImage().GetImage())
	if err != nil {
		return nil, toStatus(err)
	}
	id, err := s.images.pull(ctx, named, r.GetAuth())
	if err != nil {
		return nil, toStatus(err)
	}
	if err := s.pinIfSandboxImage(ctx, named); err != nil {
		return nil, toStatus(err)
	}
	return &runtimeapi.PullImageResponse{ImageRef: id}, nil
}
