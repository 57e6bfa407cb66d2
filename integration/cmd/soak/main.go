// Command soak is `make soak`: pod cycles (run, create, start, exec, stop,
// remove) against the daemon, shaped as kubelet sends them, with the
// daemon's open files, goroutines, threads, resident memory and the
// host's mount count sampled as it goes. It fails when any of them grows
// beyond noise between the first sample (after a warm-up) and the last,
// or when anything of the pods is left at the end.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/mine-runtime/mine/integration/testbed"
)

func main() {
	binDir := flag.String("bin", "bin", "directory with containerd and containerd-shim-mine-v2")
	cycles := flag.Int("cycles", 1000, "pod cycles")
	every := flag.Int("every", 100, "cycles between samples")
	flag.Parse()
	if err := run(*binDir, *cycles, *every); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		fmt.Println("\n0 passed, 1 failed")
		os.Exit(1)
	}
	fmt.Println("\n1 passed, 0 failed")
}

// sample is what is looked at of the daemon and the host.
type sample struct {
	cycle                          int
	fds, goroutines, threads, rssK int
	mounts                         int
}

// limits on growth from the first sample to the last: what a daemon
// that leaks nothing may still vary by (caches filling, idle threads and
// the Go heap's own growth).
var limits = struct{ fds, goroutines, threads, rssK, mounts int }{fds: 8, goroutines: 40, threads: 8, rssK: 24 << 10, mounts: 0}

func run(binDir string, cycles, every int) (retErr error) {
	ctx := context.Background()
	bed, err := testbed.Start(ctx, binDir, "")
	if err != nil {
		return err
	}
	debugSock := bed.Daemon.DebugAddress
	defer func() {
		if err := bed.Close(); err != nil && retErr == nil {
			retErr = fmt.Errorf("left behind: %w", err)
		}
	}()
	conn, err := grpc.NewClient("unix://"+bed.Daemon.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	rt, img := runtimeapi.NewRuntimeServiceClient(conn), runtimeapi.NewImageServiceClient(conn)
	if _, err := img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "busybox"}}); err != nil {
		return err
	}
	logDir, err := os.MkdirTemp("", "mine-soak-logs-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(logDir)
	debug := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", debugSock)
	}}}

	var samples []sample
	began := time.Now()
	fmt.Printf("%8s %8s %11s %8s %10s %8s %10s\n", "cycle", "fds", "goroutines", "threads", "rss kB", "mounts", "elapsed")
	for i := 1; i <= cycles; i++ {
		if err := cycle(ctx, rt, logDir, i); err != nil {
			return fmt.Errorf("cycle %d: %w", i, err)
		}
		if i%every == 0 {
			s, err := take(bed.Daemon.Pid(), debug)
			if err != nil {
				return err
			}
			s.cycle = i
			samples = append(samples, s)
			fmt.Printf("%8d %8d %11d %8d %10d %8d %10s\n", i, s.fds, s.goroutines, s.threads, s.rssK, s.mounts, time.Since(began).Round(time.Second))
		}
	}
	if len(samples) < 2 {
		return nil
	}
	first, last := samples[0], samples[len(samples)-1]
	var grew []string
	check := func(name string, a, b, limit int) {
		if b-a > limit {
			grew = append(grew, fmt.Sprintf("%s %d -> %d (limit +%d)", name, a, b, limit))
		}
	}
	check("open files", first.fds, last.fds, limits.fds)
	check("goroutines", first.goroutines, last.goroutines, limits.goroutines)
	check("threads", first.threads, last.threads, limits.threads)
	check("rss kB", first.rssK, last.rssK, limits.rssK)
	check("mounts", first.mounts, last.mounts, limits.mounts)
	if len(grew) > 0 {
		return fmt.Errorf("grew from cycle %d to %d: %s", first.cycle, last.cycle, strings.Join(grew, "; "))
	}
	return nil
}

// cycle is one pod's life as kubelet drives it, with an exec as a probe.
func cycle(ctx context.Context, rt runtimeapi.RuntimeServiceClient, logDir string, i int) error {
	pod := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: fmt.Sprintf("soak-%d", i), Namespace: "soak", Uid: fmt.Sprintf("soak-%d-%d", os.Getpid(), i)},
		LogDirectory: logDir,
		Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER},
		}},
	}
	p, err := rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: pod})
	if err != nil {
		return err
	}
	id := p.PodSandboxId
	remove := func() error {
		if _, err := rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
			return err
		}
		_, err := rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id})
		return err
	}
	c, err := rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: id, SandboxConfig: pod, Config: &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "app"},
		Image:    &runtimeapi.ImageSpec{Image: "busybox"},
		Command:  []string{"sh", "-c", "echo started; exec sleep 3600"},
		LogPath:  fmt.Sprintf("app-%d.log", i),
	}})
	if err == nil {
		_, err = rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: c.ContainerId})
	}
	if err == nil {
		var r *runtimeapi.ExecSyncResponse
		r, err = rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: c.ContainerId, Cmd: []string{"echo", "probe"}, Timeout: 10})
		if err == nil && (r.ExitCode != 0 || strings.TrimSpace(string(r.Stdout)) != "probe") {
			err = fmt.Errorf("exec: exit %d, %q", r.ExitCode, r.Stdout)
		}
	}
	if rerr := remove(); err == nil {
		err = rerr
	}
	return err
}

func take(pid int, debug *http.Client) (sample, error) {
	var s sample
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return s, err
	}
	s.fds = len(fds)
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "Threads:":
			s.threads, _ = strconv.Atoi(f[1])
		case "VmRSS:":
			s.rssK, _ = strconv.Atoi(f[1])
		}
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return s, err
	}
	s.mounts = strings.Count(string(mounts), "\n")
	resp, err := debug.Get("http://daemon/debug/pprof/goroutine?debug=1")
	if err != nil {
		return s, fmt.Errorf("goroutines from the debug socket: %w", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	if sc.Scan() {
		// "goroutine profile: total N"
		f := strings.Fields(sc.Text())
		s.goroutines, _ = strconv.Atoi(f[len(f)-1])
	}
	return s, nil
}
