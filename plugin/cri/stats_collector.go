package cri

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/containerd/log"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/mine-runtime/mine/cgroup"
)

// statsCollector reads every container's statistics in the background,
// one pass per period, so that the list RPCs kubelet's summary and
// eviction manager depend on answer from the last pass: a container
// writing millions of files (its writable layer is measured by walking it)
// delays a pass, never an answer. CRI-O collects the same
// way; containerd's CRI asks every shim on every call.
//
// A container the collector has not reached yet (started since the last
// pass) is read when it is asked for, and its reading kept. The single
// ContainerStats and PodSandboxStats always read afresh: whoever asks for
// one container wants it now, and it costs one container.
type statsCollector struct {
	period  time.Duration
	mu      sync.Mutex
	samples map[string]statsSample
	// cgroups are the running containers' cgroups, loaded once from their
	// inits' pids and read here, in the daemon. Through the shim's Stats,
	// every pass woke every pod's shim, and a Go shim woken every period
	// holds more memory after each GC cycle: 5.0 MB after five minutes,
	// where an idle one holds 3.6.
	cgroups map[string]loadedCgroup
}

// loadedCgroup is a container's cgroup, found from its init.
type loadedCgroup struct {
	init process
	cg   any
}

// statsSample is one reading of a container.
type statsSample struct {
	at    time.Time
	stats *runtimeapi.ContainerStats
	usage *usage // nil without a running task
	pid   uint32 // the task's, 0 without one
	// started and finished are the container's record when it was read:
	// a reading from before a start or an exit is not the container's now.
	started, finished int64
}

func newStatsCollector(period time.Duration) *statsCollector {
	return &statsCollector{period: period, samples: map[string]statsSample{}, cgroups: map[string]loadedCgroup{}}
}

// run takes a pass every period until ctx ends; with no period, there
// are no passes and every list reads afresh.
func (sc *statsCollector) run(ctx context.Context, s *Service) {
	if sc.period <= 0 {
		return
	}
	every(ctx, sc.period, func() {
		containers := s.records.allContainers()
		for _, m := range containers {
			if _, err := sc.read(ctx, s, m); err != nil {
				log.G(ctx).WithError(err).WithField("id", m.ID).Debug("collect container stats")
			}
		}
		sc.keepCgroupsOf(containers)
	})
}

// every runs pass once a period until ctx ends.
func every(ctx context.Context, period time.Duration, pass func()) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			pass()
		}
	}
}

// read reads a container now and keeps the reading.
func (sc *statsCollector) read(ctx context.Context, s *Service, m *containerMeta) (statsSample, error) {
	c, err := s.client.LoadContainer(ctx, m.ID)
	if err != nil {
		return statsSample{}, err
	}
	st, u, pid, err := s.containerStats(ctx, c, m)
	if err != nil {
		return statsSample{}, err
	}
	sample := statsSample{at: time.Now(), stats: st, usage: u, pid: pid, started: m.StartedAt, finished: m.FinishedAt}
	if sc.period > 0 {
		sc.mu.Lock()
		if _, known := s.records.container(m.ID); known {
			sc.samples[m.ID] = sample
		}
		sc.mu.Unlock()
	}
	return sample, nil
}

// sample is a container's last reading, if it is recent enough (one pass
// and a half old at most, so that a pass that stalls is not hidden) and
// was taken in the container's present state: a container started since
// its reading is read again.
func (sc *statsCollector) sample(ctx context.Context, s *Service, m *containerMeta) (statsSample, error) {
	sc.mu.Lock()
	sample, ok := sc.samples[m.ID]
	sc.mu.Unlock()
	if ok && time.Since(sample.at) <= sc.period*3/2 && sample.started == m.StartedAt && sample.finished == m.FinishedAt {
		return sample, nil
	}
	return sc.read(ctx, s, m)
}

func (sc *statsCollector) forget(id string) {
	sc.mu.Lock()
	delete(sc.samples, id)
	delete(sc.cgroups, id)
	sc.mu.Unlock()
}

// keepCgroupsOf forgets the cgroups of containers removed while a
// reading of theirs was under way, which forget missed.
func (sc *statsCollector) keepCgroupsOf(containers []*containerMeta) {
	known := make(map[string]bool, len(containers))
	for _, m := range containers {
		known[m.ID] = true
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	for id := range sc.cgroups {
		if !known[id] {
			delete(sc.cgroups, id)
		}
	}
}

// procs lists the processes of a container's cgroup, as its last reading
// loaded it; nil when none did.
func (sc *statsCollector) procs(id string) []int {
	sc.mu.Lock()
	loaded, ok := sc.cgroups[id]
	sc.mu.Unlock()
	if !ok {
		return nil
	}
	pids, err := cgroup.Procs(loaded.cg)
	if err != nil {
		return nil
	}
	return pids
}

// cgroupMetrics reads the cgroup of a container whose init is p: a
// *stats.Metrics of cgroup1 or cgroup2, as the shim's Stats would have
// it. It fails for an init that is gone, so that a pid taken since by
// another process is never read as the container's.
func (sc *statsCollector) cgroupMetrics(id string, p process) (any, error) {
	sc.mu.Lock()
	loaded, ok := sc.cgroups[id]
	sc.mu.Unlock()
	if !ok || loaded.init != p {
		cg, err := cgroup.LoadContainer(p.Pid, id)
		if err != nil {
			return nil, err
		}
		loaded = loadedCgroup{init: p, cg: cg}
		// Without passes nothing prunes them (keepCgroupsOf): each read
		// loads its cgroup.
		if sc.period > 0 {
			sc.mu.Lock()
			sc.cgroups[id] = loaded
			sc.mu.Unlock()
		}
	}
	if !p.alive() {
		return nil, fmt.Errorf("container %s: init %d is gone", id, p.Pid)
	}
	metrics, err := cgroup.Stat(loaded.cg)
	if err != nil {
		return nil, err
	}
	// An init that exits meanwhile leaves its cgroup's files to be
	// removed under the reading: no figures rather than zeros.
	if !p.alive() {
		return nil, fmt.Errorf("container %s: init %d is gone", id, p.Pid)
	}
	return metrics, nil
}
