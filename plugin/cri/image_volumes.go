package cri

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/opencontainers/image-spec/identity"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// imageVolume is an image mounted read-only into a container (KEP-4639):
// a view snapshot of the image, mounted on the host at Target and bound
// into the container from there (its subpath, if one was asked for).
type imageVolume struct {
	ContainerPath string
	ImageID       string // the image's config digest, its ImageRef in status
	Snapshot      string // the view's key
	Target        string // where the view is mounted on the host
}

// prepareImageVolumes mounts the images a container's config asks to be
// mounted, and returns the volumes with the config the spec is made from,
// in which each such mount is a read-only bind mount of its view. Image
// volumes are read-only and their subpath must exist: refused otherwise,
// before anything is made. On error, what was made is undone.
func (s *Service) prepareImageVolumes(ctx context.Context, id string, cfg *runtimeapi.ContainerConfig) (_ []imageVolume, specCfg *runtimeapi.ContainerConfig, retErr error) {
	var requested []int
	for i, m := range cfg.GetMounts() {
		if m.GetImage().GetImage() == "" {
			continue
		}
		if !m.GetReadonly() {
			return nil, nil, invalid(fmt.Sprintf("image volume at %s: image volumes are read-only; readonly must be true", m.GetContainerPath()))
		}
		if m.GetHostPath() != "" {
			return nil, nil, invalid(fmt.Sprintf("mount at %s: an image volume has no host path", m.GetContainerPath()))
		}
		if !filepath.IsLocal(filepath.Clean("./" + m.GetImageSubPath())) {
			return nil, nil, invalid(fmt.Sprintf("image volume at %s: subpath %q leaves the image", m.GetContainerPath(), m.GetImageSubPath()))
		}
		requested = append(requested, i)
	}
	if len(requested) == 0 {
		return nil, cfg, nil
	}
	var volumes []imageVolume
	defer func() {
		if retErr != nil {
			s.removeImageVolumes(ctx, volumes)
		}
	}()
	specCfg = proto.Clone(cfg).(*runtimeapi.ContainerConfig)
	sn := s.client.SnapshotService(s.config().Snapshotter)
	for n, i := range requested {
		m := cfg.GetMounts()[i]
		ci, err := s.images.find(ctx, m.GetImage().GetImage())
		if errdefs.IsNotFound(err) {
			return nil, nil, errdefs.ErrFailedPrecondition.WithMessage(fmt.Sprintf("image volume at %s: image %s is not pulled", m.GetContainerPath(), m.GetImage().GetImage()))
		}
		if err != nil {
			return nil, nil, err
		}
		diffIDs, err := containerd.NewImage(s.client, ci.record).RootFS(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("image volume at %s: %w", m.GetContainerPath(), err)
		}
		v := imageVolume{
			ContainerPath: m.GetContainerPath(),
			ImageID:       ci.id,
			Snapshot:      fmt.Sprintf("%s-image-volume-%d", id, n),
			Target:        filepath.Join(s.imageVolumesDir(id), fmt.Sprint(n)),
		}
		// A root for containerd's garbage collector: the view lives as long
		// as the container, which removes it (and start-up removes one
		// whose container was never recorded).
		mounts, err := sn.View(ctx, v.Snapshot, identity.ChainID(diffIDs).String(), snapshots.WithLabels(map[string]string{
			labelSnapshotOf:         id,
			"containerd.io/gc.root": time.Now().UTC().Format(time.RFC3339),
		}))
		if err != nil {
			return nil, nil, fmt.Errorf("image volume at %s: %w", m.GetContainerPath(), err)
		}
		volumes = append(volumes, v)
		if err := os.MkdirAll(v.Target, 0o700); err != nil {
			return nil, nil, err
		}
		if err := mount.All(mounts, v.Target); err != nil {
			return nil, nil, fmt.Errorf("image volume at %s: mount: %w", m.GetContainerPath(), err)
		}
		source, err := subPathIn(v.Target, m.GetImageSubPath())
		if err != nil {
			return nil, nil, errdefs.ErrFailedPrecondition.WithMessage(fmt.Sprintf("image volume at %s: %v", m.GetContainerPath(), err))
		}
		sm := specCfg.Mounts[i]
		sm.HostPath, sm.Image, sm.ImageSubPath, sm.Readonly = source, nil, "", true
	}
	return volumes, specCfg, nil
}

// subPathIn is the subpath of an image's root, which must exist and not
// lead out of it through a link.
func subPathIn(root, sub string) (string, error) {
	if sub == "" {
		return root, nil
	}
	r, err := os.OpenRoot(root)
	if err != nil {
		return "", err
	}
	defer r.Close()
	if _, err := r.Stat(sub); err != nil {
		return "", fmt.Errorf("subpath %q: %w", sub, unwrapPath(err))
	}
	resolved, err := filepath.EvalSymlinks(filepath.Join(root, sub))
	if err != nil {
		return "", err
	}
	return resolved, nil
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// imageVolumesDir is where a container's image volumes are mounted.
func (s *Service) imageVolumesDir(id string) string {
	return filepath.Join(s.containerDir(id), "image-volumes")
}

// removeImageVolumes unmounts and releases a container's image volumes;
// one already gone (after a reboot, say) is no error.
func (s *Service) removeImageVolumes(ctx context.Context, volumes []imageVolume) {
	sn := s.client.SnapshotService(s.config().Snapshotter)
	for _, v := range volumes {
		if err := mount.UnmountAll(v.Target, unix.MNT_DETACH); err != nil && !errors.Is(err, os.ErrNotExist) {
			log.G(ctx).WithError(err).WithField("target", v.Target).Warn("unmount an image volume")
		}
		os.Remove(v.Target)
		if err := sn.Remove(ctx, v.Snapshot); err != nil && !errdefs.IsNotFound(err) {
			log.G(ctx).WithError(err).WithField("snapshot", v.Snapshot).Warn("remove an image volume's view")
		}
	}
}

// imageVolumeUsers are the containers that mount an image as a volume.
func (s *Service) imageVolumeUsers(imageID string) []string {
	var ids []string
	for _, m := range s.records.allContainers() {
		for _, v := range m.ImageVolumes {
			if v.ImageID == imageID {
				ids = append(ids, m.ID)
				break
			}
		}
	}
	return ids
}

// withImageVolumeRefs is a container's mounts as ContainerStatus gives
// them: an image volume's image with its digest (image_ref).
func withImageVolumeRefs(mounts []*runtimeapi.Mount, volumes []imageVolume) []*runtimeapi.Mount {
	if len(volumes) == 0 {
		return mounts
	}
	out := make([]*runtimeapi.Mount, len(mounts))
	for i, m := range mounts {
		out[i] = m
		if m.GetImage() == nil {
			continue
		}
		for _, v := range volumes {
			if v.ContainerPath == m.GetContainerPath() {
				c := proto.Clone(m).(*runtimeapi.Mount)
				c.Image.ImageRef = v.ImageID
				out[i] = c
			}
		}
	}
	return out
}
