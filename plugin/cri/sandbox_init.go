package cri

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/distribution/reference"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/mine-runtime/mine/config"
	"github.com/mine-runtime/mine/extension"
	"github.com/mine-runtime/mine/plugin/spec"
)

// podInitBinary is every pod's init (cmd/mine-pod-init), found in the
// daemon's PATH as the shim is.
const podInitBinary = "mine-pod-init"

// sharesPIDNamespace tells whether a pod's containers share one PID
// namespace: the pod's init's, which is then pinned.
func sharesPIDNamespace(cfg *runtimeapi.PodSandboxConfig) bool {
	return cfg.GetLinux().GetSecurityContext().GetNamespaceOptions().GetPid() == runtimeapi.NamespaceMode_POD
}

// sandboxRecord returns how the pod's record in containerd is made. Every
// pod runs one small process, its init: mine-pod-init, from an empty,
// read-only root (package extension), in the pod's namespaces and under a
// cgroup named after the pod. It is the init of the pod's PID namespace
// when the containers share one, started before the pod is ready; and it
// is what kubelet's cAdvisor takes a pod's network statistics from (the
// /proc/PID/net/dev of the task of a containerd container labelled as a
// sandbox), as it does from a pause container, started in the background
// where that is its only use (startStatsInit). With sandbox_image set, a
// classic pause container of that image is the init instead.
func (s *Service) sandboxRecord(ctx context.Context, m *sandboxMeta, cfg *runtimeapi.PodSandboxConfig, rt config.Runtime) ([]containerd.NewContainerOpts, error) {
	common := []oci.SpecOpts{
		oci.WithCapabilities(nil),
		oci.WithNoNewPrivileges,
		oci.WithCgroup(spec.CgroupsPath(cfg.GetLinux().GetCgroupParent(), m.ID, rt.Options.SystemdCgroup)),
		// Made and run at Create (extension.RunAtCreateAnnotation), one runc
		// process, not at Start (RunAtStartAnnotation): kubelet's cAdvisor
		// takes the pid of the task whose cgroup it sees appear, and a task
		// created to be made at Start has none yet; it would keep none, and
		// the pod would never have network statistics. Made at Create, the
		// task has its pid before containerd shows it, as with runc create.
		oci.WithAnnotations(map[string]string{
			spec.AnnotationSandboxID:        m.ID,
			spec.AnnotationContainerType:    "sandbox",
			extension.RunAtCreateAnnotation: "true",
		}),
	}
	common = append(common, spec.PodNamespaces(m.Namespaces), withSpecVersion(specVersionFor(ctx, rt)))
	userns := spec.PodUserNamespaceOf(cfg)
	snapshotOpts := rootfsRemap(cfg)
	if m.Namespaces.User != "" {
		// The init of a pod with its own user namespace is in it: a
		// shared PID namespace it makes must be the pod's to mount /proc.
		common = append(common, spec.PodUserNamespace(m.Namespaces.User, userns))
	}

	if ref := s.config().SandboxImage; ref != "" {
		image, err := s.sandboxImage(ctx, ref)
		if err != nil {
			return nil, err
		}
		return []containerd.NewContainerOpts{
			containerd.WithSnapshotter(s.config().Snapshotter),
			containerd.WithNewSnapshot(m.ID, image, append(snapshotOpts, snapshots.WithLabels(map[string]string{labelSnapshotOf: m.ID}))...),
			containerd.WithNewSpec(append([]oci.SpecOpts{oci.WithImageConfig(image), oci.WithRootFSReadonly()}, common...)...),
		}, nil
	}
	bin, err := exec.LookPath(podInitBinary)
	if err != nil {
		return nil, fmt.Errorf("the pod's init: %w", err)
	}
	root := filepath.Join(s.sandboxStateDir(m.ID), "init-root")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, err
	}
	if m.Namespaces.User != "" {
		// runc makes the mount points in it from inside the namespace,
		// as the pod's root.
		if err := os.Chown(root, int(userns.GetUids()[0].GetHostId()), int(userns.GetGids()[0].GetHostId())); err != nil {
			return nil, err
		}
	}
	spec, err := oci.GenerateSpec(ctx, nil, &containers.Container{ID: m.ID}, append([]oci.SpecOpts{
		oci.WithRootFSPath(root),
		oci.WithRootFSReadonly(),
		oci.WithProcessArgs("/pod-init"),
		// A Go program: one P, and so fewer threads and cached spans.
		oci.WithEnv([]string{"GOMAXPROCS=1"}),
		oci.WithMounts([]specs.Mount{{Destination: "/pod-init", Type: "bind", Source: bin, Options: []string{"rbind", "ro"}}}),
	}, common...)...)
	if err != nil {
		return nil, err
	}
	return []containerd.NewContainerOpts{containerd.WithSpec(spec)}, nil
}

