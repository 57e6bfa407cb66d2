package cri

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	cgroupsv1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	cgroupsv2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/mine-runtime/mine/plugin/podns"
)

// cpuSample is a container's CPU time at a moment, kept to turn the next
// reading into a rate (UsageNanoCores).
type cpuSample struct {
	at    time.Time
	usage uint64 // nanoseconds
}

// cpuSamples holds the last sample of each container.
type cpuSamples struct {
	mu   sync.Mutex
	last map[string]cpuSample
}

// rate records a sample and returns the usage rate since the previous
// one, in nanocores; nil for the first, and for one taken before the
// last (a collector pass and a call read at once), which is not kept:
// kubelet then computes the container's rate itself, as with containerd
// (and the pod's, which podStats leaves out then too).
func (c *cpuSamples) rate(id string, now cpuSample) *runtimeapi.UInt64Value {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last == nil {
		c.last = map[string]cpuSample{}
	}
	prev, ok := c.last[id]
	if ok && !now.at.After(prev.at) {
		return nil
	}
	c.last[id] = now
	if !ok || now.usage < prev.usage {
		return nil
	}
	return &runtimeapi.UInt64Value{Value: uint64(float64(now.usage-prev.usage) / now.at.Sub(prev.at).Seconds())}
}

func (c *cpuSamples) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.last, id)
}

// usage is what cgroup metrics say of a container, in CRI terms.
type usage struct {
	cpuNanos                       uint64
	memUsage, workingSet, rss      uint64
	limit, pageFaults, majorFaults uint64
	pids                           uint64
	// raw is the cgroup's reading itself, for the metrics RPCs.
	raw any
}

func metricsUsage(data any) (usage, error) {
	switch m := data.(type) {
	case *cgroupsv1.Metrics:
		mem := m.GetMemory()
		u := usage{
			cpuNanos:    m.GetCPU().GetUsage().GetTotal(),
			memUsage:    mem.GetUsage().GetUsage(),
			rss:         mem.GetTotalRSS(),
			limit:       mem.GetUsage().GetLimit(),
			pageFaults:  mem.GetTotalPgFault(),
			majorFaults: mem.GetTotalPgMajFault(),
			pids:        m.GetPids().GetCurrent(),
			raw:         m,
		}
		u.workingSet = u.memUsage - min(u.memUsage, mem.GetTotalInactiveFile())
		return u, nil
	case *cgroupsv2.Metrics:
		mem := m.GetMemory()
		u := usage{
			cpuNanos:    m.GetCPU().GetUsageUsec() * 1000,
			memUsage:    mem.GetUsage(),
			rss:         mem.GetAnon(),
			limit:       mem.GetUsageLimit(),
			pageFaults:  mem.GetPgfault(),
			majorFaults: mem.GetPgmajfault(),
			pids:        m.GetPids().GetCurrent(),
			raw:         m,
		}
		u.workingSet = u.memUsage - min(u.memUsage, mem.GetInactiveFile())
		return u, nil
	}
	return usage{}, fmt.Errorf("metrics of unknown type %T", data)
}

