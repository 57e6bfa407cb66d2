package cri

import (
	"context"
	"encoding/json"
	"google.golang.org/grpc"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ListImages lists images, optionally only the one a filter names.
func (s *Service) ListImages(ctx context.Context, r *runtimeapi.ListImagesRequest) (*runtimeapi.ListImagesResponse, error) {
	ctx = s.nsContext(ctx)
	var list []*criImage
	if ref := r.GetFilter().GetImage().GetImage(); ref != "" {
		ci, err := s.images.find(ctx, ref)
		if err == nil {
			list = append(list, ci)
		}
	} else {
		var err error
		if list, err = s.images.list(ctx); err != nil {
			return nil, toStatus(err)
		}
	}
	resp := &runtimeapi.ListImagesResponse{}
	for _, ci := range list {
		img, err := s.images.toCRI(ctx, ci)
		if err != nil {
			continue // content removed underneath: not a usable image
		}
		resp.Images = append(resp.Images, img)
	}
	return resp, nil
}

// imageConfig reads an image's OCI config.
func imageConfig(ctx context.Context, img containerd.Image) (*ocispec.Image, error) {
	desc, err := img.Config(ctx)
	if err != nil {
		return nil, err
	}
	data, err := content.ReadBlob(ctx, img.ContentStore(), desc)
	if err != nil {
		return nil, err
	}
	var cfg ocispec.Image
	return &cfg, json.Unmarshal(data, &cfg)
}

// StreamImages is ListImages in pages.
func (s *Service) StreamImages(r *runtimeapi.StreamImagesRequest, stream grpc.ServerStreamingServer[runtimeapi.StreamImagesResponse]) error {
	resp, err := s.ListImages(stream.Context(), &runtimeapi.ListImagesRequest{Filter: r.GetFilter()})
	if err != nil {
		return err
	}
	return sendPages(stream, resp.GetImages(), func(p []*runtimeapi.Image) *runtimeapi.StreamImagesResponse {
		return &runtimeapi.StreamImagesResponse{Images: p}
	})
}
