package integration

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/nri/pkg/api"
	"github.com/containerd/nri/pkg/stub"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// nriPlugin is an NRI plugin on the daemon's NRI socket, as node agents
// (resource managers, device injectors) run: it records every event and
// can adjust, update and fail what it is asked about.
type nriPlugin struct {
	mu     sync.Mutex
	events []string // "Event pod-id container-id"
	synced struct {
		pods, containers []string
	}
	ready   chan struct{}
	stub    stub.Stub
	failRun error
	failCrt error
	adjust  func(*api.ContainerAdjustment)
	// syncUpdates builds what Synchronize asks of the containers it is
	// handed.
	syncUpdates func(ctrs []*api.Container) []*api.ContainerUpdate
	onUpdate    func(*api.Container, *api.LinuxResources) []*api.ContainerUpdate
	starting    []uint32 // the pids StartContainer saw
}

// connectNRIPlugin connects a plugin and waits for its Synchronize.
func connectNRIPlugin(t *testing.T, name string, setup func(*nriPlugin)) *nriPlugin {
	t.Helper()
	p := &nriPlugin{ready: make(chan struct{})}
	if setup != nil {
		setup(p)
	}
	s, err := stub.New(p, stub.WithPluginName(name), stub.WithPluginIdx("50"), stub.WithSocketPath(daemon.NRISocket()))
	if err != nil {
		t.Fatal(err)
	}
	p.stub = s
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	select {
	case <-p.ready:
	case err := <-done:
		t.Fatalf("NRI plugin %s: %v", name, err)
	case <-time.After(30 * time.Second):
		t.Fatalf("NRI plugin %s was never synchronised", name)
	}
	return p
}

func (p *nriPlugin) record(event string, pod *api.PodSandbox, ctr *api.Container) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.events = append(p.events, strings.TrimSpace(event+" "+pod.GetId()+" "+ctr.GetId()))
}

// eventsOf is what the plugin heard of a pod, in order, pod and
// container IDs replaced by "pod" and the containers' names.
func (p *nriPlugin) eventsOf(podID string, names map[string]string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, e := range p.events {
		f := strings.Fields(e)
		if len(f) < 2 || f[1] != podID {
			continue
		}
		s := f[0] + " pod"
		if len(f) == 3 {
			s += " " + names[f[2]]
		}
		out = append(out, s)
	}
	return out
}

// firstPodID is the pod of the first event the plugin heard.
func (p *nriPlugin) firstPodID() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.events) == 0 {
		return ""
	}
	return strings.Fields(p.events[0])[1]
}

func (p *nriPlugin) Synchronize(_ context.Context, pods []*api.PodSandbox, ctrs []*api.Container) ([]*api.ContainerUpdate, error) {
	p.mu.Lock()
	for _, pod := range pods {
		p.synced.pods = append(p.synced.pods, pod.GetId())
	}
	for _, c := range ctrs {
		p.synced.containers = append(p.synced.containers, c.GetId()+" "+c.GetState().String())
	}
	p.mu.Unlock()
	close(p.ready)
	if p.syncUpdates != nil {
		return p.syncUpdates(ctrs), nil
	}
	return nil, nil
}

func (p *nriPlugin) RunPodSandbox(_ context.Context, pod *api.PodSandbox) error {
	p.record("RunPodSandbox", pod, nil)
	p.mu.Lock()
	defer p.mu.Unlock()
	err := p.failRun
	p.failRun = nil
	return err
}

func (p *nriPlugin) StopPodSandbox(_ context.Context, pod *api.PodSandbox) error {
	p.record("StopPodSandbox", pod, nil)
	return nil
}

func (p *nriPlugin) RemovePodSandbox(_ context.Context, pod *api.PodSandbox) error {
	p.record("RemovePodSandbox", pod, nil)
	return nil
}

func (p *nriPlugin) CreateContainer(_ context.Context, pod *api.PodSandbox, ctr *api.Container) (*api.ContainerAdjustment, []*api.ContainerUpdate, error) {
	p.record("CreateContainer", pod, ctr)
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.failCrt; err != nil {
		p.failCrt = nil
		return nil, nil, err
	}
	adjust := &api.ContainerAdjustment{}
	if p.adjust != nil {
		p.adjust(adjust)
	}
	return adjust, nil, nil
}