// containerStats reads a container's stats, and its task's pid; a
// container without a running task has no CPU and memory figures.
func (s *Service) containerStats(ctx context.Context, c containerd.Container, m *containerMeta) (*runtimeapi.ContainerStats, *usage, uint32, error) {
	cfg := m.config
	st := &runtimeapi.ContainerStats{Attributes: &runtimeapi.ContainerAttributes{
		Id: m.ID, Metadata: cfg.GetMetadata(), Labels: cfg.GetLabels(), Annotations: cfg.GetAnnotations(),
	}}
	now := time.Now()
	// Every caller has just loaded c: its record is not read again.
	if info, err := c.Info(ctx, containerd.WithoutRefreshedMetadata); err == nil && info.SnapshotKey != "" {
		if u, err := s.client.SnapshotService(info.Snapshotter).Usage(ctx, info.SnapshotKey); err == nil {
			st.WritableLayer = &runtimeapi.FilesystemUsage{
				Timestamp:  now.UnixNano(),
				FsId:       &runtimeapi.FilesystemIdentifier{Mountpoint: s.snapshotterRoot()},
				UsedBytes:  &runtimeapi.UInt64Value{Value: uint64(u.Size)},
				InodesUsed: &runtimeapi.UInt64Value{Value: uint64(u.Inodes)},
			}
		}
	}
	// The figures' own time, not the writable layer's, whose walk can take
	// long and varies: the rate is computed from it.
	now = time.Now()
	data, pid, err := s.cgroupMetrics(ctx, c, m)
	if err != nil {
		return nil, nil, 0, err
	}
	if data == nil {
		return st, nil, 0, nil // not running
	}
	u, err := metricsUsage(data)
	if err != nil {
		return nil, nil, 0, err
	}
	ts := now.UnixNano()
	st.Cpu = &runtimeapi.CpuUsage{
		Timestamp:            ts,
		UsageCoreNanoSeconds: &runtimeapi.UInt64Value{Value: u.cpuNanos},
		UsageNanoCores:       s.cpu.rate(m.ID, cpuSample{at: now, usage: u.cpuNanos}),
	}
	st.Memory = &runtimeapi.MemoryUsage{
		Timestamp:       ts,
		WorkingSetBytes: &runtimeapi.UInt64Value{Value: u.workingSet},
		UsageBytes:      &runtimeapi.UInt64Value{Value: u.memUsage},
		RssBytes:        &runtimeapi.UInt64Value{Value: u.rss},
		PageFaults:      &runtimeapi.UInt64Value{Value: u.pageFaults},
		MajorPageFaults: &runtimeapi.UInt64Value{Value: u.majorFaults},
	}
	if u.limit > 0 && u.limit < 1<<62 {
		st.Memory.AvailableBytes = &runtimeapi.UInt64Value{Value: u.limit - min(u.limit, u.workingSet)}
	}
	return st, &u, pid, nil
}

// cgroupMetrics reads a running container's cgroup metrics and returns
// its init's pid; nil metrics for a container not running. A container
// started by this plugin is read in the daemon, from its cgroup, leaving
// its shim idle; one whose start predates the records of its init is
// read through its task, the shim's Stats.
func (s *Service) cgroupMetrics(ctx context.Context, c containerd.Container, m *containerMeta) (any, uint32, error) {
	if m.StartedAt == 0 || m.FinishedAt != 0 {
		return nil, 0, nil
	}
	if p := m.Process; p != nil {
		if data, err := s.stats.cgroupMetrics(m.ID, *p); err == nil {
			return data, uint32(p.Pid), nil
		}
		// Gone, or its cgroup unreadable: its task says which.
	}
	task, err := c.Task(ctx, nil)
	if err != nil {
		return nil, 0, nil
	}
	metrics, err := task.Metrics(ctx)
	if err != nil {
		return nil, 0, nil // exited meanwhile
	}
	data, err := typeurl.UnmarshalAny(metrics.Data)
	if err != nil {
		return nil, 0, err
	}
	return data, task.Pid(), nil
}

// snapshotterRoot is where the snapshotter keeps images and writable
// layers: the root it exports (its root_path, where a node sets one),
// else beside the plugin's own root in containerd's, as containerd finds
// it. kubelet measures the image file system there.
func (s *Service) snapshotterRoot() string {
	name := s.config().Snapshotter
	if s.snapshotterRootOf != nil {
		if root := s.snapshotterRootOf(name); root != "" {
			return root
		}
	}
	return filepath.Join(filepath.Dir(s.rootDir), "io.containerd.snapshotter.v1."+name)
}

// ContainerStats reports one container's CPU, memory and writable layer.
func (s *Service) ContainerStats(ctx context.Context, r *runtimeapi.ContainerStatsRequest) (*runtimeapi.ContainerStatsResponse, error) {
	ctx = s.nsContext(ctx)
	c, m, err := s.findContainer(ctx, r.GetContainerId())
	if err != nil {
		return nil, toStatus(err)
	}
	st, _, _, err := s.containerStats(ctx, c, m)
	if err != nil {
		return nil, toStatus(err)
	}
	return &runtimeapi.ContainerStatsResponse{Stats: st}, nil
}

// ListContainerStats reports the stats of containers, filtered by ID, pod
// and labels, from the collector's last pass.
func (s *Service) ListContainerStats(ctx context.Context, r *runtimeapi.ListContainerStatsRequest) (*runtimeapi.ListContainerStatsResponse, error) {
	ctx = s.nsContext(ctx)
	f := r.GetFilter()
	resp := &runtimeapi.ListContainerStatsResponse{}
	for _, m := range s.records.allContainers() {
		if f.GetId() != "" && !strings.HasPrefix(m.ID, f.GetId()) {
			continue
		}
		if f.GetPodSandboxId() != "" && !strings.HasPrefix(m.SandboxID, f.GetPodSandboxId()) {
			continue
		}
		if !labelsMatch(m.config.GetLabels(), f.GetLabelSelector()) {
			continue
		}
		if sample, err := s.stats.sample(ctx, s, m); err == nil {
			resp.Stats = append(resp.Stats, sample.stats)
		}
	}
	return resp, nil
}

