//go:build nodee2e

package nodee2e

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/mine-runtime/mine/integration/testbed"
)

// podTest is a static pod, testdata/pods/<manifest>.yaml, and what kubelet
// must report about it.
type podTest struct {
	manifest string
	// steady pods keep all their containers running: /stats/summary must
	// list them.
	steady bool
	check  func(t *testing.T, name string)
}

// startTimeout bounds a pod's way to running: all pods start together on
// two cores.
const startTimeout = 90 * time.Second

var podTests = []podTest{
	{"probes", true, checkProbes},
	{"init-volume", true, checkInitVolume},
	{"crashloop", false, checkCrashLoop},
	{"never", false, checkNever},
	{"oom", false, checkOOM},
	{"hostnet", true, checkHostNetwork},
	{"shareproc", true, checkShareProcessNamespace},
	{"hostpath", true, checkHostPaths},
	{"ids", true, checkIDs},
	{"setuid", true, checkSetuid},
	{"logrotate", true, checkLogRotation},
	{"probe-timeout", false, checkProbeTimeout},
	{"userns", true, checkUserNamespace},
}

// TestNode checks each pod, all in parallel since they run together, then
// the node's stats with them running, then their removal.
func TestNode(t *testing.T) {
	t.Run("pods", func(t *testing.T) {
		for _, pt := range podTests {
			t.Run(pt.manifest, func(t *testing.T) {
				t.Parallel()
				pt.check(t, podName(pt.manifest))
			})
		}
	})
	t.Run("no-restarts", testNoRestarts)
	t.Run("stats-summary", testStatsSummary)
	printTimings("generic")
	t.Run("removal", testRemoval)
}

// eventedTests are the pods whose state kubelet must follow as it
// changes: starts, exits, restarts, failures, probes.
var eventedTests = []podTest{
	{"probes", true, checkProbes},
	{"init-volume", true, checkInitVolume},
	{"crashloop", false, checkCrashLoop},
	{"never", false, checkNever},
	{"oom", false, checkOOM},
	{"shareproc", true, checkShareProcessNamespace},
}

