package cri

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/mine-runtime/mine/config"
	"github.com/mine-runtime/mine/failpoint"
	"github.com/mine-runtime/mine/plugin/podns"
	ocispec "github.com/mine-runtime/mine/plugin/spec"
)

// podShmSize is the size of a pod's /dev/shm, as with a pause container.
const podShmSize = 64 << 20

// RunPodSandbox creates a pod: its namespaces, pinned without any image;
// its network through CNI; its /etc/hosts, /etc/resolv.conf, /etc/hostname
// and /dev/shm; its init (sandboxRecord). Containers join all of it when
// they start.
func (s *Service) RunPodSandbox(reqCtx context.Context, r *runtimeapi.RunPodSandboxRequest) (_ *runtimeapi.RunPodSandboxResponse, retErr error) {
	// A client that gives up does not stop the pod being made: its retry
	// is then handed the pod, rather than finding half of one.
	ctx := context.WithoutCancel(s.nsContext(reqCtx))
	defer s.starts.begin()()
	cfg := r.GetConfig()
	md := cfg.GetMetadata()
	if md == nil || md.Name == "" || md.Namespace == "" || md.Uid == "" {
		return nil, toStatus(invalid("pod sandbox config needs metadata with a name, a namespace and a uid"))
	}
	nsOpts := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions()
	if err := validNames("pod sandbox", map[string]string{"name": md.Name, "namespace": md.Namespace, "uid": md.Uid, "hostname": cfg.GetHostname()}); err != nil {
		return nil, toStatus(err)
	}
	if dir := cfg.GetLogDirectory(); dir != "" && !filepath.IsAbs(dir) {
		return nil, toStatus(invalid(fmt.Sprintf("log_directory %q is not absolute", dir)))
	}
	if err := validUserNamespace(nsOpts); err != nil {
		return nil, toStatus(err)
	}
	if err := validSysctls(cfg.GetLinux().GetSysctls(), nsOpts); err != nil {
		return nil, toStatus(err)
	}
	if err := validMetadataSize(cfg.GetLabels(), cfg.GetAnnotations()); err != nil {
		return nil, toStatus(err)
	}
	if _, err := podBandwidth(cfg.GetAnnotations()); err != nil {
		return nil, toStatus(err)
	}
	s.reloadMu.RLock()
	defer s.reloadMu.RUnlock()
	handler, rt, err := s.runtimeFor(r.GetRuntimeHandler())
	if err != nil {
		return nil, toStatus(err)
	}
	var userIDs *podns.IDMap
	if u := ocispec.PodUserNamespaceOf(cfg); u != nil {
		if !handlerFeatures(ctx, rt).UserNamespaces {
			return nil, toStatus(errdefs.ErrFailedPrecondition.WithMessage("runtime handler " + handler + " cannot run pods in a user namespace of their own (its OCI runtime has no idmapped mounts)"))
		}
		userIDs = &podns.IDMap{UIDs: ocispec.IDMappings(u.GetUids()), GIDs: ocispec.IDMappings(u.GetGids())}
	}

	name := sandboxName(md)
	id := newID()
	holder, err := s.names.reserve(reqCtx, kindSandbox, name, id)
	if err != nil {
		return nil, toStatus(err)
	}
	if holder != nil {
		// A retry of a request whose first attempt finished after the client
		// gave up gets the pod that attempt made.
		if _, m, err := s.loadSandbox(ctx, holder.id); err == nil && proto.Equal(m.config, cfg) && m.RuntimeHandler == handler && !m.NetworkLeft {
			return &runtimeapi.RunPodSandboxResponse{PodSandboxId: holder.id}, nil
		}
		return nil, toStatus(errdefs.ErrAlreadyExists.WithMessage(fmt.Sprintf("pod sandbox %q already exists as %s", name, holder.id)))
	}
	created := false
	kept := false // failed, and kept for its network's teardown
	defer func() {
		s.names.finish(kindSandbox, name, created || kept)
		if created {
			s.publish(ctx, id, id, runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT)
			s.publish(ctx, id, id, runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT)
		}
	}()

	cleanupCtx := ctx
	var undo []func()
	// A CNI DEL that fails while the pod is undone leaves its IP and host
	// port rules with the network's plugins: what is left to undo stays
	// (its record, network namespace and files), the pod kept NOTREADY.
	var meta *sandboxMeta
	var record containerd.Container
	networkLeft := false
	defer func() {
		if created { // an error, or a panic on its way up, otherwise
			return
		}
		for i := len(undo) - 1; i >= 0 && !networkLeft; i-- {
			undo[i]()
		}
		if networkLeft && record != nil {
			kept = s.keepForNetworkTeardown(cleanupCtx, record, meta)
		}
	}()

	hostNet := nsOpts.GetNetwork() == runtimeapi.NamespaceMode_NODE
	hostIPC := nsOpts.GetIpc() == runtimeapi.NamespaceMode_NODE
	state := s.sandboxStateDir(id)
	if err := os.MkdirAll(state, 0o711); err != nil {
		return nil, toStatus(err)
	}
	undo = append(undo, func() { os.RemoveAll(state) })

	hostname := cfg.GetHostname()
	if hostNet || hostname == "" {
		hostname, _ = os.Hostname()
	}
	paths, err := podns.Pin(filepath.Join(state, "ns"), podns.Request{Net: !hostNet, IPC: !hostIPC, UTS: !hostNet, Hostname: hostname, User: userIDs})
	if err != nil {
		return nil, toStatus(fmt.Errorf("pod namespaces: %w", err))
	}
	undo = append(undo, func() { podns.Remove(paths) })
	if err := failpoint.Inject(ctx, failpoint.PodNamespaces); err != nil {
		return nil, toStatus(fmt.Errorf("pod namespaces: %w", err))
	}

	if err := writePodFiles(state, hostname, hostNet, cfg.GetDnsConfig()); err != nil {
		return nil, toStatus(err)
	}
	if !hostIPC {
		shm := filepath.Join(state, "shm")
		if err := os.MkdirAll(shm, 0o755); err != nil {
			return nil, toStatus(err)
		}
		if err := unix.Mount("shm", shm, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, fmt.Sprintf("mode=1777,size=%d", podShmSize)); err != nil {
			return nil, toStatus(fmt.Errorf("mount pod /dev/shm: %w", err))
		}
		undo = append(undo, func() { unix.Unmount(shm, unix.MNT_DETACH) })
	}

	raw, err := proto.Marshal(cfg)
	if err != nil {
		return nil, toStatus(err)
	}
	meta = &sandboxMeta{
		ID:             id,
		Name:           name,
		Config:         raw,
		RuntimeHandler: handler,
		Namespaces:     paths,
		CreatedAt:      nowNano(),
		Ready:          true,
		Unfinished:     true,
	}
	recordOpts, err := s.sandboxRecord(ctx, meta, cfg, rt)
	if err != nil {
		return nil, toStatus(err)
	}
	recordOpts = append(recordOpts,
		containerd.WithRuntime(rt.RuntimeType, runcOptions(rt)),
		containerd.WithContainerLabels(recordLabels(cfg.GetLabels(), map[string]string{labelKind: kindSandbox, labelCRIKind: "sandbox"})),
		containerd.NewContainerOpts(withMeta(meta)))
	record, err = s.client.NewContainer(cleanupCtx, id, recordOpts...)
	if err != nil {
		return nil, toStatus(fmt.Errorf("record pod sandbox: %w", err))
	}
	undo = append(undo, func() { record.Delete(cleanupCtx, containerd.WithSnapshotCleanup) })
	if err := failpoint.Inject(ctx, failpoint.PodRecord); err != nil {
		return nil, toStatus(fmt.Errorf("record pod sandbox: %w", err))
	}

	// A pod whose containers share its PID namespace, or that runs a
	// pause container, needs its init before it is ready. The init needs
	// the pod's network namespace, not its interfaces: it starts (the
	// shim's start, runc create and start) while CNI sets the network up.
	sharedPID := sharesPIDNamespace(cfg)
	syncInit := sharedPID || s.config().SandboxImage != ""
	var (
		initDone = make(chan struct{})
		init     podInit
		initErr  error
	)
	if syncInit {
		go func() {
			defer close(initDone)
			init, initErr = s.startPodInit(ctx, record, state, sharedPID)
		}()
	} else {
		close(initDone)
	}
	var ips []string
	var netErr error
	if !hostNet {
		teardown := func() {
			if err := s.network.teardown(cleanupCtx, id, paths.Net, cfg); err != nil {
				log.G(ctx).WithError(err).Warn("CNI DEL after failed RunPodSandbox: the pod is kept, NOTREADY, for StopPodSandbox to tear its network down")
				networkLeft = true
			}
		}
		// On failure too: CNI DEL releases whatever ADD got to, an IP
		// among it.
		ips, netErr = s.network.setup(ctx, id, paths.Net, cfg)
		undo = append(undo, teardown)
	}
	<-initDone
	if init.task != nil {
		undo = append(undo, func() { init.task.Delete(cleanupCtx, containerd.WithProcessKill) })
	}
	if init.pidns != "" {
		undo = append(undo, func() { podns.Remove(podns.Paths{PID: init.pidns}) })
	}
	if netErr != nil {
		return nil, toStatus(netErr)
	}
	if initErr != nil {
		return nil, toStatus(fmt.Errorf("pod init: %w", initErr))
	}
	meta.IPs = ips
	meta.Init = init.process
	meta.Namespaces.PID = init.pidns
	meta.config = cfg
	// Until the pod is recorded, a plugin that connects waits: it then
	// finds the pod in its Synchronize, or is told of it here, not neither.
	unblock := s.nri.BlockSync()
	defer unblock()
	// Registered before the call, unlike containerd's CRI: plugins before
	// the one that failed may have set the pod up, and hear it removed.
	undo = append(undo, func() { s.nriPodRemoved(cleanupCtx, meta) })
	if err := s.nriRunPod(ctx, meta); err != nil {
		return nil, toStatus(err)
	}
	meta.Unfinished = false
	if err := s.saveSandbox(ctx, record, meta); err != nil {
		return nil, toStatus(err)
	}
	created = true
	if !syncInit {
		// Nothing of the pod needs its init but kubelet's statistics: it
		// starts after the pod's first container, off the path of the
		// pod's start.
		go s.startStatsInit(context.WithoutCancel(ctx), id, s.initTriggers.add(id))
	}
	return &runtimeapi.RunPodSandboxResponse{PodSandboxId: id}, nil
}

