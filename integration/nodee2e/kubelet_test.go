//go:build nodee2e

package nodee2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/mine-runtime/mine/integration/testbed"
)

// The parts of v1.Pod the tests read, as kubelet's /pods serves them.
type pod struct {
	Metadata struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
		UID       string `json:"uid"`
	} `json:"metadata"`
	Status podStatus `json:"status"`
}

type podStatus struct {
	Phase      string `json:"phase"`
	Reason     string `json:"reason"`
	Message    string `json:"message"`
	PodIP      string `json:"podIP"`
	HostIP     string `json:"hostIP"`
	Conditions []struct {
		Type   string `json:"type"`
		Status string `json:"status"`
		Reason string `json:"reason"`
	} `json:"conditions"`
	InitContainerStatuses []containerStatus `json:"initContainerStatuses"`
	ContainerStatuses     []containerStatus `json:"containerStatuses"`
}

type containerStatus struct {
	Name         string         `json:"name"`
	Ready        bool           `json:"ready"`
	RestartCount int            `json:"restartCount"`
	ContainerID  string         `json:"containerID"`
	State        containerState `json:"state"`
	LastState    containerState `json:"lastState"`
}

type containerState struct {
	Waiting *struct {
		Reason  string `json:"reason"`
		Message string `json:"message"`
	} `json:"waiting"`
	Running *struct {
		StartedAt string `json:"startedAt"`
	} `json:"running"`
	Terminated *terminated `json:"terminated"`
}

type terminated struct {
	ExitCode int    `json:"exitCode"`
	Reason   string `json:"reason"`
	Message  string `json:"message"`
}

func (s containerState) String() string {
	switch {
	case s.Running != nil:
		return "running"
	case s.Terminated != nil:
		return fmt.Sprintf("terminated %s exit %d %q", s.Terminated.Reason, s.Terminated.ExitCode, s.Terminated.Message)
	case s.Waiting != nil:
		return fmt.Sprintf("waiting %s %q", s.Waiting.Reason, s.Waiting.Message)
	}
	return "none"
}

func (p pod) ready() bool {
	for _, c := range p.Status.Conditions {
		if c.Type == "Ready" {
			return c.Status == "True"
		}
	}
	return false
}

func (p pod) container(name string) (containerStatus, bool) {
	for _, c := range p.Status.ContainerStatuses {
		if c.Name == name {
			return c, true
		}
	}
	return containerStatus{}, false
}

// allRunning tells whether the pod runs and every container of it too.
func (p pod) allRunning() bool {
	if p.Status.Phase != "Running" || len(p.Status.ContainerStatuses) == 0 {
		return false
	}
	for _, c := range p.Status.ContainerStatuses {
		if c.State.Running == nil {
			return false
		}
	}
	return true
}

// String sums the status up, with every container's state: what a
// failure message needs.
func (p pod) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "phase %s", p.Status.Phase)
	if p.Status.Reason != "" || p.Status.Message != "" {
		fmt.Fprintf(&b, " (%s: %s)", p.Status.Reason, p.Status.Message)
	}
	for _, c := range p.Status.Conditions {
		fmt.Fprintf(&b, ", %s=%s", c.Type, c.Status)
		if c.Reason != "" {
			fmt.Fprintf(&b, "(%s)", c.Reason)
		}
	}
	for _, list := range [][]containerStatus{p.Status.InitContainerStatuses, p.Status.ContainerStatuses} {
		for _, c := range list {
			fmt.Fprintf(&b, "\n    container %s: %s, restarts %d", c.Name, c.State, c.RestartCount)
			if c.LastState.Terminated != nil {
				fmt.Fprintf(&b, ", last %s", c.LastState)
			}
		}
	}
	return b.String()
}

// podWatch polls kubelet's /pods, which in standalone mode serves the
// static pods with the status kubelet holds for them, and records when
// each pod was first seen running, ready and ended.
type podWatch struct {
	kubelet *testbed.Kubelet
	mu      sync.Mutex
	pods    map[string]pod // the last status seen, by pod name
	err     error          // the last poll's error
	times   map[string]*podTimes
	order   []string // pods in the order they were placed
	cancel  context.CancelFunc
	done    chan struct{}
}