// TestNodeEventedPLEG runs those pods again under a kubelet with the
// EventedPLEG feature gate: its PLEG learns of containers' changes from
// GetContainerEvents and relists only every 300 s, so a pod reaches its
// state in time only if the runtime's events are right and complete.
func TestNodeEventedPLEG(t *testing.T) {
	// TestNode's pods are gone (its removal); its kubelet goes too.
	watch.stop()
	dir := filepath.Join(filepath.Dir(kubelet.Dir), "kubelet-evented")
	err := kubelet.Teardown()
	kubelet, watch = nil, nil
	if err != nil {
		t.Fatal(err)
	}
	k, err := testbed.NewKubelet(dir, env("MINE_KUBELET", defaultKubelet),
		"unix://"+bed.Daemon.Address, "featureGates:\n  EventedPLEG: true\n")
	if err != nil {
		t.Fatal(err)
	}
	kubelet = k
	if err := kubelet.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	watch = startWatch(kubelet)
	for _, p := range eventedTests {
		if err := placeManifest(p.manifest); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("pods", func(t *testing.T) {
		for _, pt := range eventedTests {
			t.Run(pt.manifest, func(t *testing.T) {
				t.Parallel()
				pt.check(t, podName(pt.manifest))
			})
		}
	})
	t.Run("no-restarts", testNoRestarts)
	// kubelet counts its connections to GetContainerEvents.
	metrics, err := kubelet.Get(context.Background(), "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	connected := regexp.MustCompile(`(?m)^kubelet_evented_pleg_connection_success_count ([1-9]\d*)$`).FindStringSubmatch(string(metrics))
	if connected == nil {
		t.Errorf("kubelet's evented PLEG never connected to GetContainerEvents; its metrics:\n%s", grepLines(string(metrics), "evented_pleg"))
	}
	if failed := regexp.MustCompile(`(?m)^kubelet_evented_pleg_connection_error_count ([1-9]\d*)$`).FindStringSubmatch(string(metrics)); failed != nil {
		t.Errorf("kubelet's evented PLEG lost its GetContainerEvents stream %s times", failed[1])
	}
	printTimings("evented")
	t.Run("removal", testRemoval)
}

func checkProbes(t *testing.T, name string) {
	waitPod(t, name, startTimeout, "Ready", pod.ready)
	// The exec liveness probe runs every second; three successes show
	// ExecSync works, and no restart may have come of it.
	deadline := time.Now().Add(30 * time.Second)
	for {
		n, err := probeCount(name, "web", "Liveness", "successful")
		if err == nil && n >= 3 {
			break
		}
		if time.Now().After(deadline) {
			failed, _ := probeCount(name, "web", "Liveness", "failed")
			t.Fatalf("liveness probe: %d successes, %d failures after 30s (%v)\n%s", n, failed, err, diagnose(name))
		}
		time.Sleep(500 * time.Millisecond)
	}
	p, _, _ := watch.get(name)
	if c, _ := p.container("web"); c.RestartCount != 0 || !p.ready() {
		t.Fatalf("after its probes ran: ready %v, %d restarts\n%s", p.ready(), c.RestartCount, diagnose(name))
	}
}

func checkInitVolume(t *testing.T, name string) {
	p := waitPod(t, name, startTimeout, "running", pod.allRunning)
	for _, c := range p.Status.InitContainerStatuses {
		if term := c.State.Terminated; term == nil || term.ExitCode != 0 || term.Reason != "Completed" {
			t.Errorf("init container %s: %s, want terminated Completed exit 0", c.Name, c.State)
		}
	}
	if len(p.Status.InitContainerStatuses) != 2 {
		t.Errorf("%d init container statuses, want 2", len(p.Status.InitContainerStatuses))
	}
	waitLog(t, name, "main", 30*time.Second, "written-by-first-init\nappended-by-second-init\n")
}

func checkCrashLoop(t *testing.T, name string) {
	p := waitPod(t, name, 2*time.Minute, "restarted twice", func(p pod) bool {
		c, ok := p.container("crash")
		return ok && c.RestartCount >= 2 && c.LastState.Terminated != nil
	})
	c, _ := p.container("crash")
	if last := c.LastState.Terminated; last.ExitCode != 3 || last.Reason != "Error" {
		t.Fatalf("last state %s, want terminated Error exit 3", c.LastState)
	}
	if p.Status.Phase != "Running" {
		t.Errorf("phase %s, want Running (restartPolicy Always)", p.Status.Phase)
	}
}

func checkNever(t *testing.T, name string) {
	p := waitPod(t, name, startTimeout, "Failed", func(p pod) bool { return p.Status.Phase == "Failed" })
	c, ok := p.container("missing")
	if !ok || c.State.Terminated == nil || c.State.Terminated.ExitCode == 0 {
		t.Fatalf("container %+v, want terminated with a non-zero exit", c)
	}
	t.Logf("kubelet reports: %s", c.State)
	// Kubelet must not try again: restartPolicy Never.
	holdsFor(t, name, 5*time.Second, "failed with no restart", func(p pod) bool {
		c, _ := p.container("missing")
		return p.Status.Phase == "Failed" && c.RestartCount == 0
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if ctrs := criContainers(ctx, name); len(ctrs) != 1 {
		t.Fatalf("the runtime has %d containers for the pod, want exactly 1\n%s", len(ctrs), diagnose(name))
	}
}

func checkOOM(t *testing.T, name string) {
	p := waitPod(t, name, startTimeout, "terminated", func(p pod) bool {
		c, ok := p.container("hog")
		return ok && c.State.Terminated != nil
	})
	c, _ := p.container("hog")
	if term := c.State.Terminated; term.Reason != "OOMKilled" || term.ExitCode != 137 {
		log, _ := containerLog(name, "hog", "")
		t.Fatalf("container %s, want terminated OOMKilled exit 137; its log: %q\n%s", c.State, log, diagnose(name))
	}
}

// checkHostNetwork looks at the namespace itself: standalone kubelet
// reports no pod or host IP for a host-network pod (it takes them from
// its Node object, which only exists with an API server).
func checkHostNetwork(t *testing.T, name string) {
	waitPod(t, name, startTimeout, "running", pod.allRunning)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sbs, err := cri.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{
		LabelSelector: map[string]string{"io.kubernetes.pod.name": name},
		State:         &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY},
	}})
	if err != nil || len(sbs.Items) != 1 {
		t.Fatalf("ready sandboxes of the pod: %v (%v)", sbs, err)
	}
	st, err := cri.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: sbs.Items[0].Id})
	if err != nil {
		t.Fatal(err)
	}
	if mode := st.Status.GetLinux().GetNamespaces().GetOptions().GetNetwork(); mode != runtimeapi.NamespaceMode_NODE {
		t.Errorf("sandbox network namespace mode %s, want NODE", mode)
	}
	own, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	waitLog(t, name, "main", 30*time.Second, "netns="+own+"\n")
}