// keepForNetworkTeardown records a pod whose RunPodSandbox failed after
// CNI ADD and whose CNI DEL failed: not ready, it is what kubelet stops
// (retrying the DEL with the pod's config) and removes.
func (s *Service) keepForNetworkTeardown(ctx context.Context, record containerd.Container, m *sandboxMeta) bool {
	m.Unfinished, m.Ready, m.NetworkLeft, m.Init = false, false, true, nil
	m.Namespaces.PID = ""
	if err := s.saveSandbox(ctx, record, m); err != nil {
		// Its record stays unfinished: the next start's clean-up tears
		// it down, network included (recover).
		log.G(ctx).WithError(err).WithField("id", m.ID).Error("keep a pod whose network could not be torn down: it is left to the daemon's next start")
		return false
	}
	return true
}

// podInit is a pod's init as RunPodSandbox started it.
type podInit struct {
	task    containerd.Task
	process *process
	pidns   string // the pinned PID namespace, "" unless the pod shares one
}

// startPodInit creates and starts a pod's init (or pause container) and,
// for a pod whose containers share its PID namespace, pins that
// namespace. What it made is returned with any error, for the caller to
// undo.
func (s *Service) startPodInit(ctx context.Context, record containerd.Container, state string, sharedPID bool) (podInit, error) {
	var init podInit
	task, err := record.NewTask(ctx, cio.NullIO)
	if err != nil {
		return init, err
	}
	init.task = task
	if err := task.Start(ctx); err != nil {
		return init, err
	}
	init.process = processIdentity(task.Pid())
	if sharedPID {
		// Pinned like the pod's other namespaces: containers join the
		// namespace itself, never whatever process has the init's pid.
		pidns := filepath.Join(state, "ns", "pid")
		if err := podns.PinProcess(pidns, init.process.Pid, "pid", init.process.alive); err != nil {
			return init, err
		}
		init.pidns = pidns
	}
	return init, nil
}

