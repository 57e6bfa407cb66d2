package shim

import (
	"os"
	"sync"

	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/v2/core/runtime"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

// watchOOM publishes TaskOOM whenever the kernel's OOM killer acts in a
// container's cgroup: on cgroup v1 through the memory controller's OOM
// eventfd, on v2 through memory.events. It returns what stops watching,
// which may be called again: a Delete whose unmount failed is retried.
func (s *service) watchOOM(id string, cg any) func() {
	return sync.OnceFunc(s.startOOMWatch(id, cg))
}

func (s *service) startOOMWatch(id string, cg any) func() {
	oom := func() { s.publish(runtime.TaskOOMEventTopic, &eventstypes.TaskOOM{ContainerID: id}) }
	switch cg := cg.(type) {
	case cgroup1.Cgroup:
		fd, err := cg.OOMEventFD()
		if err != nil {
			log.L.WithError(err).WithField("id", id).Warn("no OOM events for container")
			return func() {}
		}
		// Non-blocking, the eventfd is read through Go's poller rather than
		// by a thread of its own.
		if err := unix.SetNonblock(int(fd), true); err != nil {
			unix.Close(int(fd))
			return func() {}
		}
		f := os.NewFile(fd, "oom-eventfd")
		go func() {
			buf := make([]byte, 8)
			for {
				if _, err := f.Read(buf); err != nil {
					return
				}
				// The eventfd also fires when the cgroup is removed.
				if cg.State() == cgroup1.Deleted {
					return
				}
				oom()
			}
		}()
		return func() { f.Close() }
	case *cgroup2.Manager:
		events, errs := cg.EventChan()
		done := make(chan struct{})
		go func() {
			var kills uint64
			for {
				select {
				case e := <-events:
					if e.OOMKill > kills {
						kills = e.OOMKill
						oom()
					}
				case <-errs:
					return
				case <-done:
					return
				}
			}
		}()
		return func() { close(done) }
	}
	return func() {}
}
