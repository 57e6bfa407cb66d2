package cri

import (
	"context"
	"time"

	cgroupsv1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	cgroupsv2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	eventstypes "github.com/containerd/containerd/api/events"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/containerd/typeurl/v2"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/mine-runtime/mine/failpoint"
)

// watchExits records containers' exits as containerd reports them. After
// each subscription it also looks at every container it believes
// running: an exit from before the subscription, while the daemon was
// down or the subscription broken, is recorded all the same. Listing then
// needs no look at tasks.
func (s *Service) watchExits(ctx context.Context) {
	for {
		events, errs := s.client.Subscribe(ctx, `topic=="/tasks/exit"`, `topic=="/tasks/oom"`)
		s.reconcileExits(ctx)
	loop:
		for {
			select {
			case e := <-events:
				v, err := typeurl.UnmarshalAny(e.Event)
				if err != nil {
					continue
				}
				switch ev := v.(type) {
				case *eventstypes.TaskOOM:
					s.oomKilled.Store(ev.ContainerID, true)
				case *eventstypes.TaskExit:
					if ev.ID != ev.ContainerID {
						continue // an exec's exit
					}
					if failpoint.Inject(ctx, failpoint.ExitEvent) != nil {
						continue // dropped: the periodic reconcile finds it
					}
					if sb, ok := s.records.sandbox(ev.ContainerID); ok {
						// A pod's init or pause container: the pod is no
						// longer ready, and kubelet's evented PLEG hears it
						// at once, from here or from sandboxState if that
						// found it first. Not for an init the pod no longer
						// has (one restarted after a daemon restart), nor
						// for the one StopPodSandbox ends, which marks the
						// pod itself.
						if sb.Ready && sb.Init != nil && uint32(sb.Init.Pid) == ev.Pid && s.records.markLost(sb.ID) {
							s.publish(ctx, sb.ID, sb.ID, runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT)
						}
						continue
					}
					go s.reapByID(ctx, ev.ContainerID)
				}
			case err := <-errs:
				if ctx.Err() != nil {
					return
				}
				log.G(ctx).WithError(err).Warn("event subscription ended; subscribing again")
				time.Sleep(time.Second)
				break loop
			}
		}
	}
}

// reconcilePeriod is how often reconcileLoop looks for exits that never
// reached the plugin.
const reconcilePeriod = 5 * time.Second

// reconcileLoop finds, every reconcilePeriod, the exits whose events were
// lost while containerd stayed up (an event stream that dropped one, a
// handler that failed): a pod whose init is gone, a container recorded
// running whose process is not. It reads only /proc for running
// containers, so it costs next to nothing while nothing is lost.
func (s *Service) reconcileLoop(ctx context.Context) {
	every(ctx, reconcilePeriod, func() {
		for _, m := range s.records.allSandboxes() {
			s.sandboxState(m)
		}
		for _, m := range s.records.allContainers() {
			// A record made before the process was kept is left to the
			// exit events and to reconcileExits at each subscription.
			if m.StartedAt == 0 || m.FinishedAt != 0 || m.Process == nil || m.Process.alive() {
				continue
			}
			log.G(ctx).WithField("id", m.ID).Debug("container recorded running has no process: reaping")
			s.reapByID(ctx, m.ID)
		}
	})
}

func (s *Service) reapByID(ctx context.Context, id string) {
	c, err := s.client.LoadContainer(ctx, id)
	if err != nil {
		return
	}
	if labels, err := c.Labels(ctx); err != nil || labels[labelKind] != kindContainer {
		return
	}
	// After any start or removal under way: the exit may be that of a
	// task StartContainer is replacing, or deleting after a failure.
	unlock := s.lock(id)
	defer unlock()
	if err := s.reap(ctx, c); err != nil && !errdefs.IsNotFound(err) { // removed meanwhile
		log.G(ctx).WithError(err).WithField("id", id).Warn("record container exit")
	}
}

// reap records the exit of a container whose task has stopped and deletes
// the task, which unmounts its root file system. Reaping twice is harmless.
func (s *Service) reap(ctx context.Context, c containerd.Container) error {
	unlock := s.lock(c.ID() + "/exit")
	defer unlock()
	_, m, err := s.loadContainer(ctx, c.ID())
	if err != nil || m.FinishedAt != 0 {
		return err
	}
	var code uint32 = 255
	finished := time.Now()
	reason := "Unknown"
	task, err := c.Task(ctx, nil)
	switch {
	case err == nil:
		st, err := task.Status(ctx)
		if err != nil {
			return err
		}
		if st.Status != containerd.Stopped {
			return nil // still running: not an exit of this container
		}
		code, reason = st.ExitStatus, "Completed"
		if !st.ExitTime.IsZero() {
			finished = st.ExitTime
		}
		if code != 0 {
			reason = "Error"
		}
		// The cgroup still counts OOM kills until the task is deleted: it
		// settles the reason even before the TaskOOM event is handled.
		if code != 0 && oomKilledByCgroup(ctx, task) {
			s.oomKilled.Store(c.ID(), true)
		}
	case !errdefs.IsNotFound(err):
		return err
	case m.StartedAt == 0:
		return nil // never started, no task: there is no exit to record
	}
	if _, oom := s.oomKilled.LoadAndDelete(c.ID()); oom {
		reason = "OOMKilled"
	}
	// The exit is recorded first: a task that cannot be deleted yet must
	// not keep the container looking alive. RemoveContainer deletes it.
	if _, err := s.updateContainerMeta(ctx, c, func(m *containerMeta) {
		m.FinishedAt = finished.UnixNano()
		m.ExitCode = int32(code)
		m.Reason = reason
	}); err != nil {
		return err
	}
	if task != nil {
		if _, err := task.Delete(ctx); err != nil && !errdefs.IsNotFound(err) {
			log.G(ctx).WithError(err).WithField("id", c.ID()).Warn("delete exited task; RemoveContainer will retry")
		}
	}
	return nil
}

// oomKilledByCgroup tells whether the OOM killer acted in a task's cgroup.
func oomKilledByCgroup(ctx context.Context, task containerd.Task) bool {
	m, err := task.Metrics(ctx)
	if err != nil {
		return false
	}
	v, err := typeurl.UnmarshalAny(m.Data)
	if err != nil {
		return false
	}
	switch s := v.(type) {
	case *cgroupsv1.Metrics:
		return s.GetMemoryOomControl().GetOomKill() > 0
	case *cgroupsv2.Metrics:
		return s.GetMemoryEvents().GetOomKill() > 0
	}
	return false
}

// reconcileExits records the exits of containers believed running whose
// task has stopped, and the starts of containers believed created whose
// task runs or ran: containerd may have died before it recorded them.
func (s *Service) reconcileExits(ctx context.Context) {
	for _, m := range s.records.allSandboxes() {
		s.sandboxState(m) // notes a pod that lost its init or files meanwhile
	}
	for _, id := range s.names.list(kindContainer) {
		c, m, err := s.loadContainer(ctx, id)
		if err != nil || m.FinishedAt != 0 {
			continue
		}
		if m.StartedAt == 0 {
			if _, err := s.noticeStartIfIdle(ctx, c, m); err != nil {
				log.G(ctx).WithError(err).WithField("id", id).Warn("record a missed start")
			}
			continue
		}
		if err := s.reap(ctx, c); err != nil {
			log.G(ctx).WithError(err).WithField("id", id).Warn("record a missed exit")
		}
	}
}
