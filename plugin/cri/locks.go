package cri

import "sync"

// keyedMutex serialises the operations on one pod or container.
type keyedMutex struct {
	mu    sync.Mutex
	locks map[string]*keyLock
}

type keyLock struct {
	sync.Mutex
	users int
}

// lock takes the lock of an object by ID and returns its release.
func (s *Service) lock(id string) func() {
	l, release := s.locks.get(id)
	l.Lock()
	return func() {
		l.Unlock()
		release()
	}
}

// tryLock takes the lock of an object by ID if nobody holds it, and
// returns its release.
func (s *Service) tryLock(id string) (func(), bool) {
	l, release := s.locks.get(id)
	if !l.TryLock() {
		release()
		return nil, false
	}
	return func() {
		l.Unlock()
		release()
	}, true
}

// get returns the lock of id, counting one more user of it until release.
func (k *keyedMutex) get(id string) (l *keyLock, release func()) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.locks == nil {
		k.locks = map[string]*keyLock{}
	}
	l = k.locks[id]
	if l == nil {
		l = &keyLock{}
		k.locks[id] = l
	}
	l.users++
	return l, func() {
		k.mu.Lock()
		if l.users--; l.users == 0 {
			delete(k.locks, id)
		}
		k.mu.Unlock()
	}
}