// runtimeFor resolves a runtime handler, "" meaning the default one.
func (s *Service) runtimeFor(handler string) (string, config.Runtime, error) {
	cfg := s.config()
	if handler == "" {
		handler = cfg.DefaultRuntimeName
	}
	rt, ok := cfg.Runtimes[handler]
	if !ok {
		return "", rt, invalid("no runtime handler " + handler + " is configured")
	}
	return handler, rt, nil
}

// runcOptions are the runtime options the shim gets for a handler.
func runcOptions(rt config.Runtime) *options.Options {
	return &options.Options{
		BinaryName:    rt.Options.BinaryName,
		Root:          rt.Options.Root,
		SystemdCgroup: rt.Options.SystemdCgroup,
	}
}

func newID() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// writePodFiles writes the files every container of the pod mounts.
func writePodFiles(dir, hostname string, hostNet bool, dns *runtimeapi.DNSConfig) error {
	hosts := "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
	if hostNet {
		if data, err := os.ReadFile("/etc/hosts"); err == nil {
			hosts = string(data)
		}
	}
	resolv, err := resolvConf(dns)
	if err != nil {
		return err
	}
	for name, content := range map[string]string{"hostname": hostname + "\n", "hosts": hosts, "resolv.conf": resolv} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// resolvConf is the pod's resolv.conf: from its DNS config, else the
// host's.
func resolvConf(dns *runtimeapi.DNSConfig) (string, error) {
	if dns == nil || len(dns.Servers)+len(dns.Searches)+len(dns.Options) == 0 {
		data, err := os.ReadFile("/etc/resolv.conf")
		if errors.Is(err, os.ErrNotExist) {
			return "", nil
		}
		return string(data), err
	}
	var b strings.Builder
	for _, srv := range dns.Servers {
		fmt.Fprintf(&b, "nameserver %s\n", srv)
	}
	if len(dns.Searches) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(dns.Searches, " "))
	}
	if len(dns.Options) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(dns.Options, " "))
	}
	return b.String(), nil
}
