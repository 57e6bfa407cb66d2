package cri

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/mine-runtime/mine/plugin/podns"
)

// Labels on the containerd containers that stand for CRI objects.
const (
	labelKind      = "io.mine.cri.kind" // kindSandbox or kindContainer
	labelSandboxID = "io.mine.cri.sandbox-id"
	// metadataExtension holds a sandboxMeta or containerMeta.
	metadataExtension = "io.mine.cri.metadata"
	// labelCRIKind is containerd's CRI's kind label ("sandbox" or
	// "container"): cAdvisor, in kubelet, reads a pod's network
	// statistics only from the task of a container labelled "sandbox".
	labelCRIKind = "io.cri-containerd.kind"
	// labelSnapshotOf marks the writable layers the plugin makes, by the
	// ID of their object: one whose record was never made (the daemon died
	// in between) is removed at start-up.
	labelSnapshotOf = "io.mine.cri.snapshot-of"
)

// recordLabels are the labels of a CRI object's containerd record: the
// CRI config's own, as containerd's CRI copies them (kubelet's
// io.kubernetes.pod.* among them, by which cAdvisor's statistics are
// matched to pods), then ours.
func recordLabels(cri, ours map[string]string) map[string]string {
	out := make(map[string]string, len(cri)+len(ours))
	maps.Copy(out, cri)
	maps.Copy(out, ours)
	return out
}

func init() {
	typeurl.Register(&sandboxMeta{}, "io.mine.cri", "sandboxMeta")
	typeurl.Register(&containerMeta{}, "io.mine.cri", "containerMeta")
}

// sandboxMeta is what is remembered of a pod.
type sandboxMeta struct {
	ID             string
	Name           string // metadata name_namespace_uid_attempt, unique
	Config         []byte // runtimeapi.PodSandboxConfig, protobuf
	RuntimeHandler string
	Namespaces     podns.Paths
	IPs            []string
	CreatedAt      int64 // unix nanoseconds
	Ready          bool
	// Init is the process holding the pod's PID namespace (the pod init
	// or the pause container), if it has one.
	Init *process
	// Unfinished marks a record RunPodSandbox made and has not completed:
	// a daemon that died in between removes the pod at start-up
	// (recover), as nobody was told of it.
	Unfinished bool `json:",omitempty"`
	// NetworkLeft marks a pod whose RunPodSandbox failed and whose CNI DEL
	// failed too: it is kept, not Ready, with its network namespace and
	// config, so that kubelet's StopPodSandbox tears its network down (its
	// IP and host port rules), as containerd keeps such a pod.
	NetworkLeft bool `json:",omitempty"`
	config      *runtimeapi.PodSandboxConfig
}

// containerMeta is what is remembered of a container.
type containerMeta struct {
	ID        string
	Name      string // name within the pod, unique per pod with attempt
	SandboxID string
	Config    []byte // runtimeapi.ContainerConfig, protobuf
	ImageRef  string // the image as the request named it
	ImageID   string
	LogPath   string // absolute, "" without one
	// LogDirectory is the pod's log directory, which LogPath must stay in
	// ("" in records made before it was kept).
	LogDirectory string
	StopSignal   string // the image's, "" for SIGTERM
	CreatedAt    int64
	StartedAt    int64
	FinishedAt   int64
	ExitCode     int32
	Reason       string
	Message      string
	// Process is the container's init as started, so that a lost exit
	// is found by looking at /proc (reconcileLoop); nil in records made
	// before it was kept.
	Process *process `json:",omitempty"`
	// ImageVolumes are the images mounted into it (image_volumes.go).
	ImageVolumes []imageVolume `json:",omitempty"`
	// Restore holds the CRIU images of the checkpoint it was created
	// from: StartContainer restores its processes instead of starting it.
	Restore string `json:",omitempty"`
	config  *runtimeapi.ContainerConfig
}

// saveSandbox writes a pod's changed metadata to containerd, then to the
// records lists read. The caller holds the pod's lock.
func (s *Service) saveSandbox(ctx context.Context, c containerd.Container, m *sandboxMeta) error {
	if err := c.Update(ctx, withMeta(m)); err != nil {
		return err
	}
	s.records.putSandbox(m)
	return nil
}

func (s *Service) nsContext(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, Namespace)
}

// sandboxName is the unique name kubelet gives a pod by its metadata.
func sandboxName(m *runtimeapi.PodSandboxMetadata) string {
	return fmt.Sprintf("%s_%s_%s_%d", m.Name, m.Namespace, m.Uid, m.Attempt)
}

