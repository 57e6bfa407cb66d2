package shim

import (
	"context"

	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/log"
)

type event struct {
	topic string
	body  events.Event
}

// eventQueue hands events to containerd one at a time, in the order they
// were queued: containerd requires TaskCreate < TaskStart < TaskExit <
// TaskDelete, and RPCs that queue them run concurrently.
type eventQueue struct {
	ch        chan event
	publisher events.Publisher
	namespace string
	done      chan struct{}
}

func newEventQueue(publisher events.Publisher, namespace string) *eventQueue {
	q := &eventQueue{
		ch:        make(chan event, 128),
		publisher: publisher,
		namespace: namespace,
		done:      make(chan struct{}),
	}
	go q.run()
	return q
}

// Publish implements events.Publisher, so the OOM watchers use the queue too.
func (q *eventQueue) Publish(_ context.Context, topic string, body events.Event) error {
	q.ch <- event{topic: topic, body: body}
	return nil
}

func (q *eventQueue) run() {
	defer close(q.done)
	ctx := namespaces.WithNamespace(context.Background(), q.namespace)
	for e := range q.ch {
		if err := q.publisher.Publish(ctx, e.topic, e.body); err != nil {
			log.G(ctx).WithError(err).WithField("topic", e.topic).Error("publish event")
		}
	}
}

// close flushes what is queued.
func (q *eventQueue) close() {
	close(q.ch)
	<-q.done
}