func (p *nriPlugin) PostCreateContainer(_ context.Context, pod *api.PodSandbox, ctr *api.Container) error {
	p.record("PostCreateContainer", pod, ctr)
	return nil
}

func (p *nriPlugin) StartContainer(_ context.Context, pod *api.PodSandbox, ctr *api.Container) error {
	p.record("StartContainer", pod, ctr)
	p.mu.Lock()
	p.starting = append(p.starting, ctr.GetPid())
	p.mu.Unlock()
	return nil
}

func (p *nriPlugin) PostStartContainer(_ context.Context, pod *api.PodSandbox, ctr *api.Container) error {
	p.record("PostStartContainer", pod, ctr)
	return nil
}

func (p *nriPlugin) UpdateContainer(_ context.Context, pod *api.PodSandbox, ctr *api.Container, res *api.LinuxResources) ([]*api.ContainerUpdate, error) {
	p.record("UpdateContainer", pod, ctr)
	if p.onUpdate != nil {
		return p.onUpdate(ctr, res), nil
	}
	return nil, nil
}

func (p *nriPlugin) PostUpdateContainer(_ context.Context, pod *api.PodSandbox, ctr *api.Container) error {
	p.record("PostUpdateContainer", pod, ctr)
	return nil
}

func (p *nriPlugin) StopContainer(_ context.Context, pod *api.PodSandbox, ctr *api.Container) ([]*api.ContainerUpdate, error) {
	p.record("StopContainer", pod, ctr)
	return nil, nil
}

func (p *nriPlugin) RemoveContainer(_ context.Context, pod *api.PodSandbox, ctr *api.Container) error {
	p.record("RemoveContainer", pod, ctr)
	return nil
}

// TestNRIPluginLifecycle follows a pod with two containers through an NRI
// plugin: every event in order, the container that exits on its own
// reported stopped before anyone removes it, and the plugin's adjustment
// (an environment variable, an annotation, a tmpfs mount) in the
// container as it runs.
func TestNRIPluginLifecycle(t *testing.T) {
	c := newCRI(t)
	c.pullBusybox(t)
	ctx := testContext(t)
	p := connectNRIPlugin(t, "lifecycle", func(p *nriPlugin) {
		p.adjust = func(a *api.ContainerAdjustment) {
			a.AddEnv("NRI_ADJUSTED", "by-plugin")
			a.AddAnnotation("nri.test/adjusted", "yes")
			a.AddMount(&api.Mount{Destination: "/nri", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "size=1m"}})
		}
	})

	pod := podConfig(t, "nri-lifecycle")
	resp, err := c.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: pod})
	if err != nil {
		t.Fatal(err)
	}
	podID := resp.PodSandboxId
	main := c.startContainer(t, podID, pod, containerConfig("main", "sleep 1000"))
	quits := c.startContainer(t, podID, pod, containerConfig("quits", "exit 3"))
	names := map[string]string{main: "main", quits: "quits"}

	if got := mustExec(t, c, main, "sh", "-c", "echo $NRI_ADJUSTED; grep -c ' /nri tmpfs ' /proc/mounts"); got != "by-plugin\n1\n" {
		t.Errorf("the plugin's environment variable and mount in the container: %q, want \"by-plugin\\n1\\n\"", got)
	}
	spec := containerSpec(t, main)
	if spec.Annotations["nri.test/adjusted"] != "yes" {
		t.Errorf("the plugin's annotation is not in the spec: %v", spec.Annotations)
	}
	waitFor(t, "the NRI plugin to hear the container that exited on its own stopped", 10*time.Second, func() bool {
		return slices.Contains(p.eventsOf(podID, names), "StopContainer pod quits")
	})

	for _, id := range []string{main, quits} {
		if _, err := c.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 { // the second stop is no news to plugins
		if _, err := c.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatal(err)
	}

	want := []string{
		"RunPodSandbox pod",
		"CreateContainer pod main", "PostCreateContainer pod main", "StartContainer pod main", "PostStartContainer pod main",
		"CreateContainer pod quits", "PostCreateContainer pod quits", "StartContainer pod quits", "PostStartContainer pod quits",
		"StopContainer pod quits",
		"StopContainer pod main", "RemoveContainer pod main",
		"RemoveContainer pod quits",
		"StopPodSandbox pod", "RemovePodSandbox pod",
	}
	if got := p.eventsOf(podID, names); !slices.Equal(got, want) {
		t.Errorf("NRI events:\n got %q\nwant %q", got, want)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.starting) != 2 || slices.Contains(p.starting, 0) {
		t.Errorf("StartContainer should give each container's pid: %v", p.starting)
	}
}