// containerName is a container's name, unique within its pod.
func containerName(sandboxID string, m *runtimeapi.ContainerMetadata) string {
	return fmt.Sprintf("%s_%s_%d", sandboxID, m.Name, m.Attempt)
}

func withMeta(meta any) containerd.UpdateContainerOpts {
	return func(ctx context.Context, _ *containerd.Client, c *containers.Container) error {
		a, err := typeurl.MarshalAny(meta)
		if err != nil {
			return err
		}
		if c.Extensions == nil {
			c.Extensions = map[string]typeurl.Any{}
		}
		c.Extensions[metadataExtension] = a
		return nil
	}
}

func readMeta(ctx context.Context, c containerd.Container, into any) error {
	ext, err := c.Extensions(ctx)
	if err != nil {
		return err
	}
	a, ok := ext[metadataExtension]
	if !ok {
		return errdefs.ErrNotFound.WithMessage("container " + c.ID() + " has no CRI metadata")
	}
	return typeurl.UnmarshalTo(a, into)
}

func (s *Service) loadSandbox(ctx context.Context, id string) (containerd.Container, *sandboxMeta, error) {
	c, err := s.client.LoadContainer(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	m := &sandboxMeta{}
	if err := readMeta(ctx, c, m); err != nil {
		return nil, nil, err
	}
	m.config = &runtimeapi.PodSandboxConfig{}
	if err := proto.Unmarshal(m.Config, m.config); err != nil {
		return nil, nil, err
	}
	return c, m, nil
}

func (s *Service) loadContainer(ctx context.Context, id string) (containerd.Container, *containerMeta, error) {
	c, err := s.client.LoadContainer(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	m := &containerMeta{}
	if err := readMeta(ctx, c, m); err != nil {
		return nil, nil, err
	}
	m.config = &runtimeapi.ContainerConfig{}
	if err := proto.Unmarshal(m.Config, m.config); err != nil {
		return nil, nil, err
	}
	return c, m, nil
}

// findContainer resolves a container ID or prefix and loads the container.
func (s *Service) findContainer(ctx context.Context, idOrPrefix string) (containerd.Container, *containerMeta, error) {
	id, err := s.names.resolve(kindContainer, idOrPrefix)
	if err != nil {
		return nil, nil, err
	}
	return s.loadContainer(ctx, id)
}

// findSandbox resolves a pod ID or prefix and loads the pod.
func (s *Service) findSandbox(ctx context.Context, idOrPrefix string) (containerd.Container, *sandboxMeta, error) {
	id, err := s.names.resolve(kindSandbox, idOrPrefix)
	if err != nil {
		return nil, nil, err
	}
	return s.loadSandbox(ctx, id)
}

// updateContainerMeta changes a container's metadata in containerd. The
// read and the write are one step: a start and an exit recorded at once
// must not undo each other.
// Changes to the record that go with it (extra) are made in the same
// update, so that none undoes another.
func (s *Service) updateContainerMeta(ctx context.Context, c containerd.Container, change func(*containerMeta), extra ...containerd.UpdateContainerOpts) (*containerMeta, error) {
	unlock := s.lock(c.ID() + "/meta")
	defer unlock()
	_, m, err := s.loadContainer(ctx, c.ID())
	if err != nil {
		return nil, err
	}
	started, finished := m.StartedAt, m.FinishedAt
	change(m)
	if err := c.Update(ctx, append(extra, withMeta(m))...); err != nil {
		return m, err
	}
	s.records.putContainer(m)
	// Every start and exit is recorded here, whoever records it.
	if started == 0 && m.StartedAt != 0 {
		s.publish(ctx, m.ID, m.SandboxID, runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT)
	}
	if finished == 0 && m.FinishedAt != 0 {
		s.publish(ctx, m.ID, m.SandboxID, runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT)
		s.nriContainerStopped(ctx, c, m)
	}
	return m, nil
}

// recover rebuilds the name index from containerd after a restart; exits
// that happened meanwhile are recorded once exits are watched.
func (s *Service) recover(ctx context.Context) error {
	list, err := s.client.Containers(ctx, fmt.Sprintf("labels.%q", labelKind))
	if err != nil {
		return err
	}
	defer s.sweepOrphanSnapshots(ctx, list)
	// A pod with a record is no orphan, whether or not it loads here: a
	// record that fails to load must not cost a running pod its network.
	recorded := map[string]bool{}
	for _, c := range list {
		recorded[c.ID()] = true
	}
	unfinished := map[string]*runtimeapi.PodSandboxConfig{}
	defer func() { s.sweepOrphanSandboxes(ctx, recorded, unfinished) }()
	defer s.sweepOrphanContainerDirs(ctx, recorded)
	for _, c := range list {
		labels, err := c.Labels(ctx)
		if err != nil {
			return err
		}
		switch labels[labelKind] {
		case kindSandbox:
			_, m, err := s.loadSandbox(ctx, c.ID())
			if err != nil {
				log.G(ctx).WithError(err).WithField("id", c.ID()).Warn("a pod's record does not load; it is left as it is")
				continue
			}
			if m.Unfinished {
				// Its namespaces, network and files go with the
				// orphans' (sweepOrphanSandboxes), its network torn
				// down with its config: portmap removes a pod's
				// host port rules only when told its port mappings.
				delete(recorded, m.ID)
				unfinished[m.ID] = m.config
				s.removeUnfinishedSandbox(ctx, c)
				continue
			}
			s.records.putSandbox(m)
			s.names.add(kindSandbox, m.Name, m.ID)
			if m.Ready && m.Init == nil {
				// Its statistics init was still due, or being
				// started, when the daemon stopped.
				go s.startStatsInit(context.WithoutCancel(ctx), m.ID, nil)
			}
		case kindContainer:
			_, m, err := s.loadContainer(ctx, c.ID())
			if err != nil {
				log.G(ctx).WithError(err).WithField("id", c.ID()).Warn("a container's record does not load; it is left as it is")
				continue
			}
			s.records.putContainer(m)
			s.names.add(kindContainer, m.Name, m.ID)
			if m.StartedAt == 0 && m.FinishedAt == 0 {
				deleteUnstartedTask(ctx, c)
			}
		}
	}
	return nil
}

// sweepOrphanSnapshots removes the writable layers the plugin made for a
// container or pod whose record was never made: the daemon died between
// the two (containerd's client holds such a snapshot in a lease for a
// day otherwise).
func (s *Service) sweepOrphanSnapshots(ctx context.Context, records []containerd.Container) {
	known := map[string]bool{}
	for _, c := range records {
		known[c.ID()] = true
	}
	sn := s.client.SnapshotService(s.config().Snapshotter)
	var orphans []string
	err := sn.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		if of := info.Labels[labelSnapshotOf]; of != "" && !known[of] {
			orphans = append(orphans, info.Name)
		}
		return nil
	}, fmt.Sprintf("labels.%q", labelSnapshotOf))
	if err != nil {
		log.G(ctx).WithError(err).Warn("look for orphaned writable layers")
		return
	}
	for _, key := range orphans {
		// An image volume's view is mounted in the container's directory.
		if of, _, ok := strings.Cut(key, "-image-volume-"); ok {
			volumes, _ := filepath.Glob(filepath.Join(s.imageVolumesDir(of), "*"))
			for _, target := range volumes {
				_ = mount.UnmountAll(target, unix.MNT_DETACH)
			}
			os.RemoveAll(s.containerDir(of))
		}
		if err := sn.Remove(ctx, key); err != nil && !errdefs.IsNotFound(err) {
			log.G(ctx).WithError(err).WithField("key", key).Warn("remove an orphaned writable layer")
			continue
		}
		log.G(ctx).WithField("key", key).Info("removed the writable layer of a container never recorded")
	}
}