// containerSampler gives a container's stats: read now, or the collector's.
type containerSampler func(context.Context, *Service, *containerMeta) (statsSample, error)

// podStats sums a pod's containers and reads its network interfaces.
func (s *Service) podStats(ctx context.Context, sb *sandboxMeta, containers []*containerMeta, sampleOf containerSampler) *runtimeapi.PodSandboxStats {
	now := time.Now().UnixNano()
	linux := &runtimeapi.LinuxPodSandboxStats{
		Cpu:     &runtimeapi.CpuUsage{Timestamp: now, UsageCoreNanoSeconds: &runtimeapi.UInt64Value{}, UsageNanoCores: &runtimeapi.UInt64Value{}},
		Memory:  &runtimeapi.MemoryUsage{Timestamp: now, WorkingSetBytes: &runtimeapi.UInt64Value{}, UsageBytes: &runtimeapi.UInt64Value{}, RssBytes: &runtimeapi.UInt64Value{}},
		Process: &runtimeapi.ProcessUsage{Timestamp: now, ProcessCount: &runtimeapi.UInt64Value{}},
	}
	for _, m := range containers {
		sample, err := sampleOf(ctx, s, m)
		if err != nil {
			continue
		}
		st, u := sample.stats, sample.usage
		linux.Containers = append(linux.Containers, st)
		if u == nil {
			continue
		}
		linux.Cpu.UsageCoreNanoSeconds.Value += u.cpuNanos
		if rate := st.Cpu.GetUsageNanoCores(); rate != nil && linux.Cpu.UsageNanoCores != nil {
			linux.Cpu.UsageNanoCores.Value += rate.Value
		} else {
			linux.Cpu.UsageNanoCores = nil // a part unknown: the sum is
		}
		linux.Memory.WorkingSetBytes.Value += u.workingSet
		linux.Memory.UsageBytes.Value += u.memUsage
		linux.Memory.RssBytes.Value += u.rss
		linux.Process.ProcessCount.Value += u.pids
	}
	// Read now, whatever the containers' figures: a file read, and the
	// pod's traffic is what it is now.
	if devs, err := podNetDevices(sb); err == nil {
		linux.Network = networkUsage(devs, now)
	}
	return &runtimeapi.PodSandboxStats{
		Attributes: &runtimeapi.PodSandboxAttributes{Id: sb.ID, Metadata: sb.config.GetMetadata(), Labels: sb.config.GetLabels(), Annotations: sb.config.GetAnnotations()},
		Linux:      linux,
	}
}

// networkUsage is a pod's interfaces' counters; its default interface is
// eth0, as CNI names it, else the first (kubelet reads it unchecked), and
// a pod with no interface but lo has none.
func networkUsage(devs []netDevice, ts int64) *runtimeapi.NetworkUsage {
	if len(devs) == 0 {
		return nil
	}
	nu := &runtimeapi.NetworkUsage{Timestamp: ts}
	for _, d := range devs {
		num := func(i int) *runtimeapi.UInt64Value { return &runtimeapi.UInt64Value{Value: d.counters[i]} }
		iface := &runtimeapi.NetworkInterfaceUsage{Name: d.name, RxBytes: num(rxBytes), RxErrors: num(rxErrors), TxBytes: num(txBytes), TxErrors: num(txErrors)}
		nu.Interfaces = append(nu.Interfaces, iface)
		if d.name == podInterface {
			nu.DefaultInterface = iface
		}
	}
	if nu.DefaultInterface == nil {
		nu.DefaultInterface = nu.Interfaces[0]
	}
	return nu
}

