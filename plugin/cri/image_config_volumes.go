package cri

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/continuity/fs"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/mine-runtime/mine/plugin/spec"
)

// prepareImageConfigVolumes gives each volume the image's config declares
// (a Dockerfile's VOLUME) that no CRI mount covers a directory of the
// container's own, as containerd does: writable under a read-only root
// file system, and holding at first what the image has at that path (its
// files, owners and modes, copied from a view of the image). It returns
// the config the spec is made from, with a mount for each. The directories
// are on disk (containerRootDir), as containerd keeps them, and go with
// the container.
func (s *Service) prepareImageConfigVolumes(ctx context.Context, id string, cfg *runtimeapi.ContainerConfig, pod *runtimeapi.PodSandboxConfig, image containerd.Image, imgCfg *ocispec.Image) (*runtimeapi.ContainerConfig, error) {
	if s.config().IgnoreImageDefinedVolumes {
		return cfg, nil
	}
	var paths []string
	for dst := range imgCfg.Config.Volumes {
		covered := slices.ContainsFunc(cfg.GetMounts(), func(m *runtimeapi.Mount) bool {
			return filepath.Clean(m.GetContainerPath()) == filepath.Clean(dst)
		})
		if filepath.IsAbs(dst) && !covered {
			paths = append(paths, filepath.Clean(dst))
		}
	}
	if len(paths) == 0 {
		return cfg, nil
	}
	slices.Sort(paths)
	paths = slices.Compact(paths)
	hostDirs := make([]string, len(paths))
	for i := range paths {
		hostDirs[i] = filepath.Join(s.containerRootDir(id), "volumes", strconv.Itoa(i))
		if err := os.MkdirAll(hostDirs[i], 0o755); err != nil {
			return nil, err
		}
	}
	diffIDs, err := image.RootFS(ctx)
	if err != nil {
		return nil, err
	}
	err = withTempView(ctx, s.client, s.config().Snapshotter, identity.ChainID(diffIDs).String(), func(ctx context.Context, mounts []mount.Mount) error {
		return mount.WithReadonlyTempMount(ctx, mounts, func(root string) error {
			for i, dst := range paths {
				src, err := fs.RootPath(root, dst)
				if err != nil {
					return err
				}
				if st, err := os.Stat(src); err != nil || !st.IsDir() {
					continue // nothing in the image there: an empty volume
				}
				if err := fs.CopyDir(hostDirs[i], src, fs.WithXAttrExclude("security.selinux")); err != nil {
					return fmt.Errorf("copy the image's %s into its volume: %w", dst, err)
				}
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("image volumes: %w", err)
	}
	out := proto.Clone(cfg).(*runtimeapi.ContainerConfig)
	userns := spec.PodUserNamespaceOf(pod)
	for i, dst := range paths {
		// In a pod's own user namespace, idmapped as kubelet's volumes
		// are: the image's owners are the container's.
		out.Mounts = append(out.Mounts, &runtimeapi.Mount{ContainerPath: dst, HostPath: hostDirs[i], UidMappings: userns.GetUids(), GidMappings: userns.GetGids()})
	}
	return out, nil
}
