package cri

import (
	"sync"

	"github.com/containerd/log"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// records is every pod's and container's metadata in memory, so that the
// lists and statuses kubelet asks for every second never read containerd's
// store. containerd's records stay the truth: this is filled from them at
// start-up, and every change is written to containerd first and here only
// once that write succeeded, by the request holding the object's lock.
//
// What it hands out is shared and must not be changed: a writer stores a
// copy of its own (put*), so a reader's pointer stays a consistent
// snapshot however the object changes afterwards.
type records struct {
	mu         sync.RWMutex
	sandboxes  map[string]*sandboxMeta
	containers map[string]*containerMeta
	// lost are the pods recorded ready that lost their init or their
	// files since (sandboxState): they list as NOTREADY.
	lost map[string]bool
}

func newRecords() *records {
	return &records{sandboxes: map[string]*sandboxMeta{}, containers: map[string]*containerMeta{}, lost: map[string]bool{}}
}

// markLost notes that a pod lost its init or its files; it tells whether
// that is news.
func (r *records) markLost(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.sandboxes[id]; !ok || r.lost[id] {
		return false
	}
	r.lost[id] = true
	return true
}

func (r *records) isLost(id string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.lost[id]
}

func (r *records) putSandbox(m *sandboxMeta) {
	c := *m
	// Decoded from what containerd holds, as a load would: the writer's
	// own decoded config may be missing (a new record) or changed since.
	c.config = &runtimeapi.PodSandboxConfig{}
	if err := proto.Unmarshal(m.Config, c.config); err != nil {
		log.L.WithError(err).WithField("id", m.ID).Warn("pod record with an unreadable config")
	}
	r.mu.Lock()
	r.sandboxes[m.ID] = &c
	r.mu.Unlock()
}

func (r *records) putContainer(m *containerMeta) {
	c := *m
	c.config = &runtimeapi.ContainerConfig{}
	if err := proto.Unmarshal(m.Config, c.config); err != nil {
		log.L.WithError(err).WithField("id", m.ID).Warn("container record with an unreadable config")
	}
	r.mu.Lock()
	r.containers[m.ID] = &c
	r.mu.Unlock()
}

func (r *records) sandbox(id string) (*sandboxMeta, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	m, ok := r.sandboxes[id]
	return m, ok
}

func (r *records) container(id string) (*containerMeta, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	m, ok := r.containers[id]
	return m, ok
}

func (r *records) remove(id string) {
	r.mu.Lock()
	delete(r.sandboxes, id)
	delete(r.containers, id)
	delete(r.lost, id)
	r.mu.Unlock()
}

// allSandboxes and allContainers are snapshots of the pointers, so that a
// list builds its answer without holding the lock.
func (r *records) allSandboxes() []*sandboxMeta {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]*sandboxMeta, 0, len(r.sandboxes))
	for _, m := range r.sandboxes {
		out = append(out, m)
	}
	return out
}

// containersBySandbox groups the containers by pod, for an RPC that goes
// through every pod's containers.
func (r *records) containersBySandbox() map[string][]*containerMeta {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make(map[string][]*containerMeta, len(r.sandboxes))
	for _, m := range r.containers {
		out[m.SandboxID] = append(out[m.SandboxID], m)
	}
	return out
}

// podContainers are one pod's containers.
func (r *records) podContainers(sandboxID string) []*containerMeta {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []*containerMeta
	for _, m := range r.containers {
		if m.SandboxID == sandboxID {
			out = append(out, m)
		}
	}
	return out
}

func (r *records) allContainers() []*containerMeta {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]*containerMeta, 0, len(r.containers))
	for _, m := range r.containers {
		out = append(out, m)
	}
	return out
}
