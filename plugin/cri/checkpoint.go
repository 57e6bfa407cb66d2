package cri

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/diff"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/pkg/archive"
	"github.com/containerd/containerd/v2/pkg/archive/compression"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/containerd/typeurl/v2"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Checkpoints need CRIU. The three RPCs check their request, as the CRI
// asks, then CRIU: a node where it is missing or cannot run (Debian
// bookworm's CRIU 3.17 does not start on Linux 6.18: "Unexpected rt vDSO
// area bounds") gets FailedPrecondition with CRIU's own words, before any
// container is paused or anything is written. CheckpointContainer then
// writes kubelet's checkpoint archive; CreateContainer restores a
// container from one (its image reference being the archive's path);
// CheckpointPod writes one archive per selected container, all paused
// for one cut; RestorePod makes a pod and its containers from them.

// CheckpointContainer checkpoints a running container to an archive at
// location, as kubelet's checkpoint API asks.
func (s *Service) CheckpointContainer(ctx context.Context, r *runtimeapi.CheckpointContainerRequest) (*runtimeapi.CheckpointContainerResponse, error) {
	ctx = s.nsContext(ctx)
	c, m, err := s.findContainer(ctx, r.GetContainerId())
	if err != nil {
		return nil, toStatus(err)
	}
	if loc := r.GetLocation(); loc == "" || !filepath.IsAbs(loc) {
		return nil, toStatus(invalid(fmt.Sprintf("checkpoint location %q is not an absolute path", loc)))
	}
	// Before the lock, which exits and removals wait for: a process start.
	if err := criuCheck(ctx); err != nil {
		return nil, toStatus(errdefs.ErrFailedPrecondition.WithMessage("CheckpointContainer needs CRIU: " + err.Error()))
	}
	// Not removed, updated or checkpointed again meanwhile.
	unlock := s.lock(m.ID)
	defer unlock()
	if state, _ := s.containerState(ctx, c, m); state != runtimeapi.ContainerState_CONTAINER_RUNNING {
		return nil, toStatus(errdefs.ErrFailedPrecondition.WithMessage("container " + m.ID + " is " + state.String() + ": only a running container can be checkpointed"))
	}
	if r.GetTimeout() > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(r.GetTimeout())*time.Second)
		defer cancel()
	}
	start := time.Now()
	if err := s.writeCheckpoint(ctx, c, m, r.GetLocation()); err != nil {
		return nil, toStatus(fmt.Errorf("checkpoint container %s: %w", m.ID, err))
	}
	log.G(ctx).WithField("id", m.ID).WithField("archive", r.GetLocation()).WithField("took", time.Since(start)).Info("container checkpointed")
	return &runtimeapi.CheckpointContainerResponse{}, nil
}

