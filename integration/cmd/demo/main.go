// Command demo is `make demo`: it starts our containerd on a temporary
// root, serves a locally built busybox image from a registry on 127.0.0.1,
// runs a container through containerd-shim-mine-v2 with the real ctr, then
// a pod through the CRI with the real crictl, and shows its logs.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

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
	step("registry serving %s (and docker.io/library/busybox, routed there by hosts.toml)", ref)
	step("containerd (with mine) serving %s, pid %d", d.Address, d.Pid())

	tool := func(name string, args ...string) (string, error) {
		step("%s %s", name, strings.Join(args, " "))
		var stderr strings.Builder
		cmd := exec.Command(name, args...)
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("%s: %w\n%s%s", name, err, out, stderr.String())
		}
		return strings.TrimSpace(string(out)), nil
	}
	ctr := func(args ...string) (string, error) {
		return tool("ctr", append([]string{"--address", d.Address}, args...)...)
	}
	crictl := func(args ...string) (string, error) {
		return tool("crictl", append([]string{"--runtime-endpoint", "unix://" + d.Address, "--image-endpoint", "unix://" + d.Address}, args...)...)
	}

	if _, err := ctr("images", "pull", "--plain-http", ref); err != nil {
		return err
	}
	out, err := ctr("run", "--rm", "--runtime", "io.containerd.mine.v2", ref, "mine-demo",
		"sh", "-c", "echo hello from a container started by containerd through containerd-shim-mine-v2")
	if err != nil {
		return err
	}
	fmt.Println(out)

	dir, err := os.MkdirTemp("", "mine-demo-crictl-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	pod := filepath.Join(dir, "pod.json")
	ctrCfg := filepath.Join(dir, "container.json")
	writeJSON(pod, map[string]any{
		"metadata":      map[string]any{"name": "demo", "namespace": "default", "uid": "demo-uid"},
		"hostname":      "demo-pod",
		"log_directory": filepath.Join(dir, "logs"),
		"linux":         map[string]any{},
	})
	writeJSON(ctrCfg, map[string]any{
		"metadata": map[string]any{"name": "hello"},
		"image":    map[string]any{"image": "busybox"},
		"command":  []string{"sh", "-c", "echo hello from pod $(hostname), ip $(ip -4 -o addr show eth0 | awk '{print $4}'); exec sleep 600"},
		"log_path": "hello.log",
		"linux":    map[string]any{},
	})
	if _, err := crictl("pull", "busybox"); err != nil {
		return err
	}
	if out, err = crictl("images"); err != nil {
		return err
	}
	fmt.Println(out)
	podID, err := crictl("runp", pod)
	if err != nil {
		return err
	}
	id, err := crictl("create", podID, ctrCfg, pod)
	if err != nil {
		return err
	}
	if _, err := crictl("start", id); err != nil {
		return err
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if data, _ := os.ReadFile(filepath.Join(dir, "logs", "hello.log")); len(data) > 0 {
			break
		}
	}
	if out, err = crictl("logs", id); err != nil {
		return err
	}
	fmt.Println(out)
	if out, err = crictl("exec", "-s", id, "cat", "/etc/hostname"); err != nil {
		return err
	}
	fmt.Println(out)
	for _, args := range [][]string{{"pods"}, {"ps"}, {"stopp", podID}, {"rmp", podID}} {
		if out, err = crictl(args...); err != nil {
			return err
		}
		fmt.Println(out)
	}
	step("done; stopping containerd")
	return nil
}

func writeJSON(path string, v any) {
	data, _ := json.Marshal(v)
	_ = os.WriteFile(path, data, 0o644)
}

func step(format string, args ...any) {
	fmt.Printf("==> "+format+"\n", args...)
}
