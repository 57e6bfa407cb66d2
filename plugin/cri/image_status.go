package cri

import (
	"context"
	"encoding/json"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ImageStatus describes an image; an unknown image is no error, just no
// image.
func (s *Service) ImageStatus(ctx context.Context, r *runtimeapi.ImageStatusRequest) (*runtimeapi.ImageStatusResponse, error) {
	ctx = s.nsContext(ctx)
	ci, err := s.images.find(ctx, r.GetImage().GetImage())
	if errdefs.IsNotFound(err) {
		return &runtimeapi.ImageStatusResponse{}, nil
	}
	if err != nil {
		return nil, toStatus(err)
	}
	img, err := s.images.toCRI(ctx, ci)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &runtimeapi.ImageStatusResponse{Image: img}
	if r.Verbose {
		info, _ := json.Marshal(map[string]any{"target": ci.target, "names": append(append([]string{ci.id}, ci.tags...), ci.digests...)})
		resp.Info = map[string]string{"info": string(info)}
	}
	return resp, nil
}
