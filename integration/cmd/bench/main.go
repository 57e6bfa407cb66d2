// Command bench is `make bench`: mine beside stock containerd v2.4.2 in
// the same run, on the same machine, reported as ratios (mine/stock) with
// the medians and spreads of both.
//
// Stock and mine take turns, stock first and last (stock, mine, mine,
// stock), so that a machine warming up or slowing down weighs on both
// alike. Pods are shaped as kubelet sends them: one busybox container,
// a PID namespace per container unless the figure says otherwise.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/mine-runtime/mine/integration/testbed"
)

// listWarmup is how many calls of each list kind go uncounted before the
// measured ones.
const listWarmup = 20

type options struct {
	starts  int // pod starts measured per round
	pods    int // pods running at once for the density figures
	restart int // pods running across a daemon restart
	loaded  int // pod starts under background load per round
	lists   int // list calls measured per round
	kubelet int // pods started through kubelet per runtime (0: skip)
}

func main() {
	binDir := flag.String("bin", "bin", "directory with containerd and containerd-shim-mine-v2")
	stockDir := flag.String("stock", "/usr/local/lib/mine-bench/containerd-v2.4.2", "directory with stock containerd v2.4.2")
	var o options
	flag.IntVar(&o.starts, "starts", 8, "pod starts measured per round (two rounds per runtime)")
	flag.IntVar(&o.pods, "pods", 20, "pods running at once for the density and list figures")
	flag.IntVar(&o.restart, "restart", 100, "pods running across a daemon restart (0: skip)")
	flag.IntVar(&o.loaded, "loaded", 5, "pod starts under background load per round")
	flag.IntVar(&o.lists, "lists", 200, "list calls measured per round")
	flag.IntVar(&o.kubelet, "kubelet", 6, "pods started through kubelet per runtime (0: skip)")
	kubelet := flag.String("kubelet-binary", defaultKubelet, "kubelet v1.37.2 (make kubelet)")
	flag.Parse()
	if err := run(*binDir, *stockDir, *kubelet, o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(binDir, stockDir, kubelet string, o options) (retErr error) {
	ctx := context.Background()
	began := time.Now()
	bed, err := testbed.Start(ctx, binDir, "")
	if err != nil {
		return err
	}
	defer func() {
		if err := bed.Close(); err != nil && retErr == nil {
			retErr = err
		}
	}()
	// The test bed starts ours at the debug log level, for the tests'
	// logs; stock runs at containerd's default, info, as nodes do. At
	// debug, ours wrote a log line per shim and task event and ran every
	// shim with -debug: both run at info here.
	if err := bed.Daemon.WriteConfig("info", ""); err != nil {
		return err
	}
	if err := bed.Daemon.Stop(); err != nil {
		return err
	}
	if err := bed.Daemon.Start(ctx); err != nil {
		return err
	}
	if err := shimMemory(ctx, bed); err != nil {
		return err
	}

	dir, err := os.MkdirTemp("", "mine-stock-")
	if err != nil {
		return err
	}
	stock, err := testbed.NewStockDaemon(dir, stockDir, testbed.PauseImage)
	if err != nil {
		return err
	}
	for _, host := range []string{"docker.io", "registry.k8s.io"} {
		if err := stock.RouteRegistry(host, bed.Registry.Host); err != nil {
			return err
		}
	}
	if err := stock.Start(ctx); err != nil {
		return fmt.Errorf("stock containerd: %w", err)
	}
	defer func() {
		if err := stock.Teardown(); err != nil && retErr == nil {
			retErr = fmt.Errorf("stock containerd: %w", err)
		} else {
			os.RemoveAll(dir)
		}
	}()

	daemons := map[string]*testbed.Daemon{"mine": bed.Daemon, "stock": stock}
	results := map[string]samples{"mine": {}, "stock": {}}
	for round, name := range []string{"stock", "mine", "mine", "stock"} {
		fmt.Fprintf(os.Stderr, "bench: round %d, %s\n", round+1, name)
		if err := measureRound(ctx, daemons[name], o, results[name]); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	if o.restart > 0 {
		for _, name := range []string{"stock", "mine"} {
			fmt.Fprintf(os.Stderr, "bench: restart with %d pods, %s\n", o.restart, name)
			if err := measureRestart(ctx, daemons[name], o.restart, results[name]); err != nil {
				return fmt.Errorf("%s: restart: %w", name, err)
			}
		}
	}
	if o.kubelet > 0 {
		for _, name := range []string{"stock", "mine"} {
			fmt.Fprintf(os.Stderr, "bench: %d pods through kubelet, %s\n", o.kubelet, name)
			if err := measureKubelet(ctx, daemons[name], kubelet, o.kubelet, results[name]); err != nil {
				return fmt.Errorf("%s: kubelet: %w", name, err)
			}
		}
	}
	report(results["mine"], results["stock"], o)
	fmt.Printf("\nbench took %s\n", time.Since(began).Round(time.Second))
	return nil
}

// samples holds each figure's measurements: milliseconds or kB.
type samples map[string][]float64

func (s samples) add(key string, v float64) { s[key] = append(s[key], v) }
func (s samples) ms(key string, d time.Duration) {
	s.add(key, float64(d.Microseconds())/1000)
}

func percentile(v []float64, p int) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	// Interpolated between the two nearest ranks: with two samples, the
	// median is their mean, not the smaller.
	pos := float64(len(s)-1) * float64(p) / 100
	i := int(pos)
	if i+1 >= len(s) {
		return s[i]
	}
	return s[i] + (s[i+1]-s[i])*(pos-float64(i))
}

type figure struct {
	key, title, unit string
	goal             float64 // ratio mine/stock to meet, 0 for none
}

var figures = []figure{
	{"start", "pod start (runp+create+start)", "ms", 0.4},
	{"start.runp", "  RunPodSandbox", "ms", 0},
	{"start.create", "  CreateContainer", "ms", 0},
	{"start.start", "  StartContainer", "ms", 0},
	{"start.cpu", "  CPU time, whole machine", "ms", 0},
	{"start.sharedpid", "pod start, shareProcessNamespace", "ms", 0.5},
	{"start.loaded", "pod start, 2 CPU hogs running", "ms", 0},
	{"concurrent", "N pods started concurrently", "ms", 0.35},
	{"concurrent.cpu", "  CPU time per pod, whole machine", "ms", 0},
	{"shim.pss", "shim Pss per pod, N running", "kB", 0.3},
	{"pause.pss", "pod init/pause Pss per pod, N running", "kB", 0},
	{"daemon.rss", "daemon Rss, N pods running", "kB", 0.6},
	{"list.containerstats", "ListContainerStats, N pods", "ms", 0.1},
	{"list.podstats", "ListPodSandboxStats, N pods", "ms", 0},
	{"list.containers", "ListContainers, N pods", "ms", 0.5},
	{"list.pods", "ListPodSandbox, N pods", "ms", 0.5},
	{"list.version", "  Version (the round trip)", "ms", 0},
	{"stop", "pod stop+remove", "ms", 0.6},
	{"stopall", "N pods stopped+removed in turn", "ms", 0.6},
	{"restart.ready", "restart: R pods listed ready", "ms", 0},
	{"kubelet.start", "pod start via kubelet, to Running", "ms", 0},
}

func report(mine, stock samples, o options) {
	fmt.Printf("\nmine vs stock containerd v2.4.2 + runc, same run, stock first and last;\n")
	fmt.Printf("N = %d pods, R = %d pods; median [p10-p90] of every sample\n\n", o.pods, o.restart)
	fmt.Printf("%-36s %-24s %-24s %7s %6s\n", "figure", "mine", "stock", "ratio", "goal")
	met, missed := 0, 0
	for _, f := range figures {
		m, s := mine[f.key], stock[f.key]
		if len(m) == 0 || len(s) == 0 {
			continue
		}
		title := strings.ReplaceAll(strings.ReplaceAll(f.title, " N ", fmt.Sprintf(" %d ", o.pods)), " R ", fmt.Sprintf(" %d ", o.restart))
		title = strings.ReplaceAll(title, ", N", fmt.Sprintf(", %d", o.pods))
		r := percentile(m, 50) / percentile(s, 50)
		goal := ""
		if f.goal > 0 {
			goal = fmt.Sprintf("≤ %.2f", f.goal)
			if r <= f.goal {
				met++
			} else {
				missed++
				goal += " ✗"
			}
		}
		fmt.Printf("%-36s %-24s %-24s %7.2f %6s\n", title, spread(m, f.unit), spread(s, f.unit), r, goal)
	}
	if ready := mine["restart.ready"]; len(ready) > 0 {
		verdict := "met"
		if ready[0] > 1000 {
			verdict = "missed"
		}
		fmt.Printf("\nrestart goal (every pod READY, every container RUNNING within 1 s of the socket): %s\n", verdict)
	}
	fmt.Printf("ratio goals: %d met, %d missed\n", met, missed)
}

func spread(v []float64, unit string) string {
	f := "%.1f"
	if unit == "kB" || percentile(v, 50) >= 100 {
		f = "%.0f"
	}
	return fmt.Sprintf(f+" [%s-%s] %s", percentile(v, 50), fmt.Sprintf(f, percentile(v, 10)), fmt.Sprintf(f, percentile(v, 90)), unit)
}

// cri is a CRI client of one daemon.
type cri struct {
	rt     runtimeapi.RuntimeServiceClient
	img    runtimeapi.ImageServiceClient
	logDir string
	next   int
	mu     sync.Mutex
}

func dial(ctx context.Context, d *testbed.Daemon) (*cri, func(), error) {
	conn, err := grpc.NewClient("unix://"+d.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, err
	}
	logDir, err := os.MkdirTemp("", "mine-bench-logs-")
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	c := &cri{rt: runtimeapi.NewRuntimeServiceClient(conn), img: runtimeapi.NewImageServiceClient(conn), logDir: logDir}
	for _, ref := range []string{"busybox", testbed.PauseImage} {
		if _, err := c.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}}); err != nil {
			conn.Close()
			return nil, nil, err
		}
	}
	return c, func() { conn.Close(); os.RemoveAll(logDir) }, nil
}

