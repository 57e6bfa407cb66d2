package cri

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/contrib/apparmor"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/mine-runtime/mine/config"
	"github.com/mine-runtime/mine/plugin/cdi"
	"github.com/mine-runtime/mine/plugin/podns"
	"github.com/mine-runtime/mine/plugin/spec"
)

// containerSpec gathers what package spec needs (the image's users, the
// host paths, devices and namespaces as the host has them now) and builds
// the container's OCI spec from it.
func (s *Service) containerSpec(ctx context.Context, id string, cfg *runtimeapi.ContainerConfig, sb *sandboxMeta, rt config.Runtime, conf *config.Config, image containerd.Image, imgCfg *ocispec.Image) (*specs.Spec, error) {
	var err error
	// Refused before anything is looked up or made.
	if err := spec.Validate(cfg, sb.config); err != nil {
		return nil, err
	}
	devices, err := cdi.Requested(cfg)
	if err != nil {
		return nil, err
	}
	sc := cfg.GetLinux().GetSecurityContext()
	in := &spec.Container{
		ID:     id,
		Config: cfg,
		Image:  spec.Image{Name: cfg.GetImage().GetImage(), Config: imgCfg.Config},
		Pod: spec.Pod{
			ID:         sb.ID,
			Config:     sb.config,
			Hostname:   podHostname(sb.config),
			Namespaces: sb.Namespaces,
			StateDir:   s.sandboxStateDir(sb.ID),
		},
		SystemdCgroup:     rt.Options.SystemdCgroup,
		UnprivilegedPorts: conf.EnableUnprivilegedPorts,
		UnprivilegedICMP:  conf.EnableUnprivilegedICMP,
	}
	if slices.ContainsFunc(cfg.GetMounts(), (*runtimeapi.Mount).GetRecursiveReadOnly) {
		in.RecursiveReadOnly = handlerFeatures(ctx, rt).RecursiveReadOnlyMounts
	}
	if in.Pod.Namespaces.PID == "" && sb.Init != nil && sharesPIDNamespace(sb.config) {
		// A pod made before PID namespaces were pinned.
		if in.Pod.Namespaces.PID, err = s.podPIDNamespace(ctx, sb); err != nil {
			return nil, err
		}
	}
	if in.Image.Passwd, in.Image.Group, err = s.users.of(ctx, image); err != nil {
		return nil, err
	}
	if in.HostPaths, err = spec.ResolveHostPaths(cfg.GetMounts()); err != nil {
		return nil, err
	}
	if in.Devices, err = spec.ResolveDevices(cfg.GetDevices()); err != nil {
		return nil, err
	}
	if ref := spec.SeccompLocalhostRef(sc); ref != "" {
		if in.SeccompProfile, err = os.ReadFile(ref); err != nil {
			return nil, errdefs.ErrInvalidArgument.WithMessage(fmt.Sprintf("seccomp profile: %v", err))
		}
	}
	host := *s.host
	if sc.GetPrivileged() {
		// Every device the host has now, as a privileged container sees.
		devices, err := oci.HostDevices()
		if err != nil {
			return nil, err
		}
		host.PrivilegedDevices = devices
	}
	if sc.GetNamespaceOptions().GetPid() == runtimeapi.NamespaceMode_TARGET {
		if in.TargetPIDNamespace, err = s.pinTargetPIDNamespace(ctx, id, sb.ID, sc.GetNamespaceOptions().GetTargetId()); err != nil {
			return nil, err
		}
	}
	out, err := spec.Generate(in, &host)
	if err == nil {
		// Last, as in containerd: a device's edits add to what the
		// request asked for.
		err = cdi.Inject(out, conf.CDISpecDirs, devices)
	}
	if err == nil && out.Process.ApparmorProfile == spec.DefaultAppArmorProfile {
		// Loaded on first use (apparmor_parser), and again if the node
		// unloaded it; a failure fails this container, not the runtime.
		if lerr := apparmor.LoadDefaultProfile(spec.DefaultAppArmorProfile); lerr != nil {
			err = errdefs.ErrFailedPrecondition.WithMessage(fmt.Sprintf("load AppArmor profile %s: %v", spec.DefaultAppArmorProfile, lerr))
		}
	}
	if err != nil {
		s.unpinTargetPIDNamespace(id)
		return nil, err
	}
	out.Version = specVersionFor(ctx, rt)
	return out, nil
}

// podHostname is the pod's hostname: its own, else the node's.
func podHostname(cfg *runtimeapi.PodSandboxConfig) string {
	if h := cfg.GetHostname(); h != "" && cfg.GetLinux().GetSecurityContext().GetNamespaceOptions().GetNetwork() != runtimeapi.NamespaceMode_NODE {
		return h
	}
	h, _ := os.Hostname()
	return h
}