// sandboxImage is the pause image, pulled if it is not there yet: only a
// node configured with sandbox_image ever pulls one.
func (s *Service) sandboxImage(ctx context.Context, ref string) (containerd.Image, error) {
	named, err := normalize(ref)
	if err != nil {
		return nil, err
	}
	ci, err := s.images.find(ctx, named.String())
	if errdefs.IsNotFound(err) {
		if _, err = s.images.pull(ctx, named, nil); err != nil {
			return nil, fmt.Errorf("sandbox_image: %w", err)
		}
		ci, err = s.images.find(ctx, named.String())
	}
	if err != nil {
		return nil, err
	}
	if err := s.pinIfSandboxImage(ctx, named); err != nil {
		return nil, err
	}
	return containerd.NewImage(s.client, ci.record), nil
}

// pinIfSandboxImage pins the image named if it is the sandbox_image,
// however it came (pulled here, pre-pulled through the CRI as kubeadm
// does, or pulled again, which replaces its record's labels), as
// containerd pins it: kubelet's image garbage collection, which sees no
// container of a pod's pause image, leaves pinned images alone.
func (s *Service) pinIfSandboxImage(ctx context.Context, named reference.Named) error {
	ref := s.config().SandboxImage
	if ref == "" {
		return nil
	}
	if sandbox, err := normalize(ref); err != nil || sandbox.String() != named.String() {
		return nil
	}
	store := s.client.ImageService()
	rec, err := store.Get(ctx, named.String())
	if err != nil || rec.Labels[pinnedLabel] == "pinned" {
		return err
	}
	rec.Labels = maps.Clone(rec.Labels)
	if rec.Labels == nil {
		rec.Labels = map[string]string{}
	}
	rec.Labels[pinnedLabel] = "pinned"
	_, err = store.Update(ctx, rec, "labels."+pinnedLabel)
	return err
}

// startStatsInit starts the init of a pod whose containers do not share
// its PID namespace once its first container has started (trigger), or
// statsInitDelay after RunPodSandbox if none has by then (kubelet pulls
// images in between), and then once the node's pod and container starts
// have paused (statsInitQuietPeriod), or statsInitMaxWait after that: its
// runc processes and its own never compete with the pod's start, nor with
// a burst of other pods' starts (kubelet starting a node's pods), for
// whose sake kubelet's statistics of a new pod may come a few seconds
// later.
// Its lock, taken before the pod's, makes StopPodSandbox wait for a start
// under way and then stop what it started. A failure costs the pod its
// network statistics in kubelet's summary, nothing else: it is logged.
// With no trigger (the daemon's restart), it is due at once.
func (s *Service) startStatsInit(ctx context.Context, id string, trigger <-chan struct{}) {
	if trigger != nil {
		select {
		case <-trigger:
		case <-time.After(statsInitDelay):
			s.initTriggers.drop(id)
		}
	}
	s.starts.pause(statsInitQuietPeriod, statsInitMaxWait)
	unlockInit := s.lock(initLock(id))
	defer unlockInit()
	c, m, err := s.loadSandbox(ctx, id)
	if err != nil || !m.Ready || m.Init != nil {
		return
	}
	if trigger == nil {
		// A task a start cut short by the daemon's death left.
		if err := deleteTask(ctx, c); err != nil {
			log.G(ctx).WithError(err).WithField("id", id).Warn("delete the pod's unstarted init")
			return
		}
	}
	task, err := c.NewTask(ctx, cio.NullIO)
	if err == nil {
		if err = task.Start(ctx); err != nil {
			task.Delete(ctx, containerd.WithProcessKill)
		}
	}
	if err != nil {
		log.G(ctx).WithError(err).WithField("id", id).Warn("start the pod's init: kubelet will have no network statistics for it")
		return
	}
	init := processIdentity(task.Pid())
	unlock := s.lock(id)
	defer unlock()
	if c, m, err = s.loadSandbox(ctx, id); err == nil {
		m.Init = init
		err = s.saveSandbox(ctx, c, m)
	}
	if err != nil {
		log.G(ctx).WithError(err).WithField("id", id).Warn("record the pod's init")
	}
}