type podTimes struct{ runp, create, start time.Duration }

// startPod runs a pod as kubelet would: RunPodSandbox, then one
// container created and started.
func (c *cri) startPod(ctx context.Context, pid runtimeapi.NamespaceMode) (string, podTimes, error) {
	c.mu.Lock()
	i := c.next
	c.next++
	c.mu.Unlock()
	var t podTimes
	pod := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: fmt.Sprintf("bench-%d", i), Namespace: "bench", Uid: fmt.Sprintf("bench-uid-%d-%d", os.Getpid(), i)},
		LogDirectory: c.logDir,
		Labels:       map[string]string{"io.kubernetes.pod.name": fmt.Sprintf("bench-%d", i), "io.kubernetes.pod.namespace": "bench"},
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			// As kubelet's cgroupfs driver makes them (it would say
			// /kubepods/besteffort/pod<uid>); the daemons' teardown removes
			// the top-level cgroup this leaves.
			CgroupParent: fmt.Sprintf("/mine-bench/pod%d-%d", os.Getpid(), i),
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Pid: pid},
			}},
	}
	t0 := time.Now()
	p, err := c.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: pod})
	if err != nil {
		return "", t, err
	}
	t1 := time.Now()
	t.runp = t1.Sub(t0)
	ctr, err := c.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: p.PodSandboxId, SandboxConfig: pod, Config: &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "app"},
		Image:    &runtimeapi.ImageSpec{Image: "busybox"},
		Command:  []string{"sleep", "3600"},
		LogPath:  fmt.Sprintf("app-%d.log", i),
		Labels:   map[string]string{"io.kubernetes.container.name": "app"},
		Linux: &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{
			CpuShares: 2, OomScoreAdj: 1000,
		}},
	}})
	if err != nil {
		return p.PodSandboxId, t, err
	}
	t2 := time.Now()
	t.create = t2.Sub(t1)
	_, err = c.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: ctr.ContainerId})
	t.start = time.Since(t2)
	return p.PodSandboxId, t, err
}

