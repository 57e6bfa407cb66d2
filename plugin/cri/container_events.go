package cri

import (
	"context"
	"sync"

	"github.com/containerd/log"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// GetContainerEvents streams every lifecycle change of pods and containers
// (created, started, stopped, deleted) with the statuses after it, as
// kubelet's evented PLEG reads them. A subscriber that falls too far
// behind is disconnected, as containerd's CRI does: it relists and
// subscribes again, rather than acting on a stream with holes in it.
func (s *Service) GetContainerEvents(_ *runtimeapi.GetEventsRequest, stream grpc.ServerStreamingServer[runtimeapi.ContainerEventResponse]) error {
	ch, cancel := s.events.subscribe()
	defer cancel()
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case ev, ok := <-ch:
			if !ok {
				return status.Error(codes.ResourceExhausted, "container events: the subscriber fell too far behind; list again and subscribe again")
			}
			if err := stream.Send(ev); err != nil {
				return err
			}
		}
	}
}

// lifecycleEvent is a change to publish: statuses are added when it is
// sent, outside the locks of the request that made the change.
type lifecycleEvent struct {
	id, sandboxID string // sandboxID == id for a pod's own events
	typ           runtimeapi.ContainerEventType
	at            int64
	// resp is a deletion's response, built when it is published: the
	// records are gone by the time it is sent, and kubelet drops an
	// event without the pod's status.
	resp *runtimeapi.ContainerEventResponse
}

// eventBroker hands lifecycle events to GetContainerEvents subscribers in
// the order they happened.
type eventBroker struct {
	queue chan lifecycleEvent
	mu    sync.Mutex
	subs  map[chan *runtimeapi.ContainerEventResponse]bool
}

// Queue and subscriber buffers: kubelet reads as fast as it is sent to;
// a burst of pod starts stays far below these.
const (
	eventQueueSize      = 4096
	eventSubscriberSize = 1024
)

func newEventBroker() *eventBroker {
	return &eventBroker{queue: make(chan lifecycleEvent, eventQueueSize), subs: map[chan *runtimeapi.ContainerEventResponse]bool{}}
}

// publish queues an event without blocking the request that made it.
func (s *Service) publish(ctx context.Context, id, sandboxID string, typ runtimeapi.ContainerEventType) {
	s.queueEvent(ctx, lifecycleEvent{id: id, sandboxID: sandboxID, typ: typ, at: nowNano()})
}

// deletionEvent is the event of a removal, made before the removal (its
// statuses are read then, while the records are there) and queued with
// queueEvent once the removal is done.
func (s *Service) deletionEvent(ctx context.Context, id, sandboxID string) lifecycleEvent {
	ev := lifecycleEvent{id: id, sandboxID: sandboxID, typ: runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT, at: nowNano()}
	if s.events.listened() {
		ev.resp = s.eventResponse(ctx, ev)
	}
	return ev
}

func (s *Service) queueEvent(ctx context.Context, ev lifecycleEvent) {
	select {
	case s.events.queue <- ev:
	default:
		log.G(ctx).WithField("id", ev.id).Warn("container event queue full: event dropped")
	}
}

func (b *eventBroker) listened() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs) > 0
}

func (b *eventBroker) subscribe() (<-chan *runtimeapi.ContainerEventResponse, func()) {
	ch := make(chan *runtimeapi.ContainerEventResponse, eventSubscriberSize)
	b.mu.Lock()
	b.subs[ch] = true
	b.mu.Unlock()
	eventSubscribers.Inc()
	return ch, func() {
		eventSubscribers.Dec()
		b.mu.Lock()
		if b.subs[ch] {
			delete(b.subs, ch)
			close(ch)
		}
		b.mu.Unlock()
	}
}

// sendEvents turns queued events into responses, with the statuses as
// they are when the event is sent, and fans them out.
func (s *Service) sendEvents(ctx context.Context) {
	for ev := range s.events.queue {
		if !s.events.listened() {
			// No statuses are read for nobody: kubelet's evented PLEG is
			// off by default, and every start and exit would pay for them.
			continue
		}
		resp := ev.resp
		if resp == nil {
			resp = s.eventResponse(ctx, ev)
		}
		s.events.mu.Lock()
		for ch := range s.events.subs {
			select {
			case ch <- resp:
			default:
				delete(s.events.subs, ch)
				close(ch)
				eventDisconnects.Inc()
			}
		}
		s.events.mu.Unlock()
	}
}

func (s *Service) eventResponse(ctx context.Context, ev lifecycleEvent) *runtimeapi.ContainerEventResponse {
	resp := &runtimeapi.ContainerEventResponse{ContainerId: ev.id, ContainerEventType: ev.typ, CreatedAt: ev.at}
	if ps, err := s.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: ev.sandboxID}); err == nil {
		resp.PodSandboxStatus = ps.GetStatus()
	}
	ids := []string{ev.id}
	if ev.id == ev.sandboxID {
		ids = s.containersOf(s.nsContext(ctx), ev.sandboxID)
	}
	for _, id := range ids {
		if cs, err := s.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id}); err == nil {
			resp.ContainersStatuses = append(resp.ContainersStatuses, cs.GetStatus())
		}
	}
	return resp
}
