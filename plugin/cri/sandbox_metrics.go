package cri

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	cgroupsv1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	cgroupsv2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The CRI metrics (KEP-2371) are cAdvisor's container_* metrics, by the
// names and labels kubelet's /metrics/cadvisor has always had, so that
// dashboards and alerts keep working when kubelet takes them from the
// runtime. They come from the stats collector's last pass, like the list
// stats RPCs.
//
// The CRI carries integer values: a "_seconds" metric is in whole
// seconds, as CRI-O reports it.

// baseMetricLabels are the labels of every metric: cAdvisor's for a
// container of a pod.
var baseMetricLabels = []string{"container", "id", "image", "name", "namespace", "pod"}

type metricDef struct {
	help    string
	counter bool
	extra   []string // label keys after the base ones
}

var metricDefs = map[string]metricDef{
	"container_blkio_device_usage_total":               {"Blkio device bytes usage", true, []string{"device", "major", "minor", "operation"}},
	"container_cpu_cfs_periods_total":                  {"Number of elapsed enforcement period intervals.", true, nil},
	"container_cpu_cfs_throttled_periods_total":        {"Number of throttled period intervals.", true, nil},
	"container_cpu_cfs_throttled_seconds_total":        {"Total time duration the container has been throttled.", true, nil},
	"container_cpu_system_seconds_total":               {"Cumulative system cpu time consumed in seconds.", true, nil},
	"container_cpu_usage_seconds_total":                {"Cumulative cpu time consumed in seconds.", true, []string{"cpu"}},
	"container_cpu_user_seconds_total":                 {"Cumulative user cpu time consumed in seconds.", true, nil},
	"container_file_descriptors":                       {"Number of open file descriptors for the container.", false, nil},
	"container_fs_inodes_free":                         {"Number of available Inodes", false, []string{"device"}},
	"container_fs_inodes_total":                        {"Number of Inodes", false, []string{"device"}},
	"container_fs_limit_bytes":                         {"Number of bytes that can be consumed by the container on this filesystem.", false, []string{"device"}},
	"container_fs_reads_bytes_total":                   {"Cumulative count of bytes read", true, []string{"device"}},
	"container_fs_reads_total":                         {"Cumulative count of reads completed", true, []string{"device"}},
	"container_fs_usage_bytes":                         {"Number of bytes that are consumed by the container on this filesystem.", false, []string{"device"}},
	"container_fs_writes_bytes_total":                  {"Cumulative count of bytes written", true, []string{"device"}},
	"container_fs_writes_total":                        {"Cumulative count of writes completed", true, []string{"device"}},
	"container_hugetlb_max_usage_bytes":                {"Hugepages max usage in bytes", false, []string{"pagesize"}},
	"container_hugetlb_usage_bytes":                    {"Hugepages usage in bytes", false, []string{"pagesize"}},
	"container_last_seen":                              {"Last time a container was seen by the exporter", false, nil},
	"container_memory_cache":                           {"Number of bytes of page cache memory.", false, nil},
	"container_memory_failcnt":                         {"Number of memory usage hits limits", true, nil},
	"container_memory_failures_total":                  {"Cumulative count of memory allocation failures.", true, []string{"failure_type", "scope"}},
	"container_memory_kernel_usage":                    {"Size of kernel memory allocated in bytes.", false, nil},
	"container_memory_mapped_file":                     {"Size of memory mapped files in bytes.", false, nil},
	"container_memory_max_usage_bytes":                 {"Maximum memory usage recorded in bytes", false, nil},
	"container_memory_rss":                             {"Size of RSS in bytes.", false, nil},
	"container_memory_swap":                            {"Container swap usage in bytes.", false, nil},
	"container_memory_usage_bytes":                     {"Current memory usage in bytes, including all memory regardless of when it was accessed", false, nil},
	"container_memory_working_set_bytes":               {"Current working set in bytes.", false, nil},
	"container_network_receive_bytes_total":            {"Cumulative count of bytes received", true, []string{"interface"}},
	"container_network_receive_errors_total":           {"Cumulative count of errors encountered while receiving", true, []string{"interface"}},
	"container_network_receive_packets_dropped_total":  {"Cumulative count of packets dropped while receiving", true, []string{"interface"}},
	"container_network_receive_packets_total":          {"Cumulative count of packets received", true, []string{"interface"}},
	"container_network_transmit_bytes_total":           {"Cumulative count of bytes transmitted", true, []string{"interface"}},
	"container_network_transmit_errors_total":          {"Cumulative count of errors encountered while transmitting", true, []string{"interface"}},
	"container_network_transmit_packets_dropped_total": {"Cumulative count of packets dropped while transmitting", true, []string{"interface"}},
	"container_network_transmit_packets_total":         {"Cumulative count of packets transmitted", true, []string{"interface"}},
	"container_oom_events_total":                       {"Count of out of memory events observed for the container", true, nil},
	"container_pressure_cpu_stalled_seconds_total":     {"Total time duration no tasks in the container could make progress due to CPU congestion.", true, nil},
	"container_pressure_cpu_waiting_seconds_total":     {"Total time duration tasks in the container have waited due to CPU congestion.", true, nil},
	"container_pressure_io_stalled_seconds_total":      {"Total time duration no tasks in the container could make progress due to IO congestion.", true, nil},
	"container_pressure_io_waiting_seconds_total":      {"Total time duration tasks in the container have waited due to IO congestion.", true, nil},
	"container_pressure_memory_stalled_seconds_total":  {"Total time duration no tasks in the container could make progress due to memory congestion.", true, nil},
	"container_pressure_memory_waiting_seconds_total":  {"Total time duration tasks in the container have waited due to memory congestion.", true, nil},
	"container_processes":                              {"Number of processes running inside the container.", false, nil},
	"container_sockets":                                {"Number of open sockets for the container.", false, nil},
	"container_spec_cpu_period":                        {"CPU period of the container.", false, nil},
	"container_spec_cpu_quota":                         {"CPU quota of the container.", false, nil},
	"container_spec_cpu_shares":                        {"CPU share of the container.", false, nil},
	"container_spec_memory_limit_bytes":                {"Memory limit for the container.", false, nil},
	"container_spec_memory_reservation_limit_bytes":    {"Memory reservation limit for the container.", false, nil},
	"container_spec_memory_swap_limit_bytes":           {"Memory swap limit for the container.", false, nil},
	"container_start_time_seconds":                     {"Start time of the container since unix epoch in seconds.", false, nil},
	"container_threads":                                {"Number of threads running inside the container", false, nil},
	"container_threads_max":                            {"Maximum number of threads allowed inside the container, infinity if value is zero", false, nil},
	"container_ulimits_soft":                           {"Soft ulimit values for the container root process. Unlimited if -1, except priority and nice", false, []string{"ulimit"}},
}