func (c *cri) removePod(ctx context.Context, id string) error {
	if _, err := c.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
		return err
	}
	_, err := c.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id})
	return err
}

// startPods starts n pods, at most par at once, and returns their IDs
// even on error, for the caller to remove.
func (c *cri) startPods(ctx context.Context, n, par int) ([]string, error) {
	var (
		mu    sync.Mutex
		ids   []string
		first error
		wg    sync.WaitGroup
	)
	sem := make(chan struct{}, par)
	for range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			id, _, err := c.startPod(ctx, runtimeapi.NamespaceMode_CONTAINER)
			mu.Lock()
			defer mu.Unlock()
			if id != "" {
				ids = append(ids, id)
			}
			if err != nil && first == nil {
				first = err
			}
		}()
	}
	wg.Wait()
	return ids, first
}

func (c *cri) removePods(ctx context.Context, ids []string) error {
	var first error
	for _, id := range ids {
		if err := c.removePod(ctx, id); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// measureRound takes one sample set of every figure but the restart.
func measureRound(ctx context.Context, d *testbed.Daemon, o options, out samples) (retErr error) {
	c, closeCRI, err := dial(ctx, d)
	if err != nil {
		return err
	}
	defer closeCRI()
	var leftover []string
	defer func() {
		if err := c.removePods(ctx, leftover); err != nil && retErr == nil {
			retErr = err
		}
	}()
	cycle := func(mode runtimeapi.NamespaceMode, measured int, record func(took, cpu time.Duration, t podTimes)) error {
		for i := range measured + 1 {
			t0, cpu0 := time.Now(), busyTime()
			id, t, err := c.startPod(ctx, mode)
			took, cpu := time.Since(t0), busyTime()-cpu0
			if id != "" {
				leftover = append(leftover, id)
			}
			if err != nil {
				return err
			}
			t0 = time.Now()
			if err := c.removePod(ctx, id); err != nil {
				return err
			}
			leftover = leftover[:len(leftover)-1]
			if i > 0 { // the first warms caches up
				record(took, cpu, t)
				out.ms("stop", time.Since(t0))
			}
		}
		return nil
	}
	if err := cycle(runtimeapi.NamespaceMode_CONTAINER, o.starts, func(d, cpu time.Duration, t podTimes) {
		out.ms("start", d)
		out.ms("start.cpu", cpu)
		out.ms("start.runp", t.runp)
		out.ms("start.create", t.create)
		out.ms("start.start", t.start)
	}); err != nil {
		return err
	}
	if err := cycle(runtimeapi.NamespaceMode_POD, o.starts, func(d, _ time.Duration, _ podTimes) {
		out.ms("start.sharedpid", d)
	}); err != nil {
		return err
	}
	stopHogs, err := cpuHogs(2)
	if err != nil {
		return err
	}
	err = cycle(runtimeapi.NamespaceMode_CONTAINER, o.loaded, func(d, _ time.Duration, _ podTimes) {
		out.ms("start.loaded", d)
	})
	stopHogs()
	if err != nil {
		return err
	}

	t0, cpu0 := time.Now(), busyTime()
	ids, err := c.startPods(ctx, o.pods, o.pods)
	leftover = append(leftover, ids...)
	if err != nil {
		return err
	}
	out.ms("concurrent", time.Since(t0))
	out.ms("concurrent.cpu", (busyTime()-cpu0)/time.Duration(o.pods))
	if err := settle(ctx, d); err != nil {
		return err
	}
	shims, pause := 0, 0
	for _, pid := range children(d.Pid()) {
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if !strings.HasPrefix(filepath.Base(exe), "containerd-shim-") {
			continue
		}
		_, pss, _ := memory(pid)
		shims += pss
		for _, ch := range children(pid) {
			// stock's pause containers are busybox sleeps of the pause
			// image; mine's pod inits are mine-pod-init.
			if cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", ch)); strings.Contains(string(cmd), "2147483647") || strings.HasPrefix(string(cmd), "/pod-init\x00") {
				_, pss, _ := memory(ch)
				pause += pss
			}
		}
	}
	out.add("shim.pss", float64(shims)/float64(o.pods))
	out.add("pause.pss", float64(pause)/float64(o.pods))
	if rss, _, err := memory(d.Pid()); err == nil {
		out.add("daemon.rss", float64(rss))
	}
	// The first calls of a kind are slower on both daemons (a new gRPC
	// stream's buffers, code paged in, the client's first marshalling):
	// listWarmup of them are made and not counted. The calls given are
	// made in turn, so that all of them see the same moments of the
	// machine: in batches, one kind after the other, their ratios drifted
	// with the order (ListPodSandbox 1.03 to 1.89 of stock's over five
	// runs, measured after ListContainers; 0.95 taken in turn).
	timeCalls := func(n int, calls ...timedCall) error {
		for i := range listWarmup + n {
			for _, c := range calls {
				t0 := time.Now()
				if err := c.call(); err != nil {
					return fmt.Errorf("%s: %w", c.key, err)
				}
				if i >= listWarmup {
					out.ms(c.key, time.Since(t0))
				}
			}
		}
		return nil
	}
	// Version answers from constants: its time is the round trip of a CRI
	// call to that daemon (client, gRPC, containerd's interceptors), the
	// floor under the lists.
	if err := timeCalls(o.lists, timedCall{"list.version", func() error {
		_, err := c.rt.Version(ctx, &runtimeapi.VersionRequest{})
		return err
	}}, timedCall{"list.containers", func() error {
		r, err := c.rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{}})
		if err == nil && len(r.Containers) != o.pods {
			err = fmt.Errorf("%d containers listed, want %d", len(r.Containers), o.pods)
		}
		return err
	}}, timedCall{"list.pods", func() error {
		r, err := c.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
		if err == nil && len(r.Items) != o.pods {
			err = fmt.Errorf("%d pods listed, want %d", len(r.Items), o.pods)
		}
		return err
	}}); err != nil {
		return err
	}
	if err := timeCalls(o.lists/5, timedCall{"list.containerstats", func() error {
		r, err := c.rt.ListContainerStats(ctx, &runtimeapi.ListContainerStatsRequest{})
		if err == nil && len(r.Stats) != o.pods {
			err = fmt.Errorf("%d container stats, want %d", len(r.Stats), o.pods)
		}
		return err
	}}, timedCall{"list.podstats", func() error {
		r, err := c.rt.ListPodSandboxStats(ctx, &runtimeapi.ListPodSandboxStatsRequest{})
		if err == nil && len(r.Stats) != o.pods {
			err = fmt.Errorf("%d pod stats, want %d", len(r.Stats), o.pods)
		}
		return err
	}}); err != nil {
		return err
	}
	t0 = time.Now()
	for len(leftover) > 0 {
		t1 := time.Now()
		if err := c.removePod(ctx, leftover[0]); err != nil {
			return err
		}
		out.ms("stop", time.Since(t1))
		leftover = leftover[1:]
	}
	out.ms("stopall", time.Since(t0))
	return nil
}

