package cri

import (
	"bufio"
	"context"
	"os"
	"strconv"
	"strings"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"
)

// noticeStartIfIdle is noticeStart for those who do not hold the
// container's lock: a container being started or removed is left to that
// request (a task it is replacing is no start of the container's), and
// its record is returned as it is.
func (s *Service) noticeStartIfIdle(ctx context.Context, c containerd.Container, m *containerMeta) (*containerMeta, error) {
	if m.StartedAt != 0 || m.FinishedAt != 0 {
		return m, nil
	}
	unlock, ok := s.tryLock(m.ID)
	if !ok {
		return m, nil
	}
	defer unlock()
	// The record read before the lock may be stale by now: a start, an
	// exit and its reaping may all have happened meanwhile.
	_, fresh, err := s.loadContainer(ctx, m.ID)
	if err != nil {
		return nil, err
	}
	return s.noticeStart(ctx, c, fresh)
}

// noticeStartIfIdleByID is noticeStartIfIdle for a reader of the records,
// which has no handle on the containerd record yet: it loads it once,
// under the lock.
func (s *Service) noticeStartIfIdleByID(ctx context.Context, m *containerMeta) (*containerMeta, error) {
	unlock, ok := s.tryLock(m.ID)
	if !ok {
		return m, nil
	}
	defer unlock()
	c, fresh, err := s.loadContainer(ctx, m.ID)
	if err != nil {
		return nil, err
	}
	return s.noticeStart(ctx, c, fresh)
}

// noticeStart looks at the task of a container recorded as never started;
// the caller holds the container's lock. StartContainer records the start
// once task.Start has returned: if containerd died in between, the task
// runs, or ran, and the record says CREATED. Such a start is recorded
// now, at the time the container's process started when that can still
// be read, and an exit it has had is recorded too. The container's record
// is returned, updated or not.
func (s *Service) noticeStart(ctx context.Context, c containerd.Container, m *containerMeta) (*containerMeta, error) {
	if m.StartedAt != 0 || m.FinishedAt != 0 {
		return m, nil
	}
	task, err := c.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return m, nil
	}
	if err != nil {
		return m, err
	}
	st, err := task.Status(ctx)
	if errdefs.IsNotFound(err) {
		return m, nil
	}
	if err != nil {
		return m, err
	}
	var started int64
	switch st.Status {
	case containerd.Running, containerd.Paused, containerd.Pausing:
		started = processStartTime(task.Pid())
	case containerd.Stopped:
		// It ran, until its exit; when it started is no longer known.
		started = st.ExitTime.UnixNano()
		if st.ExitTime.IsZero() {
			started = nowNano()
		}
	default:
		return m, nil // created, not started: the container is CREATED
	}
	if _, err := s.updateContainerMeta(ctx, c, func(m *containerMeta) {
		if m.StartedAt == 0 {
			// /proc's boot time is in whole seconds: never before creation.
			m.StartedAt = max(started, m.CreatedAt)
			if st.Status != containerd.Stopped {
				m.Process = processIdentity(task.Pid())
			}
		}
	}); err != nil {
		return m, err
	}
	if st.Status == containerd.Stopped {
		if err := s.reap(ctx, c); err != nil {
			return m, err
		}
	}
	_, m, err = s.loadContainer(ctx, c.ID())
	return m, err
}

// clockTicks is the kernel's USER_HZ, the unit of start times in
// /proc/PID/stat: 100 on every architecture Linux runs containers on.
const clockTicks = 100

// processStartTime is when a process started, in unix nanoseconds, from
// /proc; now if that cannot be read.
func processStartTime(pid uint32) int64 {
	ticks, err := strconv.ParseInt(startTime(int(pid)), 10, 64)
	boot, berr := bootTime()
	if err != nil || berr != nil {
		return nowNano()
	}
	return boot.Add(time.Duration(ticks) * time.Second / clockTicks).UnixNano()
}

// bootTime is the btime line of /proc/stat.
func bootTime() (time.Time, error) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return time.Time{}, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "btime "); ok {
			sec, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return time.Time{}, err
			}
			return time.Unix(sec, 0), nil
		}
	}
	if err := sc.Err(); err != nil {
		return time.Time{}, err
	}
	return time.Time{}, os.ErrNotExist
}