// ListMetricDescriptors describes every metric ListPodSandboxMetrics may
// report.
func (s *Service) ListMetricDescriptors(ctx context.Context, _ *runtimeapi.ListMetricDescriptorsRequest) (*runtimeapi.ListMetricDescriptorsResponse, error) {
	resp := &runtimeapi.ListMetricDescriptorsResponse{}
	for name, d := range metricDefs {
		resp.Descriptors = append(resp.Descriptors, &runtimeapi.MetricDescriptor{
			Name: name, Help: d.help, LabelKeys: append(append([]string{}, baseMetricLabels...), d.extra...),
		})
	}
	return resp, nil
}

// ListPodSandboxMetrics reports every ready pod's metrics and its
// containers'.
func (s *Service) ListPodSandboxMetrics(ctx context.Context, _ *runtimeapi.ListPodSandboxMetricsRequest) (*runtimeapi.ListPodSandboxMetricsResponse, error) {
	ctx = s.nsContext(ctx)
	resp := &runtimeapi.ListPodSandboxMetricsResponse{}
	containers := s.records.containersBySandbox()
	fs := s.writableLayerFS()
	for _, sb := range s.records.allSandboxes() {
		if s.listedSandboxState(sb) != runtimeapi.PodSandboxState_SANDBOX_READY {
			continue
		}
		pm := &runtimeapi.PodSandboxMetrics{PodSandboxId: sb.ID}
		for _, m := range containers[sb.ID] {
			sample, err := s.stats.sample(ctx, s, m)
			if err != nil || sample.usage == nil {
				continue // not running: cAdvisor has no metrics for it either
			}
			pm.ContainerMetrics = append(pm.ContainerMetrics, &runtimeapi.ContainerMetrics{
				ContainerId: m.ID,
				Metrics:     containerMetrics(sb, m, sample, s.stats.procs(m.ID), fs),
			})
		}
		if devs, err := podNetDevices(sb); err == nil {
			pm.Metrics = podNetworkMetrics(sb, devs)
		}
		resp.PodMetrics = append(resp.PodMetrics, pm)
	}
	return resp, nil
}