// podNetDevices reads the interfaces of a pod's own network namespace,
// from inside it: what its processes do (one may have moved to a
// namespace of its own) changes nothing, and a pod with no process
// running has them too. A pod on the host's network has none of its own.
func podNetDevices(sb *sandboxMeta) ([]netDevice, error) {
	if sb.Namespaces.Net == "" {
		return nil, errdefs.ErrNotFound.WithMessage("the pod uses the host's network")
	}
	var devs []netDevice
	err := podns.In(sb.Namespaces.Net, "net", unix.CLONE_NEWNET, func() (err error) {
		// The thread's own view: the namespace it is in now.
		devs, err = netDevices("/proc/thread-self/net/dev")
		return err
	})
	return devs, err
}

// The counters of a line of /proc/net/dev, in its order.
const (
	rxBytes, rxPackets, rxErrors, rxDropped = 0, 1, 2, 3
	txBytes, txPackets, txErrors, txDropped = 8, 9, 10, 11
)

// netDevice is an interface's line of /proc/PID/net/dev.
type netDevice struct {
	name     string
	counters []uint64
}

// netDevices reads the interfaces, but loopback, of the network namespace
// a process is in.
func netDevices(path string) ([]netDevice, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	lines := strings.Split(string(data), "\n")
	if len(lines) < 2 {
		return nil, nil
	}
	var out []netDevice
	for _, line := range lines[2:] {
		name, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		name = strings.TrimSpace(name)
		f := strings.Fields(rest)
		if name == "lo" || len(f) <= txDropped {
			continue
		}
		d := netDevice{name: name, counters: make([]uint64, len(f))}
		for i := range f {
			d.counters[i], _ = strconv.ParseUint(f[i], 10, 64)
		}
		out = append(out, d)
	}
	return out, nil
}

// PodSandboxStats reports a pod's CPU, memory, processes and network, and
// its containers' stats.
func (s *Service) PodSandboxStats(ctx context.Context, r *runtimeapi.PodSandboxStatsRequest) (*runtimeapi.PodSandboxStatsResponse, error) {
	ctx = s.nsContext(ctx)
	_, sb, err := s.findSandbox(ctx, r.GetPodSandboxId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &runtimeapi.PodSandboxStatsResponse{Stats: s.podStats(ctx, sb, s.records.podContainers(sb.ID), s.stats.read)}, nil
}

// ListPodSandboxStats reports the stats of pods, filtered by ID and
// labels, from the collector's last pass.
func (s *Service) ListPodSandboxStats(ctx context.Context, r *runtimeapi.ListPodSandboxStatsRequest) (*runtimeapi.ListPodSandboxStatsResponse, error) {
	ctx = s.nsContext(ctx)
	f := r.GetFilter()
	resp := &runtimeapi.ListPodSandboxStatsResponse{}
	containers := s.records.containersBySandbox()
	for _, sb := range s.records.allSandboxes() {
		if f.GetId() != "" && !strings.HasPrefix(sb.ID, f.GetId()) {
			continue
		}
		if !labelsMatch(sb.config.GetLabels(), f.GetLabelSelector()) {
			continue
		}
		resp.Stats = append(resp.Stats, s.podStats(ctx, sb, containers[sb.ID], s.stats.sample))
	}
	return resp, nil
}

// StreamContainerStats is ListContainerStats in pages.
func (s *Service) StreamContainerStats(r *runtimeapi.StreamContainerStatsRequest, stream grpc.ServerStreamingServer[runtimeapi.StreamContainerStatsResponse]) error {
	resp, err := s.ListContainerStats(stream.Context(), &runtimeapi.ListContainerStatsRequest{Filter: r.GetFilter()})
	if err != nil {
		return err
	}
	return sendPages(stream, resp.GetStats(), func(p []*runtimeapi.ContainerStats) *runtimeapi.StreamContainerStatsResponse {
		return &runtimeapi.StreamContainerStatsResponse{ContainerStats: p}
	})
}

// StreamPodSandboxStats is ListPodSandboxStats in pages.
func (s *Service) StreamPodSandboxStats(r *runtimeapi.StreamPodSandboxStatsRequest, stream grpc.ServerStreamingServer[runtimeapi.StreamPodSandboxStatsResponse]) error {
	resp, err := s.ListPodSandboxStats(stream.Context(), &runtimeapi.ListPodSandboxStatsRequest{Filter: r.GetFilter()})
	if err != nil {
		return err
	}
	return sendPages(stream, resp.GetStats(), func(p []*runtimeapi.PodSandboxStats) *runtimeapi.StreamPodSandboxStatsResponse {
		return &runtimeapi.StreamPodSandboxStatsResponse{PodSandboxStats: p}
	})
}