func checkShareProcessNamespace(t *testing.T, name string) {
	waitPod(t, name, startTimeout, "running", pod.allRunning)
	waitLog(t, name, "watcher", 30*time.Second, "saw the sleeper")
}

func checkUserNamespace(t *testing.T, name string) {
	waitPod(t, name, startTimeout, "running", pod.allRunning)
	log := waitLog(t, name, "main", 30*time.Second, "volume-owner=")
	m := regexp.MustCompile(`uid_map=\s*0 (\d+) (\d+)`).FindStringSubmatch(log)
	if m == nil || m[1] == "0" || m[2] != "65536" {
		t.Fatalf("the container's uid_map in %q: want 0 mapped to a host ID other than 0, 65536 IDs", log)
	}
	for _, want := range []string{"owner=0", "volume-owner=0"} {
		if !slices.Contains(strings.Split(log, "\n"), want) {
			t.Errorf("%q not in %q: the image or the emptyDir is not the pod root's", want, log)
		}
	}
}

func checkHostPaths(t *testing.T, name string) {
	waitPod(t, name, startTimeout, "running", pod.allRunning)
	waitLog(t, name, "main", 30*time.Second, "from-parent", "from-child")
	for _, f := range []string{"parent/from-parent", "child/from-child"} {
		if _, err := os.Stat(filepath.Join(hostPaths, f)); err != nil {
			t.Errorf("written in the container, not on the host: %v", err)
		}
	}
	// Mounted child first, the parent would hide it: the write would land
	// in the parent's directory.
	if _, err := os.Stat(filepath.Join(hostPaths, "parent/b/from-child")); err == nil {
		t.Errorf("/data/a/b/from-child landed in the parent volume: the parent was mounted over the child")
	}
}

func checkIDs(t *testing.T, name string) {
	waitPod(t, name, startTimeout, "running", pod.allRunning)
	log := waitLog(t, name, "main", 30*time.Second, "vol-gid=")
	id := regexp.MustCompile(`uid=(\d+)\S* gid=(\d+)\S* groups=(\S+)`).FindStringSubmatch(log)
	if id == nil {
		t.Fatalf("no id output in %q", log)
	}
	if id[1] != "1234" || id[2] != "2345" {
		t.Errorf("uid %s gid %s, want 1234 and 2345 (%q)", id[1], id[2], id[0])
	}
	var groups []string
	for _, g := range strings.Split(id[3], ",") {
		groups = append(groups, strings.SplitN(g, "(", 2)[0])
	}
	for _, want := range []string{"3456", "4567"} {
		if !slices.Contains(groups, want) {
			t.Errorf("groups %v lack %s (fsGroup 3456, supplementalGroups 4567)", groups, want)
		}
	}
	if !strings.Contains(log, "vol-gid=3456\n") {
		t.Errorf("the emptyDir is not the fsGroup's: %q", log)
	}
}

func checkSetuid(t *testing.T, name string) {
	waitPod(t, name, startTimeout, "running", pod.allRunning)
	waitLog(t, name, "escalate", 30*time.Second, "uid=1000 euid=0\n")
	waitLog(t, name, "noescalate", 30*time.Second, "uid=1000 euid=1000\n")
}

var lineNumber = regexp.MustCompile(`line (\d+) `)