// writeCheckpoint writes a running container's checkpoint archive, as
// kubelet's checkpoint API and checkpointctl read it: a tar of
// checkpoint/ (CRIU's images of its processes, which go on running),
// spec.dump (its OCI spec), config.dump (what it was made from) and
// rootfs-diff.tar (its writable layer's changes, an OCI layer). It is
// made beside location and renamed onto it: a failure leaves nothing.
func (s *Service) writeCheckpoint(ctx context.Context, c containerd.Container, m *containerMeta, location string) error {
	tmp, err := os.MkdirTemp(filepath.Dir(location), ".checkpoint-")
	if err != nil {
		return invalid(fmt.Sprintf("checkpoint location: %v", err))
	}
	defer os.RemoveAll(tmp)
	work := filepath.Join(tmp, "archive") // what the archive holds
	images := filepath.Join(work, "checkpoint")
	if err := os.MkdirAll(images, 0o700); err != nil {
		return err
	}
	opts, err := typeurl.MarshalAnyToProto(&options.CheckpointOptions{ImagePath: images})
	if err != nil {
		return err
	}
	if _, err := s.client.TaskService().Checkpoint(ctx, &tasks.CheckpointTaskRequest{ContainerID: m.ID, Options: opts}); err != nil {
		return err
	}
	info, err := c.Info(ctx)
	if err != nil {
		return err
	}
	dump := checkpointDump{
		ID:               m.ID,
		Name:             m.config.GetMetadata().GetName(),
		RootfsImage:      m.ImageRef,
		RootfsImageRef:   m.ImageID,
		RootfsImageName:  info.Image,
		Runtime:          info.Runtime.Name,
		CreatedTime:      time.Unix(0, m.CreatedAt).UTC(),
		CheckpointedTime: time.Now().UTC(),
	}
	config, err := json.Marshal(dump)
	if err != nil {
		return err
	}
	// The spec as containerd holds it: JSON already.
	for name, data := range map[string][]byte{"spec.dump": info.Spec.GetValue(), "config.dump": config} {
		if err := os.WriteFile(filepath.Join(work, name), data, 0o600); err != nil {
			return err
		}
	}
	if err := s.writeRootfsDiff(ctx, info, filepath.Join(work, "rootfs-diff.tar")); err != nil {
		return fmt.Errorf("rootfs diff: %w", err)
	}
	archive := filepath.Join(tmp, "archive.tar")
	f, err := os.OpenFile(archive, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	if err := tw.AddFS(os.DirFS(work)); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(archive, location)
}

// writeRootfsDiff writes a container's writable layer as an OCI layer:
// what it changed over its image, compared by containerd's differ.
func (s *Service) writeRootfsDiff(ctx context.Context, info containers.Container, path string) error {
	sn := s.client.SnapshotService(info.Snapshotter)
	st, err := sn.Stat(ctx, info.SnapshotKey)
	if err != nil {
		return err
	}
	upper, err := sn.Mounts(ctx, info.SnapshotKey)
	if err != nil {
		return err
	}
	return withTempView(ctx, s.client, info.Snapshotter, st.Parent, func(ctx context.Context, lower []mount.Mount) error {
		desc, err := s.client.DiffService().Compare(ctx, lower, upper, diff.WithMediaType(ocispec.MediaTypeImageLayer))
		if err != nil {
			return err
		}
		ra, err := s.client.ContentStore().ReaderAt(ctx, desc)
		if err != nil {
			return err
		}
		defer ra.Close()
		out, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		defer out.Close()
		if _, err := io.Copy(out, content.NewReader(ra)); err != nil {
			return err
		}
		return out.Close()
	})
}

// CheckpointPod checkpoints the selected running containers of a pod into
// an existing empty directory, as one consistent cut.
func (s *Service) CheckpointPod(ctx context.Context, r *runtimeapi.CheckpointPodRequest) (*runtimeapi.CheckpointPodResponse, error) {
	ctx = s.nsContext(ctx)
	podID, err := s.names.resolve(kindSandbox, r.GetPodSandboxId())
	if err != nil {
		return nil, toStatus(err)
	}
	if err := emptyDirectory(r.GetOutputPath()); err != nil {
		return nil, toStatus(err)
	}
	if err := noOptions(r.GetOptions()); err != nil {
		return nil, toStatus(err)
	}
	ids := r.GetContainerIds()
	if len(ids) == 0 {
		return nil, toStatus(invalid("CheckpointPod needs the IDs of the containers to checkpoint"))
	}
	seen := map[string]bool{}
	type selected struct {
		c containerd.Container
		m *containerMeta
	}
	var all []selected
	for _, ref := range ids {
		c, m, err := s.findContainer(ctx, ref)
		if err != nil {
			return nil, toStatus(err)
		}
		id := m.ID
		if seen[id] {
			return nil, toStatus(invalid("container " + id + " is listed twice"))
		}
		seen[id] = true
		if m.SandboxID != podID {
			return nil, toStatus(invalid("container " + id + " is not in pod " + podID))
		}
		all = append(all, selected{c, m})
	}
	if err := criuCheck(ctx); err != nil {
		return nil, toStatus(errdefs.ErrFailedPrecondition.WithMessage("CheckpointPod needs CRIU: " + err.Error()))
	}
	// The pod and its containers stay as they are while the pod is cut:
	// its lock, then theirs, as StartContainer takes them.
	unlock := s.lock(podID)
	defer unlock()
	for _, sel := range all {
		defer s.lock(sel.m.ID)()
		if state, _ := s.containerState(ctx, sel.c, sel.m); state != runtimeapi.ContainerState_CONTAINER_RUNNING {
			return nil, toStatus(errdefs.ErrFailedPrecondition.WithMessage("container " + sel.m.ID + " is " + state.String() + ": only running containers can be checkpointed"))
		}
	}
	start := time.Now()
	// One cut: every container paused before any is captured, and every
	// one resumed before returning, whatever happened.
	var paused []containerd.Task
	defer func() {
		for _, t := range paused {
			if err := t.Resume(context.WithoutCancel(ctx)); err != nil {
				log.G(ctx).WithError(err).WithField("id", t.ID()).Error("resume a container after its pod's checkpoint")
			}
		}
	}()
	for _, sel := range all {
		t, err := sel.c.Task(ctx, nil)
		if err == nil {
			err = t.Pause(ctx)
		}
		if err != nil {
			return nil, toStatus(fmt.Errorf("pause container %s: %w", sel.m.ID, err))
		}
		paused = append(paused, t)
	}
	out := r.GetOutputPath()
	for _, sel := range all {
		archive := filepath.Join(out, sel.m.config.GetMetadata().GetName()+".tar")
		if err := s.writeCheckpoint(ctx, sel.c, sel.m, archive); err != nil {
			// What was written goes: the caller's directory is left empty.
			entries, _ := os.ReadDir(out)
			for _, e := range entries {
				os.RemoveAll(filepath.Join(out, e.Name()))
			}
			return nil, toStatus(fmt.Errorf("checkpoint container %s: %w", sel.m.ID, err))
		}
	}
	log.G(ctx).WithField("pod", podID).WithField("containers", len(all)).WithField("took", time.Since(start)).Info("pod checkpointed")
	return &runtimeapi.CheckpointPodResponse{}, nil
}

// RestorePod makes a pod and its containers, CREATED, from a checkpoint.
func (s *Service) RestorePod(ctx context.Context, r *runtimeapi.RestorePodRequest) (*runtimeapi.RestorePodResponse, error) {
	ctx = s.nsContext(ctx)
	md := r.GetConfig().GetMetadata()
	if md == nil || md.Name == "" || md.Namespace == "" || md.Uid == "" {
		return nil, toStatus(invalid("pod sandbox config needs metadata with a name, a namespace and a uid"))
	}
	if _, _, err := s.runtimeFor(r.GetRuntimeHandler()); err != nil {
		return nil, toStatus(err)
	}
	if err := noOptions(r.GetOptions()); err != nil {
		return nil, toStatus(err)
	}
	if len(r.GetContainerConfigs()) == 0 {
		return nil, toStatus(invalid("RestorePod needs the configurations of the checkpoint's containers"))
	}
	names := map[string]bool{}
	for _, c := range r.GetContainerConfigs() {
		name := c.GetMetadata().GetName()
		if name == "" || names[name] {
			return nil, toStatus(invalid(fmt.Sprintf("container configurations need unique names, got %q twice or empty", name)))
		}
		names[name] = true
	}
	dir := r.GetCheckpointPath()
	if !filepath.IsAbs(dir) {
		return nil, toStatus(invalid(fmt.Sprintf("checkpoint path %q is not absolute", dir)))
	} else if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return nil, toStatus(invalid(fmt.Sprintf("checkpoint path %s is not a directory", dir)))
	}
	// A pod checkpoint is CheckpointPod's directory: one container
	// archive per container, named after it. The names must be exactly
	// the configurations'.
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, toStatus(err)
	}
	inCheckpoint := map[string]bool{}
	for _, e := range entries {
		if name, ok := strings.CutSuffix(e.Name(), ".tar"); ok && e.Type().IsRegular() {
			if _, isArchive, err := readCheckpointArchive(filepath.Join(dir, e.Name())); err == nil && isArchive {
				inCheckpoint[name] = true
			}
		}
	}
	if !maps.Equal(inCheckpoint, names) {
		return nil, toStatus(invalid(fmt.Sprintf("the checkpoint holds containers %v, the request configures %v", slices.Sorted(maps.Keys(inCheckpoint)), slices.Sorted(maps.Keys(names)))))
	}
	if err := criuCheck(ctx); err != nil {
		return nil, toStatus(errdefs.ErrFailedPrecondition.WithMessage("RestorePod needs CRIU: " + err.Error()))
	}
	// The pod as RunPodSandbox makes it, its containers as CreateContainer
	// makes one from its archive: CREATED, their processes restored when
	// each is started. On error everything made goes.
	run, err := s.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: r.GetConfig(), RuntimeHandler: r.GetRuntimeHandler()})
	if err != nil {
		return nil, err
	}
	resp := &runtimeapi.RestorePodResponse{PodSandboxId: run.PodSandboxId}
	for _, cfg := range r.GetContainerConfigs() {
		cfg = proto.Clone(cfg).(*runtimeapi.ContainerConfig)
		if cfg.Image == nil {
			cfg.Image = &runtimeapi.ImageSpec{}
		}
		cfg.Image.Image = filepath.Join(dir, cfg.GetMetadata().GetName()+".tar")
		created, err := s.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: run.PodSandboxId, Config: cfg, SandboxConfig: r.GetConfig()})
		if err != nil {
			if _, rerr := s.RemovePodSandbox(context.WithoutCancel(ctx), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: run.PodSandboxId}); rerr != nil {
				log.G(ctx).WithError(rerr).WithField("pod", run.PodSandboxId).Warn("remove the pod of a failed restore")
			}
			return nil, err
		}
		resp.RestoredContainers = append(resp.RestoredContainers, &runtimeapi.RestoredContainer{Name: cfg.GetMetadata().GetName(), ContainerId: created.ContainerId})
	}
	return resp, nil
}

