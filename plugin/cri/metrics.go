package cri

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The plugin's figures, on containerd's own [metrics] address (its
// /v1/metrics serves Prometheus' default registry), named as CRI-O names
// its own: container_runtime_<runtime>_...
var (
	operations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "container_runtime", Subsystem: "mine", Name: "operations_total",
		Help: "CRI operations by RPC and gRPC code.",
	}, []string{"operation", "code"})
	operationLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "container_runtime", Subsystem: "mine", Name: "operations_latency_seconds",
		Help:    "Time CRI operations take, by RPC.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	}, []string{"operation"})

	// A pod's start as kubelet sees it: RunPodSandbox received to its
	// first container started.
	podStartLatency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "container_runtime", Subsystem: "mine", Name: "pod_start_latency_seconds",
		Help:    "Time from RunPodSandbox to the pod's first container started.",
		Buckets: []float64{.1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300},
	})
	imagePulls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "container_runtime", Subsystem: "mine", Name: "image_pulls_total",
		Help: "Image pulls by result: success, or the gRPC code of the failure.",
	}, []string{"result"})
	imagePullSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "container_runtime", Subsystem: "mine", Name: "image_pull_duration_seconds",
		Help:    "Time image pulls take, successful or not.",
		Buckets: []float64{.1, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800},
	})
	imagePullBytes = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "container_runtime", Subsystem: "mine", Name: "image_pull_bytes_total",
		Help: "Bytes received from registries by image pulls.",
	})
	logRotations = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "container_runtime", Subsystem: "mine", Name: "container_log_rotations_total",
		Help: "Container logs reopened after kubelet rotated them (ReopenContainerLog).",
	})
	eventSubscribers = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "container_runtime", Subsystem: "mine", Name: "container_events_subscribers",
		Help: "GetContainerEvents streams open.",
	})
	eventDisconnects = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "container_runtime", Subsystem: "mine", Name: "container_events_disconnects_total",
		Help: "GetContainerEvents subscribers disconnected for falling too far behind.",
	})
)

func init() {
	prometheus.MustRegister(operations, operationLatency, podStartLatency,
		imagePulls, imagePullSeconds, imagePullBytes, logRotations, eventSubscribers, eventDisconnects)
}

// observePull counts one image pull, by its result.
func observePull(start time.Time, bytes int64, err error) {
	result := "success"
	if err != nil {
		result = status.Code(toStatus(err)).String()
	}
	imagePulls.WithLabelValues(result).Inc()
	imagePullSeconds.Observe(time.Since(start).Seconds())
	imagePullBytes.Add(float64(bytes))
}

// observe counts one CRI operation, by the code it answered.
func observe(method string, start time.Time, err error) {
	operations.WithLabelValues(method, status.Code(err).String()).Inc()
	operationLatency.WithLabelValues(method).Observe(time.Since(start).Seconds())
}

// stateCollector reports pods and containers by state, read when scraped.
type stateCollector struct{ s *Service }

var (
	podsDesc       = prometheus.NewDesc("container_runtime_mine_pods", "Pod sandboxes by state.", []string{"state"}, nil)
	containersDesc = prometheus.NewDesc("container_runtime_mine_containers", "Containers by state.", []string{"state"}, nil)
)

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- podsDesc
	ch <- containersDesc
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pods := map[string]float64{}
	for _, st := range runtimeapi.PodSandboxState_name {
		pods[st] = 0
	}
	if resp, err := c.s.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{}); err == nil {
		for _, p := range resp.Items {
			pods[p.State.String()]++
		}
	}
	for st, n := range pods {
		ch <- prometheus.MustNewConstMetric(podsDesc, prometheus.GaugeValue, n, st)
	}
	ctrs := map[string]float64{}
	for _, st := range runtimeapi.ContainerState_name {
		ctrs[st] = 0
	}
	if resp, err := c.s.ListContainers(ctx, &runtimeapi.ListContainersRequest{}); err == nil {
		for _, ctr := range resp.Containers {
			ctrs[ctr.State.String()]++
		}
	}
	for st, n := range ctrs {
		ch <- prometheus.MustNewConstMetric(containersDesc, prometheus.GaugeValue, n, st)
	}
}
