package cri

import (
	"context"
	"fmt"

	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// RemoveImage removes an image by tag, digest or ID, with all its names;
// an image already gone is no error.
func (s *Service) RemoveImage(ctx context.Context, r *runtimeapi.RemoveImageRequest) (*runtimeapi.RemoveImageResponse, error) {
	ctx = s.nsContext(ctx)
	ci, err := s.images.find(ctx, r.GetImage().GetImage())
	if errdefs.IsNotFound(err) {
		return &runtimeapi.RemoveImageResponse{}, nil
	}
	if err != nil {
		return nil, toStatus(err)
	}
	// An image mounted as a volume stays while a container mounts it.
	if users := s.imageVolumeUsers(ci.id); len(users) > 0 {
		return nil, toStatus(errdefs.ErrFailedPrecondition.WithMessage(fmt.Sprintf("image %s is mounted as a volume by container %s", r.GetImage().GetImage(), users[0])))
	}
	names := append(append([]string{}, ci.tags...), ci.digests...)
	names = append(names, ci.id) // last: the content is released with it
	store := s.client.ImageService()
	for i, name := range names {
		var opts []images.DeleteOpt
		if i == len(names)-1 {
			opts = append(opts, images.SynchronousDelete())
		}
		if err := store.Delete(ctx, name, opts...); err != nil && !errdefs.IsNotFound(err) {
			return nil, toStatus(err)
		}
	}
	s.users.forget(ci.target.Digest)
	return &runtimeapi.RemoveImageResponse{}, nil
}