// emptyDirectory checks CheckpointPod's output path: absolute, existing,
// a directory, empty.
func emptyDirectory(p string) error {
	if !filepath.IsAbs(p) {
		return invalid(fmt.Sprintf("output path %q is not absolute", p))
	}
	entries, err := os.ReadDir(p)
	if err != nil {
		return invalid(fmt.Sprintf("output path: %v", err))
	}
	if len(entries) > 0 {
		return invalid("output path " + p + " is not empty")
	}
	return nil
}

// noOptions refuses runtime options: mine documents none, and the CRI has
// unknown ones refused rather than ignored.
func noOptions(opts map[string]string) error {
	for k := range opts {
		return invalid(fmt.Sprintf("option %q: this runtime takes no checkpoint or restore options", k))
	}
	return nil
}

// criuCheck runs `criu check`, which tells whether CRIU can checkpoint on
// this kernel, and gives its last error line if not. Asked each time: an
// operator may install or upgrade CRIU, and checkpoints are rare.
func criuCheck(ctx context.Context) error {
	path, err := exec.LookPath("criu")
	if err != nil {
		return errors.New("criu is not installed (Debian's package criu)")
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "check").CombinedOutput()
	if err == nil {
		return nil
	}
	// Its first error is the cause, its last what it gave up on.
	var errs []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "Error") {
			errs = append(errs, strings.TrimSpace(l))
		}
	}
	switch len(errs) {
	case 0:
		return fmt.Errorf("`criu check` fails on this node: %v", err)
	case 1:
		return fmt.Errorf("`criu check` fails on this node: %s", errs[0])
	}
	return fmt.Errorf("`criu check` fails on this node: %s ... %s", errs[0], errs[len(errs)-1])
}

