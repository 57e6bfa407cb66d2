// Package shim is containerd-shim-mine-v2: the runtime v2 task service that
// containerd drives over ttrpc, one process per pod, running the pod's
// containers with runc.
package shim

import (
	"context"
	"os"
	"sync"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/v2/pkg/sys/reaper"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
)

// service implements the task API for every container of one pod.
type service struct {
	mu         sync.Mutex
	namespace  string
	containers map[string]*container
	// creating holds the IDs whose Create is under way, each with a
	// channel closed when that Create is over (endCreateLocked); abandoned
	// those among them whose Delete gave up waiting for it.
	creating  map[string]chan struct{}
	abandoned map[string]bool
	// pids maps the pid of each live process to it, for the exit loop.
	pids map[int]*process
	// While a runc create or exec is in flight, its process may exit before
	// its pid is known; such exits wait in early until the pid is.
	starting int
	early    map[int]runc.Exit

	events *eventQueue
	// shutdown ends the shim; Shutdown calls it once no container is left.
	shutdown func()
	// socket is the group's socket the shim serves, and socketIno its
	// inode; "" when served otherwise (tests). left is set once Shutdown
	// removed the group's files (claims.go).
	socket    string
	socketIno uint64
	left      bool
}

func newService(namespace string, events *eventQueue, shutdown func()) *service {
	// go-runc must wait for runc through the reaper, or the shim's SIGCHLD
	// handler would steal runc's exit status.
	runc.Monitor = reaper.Default
	s := &service{
		namespace:  namespace,
		containers: make(map[string]*container),
		creating:   make(map[string]chan struct{}),
		abandoned:  make(map[string]bool),
		pids:       make(map[int]*process),
		early:      make(map[int]runc.Exit),
		events:     events,
		shutdown:   shutdown,
	}
	go s.exitLoop(reaper.Default.Subscribe())
	return s
}

// register serves task API v3, which containerd 2.x speaks, and v2 for
// older clients. The two are the same messages on the wire; the service
// is written against v2's types because v3's package also carries gRPC
// stubs, and a shim links no gRPC.
func (s *service) register(server *ttrpc.Server) {
	taskAPI.RegisterTTRPCTaskService(server, s)
	registerTaskV3(server, s)
}

// errorInterceptor turns errdefs errors into the status codes containerd
// maps back to them.
func errorInterceptor(ctx context.Context, unmarshal ttrpc.Unmarshaler, _ *ttrpc.UnaryServerInfo, method ttrpc.Method) (any, error) {
	resp, err := method(ctx, unmarshal)
	return resp, errgrpc.ToGRPC(err)
}

// lookup returns a container and one of its processes; the caller holds mu.
func (s *service) lookup(containerID, execID string) (*container, *process, error) {
	c, ok := s.created(containerID)
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

// created returns a container whose Create has returned. One stored while
// its Create is still under way (createRunning) is not there yet for the
// task API: kubelet's cAdvisor asks containerd for the pid of a task as
// soon as its cgroup appears, keeps what it gets, and must get NotFound
// (it asks again) rather than a pid of 0. The caller holds the service
// lock.
func (s *service) created(id string) (*container, bool) {
	c, ok := s.containers[id]
	if _, underway := s.creating[id]; !ok || underway {
		return nil, false
	}
	return c, true
}

// endCreateLocked marks the container's Create, the one that registered
// done, over: it releases a Delete that waits for it, or deletes what it
// made if that Delete gave up. The caller holds the service lock.
func (s *service) endCreateLocked(id string, done chan struct{}) {
	if s.creating[id] != done || done == nil {
		return
	}
	close(done)
	delete(s.creating, id)
	if s.abandoned[id] {
		delete(s.abandoned, id)
		go s.deleteAbandoned(id)
	}
}

// deleteAbandoned deletes a container containerd gave up on while its
// Create was under way (a restarted containerd waits 5 s for the Delete it
// sends, then removes the bundle and forgets the shim), and ends the shim
// if nothing else is left in it.
func (s *service) deleteAbandoned(id string) {
	ctx := context.Background()
	if _, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: id}); err != nil && !errdefs.IsNotFound(err) {
		log.G(ctx).WithError(err).WithField("id", id).Warn("delete a container containerd gave up on")
	}
	_, _ = s.Shutdown(ctx, &taskAPI.ShutdownRequest{})
}

func (s *service) publish(topic string, body any) {
	s.events.publish(topic, body)
}

func shimPid() uint32 { return uint32(os.Getpid()) }