// TestNRIPluginUpdates: a plugin changes the resources of an
// UpdateContainerResources on the way, and updates a container of its own
// accord; both reach the container's cgroup and its spec.
func TestNRIPluginUpdates(t *testing.T) {
	c := newCRI(t)
	c.pullBusybox(t)
	ctx := testContext(t)
	p := connectNRIPlugin(t, "updates", func(p *nriPlugin) {
		p.onUpdate = func(ctr *api.Container, res *api.LinuxResources) []*api.ContainerUpdate {
			u := &api.ContainerUpdate{ContainerId: ctr.GetId()}
			u.SetLinuxCPUShares(777)
			return []*api.ContainerUpdate{u}
		}
	})
	pod := podConfig(t, "nri-updates")
	podID := c.runPod(t, pod)
	id := c.startContainer(t, podID, pod, containerConfig("main", "sleep 1000"))

	if _, err := c.UpdateContainerResources(ctx, &runtimeapi.UpdateContainerResourcesRequest{
		ContainerId: id, Linux: &runtimeapi.LinuxContainerResources{CpuShares: 300, MemoryLimitInBytes: 256 << 20},
	}); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(mustExec(t, c, id, "cat", "/sys/fs/cgroup/cpu/cpu.shares", "/sys/fs/cgroup/memory/memory.limit_in_bytes")); got != "777\n268435456" {
		t.Errorf("cpu.shares and memory limit after the update: %q, want the plugin's 777 and the request's 268435456", got)
	}
	if r := containerSpec(t, id).Linux.Resources; r.CPU == nil || r.CPU.Shares == nil || *r.CPU.Shares != 777 {
		t.Errorf("the spec's CPU shares are not the plugin's: %+v", r.CPU)
	}
	names := map[string]string{id: "main"}
	if got := p.eventsOf(podID, names); !slices.Contains(got, "UpdateContainer pod main") || !slices.Contains(got, "PostUpdateContainer pod main") {
		t.Errorf("NRI events: %q", got)
	}

	u := &api.ContainerUpdate{ContainerId: id}
	u.SetLinuxMemoryLimit(64 << 20)
	failed, err := p.stub.UpdateContainers([]*api.ContainerUpdate{u})
	if err != nil || len(failed) > 0 {
		t.Fatalf("unsolicited update: failed %v, %v", failed, err)
	}
	if got := strings.TrimSpace(mustExec(t, c, id, "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/cpu/cpu.shares")); got != "67108864\n777" {
		t.Errorf("memory limit and cpu.shares after the plugin's own update: %q, want 67108864 and 777 kept", got)
	}
	if r := containerSpec(t, id).Linux.Resources; r.Memory == nil || r.Memory.Limit == nil || *r.Memory.Limit != 64<<20 {
		t.Errorf("the spec's memory limit is not the plugin's: %+v", r.Memory)
	}
}

