// Package cri implements the Kubernetes CRI, runtime.v1 RuntimeService and
// ImageService, on top of containerd's services. One file per RPC, named
// after it. Everything the service must remember lives in containerd:
// pods and containers are containerd containers in the k8s.io namespace,
// with their CRI configuration and state in labels and extensions.
package cri

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/log"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-streaming/pkg/streaming"

	"github.com/mine-runtime/mine/config"
	"github.com/mine-runtime/mine/plugin/nri"
	"github.com/mine-runtime/mine/plugin/spec"
)

// Namespace is the containerd namespace CRI objects live in, as with
// containerd's own CRI plugin: `ctr -n k8s.io containers ls` shows them.
const Namespace = "k8s.io"

// Options are what the service is built from.
type Options struct {
	Client   *containerd.Client
	Config   *config.Config
	RootDir  string // persistent: survives reboots
	StateDir string // volatile: pods' namespaces, /dev/shm, hosts files
	Address  string // containerd's socket
	// NRI is containerd's NRI section; nil: NRI off.
	NRI *nri.Config
	// Version is the daemon's, which NRI plugins are told.
	Version string
	// SnapshotterRoot is the root a snapshotter plugin exports, "" if
	// it exports none.
	SnapshotterRoot func(name string) string
}

// Service is the CRI server.
type Service struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	runtimeapi.UnimplementedImageServiceServer

	client *containerd.Client
	// cfg is the configuration in force; Reload replaces it whole.
	cfg atomic.Pointer[config.Config]
	// reloadMu: Reload holds it to write; a RunPodSandbox holds it to read
	// from choosing its handler to recording the pod, so that a reload
	// never removes a handler a pod is being made with.
	reloadMu sync.RWMutex
	rootDir  string
	stateDir string
	// snapshotterRootOf: Options.SnapshotterRoot.
	snapshotterRootOf func(name string) string

	names   *nameIndex
	records *records
	images  *imageService
	network *network
	// host holds the node's facts containers' specs depend on.
	host  *spec.Host
	users imageUsers

	events *eventBroker
	nri    *nri.Runtime // nil: NRI off
	locks  keyedMutex
	cpu    cpuSamples
	stats  *statsCollector
	shims  *shimFigures
	// initTriggers start pods' statistics inits (startStatsInit), which
	// then wait for starts to pause.
	initTriggers initTriggers
	starts       startsUnderWay
	streams      streaming.Server
	stdins       stdinFIFOs
	// oomKilled remembers containers the OOM killer acted in until their
	// exit is recorded, which then gets the reason OOMKilled.
	oomKilled sync.Map
	// stopSignaled holds the containers sent their stop signal, until they
	// are removed: a StopContainer that comes again (kubelet shortening
	// the grace period, or restarted) sends it no second time.
	stopSignaled sync.Map
}

// New builds the service and recovers its state from containerd.
func New(ctx context.Context, o Options) (*Service, error) {
	for _, d := range []string{o.RootDir, o.StateDir} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return nil, err
		}
	}
	s := &Service{
		client:            o.Client,
		rootDir:           o.RootDir,
		snapshotterRootOf: o.SnapshotterRoot,
		stateDir:          o.StateDir,
		names:             newNameIndex(),
		records:           newRecords(),
		events:            newEventBroker(),
		stats:             newStatsCollector(o.Config.StatsPeriod()),
		shims:             newShimFigures(),
	}
	s.cfg.Store(o.Config)
	s.images = &imageService{client: o.Client, config: s.config, hostsDir: filepath.Join(o.StateDir, "registry-hosts")}
	if err := s.images.writeHostFiles(o.Config.Registry); err != nil {
		return nil, err
	}
	var err error
	if s.network, err = newNetwork(o.Config); err != nil {
		return nil, err
	}
	s.network.resultPath = func(id string) string { return filepath.Join(s.sandboxStateDir(id), "cni-result.json") }
	if s.host, err = spec.DetectHost(oomScoreFloor(o.Config.RestrictOOMScoreAdj)); err != nil {
		return nil, err
	}
	s.users = imageUsers{client: o.Client, snapshotter: o.Config.Snapshotter}
	ctx = s.nsContext(ctx)
	if err := s.recover(ctx); err != nil {
		return nil, fmt.Errorf("recover CRI state from containerd: %w", err)
	}
	if err := s.startStreaming(ctx); err != nil {
		return nil, err
	}
	if o.NRI != nil {
		// Started once the records are in: a plugin is synchronised with
		// every pod and container there is.
		if s.nri, err = nri.New(*o.NRI, "mine", o.Version, s.nriSync, s.nriUpdate); err != nil {
			return nil, fmt.Errorf("NRI: %w", err)
		}
		if s.nri != nil {
			if err := s.nri.Start(); err != nil {
				return nil, fmt.Errorf("NRI: %w", err)
			}
		}
	}
	go s.watchExits(context.WithoutCancel(ctx))
	go s.reconcileLoop(context.WithoutCancel(ctx))
	go s.stats.run(context.WithoutCancel(ctx), s)
	go s.sendEvents(context.WithoutCancel(ctx))
	for _, c := range []prometheus.Collector{stateCollector{s}, shimCollector{s}} {
		if err := prometheus.Register(c); err != nil {
			log.G(ctx).WithError(err).Warn("some figures will not be in the metrics")
		}
	}
	if s.host.MinOOMScoreAdj > -1000 {
		log.G(ctx).WithField("floor", s.host.MinOOMScoreAdj).Info("containers' oom_score_adj is clamped: the daemon may not lower scores (restrict_oom_score_adj, or no CAP_SYS_RESOURCE)")
	}
	return s, nil
}

// Register serves both CRI services on containerd's gRPC server.
func (s *Service) Register(server *grpc.Server) {
	server.RegisterService(guarded(runtimeapi.RuntimeService_ServiceDesc), s)
	server.RegisterService(guarded(runtimeapi.ImageService_ServiceDesc), s)
}

// guarded wraps every method of a service so that a panic in one request
// fails that request, not the whole containerd, and counts it in the
// plugin's metrics.
func guarded(desc grpc.ServiceDesc) *grpc.ServiceDesc {
	methods := make([]grpc.MethodDesc, len(desc.Methods))
	for i, m := range desc.Methods {
		handler := m.Handler
		m.Handler = func(srv any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (resp any, err error) {
			start := time.Now()
			defer func() {
				if r := recover(); r != nil {
					log.G(ctx).WithField("method", m.MethodName).Errorf("panic: %v\n%s", r, debug.Stack())
					err = status.Errorf(codes.Internal, "%s: internal error: %v", m.MethodName, r)
				}
				observe(m.MethodName, start, err)
			}()
			return handler(srv, ctx, dec, icpt)
		}
		methods[i] = m
	}
	desc.Methods = methods
	return &desc
}

func (s *Service) sandboxDir(id string) string { return filepath.Join(s.rootDir, "sandboxes", id) }
func (s *Service) sandboxStateDir(id string) string {
	return filepath.Join(s.stateDir, "sandboxes", id)
}
func (s *Service) containerDir(id string) string { return filepath.Join(s.stateDir, "containers", id) }

// containerRootDir holds what of a container must be on disk rather than
// in the volatile state directory: the volumes its image declares.
func (s *Service) containerRootDir(id string) string {
	return filepath.Join(s.rootDir, "containers", id)
}
