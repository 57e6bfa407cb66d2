package integration

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/mine-runtime/mine/integration/testbed"
)

// TestMetrics scrapes containerd's metrics endpoint and finds the CRI's
// figures there, parsed as Prometheus parses them.
func TestMetrics(t *testing.T) {
	c := newCRI(t)
	ctx := testContext(t)
	c.pullBusybox(t)
	// An image of its own: a pull that fetches, whatever the daemon holds
	// (and its counters start again with every restart of the daemon).
	base, err := testbed.BusyboxImage()
	if err != nil {
		t.Fatal(err)
	}
	img, err := testbed.WithFiles(base, map[string]string{"etc/metrics-test": time.Now().String()})
	if err != nil {
		t.Fatal(err)
	}
	tag := fmt.Sprintf("library/metrics:%d", time.Now().UnixNano())
	if _, err := registry().Push(tag, img); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: strings.TrimPrefix(tag, "library/")}}); err != nil {
		t.Fatal(err)
	}
	pod := podConfig(t, "metrics")
	podID := c.runPod(t, pod)
	// 20 lines, then one of 20,000 bytes: split at the 16 KiB limit.
	id := c.startContainer(t, podID, pod, containerConfig("main",
		"i=0; while [ $i -lt 20 ]; do echo line $i; i=$((i+1)); done; head -c 20000 /dev/zero | tr '\\0' x; echo; exec sleep 600"))
	if _, err := c.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: "no-such-container"}); err == nil {
		t.Fatal("status of an unknown container")
	}
	if _, err := c.ReopenContainerLog(ctx, &runtimeapi.ReopenContainerLogRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}

	var families map[string]*dto.MetricFamily
	scrape := func() {
		resp, err := http.Get("http://" + metricsAddress + "/v1/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		parser := expfmt.NewTextParser(model.UTF8Validation)
		if families, err = parser.TextToMetricFamilies(resp.Body); err != nil {
			t.Fatal(err)
		}
	}
	value := func(family string, labels map[string]string) (float64, bool) {
		f := families[family]
		if f == nil {
			return 0, false
		}
	metrics:
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue metrics
				}
			}
			return sample(m), true
		}
		return 0, false
	}
	// The shims' figures are read from the shims when scraped.
	waitFor(t, "the shim's figures in the metrics", 15*time.Second, func() bool {
		scrape()
		v, _ := value("container_runtime_mine_container_log_lines_split_total", nil)
		return v >= 1
	})
	for _, f := range []string{"shims", "shims_resident_memory_bytes", "container_log_lines_total", "container_log_lines_split_total", "container_log_entries_dropped_total", "container_log_rotations_total"} {
		v, _ := value("container_runtime_mine_"+f, nil)
		t.Logf("%s = %v", f, v)
	}
	for _, want := range []struct {
		family string
		labels map[string]string
		min    float64
	}{
		{"container_runtime_mine_shims", nil, 1},
		{"container_runtime_mine_shims_resident_memory_bytes", nil, 1 << 20},
		{"container_runtime_mine_container_log_lines_total", nil, 21},
		{"container_runtime_mine_container_log_lines_split_total", nil, 1},
		{"container_runtime_mine_container_log_entries_dropped_total", nil, 0},
		{"container_runtime_mine_container_log_rotations_total", nil, 1},
		{"container_runtime_mine_operations_total", map[string]string{"operation": "RunPodSandbox", "code": "OK"}, 1},
		{"container_runtime_mine_operations_total", map[string]string{"operation": "ContainerStatus", "code": "NotFound"}, 1},
		{"container_runtime_mine_operations_latency_seconds", map[string]string{"operation": "StartContainer"}, 1},
		{"container_runtime_mine_pods", map[string]string{"state": "SANDBOX_READY"}, 1},
		{"container_runtime_mine_containers", map[string]string{"state": "CONTAINER_RUNNING"}, 1},
		{"container_runtime_mine_pod_start_latency_seconds", nil, 1},
		{"container_runtime_mine_image_pulls_total", map[string]string{"result": "success"}, 1},
		{"container_runtime_mine_image_pull_duration_seconds", nil, 1},
		{"container_runtime_mine_image_pull_bytes_total", nil, 1},
		{"container_runtime_mine_container_events_subscribers", nil, 0},
		{"container_runtime_mine_container_events_disconnects_total", nil, 0},
	} {
		if v, ok := value(want.family, want.labels); !ok || v < want.min {
			t.Errorf("%s%v = %v (found %v), want at least %v", want.family, want.labels, v, ok, want.min)
		}
	}

	// A pod removed between two scrapes: its shim is read a last time as
	// the pod stops, so its lines are counted. Its containers share its
	// PID namespace, so that its init, through which its shim is read,
	// runs from the start.
	before, _ := value("container_runtime_mine_container_log_lines_total", nil)
	gone := podConfig(t, "metrics-removed")
	gone.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_POD
	goneID := c.runPod(t, gone)
	logged := c.startContainer(t, goneID, gone, containerConfig("main",
		"i=0; while [ $i -lt 50 ]; do echo removed $i; i=$((i+1)); done; exec sleep 600"))
	waitFor(t, "the 50 lines in the log", 10*time.Second, func() bool {
		st, err := c.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: logged})
		if err != nil {
			return false
		}
		data, _ := os.ReadFile(st.GetStatus().GetLogPath())
		return strings.Count(string(data), "\n") >= 50
	})
	if _, err := c.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: goneID}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: goneID}); err != nil {
		t.Fatal(err)
	}
	scrape()
	if after, _ := value("container_runtime_mine_container_log_lines_total", nil); after-before < 50 {
		t.Errorf("log lines counted %v before a pod logging 50 was removed, %v after", before, after)
	}
}

// sample is a metric's value: a counter's or gauge's, a histogram's count.
func sample(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return 0
}
