// Command demo is `make demo`: it starts our containerd on a temporary
// root, serves a locally built busybox image from a registry on 127.0.0.1,
// and runs a container through containerd-shim-mine-v2 with the real ctr.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/mine-runtime/mine/integration/testbed"
)

func main() {
	binDir := flag.String("bin", "bin", "directory with containerd and containerd-shim-mine-v2")
	flag.Parse()
	if err := run(*binDir); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(binDir string) (retErr error) {
	bed, err := testbed.Start(context.Background(), binDir, "")
	if err != nil {
		return err
	}
	defer func() {
		if err := bed.Close(); err != nil && retErr == nil {
			retErr = err
		}
	}()
	d, ref := bed.Daemon, bed.ImageRef
	step("registry serving %s", ref)
	step("containerd (with mine) serving %s, pid %d", d.Address, d.Pid())

	ctr := func(args ...string) (string, error) {
		args = append([]string{"--address", d.Address}, args...)
		step("ctr %s", strings.Join(args, " "))
		out, err := exec.Command("ctr", args...).CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("ctr %s: %w\n%s", args[2], err, out)
		}
		return string(out), nil
	}
	if _, err := ctr("images", "pull", "--plain-http", ref); err != nil {
		return err
	}
	out, err := ctr("run", "--rm", "--runtime", "io.containerd.mine.v2", ref, "mine-demo",
		"sh", "-c", "echo hello from a container started by containerd through containerd-shim-mine-v2; echo kernel $(uname -r), pid $$ in its own namespace")
	if err != nil {
		return err
	}
	fmt.Print(out)
	step("done; stopping containerd")
	return nil
}

func step(format string, args ...any) {
	fmt.Printf("==> "+format+"\n", args...)
}