// targetPIDNamespacePath is where a container that joins another
// container's PID namespace keeps it pinned.
func (s *Service) targetPIDNamespacePath(id string) string {
	return filepath.Join(s.containerDir(id), "target-pidns")
}

// pinTargetPIDNamespace pins the PID namespace of a running container of
// the same pod for a container that asks to join it (NamespaceMode
// TARGET, as kubectl debug does). Pinned by the namespace, not by the
// target's pid, which another process may have by the time the container
// starts.
func (s *Service) pinTargetPIDNamespace(ctx context.Context, id, sandboxID, target string) (string, error) {
	targetID, err := s.names.resolve(kindContainer, target)
	if err != nil {
		return "", errdefs.ErrInvalidArgument.WithMessage(fmt.Sprintf("target container %q: %v", target, err))
	}
	c, m, err := s.loadContainer(ctx, targetID)
	if err != nil {
		return "", err
	}
	if m.SandboxID != sandboxID {
		return "", errdefs.ErrInvalidArgument.WithMessage("target container " + targetID + " is not in pod " + sandboxID)
	}
	state, pid := s.containerState(ctx, c, m)
	if state != runtimeapi.ContainerState_CONTAINER_RUNNING || pid == 0 {
		return "", errdefs.ErrFailedPrecondition.WithMessage("target container " + targetID + " is not running")
	}
	p := processIdentity(pid)
	path := s.targetPIDNamespacePath(id)
	if err := os.MkdirAll(filepath.Dir(path), 0o711); err != nil {
		return "", err
	}
	if err := podns.PinProcess(path, p.Pid, "pid", p.alive); err != nil {
		return "", err
	}
	return path, nil
}

func (s *Service) unpinTargetPIDNamespace(id string) {
	podns.Remove(podns.Paths{PID: s.targetPIDNamespacePath(id)})
}

// imageUsers caches images' /etc/passwd and /etc/group: an image never
// changes, so each is read once, from a read-only view of the image.
type imageUsers struct {
	client      *containerd.Client
	snapshotter string
	mu          sync.Mutex
	byImage     map[string][2][]byte
}

func (u *imageUsers) of(ctx context.Context, image containerd.Image) (passwd, group []byte, err error) {
	key := image.Target().Digest.String()
	u.mu.Lock()
	files, ok := u.byImage[key]
	u.mu.Unlock()
	if ok {
		return files[0], files[1], nil
	}
	diffIDs, err := image.RootFS(ctx)
	if err != nil {
		return nil, nil, err
	}
	err = withTempView(ctx, u.client, u.snapshotter, identity.ChainID(diffIDs).String(), func(ctx context.Context, mounts []mount.Mount) error {
		return mount.WithReadonlyTempMount(ctx, mounts, func(root string) error {
			passwd = readInRoot(root, "etc/passwd")
			group = readInRoot(root, "etc/group")
			return nil
		})
	})
	if err != nil {
		return nil, nil, fmt.Errorf("view image %s: %w", image.Name(), err)
	}
	u.mu.Lock()
	if u.byImage == nil {
		u.byImage = map[string][2][]byte{}
	}
	u.byImage[key] = [2][]byte{passwd, group}
	u.mu.Unlock()
	return passwd, group, nil
}

// forget drops an image's files when the image is removed.
func (u *imageUsers) forget(target digest.Digest) {
	u.mu.Lock()
	delete(u.byImage, target.String())
	u.mu.Unlock()
}

// readInRoot reads a file of an image without following a link out of
// it; nil where there is none.
func readInRoot(root, name string) []byte {
	r, err := os.OpenRoot(root)
	if err != nil {
		return nil
	}
	defer r.Close()
	data, err := r.ReadFile(name)
	if err != nil {
		return nil
	}
	return data
}

// withTempView runs fn with a read-only view of a snapshot, held by a
// lease (for the garbage collector, and ended soon after a daemon that died
// holding it) and removed afterwards. fn's context carries the lease, so
// what fn writes to the content store is held until it returns.
func withTempView(ctx context.Context, client *containerd.Client, snapshotter, parent string, fn func(context.Context, []mount.Mount) error) error {
	ctx, done, err := client.WithLease(ctx, leases.WithRandomID(), leases.WithExpiration(10*time.Minute))
	if err != nil {
		return err
	}
	defer done(context.WithoutCancel(ctx))
	sn := client.SnapshotService(snapshotter)
	key := "mine-view-" + newID()[:16]
	mounts, err := sn.View(ctx, key, parent)
	if err != nil {
		return err
	}
	defer sn.Remove(context.WithoutCancel(ctx), key)
	return fn(ctx, mounts)
}