// sweepOrphanContainerDirs removes the on-disk directories (declared
// volumes) of containers never recorded: the daemon died in their
// CreateContainer.
func (s *Service) sweepOrphanContainerDirs(ctx context.Context, recorded map[string]bool) {
	entries, err := os.ReadDir(filepath.Join(s.rootDir, "containers"))
	if err != nil {
		return
	}
	for _, e := range entries {
		if !recorded[e.Name()] {
			if err := os.RemoveAll(s.containerRootDir(e.Name())); err != nil {
				log.G(ctx).WithError(err).WithField("id", e.Name()).Warn("remove the directory of a container never recorded")
			}
		}
	}
}

// removeUnfinishedSandbox removes the record, and any init, of a pod whose
// RunPodSandbox the daemon's death cut short.
func (s *Service) removeUnfinishedSandbox(ctx context.Context, c containerd.Container) {
	if task, err := c.Task(ctx, nil); err == nil {
		if _, err := task.Delete(ctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			log.G(ctx).WithError(err).WithField("id", c.ID()).Warn("delete an unfinished pod's init")
		}
	}
	if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		log.G(ctx).WithError(err).WithField("id", c.ID()).Warn("delete an unfinished pod's record")
		return
	}
	os.RemoveAll(s.sandboxDir(c.ID()))
	log.G(ctx).WithField("id", c.ID()).Info("removed a pod whose RunPodSandbox never finished")
}

