// Command shimmem measures what one shim costs: it runs one container
// with containerd-shim-mine-v2 and one with the stock
// containerd-shim-runc-v2, in the same daemon and the same run, and
// prints each shim's VmRSS and Pss from /proc/PID/smaps_rollup.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"

	"github.com/mine-runtime/mine/integration/testbed"
)

func main() {
	binDir := flag.String("bin", "bin", "directory with containerd and containerd-shim-mine-v2")
	settle := flag.Duration("settle", 2*time.Second, "how long the shims idle before they are measured")
	flag.Parse()
	if err := run(*binDir, *settle); err != nil {
		fmt.Fprintln(os.Stderr, "shimmem:", err)
		os.Exit(1)
	}
}

func run(binDir string, settle time.Duration) (retErr error) {
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
	if err := bed.Pull(ctx, "shimmem"); err != nil {
		return err
	}
	c, err := bed.Daemon.Client("shimmem")
	if err != nil {
		return err
	}
	defer c.Close()
	image, err := c.GetImage(ctx, bed.ImageRef)
	if err != nil {
		return err
	}

	shims := map[string]int{}
	for _, runtime := range []string{"io.containerd.mine.v2", "io.containerd.runc.v2"} {
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
		shims[runtime], err = parentPid(int(task.Pid()))
		if err != nil {
			return err
		}
	}
	time.Sleep(settle) // let both shims reach their idle state
	fmt.Printf("%-28s %8s %10s %10s\n", "shim (one container)", "pid", "VmRSS kB", "Pss kB")
	for _, runtime := range []string{"io.containerd.mine.v2", "io.containerd.runc.v2"} {
		pid := shims[runtime]
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		rss, pss, err := memory(pid)
		if err != nil {
			return err
		}
		fmt.Printf("%-28s %8d %10d %10d\n", filepath.Base(exe), pid, rss, pss)
	}
	return nil
}

func parentPid(pid int) (int, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "PPid:"); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, fmt.Errorf("no PPid for %d", pid)
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
