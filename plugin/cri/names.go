package cri

import (
	"context"
	"strings"
	"sync"

	"github.com/containerd/errdefs"
)

// nameIndex knows every pod and container by name and by ID. It is what
// makes a second object with the same name AlreadyExists, lets a retried
// request find the object its first attempt made, and resolves the ID
// prefixes crictl users type.
type nameIndex struct {
	mu    sync.Mutex
	names map[string]*reservation // "kind/name" -> the object holding it
	ids   map[string]string       // id -> kind
}

// reservation is a name being or having been given to an object; done is
// closed when the request creating it has finished, one way or the other.
type reservation struct {
	id   string
	done chan struct{}
	ok   bool // the creating request succeeded
}

const (
	kindSandbox   = "sandbox"
	kindContainer = "container"
)

func newNameIndex() *nameIndex {
	return &nameIndex{names: map[string]*reservation{}, ids: map[string]string{}}
}

// reserve claims name for id. If the name is taken, it returns the holder's
// reservation instead, once the request that made it has finished, or the
// context's error if the caller stops waiting first.
func (n *nameIndex) reserve(ctx context.Context, kind, name, id string) (holder *reservation, err error) {
	key := kind + "/" + name
	for {
		n.mu.Lock()
		r, taken := n.names[key]
		if !taken {
			n.names[key] = &reservation{id: id, done: make(chan struct{})}
			n.mu.Unlock()
			return nil, nil
		}
		n.mu.Unlock()
		select {
		case <-r.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		n.mu.Lock()
		held := r.ok && n.names[key] == r
		n.mu.Unlock()
		if held {
			return r, nil
		}
		// The first attempt failed and gave the name back: try again.
	}
}

// finish ends a reservation: kept if the object exists now, released if
// its creation failed.
func (n *nameIndex) finish(kind, name string, ok bool) {
	key := kind + "/" + name
	n.mu.Lock()
	defer n.mu.Unlock()
	r := n.names[key]
	if r == nil {
		return
	}
	r.ok = ok
	if ok {
		n.ids[r.id] = kind
	} else {
		delete(n.names, key)
	}
	close(r.done)
}

// add records an existing object, as found in containerd at start-up.
func (n *nameIndex) add(kind, name, id string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	done := make(chan struct{})
	close(done)
	n.names[kind+"/"+name] = &reservation{id: id, done: done, ok: true}
	n.ids[id] = kind
}

// release forgets an object that has been removed.
func (n *nameIndex) release(kind, name, id string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if r := n.names[kind+"/"+name]; r != nil && r.id == id {
		delete(n.names, kind+"/"+name)
	}
	delete(n.ids, id)
}

// resolve turns a full ID or an unambiguous prefix of one into the ID.
func (n *nameIndex) resolve(kind, prefix string) (string, error) {
	if prefix == "" {
		return "", errdefs.ErrInvalidArgument.WithMessage(kind + " ID must not be empty")
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ids[prefix] == kind {
		return prefix, nil
	}
	var match string
	for id, k := range n.ids {
		if k != kind || !strings.HasPrefix(id, prefix) {
			continue
		}
		if match != "" {
			return "", errdefs.ErrInvalidArgument.WithMessage("ID prefix " + prefix + " matches more than one " + kind)
		}
		match = id
	}
	if match == "" {
		return "", errdefs.ErrNotFound.WithMessage(kind + " " + prefix + " not found")
	}
	return match, nil
}

// list returns the IDs of every object of a kind.
func (n *nameIndex) list(kind string) []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	for id, k := range n.ids {
		if k == kind {
			out = append(out, id)
		}
	}
	return out
}