type podTimes struct {
	placed, running, ready, ended time.Time
	endPhase                      string
}

func startWatch(k *testbed.Kubelet) *podWatch {
	ctx, cancel := context.WithCancel(context.Background())
	w := &podWatch{kubelet: k, pods: map[string]pod{}, times: map[string]*podTimes{}, cancel: cancel, done: make(chan struct{})}
	go w.run(ctx)
	return w
}

func (w *podWatch) run(ctx context.Context) {
	defer close(w.done)
	for {
		w.poll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (w *podWatch) poll(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	data, err := w.kubelet.ReadOnly(ctx, "/pods")
	now := time.Now()
	var list struct {
		Items []pod `json:"items"`
	}
	if err == nil {
		err = json.Unmarshal(data, &list)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.err = err
	if err != nil {
		return
	}
	w.pods = map[string]pod{}
	for _, p := range list.Items {
		w.pods[p.Metadata.Name] = p
		t := w.times[p.Metadata.Name]
		if t == nil {
			continue
		}
		if t.running.IsZero() && p.Status.Phase == "Running" {
			t.running = now
		}
		if t.ready.IsZero() && p.ready() {
			t.ready = now
		}
		if t.ended.IsZero() && (p.Status.Phase == "Succeeded" || p.Status.Phase == "Failed") {
			t.ended, t.endPhase = now, p.Status.Phase
		}
	}
}

// placed starts the clock of a pod whose manifest is being placed.
func (w *podWatch) placed(name string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.times[name] = &podTimes{placed: time.Now()}
	w.order = append(w.order, name)
}

func (w *podWatch) get(name string) (pod, bool, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	p, ok := w.pods[name]
	return p, ok, w.err
}

func (w *podWatch) stop() {
	w.cancel()
	<-w.done
}

// printTimings prints, for each pod, the time from placing its manifest
// to kubelet reporting it Running, Ready, and ended (Failed or Succeeded).
// The poll interval, 100 ms, bounds their precision; kubelet's own PLEG
// relists every second.
func printTimings(pleg string) {
	watch.mu.Lock()
	defer watch.mu.Unlock()
	fmt.Printf("\nnode e2e timings, %s runtime, kubelet v1.37.2 standalone (%s PLEG), all %d manifests placed together:\n", runtimeName, pleg, len(watch.order))
	fmt.Printf("  %-15s %9s %9s %9s\n", "pod", "running", "ready", "ended")
	since := func(start, t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return fmt.Sprintf("%.1fs", t.Sub(start).Seconds())
	}
	for _, name := range watch.order {
		t := watch.times[name]
		ended := since(t.placed, t.ended)
		if t.endPhase != "" {
			ended += " " + t.endPhase
		}
		fmt.Printf("  %-15s %9s %9s %9s\n", strings.TrimSuffix(name, "-"+kubelet.NodeName), since(t.placed, t.running), since(t.placed, t.ready), ended)
	}
}

// waitPod waits until kubelet reports the pod in a state cond accepts,
// and returns that status. On time-out it fails with everything known
// about the pod: its status, the runtime's view, kubelet's errors.
func waitPod(t *testing.T, name string, timeout time.Duration, what string, cond func(pod) bool) pod {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		p, ok, _ := watch.get(name)
		if ok && cond(p) {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod %s: not %s after %v\n%s", name, what, timeout, diagnose(name))
		}
		select {
		case <-kubelet.Exited():
			t.Fatalf("kubelet exited:\n%s", kubelet.Tail(30))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// holdsFor checks that cond stays true for d: for what must not happen,
// such as a restart.
func holdsFor(t *testing.T, name string, d time.Duration, what string, cond func(pod) bool) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		if p, ok, _ := watch.get(name); !ok || !cond(p) {
			t.Fatalf("pod %s: no longer %s\n%s", name, what, diagnose(name))
		}
	}
}

// diagnose gathers what kubelet and the runtime say about a pod.
func diagnose(name string) string {
	var b strings.Builder
	if p, ok, err := watch.get(name); ok {
		fmt.Fprintf(&b, "  kubelet /pods: %s\n", p)
	} else {
		fmt.Fprintf(&b, "  kubelet /pods: not listed (last poll error: %v)\n", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sel := map[string]string{"io.kubernetes.pod.name": name}
	if sbs, err := cri.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{LabelSelector: sel}}); err == nil {
		for _, s := range sbs.Items {
			fmt.Fprintf(&b, "  CRI: sandbox %s %s\n", s.Id[:12], s.State)
		}
	} else {
		fmt.Fprintf(&b, "  CRI ListPodSandbox: %v\n", err)
	}
	for _, c := range criContainers(ctx, name) {
		st, err := cri.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: c.Id})
		if err != nil {
			fmt.Fprintf(&b, "  CRI: container %s %s: %v\n", c.Id[:12], c.Metadata.Name, err)
			continue
		}
		s := st.Status
		fmt.Fprintf(&b, "  CRI: container %s %s attempt %d %s exit %d reason %q message %q\n", c.Id[:12], c.Metadata.Name, c.Metadata.Attempt, s.State, s.ExitCode, s.Reason, s.Message)
	}
	if lines := kubeletErrors(name, 8); len(lines) > 0 {
		fmt.Fprintf(&b, "  kubelet errors about it (last %d):\n    %s\n", len(lines), strings.Join(lines, "\n    "))
	}
	return b.String()
}

// criContainers lists the runtime's containers of a pod, oldest first.
func criContainers(ctx context.Context, podName string) []*runtimeapi.Container {
	resp, err := cri.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{
		LabelSelector: map[string]string{"io.kubernetes.pod.name": podName},
	}})
	if err != nil {
		return nil
	}
	sort.Slice(resp.Containers, func(i, j int) bool { return resp.Containers[i].CreatedAt < resp.Containers[j].CreatedAt })
	return resp.Containers
}

