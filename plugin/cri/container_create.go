package cri

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"path/filepath"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/mine-runtime/mine/extension"
	"github.com/mine-runtime/mine/failpoint"
	ocispec "github.com/mine-runtime/mine/plugin/spec"
)

// CreateContainer creates a container in a pod: a containerd container
// with a snapshot of its image and the OCI spec built from the image and
// the CRI config. Nothing runs until StartContainer.
func (s *Service) CreateContainer(reqCtx context.Context, r *runtimeapi.CreateContainerRequest) (_ *runtimeapi.CreateContainerResponse, retErr error) {
	// As with RunPodSandbox, a retry finds what the first attempt made.
	ctx := context.WithoutCancel(s.nsContext(reqCtx))
	cfg := r.GetConfig()
	if cfg.GetMetadata().GetName() == "" {
		return nil, toStatus(invalid("container config needs metadata with a name"))
	}
	if cfg.GetImage().GetImage() == "" {
		return nil, toStatus(invalid("container config needs an image"))
	}
	if err := validNames("container", map[string]string{"name": cfg.GetMetadata().GetName()}); err != nil {
		return nil, toStatus(err)
	}
	if err := validMetadataSize(cfg.GetLabels(), cfg.GetAnnotations()); err != nil {
		return nil, toStatus(err)
	}
	sandboxID, err := s.names.resolve(kindSandbox, r.GetPodSandboxId())
	if err != nil {
		return nil, toStatus(err)
	}
	// Until the container is recorded, a plugin that connects waits: it
	// then finds the container in its Synchronize, or is told of it here.
	// Taken before the pod's lock, as every RPC takes them: a plugin's
	// sync waiting between them would otherwise wait forever.
	unblock := s.nri.BlockSync()
	defer unblock()
	// The pod cannot be stopped or removed while a container joins it.
	unlock := s.lock(sandboxID)
	defer unlock()
	_, sb, err := s.loadSandbox(ctx, sandboxID)
	if err != nil {
		return nil, toStatus(err)
	}
	if !sb.Ready {
		return nil, toStatus(errdefs.ErrFailedPrecondition.WithMessage("pod sandbox " + sandboxID + " is not ready"))
	}
	logPath, err := containerLogPath(sb.config.GetLogDirectory(), cfg.GetLogPath())
	if err != nil {
		return nil, toStatus(err)
	}
	imageRef := cfg.GetImage().GetImage()
	// A checkpoint archive in place of an image, as kubelet restores a
	// container: made from the checkpoint's image, its processes restored
	// at StartContainer.
	checkpoint, restoring, err := readCheckpointArchive(imageRef)
	if err != nil {
		return nil, toStatus(err)
	}
	if restoring {
		imageRef = cmp.Or(checkpoint.RootfsImageRef, checkpoint.RootfsImageName, checkpoint.RootfsImage)
	}
	ci, err := s.images.find(ctx, imageRef)
	if restoring && errdefs.IsNotFound(err) {
		err = errdefs.ErrFailedPrecondition.WithMessage(fmt.Sprintf("the checkpoint's image %s (%s) is not on this node: pull it first", checkpoint.RootfsImage, checkpoint.RootfsImageRef))
	}
	if err != nil {
		return nil, toStatus(err)
	}

	name := containerName(sandboxID, cfg.GetMetadata())
	id := newID()
	holder, err := s.names.reserve(reqCtx, kindContainer, name, id)
	if err != nil {
		return nil, toStatus(err)
	}
	if holder != nil {
		if _, m, err := s.loadContainer(ctx, holder.id); err == nil && proto.Equal(m.config, cfg) {
			return &runtimeapi.CreateContainerResponse{ContainerId: holder.id}, nil
		}
		return nil, toStatus(errdefs.ErrAlreadyExists.WithMessage(fmt.Sprintf("container %q already exists in pod %s as %s", cfg.GetMetadata().GetName(), sandboxID, holder.id)))
	}
	created := false
	defer func() { s.names.finish(kindContainer, name, created) }()

	image := containerd.NewImage(s.client, ci.record)
	imgCfg, err := imageConfig(ctx, image)
	if err != nil {
		return nil, toStatus(err)
	}
	volumes, specCfg, err := s.prepareImageVolumes(ctx, id, cfg)
	if err != nil {
		return nil, toStatus(err)
	}
	defer func() {
		if !created && len(volumes) > 0 {
			s.removeImageVolumes(ctx, volumes)
		}
		if !created {
			os.RemoveAll(s.containerDir(id))
			os.RemoveAll(s.containerRootDir(id))
		}
	}()
	if specCfg, err = s.prepareImageConfigVolumes(ctx, id, specCfg, sb.config, image, imgCfg); err != nil {
		return nil, toStatus(err)
	}
	conf := s.config()
	_, rt, err := s.runtimeFor(sb.RuntimeHandler)
	if err != nil {
		return nil, toStatus(err)
	}
	spec, err := s.containerSpec(ctx, id, specCfg, sb, rt, conf, image, imgCfg)
	if err != nil {
		return nil, toStatus(err)
	}
	defer func() {
		if !created {
			s.unpinTargetPIDNamespace(id)
		}
	}()
	raw, err := proto.Marshal(cfg)
	if err != nil {
		return nil, toStatus(err)
	}
	meta := &containerMeta{
		ID:           id,
		Name:         name,
		SandboxID:    sandboxID,
		Config:       raw,
		ImageRef:     cfg.GetImage().GetImage(),
		ImageID:      ci.id,
		LogPath:      logPath,
		LogDirectory: sb.config.GetLogDirectory(),
		CreatedAt:    nowNano(),
		StopSignal:   imgCfg.Config.StopSignal,
		ImageVolumes: volumes,
		config:       cfg,
	}
	if restoring {
		// Its image is the checkpoint's; the CRIU images stay beside it
		// until its start.
		meta.ImageRef = cmp.Or(checkpoint.RootfsImage, checkpoint.RootfsImageName, meta.ImageID)
		meta.Restore = filepath.Join(s.containerDir(id), "checkpoint")
	}
	defer func() {
		if !created && s.nri.Active() {
			// Plugins may have set something up for it.
			s.nriContainerStopped(ctx, nil, meta)
			s.nriContainerRemoved(ctx, nil, meta)
		}
	}()
	if err := s.nriCreateContainer(ctx, sb, meta, spec); err != nil {
		return nil, toStatus(err)
	}
	if !s.nri.Active() {
		// StartContainer creates the task and starts it at once, so runc
		// makes and starts the container in one run (package extension).
		// NRI plugins are told of a start with the container's pid,
		// which only a container created beforehand has: with a plugin
		// connected, runc creates it first, as with containerd's CRI.
		spec.Annotations[extension.RunAtStartAnnotation] = "true"
	}
	record, err := s.client.NewContainer(ctx, id,
		containerd.WithSnapshotter(conf.Snapshotter),
		containerd.WithNewSnapshot(id, image, append(rootfsRemap(sb.config), snapshots.WithLabels(map[string]string{labelSnapshotOf: id}))...),
		// After the snapshot is made: it must go with the failure.
		func(ctx context.Context, _ *containerd.Client, _ *containers.Container) error {
			return failpoint.Inject(ctx, failpoint.ContainerRecord)
		},
		containerd.WithRuntime(rt.RuntimeType, runcOptions(rt)),
		containerd.WithSpec(spec),
		containerd.WithContainerLabels(recordLabels(cfg.GetLabels(), map[string]string{labelKind: kindContainer, labelSandboxID: sandboxID, labelCRIKind: "container"})),
		containerd.WithImageName(ci.record.Name),
		containerd.NewContainerOpts(withMeta(meta)),
	)
	if err != nil {
		if rerr := s.client.SnapshotService(conf.Snapshotter).Remove(ctx, id); rerr != nil && !errdefs.IsNotFound(rerr) {
			err = fmt.Errorf("%w (and removing its snapshot: %v)", err, rerr)
		}
		return nil, toStatus(fmt.Errorf("create container: %w", err))
	}
	if restoring {
		if err := s.prepareRestore(ctx, cfg.GetImage().GetImage(), meta.Restore, conf.Snapshotter, id); err != nil {
			if derr := record.Delete(ctx, containerd.WithSnapshotCleanup); derr != nil {
				err = fmt.Errorf("%w (and removing the container: %v)", err, derr)
			}
			return nil, toStatus(fmt.Errorf("restore from %s: %w", cfg.GetImage().GetImage(), err))
		}
	}
	created = true
	s.records.putContainer(meta)
	unblock()
	s.nriContainerCreated(ctx, meta, spec)
	s.publish(ctx, id, sandboxID, runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT)
	return &runtimeapi.CreateContainerResponse{ContainerId: id}, nil
}

// rootfsRemap has the snapshotter map a container's root file system to
// its pod's user namespace, if it has one: with idmapped mounts where the
// kernel has them for overlayfs, else a chowned copy of the image.
func rootfsRemap(pod *runtimeapi.PodSandboxConfig) []snapshots.Opt {
	u := ocispec.PodUserNamespaceOf(pod)
	if u == nil {
		return nil
	}
	return []snapshots.Opt{containerd.WithUserNSRemapperLabels(ocispec.IDMappings(u.GetUids()), ocispec.IDMappings(u.GetGids()))}
}
