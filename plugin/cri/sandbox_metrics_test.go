package cri

import (
	"context"
	"os"
	"slices"
	"testing"
	"time"

	cgroupsv1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	cgroupsv2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/mine-runtime/mine/config"
)

// cAdvisor's metrics that critest (cri-tools v1.37) expects a runtime to
// report for a running container, beside those it lets runtimes leave out.
var expectedMetrics = []string{
	"container_blkio_device_usage_total", "container_cpu_cfs_periods_total", "container_cpu_cfs_throttled_periods_total",
	"container_cpu_cfs_throttled_seconds_total", "container_cpu_system_seconds_total", "container_cpu_usage_seconds_total",
	"container_cpu_user_seconds_total", "container_file_descriptors", "container_fs_inodes_free", "container_fs_inodes_total",
	"container_fs_limit_bytes", "container_fs_reads_bytes_total", "container_fs_reads_total", "container_fs_usage_bytes",
	"container_fs_writes_bytes_total", "container_fs_writes_total", "container_last_seen", "container_memory_cache",
	"container_memory_failcnt", "container_memory_failures_total", "container_memory_kernel_usage", "container_memory_mapped_file",
	"container_memory_max_usage_bytes", "container_memory_rss", "container_memory_swap", "container_memory_usage_bytes",
	"container_memory_working_set_bytes", "container_oom_events_total", "container_processes", "container_sockets",
	"container_spec_cpu_period", "container_spec_cpu_shares", "container_spec_memory_limit_bytes",
	"container_spec_memory_swap_limit_bytes", "container_start_time_seconds", "container_threads", "container_threads_max",
}

var expectedPodMetrics = []string{
	"container_network_receive_bytes_total", "container_network_receive_errors_total", "container_network_receive_packets_dropped_total",
	"container_network_receive_packets_total", "container_network_transmit_bytes_total", "container_network_transmit_errors_total",
	"container_network_transmit_packets_dropped_total", "container_network_transmit_packets_total",
}

func TestContainerMetricsBothCgroupVersions(t *testing.T) {
	// The snapshotter's root, which the file system metrics read.
	snapshots := t.TempDir()
	s := &Service{rootDir: t.TempDir(), records: newRecords(), snapshotterRootOf: func(string) string { return snapshots }}
	s.cfg.Store(config.Default())
	descs, err := s.ListMetricDescriptors(context.Background(), &runtimeapi.ListMetricDescriptorsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]int{}
	for _, d := range descs.Descriptors {
		if d.Help == "" || len(d.LabelKeys) == 0 {
			t.Errorf("descriptor %s without help or labels", d.Name)
		}
		keys[d.Name] = len(d.LabelKeys)
	}
	for _, name := range append(slices.Clone(expectedMetrics), expectedPodMetrics...) {
		if _, ok := keys[name]; !ok {
			t.Errorf("no descriptor for %s", name)
		}
	}
	sb := &sandboxMeta{ID: "pod1", config: &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "p", Namespace: "ns"}}}
	m := &containerMeta{ID: "c1", SandboxID: "pod1", StartedAt: time.Now().UnixNano(), config: &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "app"}, Image: &runtimeapi.ImageSpec{Image: "busybox"},
		Linux: &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{CpuPeriod: 100000, CpuShares: 1024, MemoryLimitInBytes: 64 << 20}},
	}}
	pid := uint32(os.Getpid())
	for name, raw := range map[string]any{
		"v1": &cgroupsv1.Metrics{
			CPU:    &cgroupsv1.CPUStat{Usage: &cgroupsv1.CPUUsage{Total: 3e9, User: 2e9, Kernel: 1e9}, Throttling: &cgroupsv1.Throttle{}},
			Memory: &cgroupsv1.MemoryStat{Usage: &cgroupsv1.MemoryEntry{Usage: 4096}, Swap: &cgroupsv1.MemoryEntry{}, Kernel: &cgroupsv1.MemoryEntry{}},
			Blkio:  &cgroupsv1.BlkIOStat{IoServiceBytesRecursive: []*cgroupsv1.BlkIOEntry{{Op: "Read", Major: 254, Value: 10}}},
			Pids:   &cgroupsv1.PidsStat{Current: 1},
		},
		"v2": &cgroupsv2.Metrics{
			CPU:    &cgroupsv2.CPUStat{UsageUsec: 3e6, PSI: &cgroupsv2.PSIStats{Some: &cgroupsv2.PSIData{Total: 2e6}, Full: &cgroupsv2.PSIData{}}},
			Memory: &cgroupsv2.MemoryStat{Usage: 4096},
			Io:     &cgroupsv2.IOStat{Usage: []*cgroupsv2.IOEntry{{Major: 254, Rbytes: 10}}},
		},
	} {
		sample := statsSample{at: time.Now(), pid: pid, usage: &usage{raw: raw, workingSet: 4096},
			stats: &runtimeapi.ContainerStats{WritableLayer: &runtimeapi.FilesystemUsage{UsedBytes: &runtimeapi.UInt64Value{Value: 1}}}}
		// add panics on a label count that is not its descriptor's.
		got := map[string]*runtimeapi.Metric{}
		// The test's process twice: its open files count twice.
		for _, metric := range containerMetrics(sb, m, sample, []int{int(pid), int(pid)}, s.writableLayerFS()) {
			if len(metric.LabelValues) != keys[metric.Name] {
				t.Errorf("%s: %s has %d label values, its descriptor %d keys", name, metric.Name, len(metric.LabelValues), keys[metric.Name])
			}
			got[metric.Name] = metric
		}
		for _, want := range expectedMetrics {
			if got[want] == nil {
				t.Errorf("%s: no %s", name, want)
			}
		}
		if fds, _ := openFiles(int(pid)); got["container_file_descriptors"].GetValue().GetValue() < 2*fds-2 {
			t.Errorf("%s: %d file descriptors, want those of both processes (%d each)", name, got["container_file_descriptors"].GetValue().GetValue(), fds)
		}
		if v := got["container_cpu_usage_seconds_total"].GetValue().GetValue(); v != 3 {
			t.Errorf("%s: cpu usage %d s, want 3", name, v)
		}
		if c := got["container_cpu_usage_seconds_total"]; c.MetricType != runtimeapi.MetricType_COUNTER || c.LabelValues[0] != "app" || c.LabelValues[5] != "p" {
			t.Errorf("%s: cpu usage metric %v", name, c)
		}
	}
	devs, err := netDevices("/proc/self/net/dev")
	if err != nil {
		t.Fatal(err)
	}
	for _, metric := range podNetworkMetrics(sb, devs) {
		if len(metric.LabelValues) != keys[metric.Name] {
			t.Errorf("%s has %d label values, its descriptor %d keys", metric.Name, len(metric.LabelValues), keys[metric.Name])
		}
	}
}
