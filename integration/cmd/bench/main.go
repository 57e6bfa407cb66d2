// Command bench is `make bench`: mine beside stock containerd v2.4.2 in
// the same run, on the same machine, reported as ratios.
//
//   - shim memory: one idle container under containerd-shim-mine-v2 and one
//     under containerd-shim-runc-v2, VmRSS and Pss from smaps_rollup;
//   - pod start: RunPodSandbox + CreateContainer + StartContainer through
//     the CRI, mine against stock containerd's CRI plugin (pause image);
//   - memory per pod: with several pods running, the Pss of every process
//     the runtime adds per pod (shims, and pause containers for stock).
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/mine-runtime/mine/integration/testbed"
)

func main() {
	binDir := flag.String("bin", "bin", "directory with containerd and containerd-shim-mine-v2")
	stockDir := flag.String("stock", "/usr/local/lib/mine-bench/containerd-v2.4.2", "directory with stock containerd v2.4.2")
	starts := flag.Int("starts", 15, "pod starts measured per runtime")
	pods := flag.Int("pods", 10, "pods running while memory per pod is measured")
	flag.Parse()
	if err := run(*binDir, *stockDir, *starts, *pods); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(binDir, stockDir string, starts, pods int) (retErr error) {
	ctx := context.Background()
	bed, err := testbed.Start(ctx, binDir, "")
	if err != nil {
		return err
	}
	defer func() {
		if err := bed.Close(); err != nil && retErr == nil {
			retErr = err
		}
	}()
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

	results := map[string]*criResult{}
	for _, r := range []struct {
		name string
		d    *testbed.Daemon
	}{{"mine", bed.Daemon}, {"stock", stock}} {
		res, err := measureCRI(ctx, r.d, starts, pods)
		if err != nil {
			return fmt.Errorf("%s: %w", r.name, err)
		}
		results[r.name] = res
	}
	m, s := results["mine"], results["stock"]
	fmt.Printf("\npod start through the CRI (runp + create + start), %d each, same run:\n", starts)
	fmt.Printf("  %-28s %10s %10s\n", "", "median", "p90")
	fmt.Printf("  %-28s %10s %10s\n", "mine", m.median(), m.p90())
	fmt.Printf("  %-28s %10s %10s\n", "stock containerd v2.4.2", s.median(), s.p90())
	fmt.Printf("  %-28s %10.2f %10.2f\n", "ratio mine/stock", ratio(m.median(), s.median()), ratio(m.p90(), s.p90()))
	fmt.Printf("\nmemory per pod, %d pods of one container each, Pss in kB:\n", pods)
	fmt.Printf("  %-28s %10s %10s %10s\n", "", "shims", "pause", "per pod")
	fmt.Printf("  %-28s %10d %10d %10d\n", "mine", m.shimPss, m.pausePss, (m.shimPss+m.pausePss)/pods)
	fmt.Printf("  %-28s %10d %10d %10d\n", "stock containerd v2.4.2", s.shimPss, s.pausePss, (s.shimPss+s.pausePss)/pods)
	fmt.Printf("  %-28s %32.2f\n", "ratio mine/stock", float64(m.shimPss+m.pausePss)/float64(s.shimPss+s.pausePss))
	fmt.Println("  (stock's pause is busybox sleep here, larger than the real pause binary;")
	fmt.Println("   its shims alone are the fairer comparison)")
	return nil
}

func ratio(a, b time.Duration) float64 { return float64(a) / float64(b) }

type criResult struct {
	starts            []time.Duration
	shimPss, pausePss int
}

func (r *criResult) median() time.Duration { return r.percentile(50) }
func (r *criResult) p90() time.Duration    { return r.percentile(90) }

func (r *criResult) percentile(p int) time.Duration {
	s := slices.Clone(r.starts)
	slices.Sort(s)
	return s[(len(s)-1)*p/100].Round(100 * time.Microsecond)
}

// measureCRI times pod starts, then measures memory with pods running.
func measureCRI(ctx context.Context, d *testbed.Daemon, starts, pods int) (*criResult, error) {
	conn, err := grpc.NewClient("unix://"+d.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	rt, img := runtimeapi.NewRuntimeServiceClient(conn), runtimeapi.NewImageServiceClient(conn)
	for _, ref := range []string{"busybox", testbed.PauseImage} {
		if _, err := img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}}); err != nil {
			return nil, err
		}
	}
	logDir, err := os.MkdirTemp("", "mine-bench-logs-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(logDir)
	startPod := func(i int) (string, error) {
		pod := &runtimeapi.PodSandboxConfig{
			Metadata:     &runtimeapi.PodSandboxMetadata{Name: fmt.Sprintf("bench-%d", i), Namespace: "bench", Uid: fmt.Sprintf("bench-uid-%d", i)},
			LogDirectory: logDir,
			Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER},
			}},
		}
		p, err := rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: pod})
		if err != nil {
			return "", err
		}
		c, err := rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: p.PodSandboxId, SandboxConfig: pod, Config: &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: "app"},
			Image:    &runtimeapi.ImageSpec{Image: "busybox"},
			Command:  []string{"sleep", "600"},
			LogPath:  fmt.Sprintf("bench-%d.log", i),
			Linux:    &runtimeapi.LinuxContainerConfig{},
		}})
		if err != nil {
			return p.PodSandboxId, err
		}
		_, err = rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: c.ContainerId})
		return p.PodSandboxId, err
	}
	removePod := func(id string) error {
		if _, err := rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
			return err
		}
		_, err := rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id})
		return err
	}

	res := &criResult{}
	for i := range starts + 1 {
		t0 := time.Now()
		id, err := startPod(i)
		took := time.Since(t0)
		if id != "" {
			defer removePod(id)
		}
		if err != nil {
			return nil, err
		}
		if i > 0 { // the first start warms caches up
			res.starts = append(res.starts, took)
		}
		if err := removePod(id); err != nil {
			return nil, err
		}
	}

	var ids []string
	for i := range pods {
		id, err := startPod(1000 + i)
		if id != "" {
			ids = append(ids, id)
		}
		if err != nil {
			return nil, err
		}
	}
	time.Sleep(2 * time.Second) // let the shims reach their idle state
	for _, pid := range children(d.Pid()) {
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if strings.HasPrefix(filepath.Base(exe), "containerd-shim-") {
			_, pss, _ := memory(pid)
			res.shimPss += pss
			for _, c := range children(pid) {
				// pause containers are the shims' children running sleep.
				if cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", c)); strings.Contains(string(cmd), "2147483647") {
					_, pss, _ := memory(c)
					res.pausePss += pss
				}
			}
		}
	}
	for _, id := range ids {
		if err := removePod(id); err != nil {
			return nil, err
		}
	}
	return res, nil
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