// timedCall is one kind of call whose time a figure takes.
type timedCall struct {
	key  string
	call func() error
}

// busyTime is the CPU time the whole machine has spent outside its idle
// loop since boot (/proc/stat, in ticks of 10 ms): a pod start's cost
// counts every process it runs (shims, runc, CNI plugins, the daemon),
// which on a node busy starting pods is what limits how fast they start.
func busyTime() time.Duration {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(data), "\n")
	fields := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	var ticks int64
	for i, f := range fields[1:] {
		if i == 3 || i == 4 || i >= 7 { // idle, iowait; steal is the host's; guest is counted in user
			continue
		}
		n, _ := strconv.ParseInt(f, 10, 64)
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}

// settle waits until every shim and container of the daemon has reached
// its idle state: a second without CPU time spent by the daemon, its
// shims, or the processes they ran and reaped (a pod's statistics init,
// started once the starts pause, is runc runs of a shim's).
func settle(ctx context.Context, d *testbed.Daemon) error {
	ticks := func() int {
		total := 0
		for _, pid := range append(children(d.Pid()), d.Pid()) {
			stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			if err != nil {
				continue
			}
			f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
			// utime, stime, and the reaped children's: the shims' runc
			// runs and the daemon's CNI plugins are short-lived processes.
			for _, v := range f[11:15] {
				n, _ := strconv.Atoi(v)
				total += n
			}
		}
		return total
	}
	deadline := time.Now().Add(15 * time.Second)
	last := ticks()
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
		now := ticks()
		if now-last <= 2 {
			return nil
		}
		last = now
	}
	return nil // busy but measured anyway: the figure says what it is
}