// checkLogRotation waits for kubelet to rotate the container's log, then
// for the container to go on logging into the new file: the runtime must
// have reopened it (ReopenContainerLog).
func checkLogRotation(t *testing.T, name string) {
	p := waitPod(t, name, startTimeout, "running", pod.allRunning)
	c, _ := p.container("logger")
	dir := filepath.Join(kubelet.PodLogs, fmt.Sprintf("default_%s_%s", name, p.Metadata.UID), "logger")
	current := filepath.Join(dir, fmt.Sprintf("%d.log", c.RestartCount))
	var rotated []string
	deadline := time.Now().Add(60 * time.Second)
	for {
		rotated, _ = filepath.Glob(current + ".*")
		rotated = slices.DeleteFunc(rotated, func(f string) bool { return strings.HasSuffix(f, ".tmp") })
		if len(rotated) > 0 {
			break
		}
		if time.Now().After(deadline) {
			entries, _ := os.ReadDir(dir)
			t.Fatalf("no rotated log in %s after 60s: %v\n%s", dir, entries, diagnose(name))
		}
		time.Sleep(200 * time.Millisecond)
	}
	before := 0
	for _, f := range rotated {
		if n, err := lastLine(f); err == nil && n > before {
			before = n
		}
	}
	if before == 0 {
		t.Fatalf("no numbered line in the rotated logs %v", rotated)
	}
	var after int
	deadline = time.Now().Add(30 * time.Second)
	for {
		n, err := lastLine(current)
		if err == nil && n > before {
			after = n
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: last line %d (%v) after 30s, want past %d: the container does not log into the new file\n%s", current, n, err, before, diagnose(name))
		}
		time.Sleep(200 * time.Millisecond)
	}
	tail, err := containerLog(name, "logger", "?tailLines=2")
	if err != nil {
		t.Fatal(err)
	}
	m := lineNumber.FindAllStringSubmatch(tail, -1)
	if len(m) == 0 {
		t.Fatalf("/containerLogs?tailLines=2: %q", tail)
	}
	if n, _ := strconv.Atoi(m[len(m)-1][1]); n < after {
		t.Fatalf("/containerLogs ends at line %d, the log file was at %d already", n, after)
	}
	if p, _, _ := watch.get(name); p.Status.ContainerStatuses[0].RestartCount != c.RestartCount {
		t.Fatalf("the container restarted meanwhile\n%s", diagnose(name))
	}
	t.Logf("rotated at line %d into %v; the new 0.log reached line %d", before, filepath.Base(rotated[0]), after)
}

// lastLine is the number of the last "line N" of a CRI log file,
// gzipped or not.
func lastLine(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(path, ".gz") {
		gz, err := gzip.NewReader(f)
		if err != nil {
			return 0, err
		}
		r = gz
	}
	last := 0
	s := bufio.NewScanner(r)
	for s.Scan() {
		if m := lineNumber.FindStringSubmatch(s.Text()); m != nil {
			last, _ = strconv.Atoi(m[1])
		}
	}
	return last, s.Err()
}

func checkProbeTimeout(t *testing.T, name string) {
	waitPod(t, name, startTimeout, "restarted by its liveness probe", func(p pod) bool {
		c, ok := p.container("main")
		return ok && c.RestartCount >= 1
	})
	// kubelet counts a failure as a time-out only when ExecSync ends with
	// DeadlineExceeded: "command timed out" in the probe's output.
	var found string
	for _, line := range kubeletLog() {
		if strings.Contains(line, `"Probe failed"`) && strings.Contains(line, `probeType="Liveness"`) &&
			strings.Contains(line, `pod="default/`+name+`"`) {
			found = line
			if strings.Contains(line, "command timed out") {
				return
			}
		}
	}
	if found == "" {
		t.Fatalf("restarted, but kubelet logged no failed liveness probe for it")
	}
	t.Fatalf("the liveness probe failed, but not as a time-out:\n%s", found)
}

// testNoRestarts checks that no container of a steady pod has been
// restarted: nothing in them exits, so a restart means the runtime lost
// or killed a container.
func testNoRestarts(t *testing.T) {
	for _, pt := range podTests {
		p, ok, _ := watch.get(podName(pt.manifest))
		if !pt.steady || !ok {
			continue
		}
		for _, c := range p.Status.ContainerStatuses {
			if c.RestartCount != 0 {
				t.Errorf("%s: container %s restarted %d times, last %s", p.Metadata.Name, c.Name, c.RestartCount, c.LastState)
			}
		}
	}
}

// The parts of kubelet's stats summary the test reads.
type summary struct {
	Pods []podStats `json:"pods"`
}

type podStats struct {
	PodRef struct {
		Name string `json:"name"`
		UID  string `json:"uid"`
	} `json:"podRef"`
	CPU     *cpuStats    `json:"cpu"`
	Memory  *memoryStats `json:"memory"`
	Network *struct {
		RxBytes    *uint64           `json:"rxBytes"`
		Interfaces []json.RawMessage `json:"interfaces"`
	} `json:"network"`
	EphemeralStorage *fsStats `json:"ephemeral-storage"`
	Containers       []struct {
		Name   string       `json:"name"`
		CPU    *cpuStats    `json:"cpu"`
		Memory *memoryStats `json:"memory"`
		Rootfs *fsStats     `json:"rootfs"`
		Logs   *fsStats     `json:"logs"`
	} `json:"containers"`
}