// checkpointDump is a checkpoint archive's config.dump, in the keys
// checkpointctl reads.
type checkpointDump struct {
	ID               string    `json:"id"`
	Name             string    `json:"name"`
	RootfsImage      string    `json:"rootfsImage"`
	RootfsImageRef   string    `json:"rootfsImageRef"`
	RootfsImageName  string    `json:"rootfsImageName"`
	Runtime          string    `json:"runtime,omitempty"`
	CreatedTime      time.Time `json:"createdTime"`
	CheckpointedTime time.Time `json:"checkpointedTime"`
}

// readCheckpointArchive tells whether an image reference is a checkpoint
// archive (an absolute path to a tar with config.dump and CRIU's
// inventory), as kubelet's restore gives one in place of an image, and
// reads its config.dump.
func readCheckpointArchive(ref string) (*checkpointDump, bool, error) {
	if !filepath.IsAbs(ref) {
		return nil, false, nil
	}
	// A regular file only: opening a FIFO would wait for a writer.
	if fi, err := os.Lstat(ref); err != nil || !fi.Mode().IsRegular() {
		return nil, false, nil
	}
	f, err := os.Open(ref)
	if err != nil {
		return nil, false, nil // a path that is no file is no archive: the image lookup says so
	}
	defer f.Close()
	var dump *checkpointDump
	inventory := false
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, false, nil // not a tar
		}
		switch filepath.Clean(h.Name) {
		case "config.dump":
			dump = &checkpointDump{}
			if err := json.NewDecoder(io.LimitReader(tr, 1<<20)).Decode(dump); err != nil {
				return nil, true, invalid(fmt.Sprintf("checkpoint archive %s: config.dump: %v", ref, err))
			}
		case "checkpoint/inventory.img":
			inventory = true
		}
		if dump != nil && inventory {
			break
		}
	}
	if dump == nil || !inventory {
		return nil, false, nil
	}
	return dump, true, nil
}

