package shim

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	eventsapi "github.com/containerd/containerd/api/services/ttrpc/events/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/types/known/timestamppb"
)

const ttrpcAddressEnv = "TTRPC_ADDRESS"

// Delivery of an event is retried this many times, with growing pauses,
// before it is dropped: containerd may be restarting, and learns the
// state from the shim when it reconnects anyway.
const (
	deliveryAttempts = 10
	maxRetryPause    = 2 * time.Second
	closeTimeout     = 5 * time.Second
)

// sendFunc delivers one event to containerd.
type sendFunc func(context.Context, *types.Envelope) error

// eventQueue hands events to containerd one at a time, in the order they
// were queued: containerd requires TaskCreate < TaskStart < TaskExit <
// TaskDelete, and the RPCs that queue them run concurrently. Publishing
// never blocks, so an unreachable containerd cannot stall the shim.
type eventQueue struct {
	namespace string
	send      sendFunc

	mu      sync.Mutex
	pending []*types.Envelope
	closed  bool
	wake    chan struct{}
	done    chan struct{}
}

func newEventQueue(send sendFunc, namespace string) *eventQueue {
	q := &eventQueue{
		namespace: namespace,
		send:      send,
		wake:      make(chan struct{}, 1),
		done:      make(chan struct{}),
	}
	go q.run()
	return q
}

// publish queues an event from containerd's api/events package.
func (q *eventQueue) publish(topic string, body any) {
	a, err := typeurl.MarshalAnyToProto(body)
	if err != nil {
		log.L.WithError(err).WithField("topic", topic).Error("marshal event")
		return
	}
	e := &types.Envelope{Timestamp: timestamppb.Now(), Namespace: q.namespace, Topic: topic, Event: a}
	q.mu.Lock()
	if !q.closed {
		q.pending = append(q.pending, e)
	}
	q.mu.Unlock()
	q.signal()
}

func (q *eventQueue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *eventQueue) run() {
	defer close(q.done)
	for {
		q.mu.Lock()
		if len(q.pending) == 0 {
			closed := q.closed
			q.mu.Unlock()
			if closed {
				return
			}
			<-q.wake
			continue
		}
		e := q.pending[0]
		q.mu.Unlock()
		q.deliver(e)
		q.mu.Lock()
		q.pending = q.pending[1:]
		q.mu.Unlock()
	}
}

func (q *eventQueue) deliver(e *types.Envelope) {
	pause := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := q.send(ctx, e)
		cancel()
		if err == nil {
			return
		}
		if attempt == deliveryAttempts {
			log.L.WithError(err).WithField("topic", e.Topic).Error("dropping event containerd did not take")
			return
		}
		time.Sleep(pause)
		pause = min(2*pause, maxRetryPause)
	}
}

// close delivers what is queued, giving up after closeTimeout.
func (q *eventQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.signal()
	select {
	case <-q.done:
	case <-time.After(closeTimeout):
	}
}

// forwarder sends events to containerd's ttrpc events service, dialling
// again after a failure.
type forwarder struct {
	address string
	mu      sync.Mutex
	client  *ttrpc.Client
}

func (f *forwarder) send(ctx context.Context, e *types.Envelope) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.client == nil {
		if f.address == "" {
			return fmt.Errorf("no containerd ttrpc address ($%s) to publish events to", ttrpcAddressEnv)
		}
		conn, err := net.DialTimeout("unix", strings.TrimPrefix(f.address, "unix://"), 5*time.Second)
		if err != nil {
			return err
		}
		f.client = ttrpc.NewClient(conn)
	}
	_, err := eventsapi.NewTTRPCEventsClient(f.client).Forward(ctx, &eventsapi.ForwardRequest{Envelope: e})
	if err != nil {
		f.client.Close()
		f.client = nil
	}
	return err
}

func (f *forwarder) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.client != nil {
		f.client.Close()
		f.client = nil
	}
}