type cpuStats struct {
	UsageCoreNanoSeconds *uint64 `json:"usageCoreNanoSeconds"`
}

type memoryStats struct {
	WorkingSetBytes *uint64 `json:"workingSetBytes"`
}

type fsStats struct {
	UsedBytes *uint64 `json:"usedBytes"`
}

// missing lists the pod-level stats absent from s, and, in detail, the
// container-level ones.
func (s podStats) missing() (pod, containers []string) {
	if s.CPU == nil || s.CPU.UsageCoreNanoSeconds == nil {
		pod = append(pod, "cpu")
	}
	if s.Memory == nil || s.Memory.WorkingSetBytes == nil {
		pod = append(pod, "memory")
	}
	if s.Network == nil || (s.Network.RxBytes == nil && len(s.Network.Interfaces) == 0) {
		pod = append(pod, "network")
	}
	if s.EphemeralStorage == nil || s.EphemeralStorage.UsedBytes == nil {
		pod = append(pod, "ephemeral-storage")
	}
	for _, c := range s.Containers {
		if c.CPU == nil || c.CPU.UsageCoreNanoSeconds == nil {
			containers = append(containers, c.Name+".cpu")
		}
		if c.Memory == nil || c.Memory.WorkingSetBytes == nil {
			containers = append(containers, c.Name+".memory")
		}
		if c.Rootfs == nil || c.Rootfs.UsedBytes == nil {
			containers = append(containers, c.Name+".rootfs")
		}
		if c.Logs == nil || c.Logs.UsedBytes == nil {
			containers = append(containers, c.Name+".logs")
		}
	}
	return pod, containers
}

// testStatsSummary checks that /stats/summary lists every steady pod
// that runs, with its cpu, memory, network and ephemeral storage. It
// polls for a while: cAdvisor finds new cgroups on its housekeeping
// interval (10 to 15 s).
func testStatsSummary(t *testing.T) {
	var want []string
	for _, pt := range podTests {
		if p, ok, _ := watch.get(podName(pt.manifest)); pt.steady && ok && p.allRunning() {
			want = append(want, p.Metadata.Name)
		} else if pt.steady {
			t.Logf("%s is not running: not looked for", podName(pt.manifest))
		}
	}
	if len(want) == 0 {
		t.Fatal("no pod runs")
	}
	var problems []string
	deadline := time.Now().Add(45 * time.Second)
	for {
		problems = nil
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		data, err := kubelet.ReadOnly(ctx, "/stats/summary")
		cancel()
		var sum summary
		if err == nil {
			err = json.Unmarshal(data, &sum)
		}
		if err != nil {
			problems = append(problems, err.Error())
		}
		byName := map[string]podStats{}
		for _, s := range sum.Pods {
			byName[s.PodRef.Name] = s
		}
		for _, name := range want {
			s, ok := byName[name]
			if !ok {
				problems = append(problems, name+": not listed")
				continue
			}
			if pod, ctrs := s.missing(); len(pod) > 0 {
				problem := fmt.Sprintf("%s: no %s (containers lack: %v)", name, strings.Join(pod, ", "), ctrs)
				if slices.Contains(pod, "network") {
					problem += "\n      " + networkSource(name, s.PodRef.UID)
				}
				problems = append(problems, problem)
			} else if len(ctrs) > 0 {
				problems = append(problems, fmt.Sprintf("%s: containers lack %v", name, ctrs))
			}
		}
		if len(problems) == 0 {
			return
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	note := ""
	if strings.Contains(strings.Join(problems, ""), "no network") {
		note = "\n  (kubelet, with its default feature gates, takes pod network stats from cAdvisor's stats of the" +
			"\n  containerd container of the sandbox: criStatsProvider.addPodNetworkStats in pkg/kubelet/stats;" +
			"\n  cAdvisor's containerd handler needs its cgroup, a task pid, io.cri-containerd.kind=sandbox, and" +
			"\n  kubelet the io.kubernetes.pod.name and .namespace labels)"
	}
	t.Fatalf("/stats/summary after 45s:\n  %s%s", strings.Join(problems, "\n  "), note)
}

// networkSource explains a pod's missing network stats. With kubelet's
// default feature gates (PodAndContainerStatsFromCRI off), the summary's
// pod network stats come from cAdvisor's stats of the container whose
// cgroup is named after the pod's sandbox ID
// (criStatsProvider.addPodNetworkStats in pkg/kubelet/stats). cAdvisor's
// containerd handler reads them from /proc/<task pid>/net/dev only for a
// containerd container labelled io.cri-containerd.kind=sandbox, and
// kubelet keeps only containers labelled with their pod's name and
// namespace: a pause container, as stock containerd runs it, has all of
// that.
func networkSource(name, uid string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sbs, err := cri.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{
		LabelSelector: map[string]string{"io.kubernetes.pod.name": name},
		State:         &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY},
	}})
	if err != nil || len(sbs.Items) == 0 {
		return fmt.Sprintf("no ready sandbox (%v)", err)
	}
	id := sbs.Items[0].Id
	facts := []string{"no cgroup named after it"}
	podDir := "pod" + uid // as the cgroupfs driver names it
	for _, pattern := range []string{"kubepods/*/" + podDir + "/" + id, "kubepods/" + podDir + "/" + id} {
		if m, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/memory", kubelet.CgroupRoot, pattern)); len(m) > 0 {
			facts[0] = "cgroup " + strings.TrimPrefix(m[0], "/sys/fs/cgroup/memory")
		}
	}
	c, err := bed.Daemon.Client("k8s.io")
	if err != nil {
		return err.Error()
	}
	defer c.Close()
	ctr, err := c.LoadContainer(ctx, id)
	if err != nil {
		facts = append(facts, "no containerd container: "+err.Error())
	} else {
		if task, err := ctr.Task(ctx, nil); err != nil {
			facts = append(facts, "no task")
		} else {
			facts = append(facts, fmt.Sprintf("task pid %d", task.Pid()))
		}
		labels, _ := ctr.Labels(ctx)
		var missing []string
		for _, l := range []string{"io.kubernetes.pod.name=" + name, "io.kubernetes.pod.namespace=default", "io.cri-containerd.kind=sandbox"} {
			k, v, _ := strings.Cut(l, "=")
			if labels[k] != v {
				missing = append(missing, l)
			}
		}
		if len(missing) > 0 {
			facts = append(facts, fmt.Sprintf("containerd labels %v lack %v", labels, missing))
		}
	}
	return fmt.Sprintf("sandbox %s: %s", id[:12], strings.Join(facts, "; "))
}

