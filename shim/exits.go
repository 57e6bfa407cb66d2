package shim

import (
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/core/runtime"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

// Exit bookkeeping. Every exit the reaper sees passes through exitLoop. An
// exit is never lost: a process whose pid is not known yet (runc create or
// exec still running) has its exit parked in early until endStart learns
// the pid; the init's TaskExit waits for its execs' exits; and a process's
// exit event waits for its start event.

// beginStart is called before runc is asked for a new process.
func (s *service) beginStart() {
	s.mu.Lock()
	s.starting++
	s.mu.Unlock()
}

// endStart registers the pid of a process runc has started (0 when it
// failed) and delivers an exit that arrived before. Called with mu held.
func (s *service) endStartLocked(p *process, pid int) {
	s.starting--
	if pid > 0 {
		p.pid = pid
		if e, ok := s.early[pid]; ok {
			delete(s.early, pid)
			s.exitedLocked(p, e)
		} else {
			s.pids[pid] = p
		}
	}
	if s.starting == 0 {
		clear(s.early)
	}
}

func (s *service) exitLoop(exits chan runc.Exit) {
	for e := range exits {
		s.mu.Lock()
		if p, ok := s.pids[e.Pid]; ok {
			delete(s.pids, e.Pid)
			s.exitedLocked(p, e)
		} else if s.starting > 0 {
			s.early[e.Pid] = e
		}
		s.mu.Unlock()
	}
}

// exitedLocked records an exit and schedules its event.
func (s *service) exitedLocked(p *process, e runc.Exit) {
	p.status = task.Status_STOPPED
	p.exitCode = e.Status
	p.exitedAt = e.Timestamp
	c := s.containers[p.containerID]
	if c == nil {
		// The init died during Create, before the container was stored:
		// Create cleans up and reports it.
		p.markExited()
		return
	}
	if p.isInit() {
		if pending := c.unpublishedExecs(); len(pending) > 0 {
			// The init's exit is published after its execs' exits. With a
			// private PID namespace they are already dying; a shared one
			// would let them outlive the container, so they are killed.
			c.initExitPending = true
			for _, x := range pending {
				if x.status != task.Status_STOPPED {
					_ = unix.Kill(x.pid, unix.SIGKILL)
				}
			}
			return
		}
	}
	go s.finishExit(c, p)
}

// finishExit publishes an exit once the process's start event is out and
// its output is drained, and records the init's exit in the bundle first.
func (s *service) finishExit(c *container, p *process) {
	s.mu.Lock()
	gate := p.startGate
	s.mu.Unlock()
	if gate != nil {
		<-gate
	}
	if p.io != nil {
		p.io.drain()
	}
	if p.isInit() {
		if err := writeExitRecord(c.bundle, exitRecord{Pid: p.pid, Status: p.exitCode, ExitedAt: p.exitedAt}); err != nil {
			log.L.WithError(err).Warn("record exit status")
		}
	}
	s.publish(runtime.TaskExitEventTopic, &eventstypes.TaskExit{
		ContainerID: p.containerID,
		ID:          p.id(),
		Pid:         uint32(p.pid),
		ExitStatus:  uint32(p.exitCode),
		ExitedAt:    protobuf.ToTimestamp(p.exitedAt),
	})
	p.markExited()

	if !p.isInit() {
		s.mu.Lock()
		release := c.initExitPending && len(c.unpublishedExecs()) == 0
		if release {
			c.initExitPending = false
		}
		s.mu.Unlock()
		if release {
			s.finishExit(c, c.init)
		}
	}
}

func (p *process) markExited() {
	p.exitOnce.Do(func() { close(p.exited) })
}

// exitTime is the time an exit is reported with; a process that never ran
// reports the moment it was deleted.
func exitTime(p *process) time.Time {
	if p.exitedAt.IsZero() {
		return time.Now()
	}
	return p.exitedAt
}