// kubeletErrors returns the last n error lines of kubelet's log that
// name the pod.
func kubeletErrors(podName string, n int) []string {
	var out []string
	for _, line := range kubeletLog() {
		if strings.HasPrefix(line, "E") && strings.Contains(line, podName) {
			out = append(out, line)
		}
	}
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return out
}

func kubeletLog() []string {
	data, _ := os.ReadFile(kubelet.Log)
	return strings.Split(string(data), "\n")
}

// containerLog is a container's log as kubelet serves it, from the
// runtime's CRI log file; query is e.g. "?tailLines=5".
func containerLog(podName, container, query string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	data, err := kubelet.Get(ctx, "/containerLogs/default/"+podName+"/"+container+query)
	return string(data), err
}

// waitLog waits until a container's log holds every one of want.
func waitLog(t *testing.T, podName, container string, timeout time.Duration, want ...string) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		log, err := containerLog(podName, container, "")
		missing := ""
		for _, w := range want {
			if !strings.Contains(log, w) {
				missing = w
				break
			}
		}
		if err == nil && missing == "" {
			return log
		}
		if time.Now().After(deadline) {
			t.Fatalf("log of %s/%s: no %q after %v (error: %v); log:\n%s\n%s", podName, container, missing, timeout, err, log, diagnose(podName))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// probeCount reads kubelet's prober_probe_total counter for one
// container, probe type and result from /metrics/probes.
func probeCount(podName, container, probeType, result string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	data, err := kubelet.Get(ctx, "/metrics/probes")
	if err != nil {
		return 0, err
	}
	labels := []string{`container="` + container + `"`, `pod="` + podName + `"`, `probe_type="` + probeType + `"`, `result="` + result + `"`}
	for _, line := range strings.Split(string(data), "\n") {
		if !strings.HasPrefix(line, "prober_probe_total{") {
			continue
		}
		match := true
		for _, l := range labels {
			match = match && strings.Contains(line, l)
		}
		if match {
			f := strings.Fields(line)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			return int(v), err
		}
	}
	return 0, nil
}