// testRemoval removes every manifest and checks that the runtime is left
// with no sandbox, container, pod cgroup, mount or shim.
func testRemoval(t *testing.T) {
	if err := removeAllPods(3 * time.Minute); err != nil {
		t.Fatal(err)
	}
	// kubelet removes a deleted pod's cgroup in its housekeeping, every
	// two seconds, once the runtime has let go of it.
	var left []string
	deadline := time.Now().Add(30 * time.Second)
	for {
		left = podCgroups()
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if len(left) > 0 {
		t.Errorf("pod cgroups left: %v", left)
	}
	for _, dir := range []string{bed.Daemon.Dir, filepath.Join(kubelet.RootDir, "pods")} {
		if mounts := mountsBelow(t, dir); len(mounts) > 0 {
			t.Errorf("mounts left below %s: %v", dir, mounts)
		}
	}
	if shims := bed.Daemon.Shims(); len(shims) > 0 {
		t.Errorf("%s processes left: %v", bed.Daemon.ShimBinary, shims)
	}
	for _, ns := range netnsEntries() {
		if !slices.Contains(netnsAtStart, ns) {
			t.Errorf("network namespace left: %s/%s", netnsPath, ns)
		}
	}
}

// podCgroups lists what is left below kubelet's QoS cgroups, in every
// hierarchy: pod<UID> directories and the containers' below them.
func podCgroups() []string {
	var out []string
	hierarchies, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, h := range append(hierarchies, "/sys/fs/cgroup") {
		root := filepath.Join(h, kubelet.CgroupRoot, "kubepods")
		filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() && strings.HasPrefix(d.Name(), "pod") {
				out = append(out, p)
				return filepath.SkipDir
			}
			return nil
		})
	}
	return out
}

func mountsBelow(t *testing.T, dir string) []string {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			out = append(out, f[4])
		}
	}
	return out
}

// netnsPath is where stock containerd pins pods' network namespaces
// (ours pins them below its own directory).
const netnsPath = "/var/run/netns"

func netnsEntries() []string {
	entries, _ := os.ReadDir(netnsPath)
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// grepLines are the lines of text that contain s.
func grepLines(text, s string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