// TestNRIPluginFailures: a plugin failing RunPodSandbox or CreateContainer
// fails the request and leaves nothing of the pod or the container; the
// retry succeeds.
func TestNRIPluginFailures(t *testing.T) {
	c := newCRI(t)
	c.pullBusybox(t)
	ctx := testContext(t)
	p := connectNRIPlugin(t, "failures", func(p *nriPlugin) {
		p.failRun = errors.New("induced RunPodSandbox failure")
	})
	client := criClient(t)
	before, err := client.Containers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sandboxes := filepath.Join(daemon.Dir, "state", "io.containerd.grpc.v1.mine", "sandboxes")
	dirsBefore := dirNames(t, sandboxes)

	pod := podConfig(t, "nri-failures")
	if _, err := c.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: pod}); err == nil || !strings.Contains(err.Error(), "induced RunPodSandbox failure") {
		t.Fatalf("RunPodSandbox with a failing plugin: %v, want the plugin's error", err)
	}
	after, err := client.Containers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Errorf("containerd records: %d before, %d after the failed RunPodSandbox", len(before), len(after))
	}
	if got := dirNames(t, sandboxes); !slices.Equal(got, dirsBefore) {
		t.Errorf("pod state directories after the failed RunPodSandbox: %v, before %v", got, dirsBefore)
	}
	list, err := c.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range list.Items {
		if s.Metadata.Name == pod.Metadata.Name {
			t.Errorf("the failed pod is listed: %s", s.Id)
		}
	}

	// The failed pod's plugins heard it removed: one may have set it up.
	if failed := p.firstPodID(); !slices.Equal(p.eventsOf(failed, nil), []string{"RunPodSandbox pod", "RemovePodSandbox pod"}) {
		t.Errorf("NRI events of the failed pod: %q", p.eventsOf(failed, nil))
	}
	podID := c.runPod(t, pod) // the plugin fails once
	p.mu.Lock()
	p.failCrt = errors.New("induced CreateContainer failure")
	p.mu.Unlock()
	cfg := containerConfig("main", "sleep 1000")
	before, _ = client.Containers(ctx)
	_, err = c.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
	if err == nil || !strings.Contains(err.Error(), "induced CreateContainer failure") {
		t.Fatalf("CreateContainer with a failing plugin: %v, want the plugin's error", err)
	}
	if after, _ := client.Containers(ctx); len(after) != len(before) {
		t.Errorf("containerd records: %d before, %d after the failed CreateContainer", len(before), len(after))
	}
	ctrs, err := c.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{PodSandboxId: podID}})
	if err != nil || len(ctrs.Containers) != 0 {
		t.Errorf("containers after the failed CreateContainer: %v, %v", ctrs.GetContainers(), err)
	}
	id := c.startContainer(t, podID, pod, cfg)
	if st := c.status(t, id); st.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Errorf("the retried container: %v", st.State)
	}
	// The failed create's container is the one other than the retry's;
	// plugins may hear it stopped and removed, never started.
	names := map[string]string{id: "retried"}
	if got, want := p.eventsOf(podID, names), []string{
		"RunPodSandbox pod",
		"CreateContainer pod ", "StopContainer pod ", "RemoveContainer pod ",
		"CreateContainer pod retried", "PostCreateContainer pod retried", "StartContainer pod retried", "PostStartContainer pod retried",
	}; !slices.Equal(got, want) {
		t.Errorf("NRI events:\n got %q\nwant %q", got, want)
	}
}

// TestNRIPluginSynchronize: a plugin connecting to a node with pods and
// containers is handed every one of them, with their states.
func TestNRIPluginSynchronize(t *testing.T) {
	c := newCRI(t)
	c.pullBusybox(t)
	pod := podConfig(t, "nri-sync")
	podID := c.runPod(t, pod)
	running := c.startContainer(t, podID, pod, containerConfig("running", "sleep 1000"))
	resp, err := c.CreateContainer(testContext(t), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: containerConfig("created", "true"), SandboxConfig: pod})
	if err != nil {
		t.Fatal(err)
	}
	// Its Synchronize asks for an update that fails (a CPU the node does
	// not have): logged, and the plugin stays, as with containerd.
	p := connectNRIPlugin(t, "late", func(p *nriPlugin) {
		p.syncUpdates = func(ctrs []*api.Container) []*api.ContainerUpdate {
			u := &api.ContainerUpdate{ContainerId: running}
			u.SetLinuxCPUSetCPUs("999")
			return []*api.ContainerUpdate{u}
		}
	})
	later := c.startContainer(t, podID, pod, containerConfig("later", "sleep 1000"))
	waitFor(t, "the plugin to hear of a container made after its failed update", 10*time.Second, func() bool {
		return slices.Contains(p.eventsOf(podID, map[string]string{later: "later"}), "CreateContainer pod later")
	})
	p.mu.Lock()
	defer p.mu.Unlock()
	if !slices.Contains(p.synced.pods, podID) {
		t.Errorf("Synchronize's pods %v lack %s", p.synced.pods, podID)
	}
	for _, want := range []string{running + " CONTAINER_RUNNING", resp.ContainerId + " CONTAINER_CREATED"} {
		if !slices.Contains(p.synced.containers, want) {
			t.Errorf("Synchronize's containers %v lack %q", p.synced.containers, want)
		}
	}
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// containerSpec is a CRI container's OCI spec as containerd holds it.
func containerSpec(t *testing.T, id string) *specs.Spec {
	t.Helper()
	ctx := testContext(t)
	ctr, err := criClient(t).LoadContainer(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := ctr.Spec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

// criClient is a containerd client in the namespace CRI objects live in.
func criClient(t *testing.T) *containerd.Client {
	t.Helper()
	c, err := daemon.Client("k8s.io")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