// cpuHogs starts n processes that spin, a fixed background load; stop
// ends exactly those.
func cpuHogs(n int) (stop func(), err error) {
	var cmds []*exec.Cmd
	stop = func() {
		for _, c := range cmds {
			_ = c.Process.Signal(syscall.SIGKILL)
			_ = c.Wait()
		}
	}
	for range n {
		c := exec.Command("sh", "-c", "while :; do :; done")
		c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := c.Start(); err != nil {
			stop()
			return nil, err
		}
		cmds = append(cmds, c)
	}
	return stop, nil
}

// measureRestart runs n pods, restarts the daemon, and times how long
// after its socket answers every pod is listed READY and every container
// RUNNING.
func measureRestart(ctx context.Context, d *testbed.Daemon, n int, out samples) (retErr error) {
	c, closeCRI, err := dial(ctx, d)
	if err != nil {
		return err
	}
	// The pods' log directory outlives the restart: a restarted daemon
	// reopens the pods' logs where they were.
	defer closeCRI()
	ids, err := c.startPods(ctx, n, 4)
	defer func() {
		if err := c.removePods(ctx, ids); err != nil && retErr == nil {
			retErr = err
		}
	}()
	if err != nil {
		return err
	}
	if err := d.Stop(); err != nil {
		return err
	}
	if err := d.Start(ctx); err != nil {
		return err
	}
	// A new connection: the old one may be in its reconnect back-off.
	t0 := time.Now()
	conn, err := grpc.NewClient("unix://"+d.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	deadline := t0.Add(60 * time.Second)
	for {
		pods, perr := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY}}})
		ctrs, cerr := rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{State: &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING}}})
		if perr == nil && cerr == nil && len(pods.Items) == n && len(ctrs.Containers) == n {
			out.ms("restart.ready", time.Since(t0))
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d pods not all ready 60 s after restart", n)
		}
		time.Sleep(5 * time.Millisecond) // polling is the measurement itself
	}
}