// prepareRestore unpacks a checkpoint archive for a container created
// from it: CRIU's images into dir, which StartContainer restores from,
// and its writable layer's changes onto the container's new snapshot.
func (s *Service) prepareRestore(ctx context.Context, archivePath, dir, snapshotter, key string) error {
	f, err := os.Open(archivePath)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	root, err := os.OpenRoot(filepath.Dir(dir))
	if err != nil {
		return err
	}
	defer root.Close()
	base := filepath.Base(dir)
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		name := filepath.Clean(h.Name)
		switch {
		case name == "rootfs-diff.tar":
			mounts, err := s.client.SnapshotService(snapshotter).Mounts(ctx, key)
			if err != nil {
				return err
			}
			if err := mount.WithTempMount(ctx, mounts, func(rootfs string) error {
				// containerd's CRI writes the diff as its differ makes
				// layers, gzipped; CRI-O's and ours, a plain tar.
				diff, err := compression.DecompressStream(tr)
				if err != nil {
					return err
				}
				defer diff.Close()
				_, err = archive.Apply(ctx, rootfs, diff)
				return err
			}); err != nil {
				return fmt.Errorf("apply rootfs-diff.tar: %w", err)
			}
		case name == "checkpoint" || strings.HasPrefix(name, "checkpoint/"):
			// Inside dir whatever the names: os.Root refuses "..".
			dst := filepath.Join(base, strings.TrimPrefix(name, "checkpoint"))
			switch h.Typeflag {
			case tar.TypeDir:
				if err := root.MkdirAll(dst, 0o700); err != nil {
					return err
				}
			case tar.TypeReg:
				if err := root.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
					return err
				}
				out, err := root.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
				if err != nil {
					return err
				}
				_, err = io.Copy(out, tr)
				if cerr := out.Close(); err == nil {
					err = cerr
				}
				if err != nil {
					return err
				}
			}
		}
	}
}