// StreamPodSandboxMetrics is ListPodSandboxMetrics in pages.
func (s *Service) StreamPodSandboxMetrics(_ *runtimeapi.StreamPodSandboxMetricsRequest, stream grpc.ServerStreamingServer[runtimeapi.StreamPodSandboxMetricsResponse]) error {
	resp, err := s.ListPodSandboxMetrics(stream.Context(), &runtimeapi.ListPodSandboxMetricsRequest{})
	if err != nil {
		return err
	}
	return sendPages(stream, resp.GetPodMetrics(), func(p []*runtimeapi.PodSandboxMetrics) *runtimeapi.StreamPodSandboxMetricsResponse {
		return &runtimeapi.StreamPodSandboxMetricsResponse{PodSandboxMetrics: p}
	})
}

// metricSet builds one object's metrics with its base label values.
type metricSet struct {
	base []string
	ts   int64
	out  []*runtimeapi.Metric
}

func (ms *metricSet) add(name string, value uint64, extra ...string) {
	d, ok := metricDefs[name]
	if !ok || len(extra) != len(d.extra) {
		// A programming error, caught by the unit test of every metric.
		panic(fmt.Sprintf("metric %s with labels %v", name, extra))
	}
	t := runtimeapi.MetricType_GAUGE
	if d.counter {
		t = runtimeapi.MetricType_COUNTER
	}
	ms.out = append(ms.out, &runtimeapi.Metric{
		Name: name, Timestamp: ms.ts, MetricType: t,
		LabelValues: append(append([]string{}, ms.base...), extra...),
		Value:       &runtimeapi.UInt64Value{Value: value},
	})
}

func podMetricBase(sb *sandboxMeta, container, id, image string) []string {
	md := sb.config.GetMetadata()
	return []string{container, id, image, id, md.GetNamespace(), md.GetName()}
}

// podNetworkMetrics are the pod's interfaces' counters, on the pod as
// cAdvisor puts them (on its sandbox container, "POD").
func podNetworkMetrics(sb *sandboxMeta, devs []netDevice) []*runtimeapi.Metric {
	ms := &metricSet{base: podMetricBase(sb, "POD", sb.ID, ""), ts: time.Now().UnixNano()}
	for _, d := range devs {
		c := d.counters
		ms.add("container_network_receive_bytes_total", c[rxBytes], d.name)
		ms.add("container_network_receive_packets_total", c[rxPackets], d.name)
		ms.add("container_network_receive_errors_total", c[rxErrors], d.name)
		ms.add("container_network_receive_packets_dropped_total", c[rxDropped], d.name)
		ms.add("container_network_transmit_bytes_total", c[txBytes], d.name)
		ms.add("container_network_transmit_packets_total", c[txPackets], d.name)
		ms.add("container_network_transmit_errors_total", c[txErrors], d.name)
		ms.add("container_network_transmit_packets_dropped_total", c[txDropped], d.name)
	}
	return ms.out
}