// children lists the processes whose parent is pid, or, for the daemon,
// the shims serving it: they are reparented away from it at start.
func children(pid int) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
		if err != nil {
			continue
		}
		if ppid := field(string(status), "PPid:"); ppid == strconv.Itoa(pid) {
			out = append(out, p)
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p))
		if strings.Contains(string(cmdline), "containerd-shim-") && strings.Contains(string(cmdline), daemonAddress(pid)) {
			out = append(out, p)
		}
	}
	return out
}

func daemonAddress(pid int) string {
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return "\x00no-such-daemon"
	}
	args := strings.Split(string(cmdline), "\x00")
	for i, a := range args {
		if a == "--config" && i+1 < len(args) {
			return filepath.Join(filepath.Dir(args[i+1]), "containerd.sock")
		}
	}
	return "\x00no-such-daemon"
}

func field(status, name string) string {
	for _, line := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(line, name); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// shimMemory runs one idle container with each shim in our daemon.
func shimMemory(ctx context.Context, bed *testbed.Bed) error {
	if err := bed.Pull(ctx, "bench"); err != nil {
		return err
	}
	c, err := bed.Daemon.Client("bench")
	if err != nil {
		return err
	}
	defer c.Close()
	image, err := c.GetImage(ctx, bed.ImageRef)
	if err != nil {
		return err
	}
	shims := map[string]int{}
	runtimes := []string{"io.containerd.mine.v2", "io.containerd.runc.v2"}
	for _, runtime := range runtimes {
		id := strings.ReplaceAll(runtime, ".", "-")
		container, err := c.NewContainer(ctx, id,
			containerd.WithNewSnapshot(id, image),
			containerd.WithRuntime(runtime, nil),
			containerd.WithNewSpec(oci.WithImageConfig(image), oci.WithProcessArgs("sleep", "600")))
		if err != nil {
			return err
		}
		defer container.Delete(ctx, containerd.WithSnapshotCleanup)
		task, err := container.NewTask(ctx, cio.NullIO)
		if err != nil {
			return err
		}
		defer task.Delete(ctx, containerd.WithProcessKill)
		if err := task.Start(ctx); err != nil {
			return err
		}
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", task.Pid()))
		if err != nil {
			return err
		}
		shims[runtime], _ = strconv.Atoi(field(string(status), "PPid:"))
	}
	time.Sleep(2 * time.Second) // let both shims reach their idle state
	fmt.Printf("shim memory, one idle container each, same daemon, same run:\n")
	fmt.Printf("  %-28s %10s %10s\n", "", "VmRSS kB", "Pss kB")
	var rss, pss [2]int
	for i, runtime := range runtimes {
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", shims[runtime]))
		if rss[i], pss[i], err = memory(shims[runtime]); err != nil {
			return err
		}
		fmt.Printf("  %-28s %10d %10d\n", filepath.Base(exe), rss[i], pss[i])
	}
	fmt.Printf("  %-28s %10.2f %10.2f\n", "ratio mine/runc", float64(rss[0])/float64(rss[1]), float64(pss[0])/float64(pss[1]))
	return nil
}

// memory reads Rss and Pss, in kB, from /proc/PID/smaps_rollup.
func memory(pid int) (rss, pss int, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) < 2 {
			continue
		}
		v, _ := strconv.Atoi(fields[1])
		switch fields[0] {
		case "Rss:":
			rss = v
		case "Pss:":
			pss = v
		}
	}
	return rss, pss, s.Err()
}