// deleteUnstartedTask deletes the task a StartContainer cut short by the
// daemon's death created and never started, as containerd's CRI does when
// it recovers: no request is under way yet, and the container is CREATED
// again. A task that runs or ran is a start to record, which
// reconcileExits does once exits are watched.
func deleteUnstartedTask(ctx context.Context, c containerd.Container) {
	task, err := c.Task(ctx, nil)
	if err != nil {
		return
	}
	if st, err := task.Status(ctx); err != nil || st.Status != containerd.Created {
		return
	}
	if _, err := task.Delete(ctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
		log.G(ctx).WithError(err).WithField("id", c.ID()).Warn("delete the task of an interrupted start")
	}
}

func nowNano() int64 { return time.Now().UnixNano() }

// sweepOrphanSandboxes releases what a RunPodSandbox that never finished
// (the daemon died in it) left behind: pinned namespaces, the pod's
// /dev/shm, its CNI attachment (and so its IP and host port rules), its
// files. Pods with a record are left alone; unfinished holds the configs
// of the unfinished pods whose records recover removed (a pod the daemon
// died in before its record was made had no CNI ADD yet). After a reboot
// an unfinished pod's state is gone with /run, but not its IP: CNI DEL
// runs without a network namespace, which releases it, as containerd does
// for a pod whose namespace is gone.
func (s *Service) sweepOrphanSandboxes(ctx context.Context, recorded map[string]bool, unfinished map[string]*runtimeapi.PodSandboxConfig) {
	entries, _ := os.ReadDir(filepath.Join(s.stateDir, "sandboxes"))
	ids := map[string]bool{}
	for _, e := range entries {
		ids[e.Name()] = true
	}
	for id := range unfinished {
		ids[id] = true
	}
	for id := range ids {
		if recorded[id] {
			continue
		}
		cfg := unfinished[id]
		if cfg == nil {
			cfg = &runtimeapi.PodSandboxConfig{}
		}
		dir := s.sandboxStateDir(id)
		paths := podns.Paths{}
		for kind, p := range map[string]*string{"net": &paths.Net, "ipc": &paths.IPC, "uts": &paths.UTS, "pid": &paths.PID, "user": &paths.User} {
			if _, err := os.Stat(filepath.Join(dir, "ns", kind)); err == nil {
				*p = filepath.Join(dir, "ns", kind)
			}
		}
		hostNet := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions().GetNetwork() == runtimeapi.NamespaceMode_NODE
		if paths.Net != "" || (unfinished[id] != nil && !hostNet) {
			if err := s.network.teardown(ctx, id, paths.Net, cfg); err != nil {
				log.G(ctx).WithError(err).WithField("id", id).Warn("CNI DEL for an unfinished pod")
			}
		}
		unix.Unmount(filepath.Join(dir, "shm"), unix.MNT_DETACH)
		if err := podns.Remove(paths); err != nil {
			log.G(ctx).WithError(err).WithField("id", id).Warn("unpin an unfinished pod's namespaces")
			continue
		}
		os.RemoveAll(dir)
		log.G(ctx).WithField("id", id).Info("released what an unfinished RunPodSandbox left")
	}
}

// process names a process across daemon restarts and pid reuse: its pid
// and its start time in clock ticks since boot.
type process struct {
	Pid       int
	StartTime string
}

func processIdentity(pid uint32) *process {
	return &process{Pid: int(pid), StartTime: startTime(int(pid))}
}

// alive tells whether the process still runs (a zombie does not).
func (p *process) alive() bool {
	return p.StartTime != "" && startTime(p.Pid) == p.StartTime
}

// startTime is field 22 of /proc/PID/stat, "" for a process gone or dead.
func startTime(pid int) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	// Fields follow the command name, which is in parentheses.
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(string(data)[i+1:])
	if len(f) < 20 || f[0] == "Z" || f[0] == "X" {
		return ""
	}
	return f[19]
}
