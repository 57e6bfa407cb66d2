// Package shim is containerd-shim-mine-v2: the runtime v2 task service that
// containerd drives over ttrpc, one process per pod, running its containers
// with runc.
package shim

import (
	"context"
	"os"
	"sync"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oom"
	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/containerd/containerd/v2/pkg/sys/reaper"
	"github.com/containerd/containerd/v2/plugins"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/plugin"
	"github.com/containerd/plugin/registry"
	"github.com/containerd/ttrpc"
)

// Register makes the task service known to pkg/shim's plugin loader.
func Register() {
	registry.Register(&plugin.Registration{
		Type: plugins.TTRPCPlugin,
		ID:   "task",
		Requires: []plugin.Type{
			plugins.EventPlugin,
			plugins.InternalPlugin,
		},
		InitFn: func(ic *plugin.InitContext) (any, error) {
			pp, err := ic.GetByID(plugins.EventPlugin, "publisher")
			if err != nil {
				return nil, err
			}
			ss, err := ic.GetByID(plugins.InternalPlugin, "shutdown")
			if err != nil {
				return nil, err
			}
			return newService(ic.Context, pp.(shim.Publisher), ss.(shutdown.Service))
		},
	})
}

// service implements the task API for every container of one pod.
type service struct {
	mu         sync.Mutex
	namespace  string
	containers map[string]*container
	// pids maps the pid of each live process to it, for the exit loop.
	pids map[int]*process
	// While a runc create or exec is in flight, its process may exit before
	// its pid is known; such exits wait in early until the pid is.
	starting int
	early    map[int]runc.Exit

	events   *eventQueue
	oom      oom.Watcher
	shutdown shutdown.Service
}

func newService(ctx context.Context, publisher shim.Publisher, sd shutdown.Service) (*service, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	// go-runc must wait for runc through the reaper, or the shim's SIGCHLD
	// handler would steal runc's exit status.
	runc.Monitor = reaper.Default
	s := &service{
		namespace:  ns,
		containers: make(map[string]*container),
		pids:       make(map[int]*process),
		early:      make(map[int]runc.Exit),
		events:     newEventQueue(publisher, ns),
		shutdown:   sd,
	}
	if s.oom, err = newOOMWatcher(ctx, s.events); err != nil {
		return nil, err
	}
	go s.exitLoop(reaper.Default.Subscribe())
	sd.RegisterCallback(func(context.Context) error {
		s.oom.Close()
		s.events.close()
		return publisher.Close()
	})
	return s, nil
}

// RegisterTTRPC serves task API v3, which containerd 2.x speaks, and v2
// for older clients: their messages are the same on the wire.
func (s *service) RegisterTTRPC(server *ttrpc.Server) error {
	taskAPI.RegisterTTRPCTaskService(server, s)
	registerTaskV2(server, s)
	return nil
}

// UnaryServerInterceptor turns errdefs errors into the status codes
// containerd maps back to them.
func (s *service) UnaryServerInterceptor() ttrpc.UnaryServerInterceptor {
	return func(ctx context.Context, unmarshal ttrpc.Unmarshaler, info *ttrpc.UnaryServerInfo, method ttrpc.Method) (any, error) {
		resp, err := method(ctx, unmarshal)
		return resp, errgrpc.ToGRPC(err)
	}
}

// lookup returns a container and one of its processes; the caller holds mu.
func (s *service) lookup(containerID, execID string) (*container, *process, error) {
	c, ok := s.containers[containerID]
	if !ok {
		return nil, nil, errdefs.ErrNotFound.WithMessage("container " + containerID + " not found")
	}
	if execID == "" {
		return c, c.init, nil
	}
	p, ok := c.execs[execID]
	if !ok {
		return nil, nil, errdefs.ErrNotFound.WithMessage("exec " + execID + " not found in container " + containerID)
	}
	return c, p, nil
}

func (s *service) publish(topic string, body events.Event) {
	_ = s.events.Publish(context.Background(), topic, body)
}

func shimPid() uint32 { return uint32(os.Getpid()) }