// cgroupFigures is what the metrics read of a container's cgroup, from
// either cgroup version's reading.
type cgroupFigures struct {
	cpuTotal, cpuUser, cpuSystem               uint64 // nanoseconds
	periods, throttledPeriods, throttledNanos  uint64
	usage, maxUsage, workingSet, rss, cache    uint64
	mappedFile, swap, kernel, failcnt          uint64
	pgfault, pgmajfault, oomKills, pids, limit uint64
	io                                         []ioFigure
	hugetlb                                    []hugetlbFigure
	// psi: resource (cpu, io, memory) -> some and full totals, µs; v2 only.
	psi map[string][2]uint64
}

type ioFigure struct {
	major, minor                  uint64
	rbytes, wbytes, reads, writes uint64
}

type hugetlbFigure struct {
	pagesize   string
	usage, max uint64
}

func figuresOf(u *usage) cgroupFigures {
	f := cgroupFigures{workingSet: u.workingSet}
	switch m := u.raw.(type) {
	case *cgroupsv1.Metrics:
		cpu, mem := m.GetCPU(), m.GetMemory()
		f.cpuTotal, f.cpuUser, f.cpuSystem = cpu.GetUsage().GetTotal(), cpu.GetUsage().GetUser(), cpu.GetUsage().GetKernel()
		f.periods, f.throttledPeriods, f.throttledNanos = cpu.GetThrottling().GetPeriods(), cpu.GetThrottling().GetThrottledPeriods(), cpu.GetThrottling().GetThrottledTime()
		f.usage, f.maxUsage, f.failcnt = mem.GetUsage().GetUsage(), mem.GetUsage().GetMax(), mem.GetUsage().GetFailcnt()
		f.rss, f.cache, f.mappedFile = mem.GetTotalRSS(), mem.GetTotalCache(), mem.GetTotalMappedFile()
		f.swap = mem.GetSwap().GetUsage() - min(mem.GetSwap().GetUsage(), f.usage)
		f.kernel = mem.GetKernel().GetUsage()
		f.pgfault, f.pgmajfault = mem.GetTotalPgFault(), mem.GetTotalPgMajFault()
		f.oomKills = m.GetMemoryOomControl().GetOomKill()
		f.pids, f.limit = m.GetPids().GetCurrent(), m.GetPids().GetLimit()
		byDev := map[[2]uint64]*ioFigure{}
		dev := func(e *cgroupsv1.BlkIOEntry) *ioFigure {
			k := [2]uint64{e.GetMajor(), e.GetMinor()}
			if byDev[k] == nil {
				byDev[k] = &ioFigure{major: k[0], minor: k[1]}
			}
			return byDev[k]
		}
		for _, e := range m.GetBlkio().GetIoServiceBytesRecursive() {
			switch e.GetOp() {
			case "Read":
				dev(e).rbytes = e.GetValue()
			case "Write":
				dev(e).wbytes = e.GetValue()
			}
		}
		for _, e := range m.GetBlkio().GetIoServicedRecursive() {
			switch e.GetOp() {
			case "Read":
				dev(e).reads = e.GetValue()
			case "Write":
				dev(e).writes = e.GetValue()
			}
		}
		for _, d := range byDev {
			f.io = append(f.io, *d)
		}
		for _, h := range m.GetHugetlb() {
			f.hugetlb = append(f.hugetlb, hugetlbFigure{h.GetPagesize(), h.GetUsage(), h.GetMax()})
		}
	case *cgroupsv2.Metrics:
		cpu, mem := m.GetCPU(), m.GetMemory()
		f.cpuTotal, f.cpuUser, f.cpuSystem = cpu.GetUsageUsec()*1000, cpu.GetUserUsec()*1000, cpu.GetSystemUsec()*1000
		f.periods, f.throttledPeriods, f.throttledNanos = cpu.GetNrPeriods(), cpu.GetNrThrottled(), cpu.GetThrottledUsec()*1000
		f.usage, f.maxUsage = mem.GetUsage(), mem.GetMaxUsage()
		f.rss, f.cache, f.mappedFile, f.swap = mem.GetAnon(), mem.GetFile(), mem.GetFileMapped(), mem.GetSwapUsage()
		f.kernel = mem.GetKernelStack() + mem.GetSlab() + mem.GetSock()
		f.failcnt = m.GetMemoryEvents().GetMax()
		f.pgfault, f.pgmajfault = mem.GetPgfault(), mem.GetPgmajfault()
		f.oomKills = m.GetMemoryEvents().GetOomKill()
		f.pids, f.limit = m.GetPids().GetCurrent(), m.GetPids().GetLimit()
		for _, e := range m.GetIo().GetUsage() {
			f.io = append(f.io, ioFigure{e.GetMajor(), e.GetMinor(), e.GetRbytes(), e.GetWbytes(), e.GetRios(), e.GetWios()})
		}
		for _, h := range m.GetHugetlb() {
			f.hugetlb = append(f.hugetlb, hugetlbFigure{h.GetPagesize(), h.GetCurrent(), h.GetMax()})
		}
		f.psi = map[string][2]uint64{}
		for res, p := range map[string]*cgroupsv2.PSIStats{"cpu": cpu.GetPSI(), "memory": mem.GetPSI(), "io": m.GetIo().GetPSI()} {
			if p != nil {
				f.psi[res] = [2]uint64{p.GetSome().GetTotal(), p.GetFull().GetTotal()}
			}
		}
	}
	return f
}