// initLock is the name of the lock of a pod's init, taken before the
// pod's own.
func initLock(id string) string { return id + "/init" }

// podPIDNamespace is the PID namespace of a pod's init, "" for a pod
// without one. A dead init's pid may be another process's by now: that is
// an error, never a namespace to join.
func (s *Service) podPIDNamespace(ctx context.Context, sb *sandboxMeta) (string, error) {
	if sb.Init == nil {
		return "", nil
	}
	if !sb.Init.alive() {
		return "", errdefs.ErrFailedPrecondition.WithMessage("the init of pod " + sb.ID + " is not running")
	}
	return fmt.Sprintf("/proc/%d/ns/pid", sb.Init.Pid), nil
}

// statsInitDelay is how long a pod's statistics init waits for the pod's
// first container to start before it starts anyway.
const statsInitDelay = 2 * time.Second

// statsInitMaxWait bounds how long a pod's statistics init, once due,
// waits for the node's pod and container starts to pause.
const statsInitMaxWait = 10 * time.Second

// statsInitQuietPeriod is how long no start must have been under way for
// the node's starts to count as paused. Not the first instant of quiet:
// kubelet starts a node's pods one after another as well as at once, and
// a pod stopped as soon as its container started (a job done at once)
// would have its init started only to be stopped with it; after the
// pause, an init whose pod is no longer ready is not started.
const statsInitQuietPeriod = 200 * time.Millisecond

// startsUnderWay counts the RunPodSandbox and StartContainer calls in
// progress.
type startsUnderWay struct {
	mu    sync.Mutex
	n     int
	begun uint64        // starts begun since the daemon started
	idle  chan struct{} // closed when n falls to 0
}

// begin counts a start until the returned func is called.
func (w *startsUnderWay) begin() (end func()) {
	w.mu.Lock()
	if w.n == 0 {
		w.idle = make(chan struct{})
	}
	w.n++
	w.begun++
	w.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			w.mu.Lock()
			defer w.mu.Unlock()
			if w.n--; w.n == 0 {
				close(w.idle)
			}
		})
	}
}

// quiet is closed once no start is under way.
func (w *startsUnderWay) quiet() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.n == 0 {
		return alreadyClosed
	}
	return w.idle
}

var alreadyClosed = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// pause returns once no start has been under way for period, or once max
// has passed.
func (w *startsUnderWay) pause(period, max time.Duration) {
	giveUp := time.NewTimer(max)
	defer giveUp.Stop()
	for {
		select {
		case <-w.quiet():
		case <-giveUp.C:
			return
		}
		// A start may have begun since quiet fired: it is waited for too.
		w.mu.Lock()
		begun, underWay := w.begun, w.n > 0
		w.mu.Unlock()
		if underWay {
			continue
		}
		wait := time.NewTimer(period)
		select {
		case <-wait.C:
		case <-giveUp.C:
			wait.Stop()
			return
		}
		w.mu.Lock()
		paused := w.n == 0 && w.begun == begun
		w.mu.Unlock()
		if paused {
			return
		}
	}
}

// initTriggers are the pods whose statistics init waits for their first
// container's start.
type initTriggers struct {
	mu      sync.Mutex
	waiting map[string]chan struct{}
}

func (t *initTriggers) add(id string) <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.waiting == nil {
		t.waiting = map[string]chan struct{}{}
	}
	ch := make(chan struct{})
	t.waiting[id] = ch
	return ch
}

// fire starts the pod's init if it waits.
func (t *initTriggers) fire(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if ch, ok := t.waiting[id]; ok {
		close(ch)
		delete(t.waiting, id)
	}
}

func (t *initTriggers) drop(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.waiting, id)
}

func withSpecVersion(v string) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		s.Version = v
		return nil
	}
}
