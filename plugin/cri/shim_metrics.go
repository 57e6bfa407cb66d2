package cri

import (
	"context"
	"sync"
	"time"

	"github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mine-runtime/mine/extension"
)

// shimFigures keeps the shims' own figures (extension.ShimStats) as their
// Stats responses bring them, one shim per pod. The log counters add up
// over every shim this daemon has seen: a shim's last figures join
// retired when its pod is removed, or when the pod's shim was replaced.
type shimFigures struct {
	mu      sync.Mutex
	byPod   map[string]shimReading
	retired extension.ShimStats
}

type shimReading struct {
	stats extension.ShimStats
	at    time.Time
	// removed: the pod is gone and its figures retired; a reading taken
	// before the removal and arriving after it is not counted again.
	removed bool
}

func newShimFigures() *shimFigures {
	return &shimFigures{byPod: map[string]shimReading{}}
}

func (f *shimFigures) observe(podID string, st extension.ShimStats, at time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	old, ok := f.byPod[podID]
	switch {
	case ok && old.removed:
		return
	case ok && old.stats.Pid != st.Pid:
		addCounters(&f.retired, old.stats)
	case ok:
		// Two readings of one shim may arrive out of order: counters
		// only grow.
		st.LogLines = max(st.LogLines, old.stats.LogLines)
		st.LogLinesSplit = max(st.LogLinesSplit, old.stats.LogLinesSplit)
		st.LogEntriesDropped = max(st.LogEntriesDropped, old.stats.LogEntriesDropped)
		if at.Before(old.at) {
			st.RSSBytes, at = old.stats.RSSBytes, old.at
		}
	}
	f.byPod[podID] = shimReading{stats: st, at: at}
}

// removed retires a removed pod's shim figures.
func (f *shimFigures) removed(podID string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if old, ok := f.byPod[podID]; ok && !old.removed {
		addCounters(&f.retired, old.stats)
	}
	f.byPod[podID] = shimReading{removed: true, at: time.Now()}
}

func addCounters(to *extension.ShimStats, st extension.ShimStats) {
	to.LogLines += st.LogLines
	to.LogLinesSplit += st.LogLinesSplit
	to.LogEntriesDropped += st.LogEntriesDropped
}

// totals are the log counters of every shim, the number of shims read
// since fresh, and their resident memory. Entries of removed pods are
// forgotten once no reading can be in flight for them any more.
func (f *shimFigures) totals(fresh time.Time) (counters extension.ShimStats, shims int, rss uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	counters = f.retired
	for id, r := range f.byPod {
		if r.removed {
			if time.Since(r.at) > time.Minute {
				delete(f.byPod, id)
			}
			continue
		}
		addCounters(&counters, r.stats)
		if !r.at.Before(fresh) {
			shims++
			rss += r.stats.RSSBytes
		}
	}
	return counters, shims, rss
}

var (
	shimsDesc = prometheus.NewDesc("container_runtime_mine_shims",
		"Shims that answered when these figures were read (one per pod with a container or init running).", nil, nil)
	shimRSSDesc = prometheus.NewDesc("container_runtime_mine_shims_resident_memory_bytes",
		"Resident memory of those shims, together.", nil, nil)
	logLinesDesc = prometheus.NewDesc("container_runtime_mine_container_log_lines_total",
		"Lines written to containers' CRI logs, each counted once however many entries it took.", nil, nil)
	logSplitDesc = prometheus.NewDesc("container_runtime_mine_container_log_lines_split_total",
		"Lines longer than max_container_log_line_size, written as partial entries and a full one.", nil, nil)
	logDroppedDesc = prometheus.NewDesc("container_runtime_mine_container_log_entries_dropped_total",
		"Log entries whose write failed (a full disk, say), and so are not in the log.", nil, nil)
)

// shimCollector reports the shims' figures, read from every pod's shim
// when they are scraped. The statistics collector reads containers'
// cgroups in the daemon and leaves the shims idle; so the shims are asked
// only when somebody wants their figures (every scrape wakes every shim
// once), and a removed pod's counters are those of the last reading.
type shimCollector struct{ s *Service }

func (c shimCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{shimsDesc, shimRSSDesc, logLinesDesc, logSplitDesc, logDroppedDesc} {
		ch <- d
	}
}

func (c shimCollector) Collect(ch chan<- prometheus.Metric) {
	fresh := time.Now()
	c.s.readShims()
	counters, shims, rss := c.s.shims.totals(fresh)
	ch <- prometheus.MustNewConstMetric(shimsDesc, prometheus.GaugeValue, float64(shims))
	ch <- prometheus.MustNewConstMetric(shimRSSDesc, prometheus.GaugeValue, float64(rss))
	ch <- prometheus.MustNewConstMetric(logLinesDesc, prometheus.CounterValue, float64(counters.LogLines))
	ch <- prometheus.MustNewConstMetric(logSplitDesc, prometheus.CounterValue, float64(counters.LogLinesSplit))
	ch <- prometheus.MustNewConstMetric(logDroppedDesc, prometheus.CounterValue, float64(counters.LogEntriesDropped))
}

// readShims asks every pod's shim for its figures, through the task of a
// running container of the pod, or else of its init: every task of a pod
// is served by the pod's one shim. Within Prometheus' default scrape
// timeout, 10 s, whatever the shims do.
func (s *Service) readShims() {
	ctx, cancel := context.WithTimeout(s.nsContext(context.Background()), 5*time.Second)
	defer cancel()
	byPod := s.records.containersBySandbox()
	for _, sb := range s.records.allSandboxes() {
		ids := []string{}
		for _, m := range byPod[sb.ID] {
			if m.StartedAt != 0 && m.FinishedAt == 0 {
				ids = append(ids, m.ID)
			}
		}
		for _, id := range append(ids, sb.ID) {
			if st, ok := s.shimFiguresVia(ctx, id); ok {
				s.shims.observe(sb.ID, st, time.Now())
				break
			}
		}
	}
}

// shimFiguresVia reads a shim's figures through one of its tasks: one
// Stats call, the shim's only. A shim that takes more than a second is
// passed over: one hung shim must not take every other's turn.
func (s *Service) shimFiguresVia(ctx context.Context, containerID string) (extension.ShimStats, bool) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	resp, err := s.client.TaskService().Metrics(ctx, &tasks.MetricsRequest{Filters: []string{"id==" + containerID}})
	if err != nil || len(resp.Metrics) == 0 {
		return extension.ShimStats{}, false
	}
	return extension.ShimStatsFrom(resp.Metrics[0].Data.GetValue())
}