// layerFS is the file system of containers' writable layers: the
// snapshotter's, read once per ListPodSandboxMetrics.
type layerFS struct {
	device       string
	statfs       unix.Statfs_t
	statfsFailed bool
}

func (s *Service) writableLayerFS() layerFS {
	fs := layerFS{device: s.snapshotterRoot()}
	// The snapshotter's own root: a node may give it a disk of its own.
	fs.statfsFailed = unix.Statfs(fs.device, &fs.statfs) != nil
	return fs
}

// containerMetrics are a running container's metrics from its sample.
// procs are the processes of its cgroup (its init's alone, if unknown):
// cAdvisor counts open files over all of them.
func containerMetrics(sb *sandboxMeta, m *containerMeta, sample statsSample, procs []int, fs layerFS) []*runtimeapi.Metric {
	ms := &metricSet{
		base: podMetricBase(sb, m.config.GetMetadata().GetName(), m.ID, m.config.GetImage().GetImage()),
		ts:   sample.at.UnixNano(),
	}
	f := figuresOf(sample.usage)
	sec := func(ns uint64) uint64 { return ns / uint64(time.Second) }
	ms.add("container_cpu_usage_seconds_total", sec(f.cpuTotal), "total")
	ms.add("container_cpu_user_seconds_total", sec(f.cpuUser))
	ms.add("container_cpu_system_seconds_total", sec(f.cpuSystem))
	ms.add("container_cpu_cfs_periods_total", f.periods)
	ms.add("container_cpu_cfs_throttled_periods_total", f.throttledPeriods)
	ms.add("container_cpu_cfs_throttled_seconds_total", sec(f.throttledNanos))
	ms.add("container_memory_usage_bytes", f.usage)
	ms.add("container_memory_max_usage_bytes", f.maxUsage)
	ms.add("container_memory_working_set_bytes", f.workingSet)
	ms.add("container_memory_rss", f.rss)
	ms.add("container_memory_cache", f.cache)
	ms.add("container_memory_mapped_file", f.mappedFile)
	ms.add("container_memory_swap", f.swap)
	ms.add("container_memory_kernel_usage", f.kernel)
	ms.add("container_memory_failcnt", f.failcnt)
	ms.add("container_memory_failures_total", f.pgfault, "pgfault", "container")
	ms.add("container_memory_failures_total", f.pgmajfault, "pgmajfault", "container")
	ms.add("container_oom_events_total", f.oomKills)
	ms.add("container_processes", f.pids)
	ms.add("container_threads", f.pids)
	ms.add("container_threads_max", f.limit)
	for _, h := range f.hugetlb {
		ms.add("container_hugetlb_usage_bytes", h.usage, h.pagesize)
		ms.add("container_hugetlb_max_usage_bytes", h.max, h.pagesize)
	}
	for res, totals := range f.psi {
		ms.add("container_pressure_"+res+"_waiting_seconds_total", totals[0]/uint64(time.Second/time.Microsecond))
		ms.add("container_pressure_"+res+"_stalled_seconds_total", totals[1]/uint64(time.Second/time.Microsecond))
	}
	var reads, writes, rbytes, wbytes uint64
	for _, io := range f.io {
		major, minor := strconv.FormatUint(io.major, 10), strconv.FormatUint(io.minor, 10)
		device := major + ":" + minor
		ms.add("container_blkio_device_usage_total", io.rbytes, device, major, minor, "Read")
		ms.add("container_blkio_device_usage_total", io.wbytes, device, major, minor, "Write")
		reads, writes, rbytes, wbytes = reads+io.reads, writes+io.writes, rbytes+io.rbytes, wbytes+io.wbytes
	}
	fsDevice := fs.device
	ms.add("container_fs_reads_total", reads, fsDevice)
	ms.add("container_fs_writes_total", writes, fsDevice)
	ms.add("container_fs_reads_bytes_total", rbytes, fsDevice)
	ms.add("container_fs_writes_bytes_total", wbytes, fsDevice)
	if wl := sample.stats.GetWritableLayer(); wl != nil {
		ms.add("container_fs_usage_bytes", wl.GetUsedBytes().GetValue(), fsDevice)
	}
	if st := fs.statfs; !fs.statfsFailed {
		ms.add("container_fs_limit_bytes", st.Blocks*uint64(st.Bsize), fsDevice)
		ms.add("container_fs_inodes_total", st.Files, fsDevice)
		ms.add("container_fs_inodes_free", st.Ffree, fsDevice)
	}
	res := m.config.GetLinux().GetResources()
	ms.add("container_spec_cpu_period", uint64(max(res.GetCpuPeriod(), 0)))
	ms.add("container_spec_cpu_quota", uint64(max(res.GetCpuQuota(), 0)))
	ms.add("container_spec_cpu_shares", uint64(max(res.GetCpuShares(), 0)))
	ms.add("container_spec_memory_limit_bytes", uint64(max(res.GetMemoryLimitInBytes(), 0)))
	ms.add("container_spec_memory_reservation_limit_bytes", 0)
	ms.add("container_spec_memory_swap_limit_bytes", uint64(max(res.GetMemorySwapLimitInBytes(), 0)))
	ms.add("container_start_time_seconds", uint64(max(m.StartedAt, 0))/uint64(time.Second))
	ms.add("container_last_seen", uint64(sample.at.Unix()))
	if sample.pid != 0 {
		if len(procs) == 0 {
			procs = []int{int(sample.pid)}
		}
		var fds, sockets uint64
		for _, pid := range procs {
			f, s := openFiles(pid)
			fds, sockets = fds+f, sockets+s
		}
		ms.add("container_file_descriptors", fds)
		ms.add("container_sockets", sockets)
		if soft, ok := softNoFile(sample.pid); ok {
			ms.add("container_ulimits_soft", soft, "max_open_files")
		}
	}
	return ms.out
}

// openFiles counts a process's file descriptors and, of them, sockets.
func openFiles(pid int) (fds, sockets uint64) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0
	}
	for _, e := range entries {
		fds++
		if target, err := os.Readlink(dir + "/" + e.Name()); err == nil && strings.HasPrefix(target, "socket:") {
			sockets++
		}
	}
	return fds, sockets
}

// softNoFile is a process's soft limit of open files.
func softNoFile(pid uint32) (uint64, bool) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "Max open files"); ok {
			fields := strings.Fields(rest)
			if len(fields) > 0 {
				v, err := strconv.ParseUint(fields[0], 10, 64)
				return v, err == nil
			}
		}
	}
	return 0, false
}
