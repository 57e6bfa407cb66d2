package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// crictl runs the real crictl against the daemon.
func crictl(t *testing.T, args ...string) string {
	t.Helper()
	return crictlAt(t, daemon.Address, args...)
}

// crictlAt runs crictl against the daemon at address.
func crictlAt(t *testing.T, address string, args ...string) string {
	t.Helper()
	args = append([]string{"--runtime-endpoint", "unix://" + address, "--image-endpoint", "unix://" + address, "--timeout", "60s"}, args...)
	out, err := execCommand("crictl", args...)
	if err != nil {
		t.Fatalf("crictl %s: %v\n%s", strings.Join(args[6:], " "), err, out)
	}
	return strings.TrimSpace(out)
}

// writeJSON writes a crictl config file.
func writeJSON(t *testing.T, v any) string {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestCrictlSession is what an operator does with crictl on a node:
// pull, images, runp, create, start, exec, logs, ps, pods, inspect, stop,
// rm, stopp, rmp, rmi.
func TestCrictlSession(t *testing.T) {
	logDir := t.TempDir()
	pod := writeJSON(t, map[string]any{
		"metadata":      map[string]any{"name": "crictl-pod", "namespace": "default", "uid": "crictl-pod-uid", "attempt": 1},
		"hostname":      "crictl-host",
		"log_directory": logDir,
		"linux":         map[string]any{},
	})
	ctr := writeJSON(t, map[string]any{
		"metadata": map[string]any{"name": "web"},
		"image":    map[string]any{"image": "busybox"},
		"command":  []string{"sh", "-c", "echo started as $(hostname); exec sleep 600"},
		"log_path": "web/0.log",
		"linux":    map[string]any{},
	})

	crictl(t, "pull", "busybox")
	if images := crictl(t, "images"); !strings.Contains(images, "docker.io/library/busybox") {
		t.Fatalf("crictl images does not list the pulled image:\n%s", images)
	}
	podID := crictl(t, "runp", pod)
	t.Cleanup(func() {
		execCommand("crictl", "--runtime-endpoint", "unix://"+daemon.Address, "rmp", "-f", podID)
	})
	ctrID := crictl(t, "create", podID, ctr, pod)
	crictl(t, "start", ctrID)

	if out := crictl(t, "exec", "-s", ctrID, "sh", "-c", "echo exec-ok; hostname"); out != "exec-ok\ncrictl-host" {
		t.Fatalf("crictl exec -s printed %q", out)
	}
	// Without -s, exec streams through the stream server.
	if out := crictl(t, "exec", ctrID, "sh", "-c", "echo streamed; hostname"); out != "streamed\ncrictl-host" {
		t.Fatalf("crictl exec printed %q", out)
	}
	waitFor(t, "the container's first log line", 10*time.Second, func() bool {
		out, _ := execCommand("crictl", "--runtime-endpoint", "unix://"+daemon.Address, "logs", ctrID)
		return strings.Contains(out, "started as crictl-host")
	})
	if ps := crictl(t, "ps", "--id", ctrID[:12], "-q"); ps != ctrID {
		t.Fatalf("crictl ps --id prefix: %q, want %s", ps, ctrID)
	}
	if pods := crictl(t, "pods", "-q", "--name", "crictl-pod"); pods != podID {
		t.Fatalf("crictl pods: %q, want %s", pods, podID)
	}
	var inspect struct {
		Status struct {
			State string `json:"state"`
		} `json:"status"`
	}
	if err := json.Unmarshal([]byte(crictl(t, "inspect", ctrID)), &inspect); err != nil {
		t.Fatal(err)
	}
	if inspect.Status.State != "CONTAINER_RUNNING" {
		t.Fatalf("crictl inspect: state %q", inspect.Status.State)
	}
	var inspectp struct {
		Status struct {
			State   string `json:"state"`
			Network struct {
				IP string `json:"ip"`
			} `json:"network"`
		} `json:"status"`
	}
	if err := json.Unmarshal([]byte(crictl(t, "inspectp", podID)), &inspectp); err != nil {
		t.Fatal(err)
	}
	if inspectp.Status.State != "SANDBOX_READY" || !strings.HasPrefix(inspectp.Status.Network.IP, "10.200.") {
		t.Fatalf("crictl inspectp: %+v", inspectp.Status)
	}

	crictl(t, "stop", "--timeout", "1", ctrID)
	crictl(t, "rm", ctrID)
	crictl(t, "stopp", podID)
	crictl(t, "rmp", podID)
	crictl(t, "rmi", "busybox")
	if images := crictl(t, "images", "-q", "busybox"); images != "" {
		t.Fatalf("busybox still listed after rmi: %q", images)
	}
}

// TestCrictlPortForward forwards a local port to a port on the pod's own
// loopback through the stream server, as `kubectl port-forward` does.
func TestCrictlPortForward(t *testing.T) {
	c := newCRI(t)
	c.pullBusybox(t)
	pod := podConfig(t, "portforward")
	podID := c.runPod(t, pod)
	c.startContainer(t, podID, pod, containerConfig("server", "exec nc -ll -p 8080 -e echo forwarded-from-the-pod"))

	local := crictlPortForward(t, podID, 8080)
	if reply := firstReply(t, "the forwarded port to answer", fmt.Sprintf("127.0.0.1:%d", local)); reply != "forwarded-from-the-pod\n" {
		t.Fatalf("forwarded port answered %q", reply)
	}

	// A server on the pod's IPv6 loopback alone is reached too.
	c.startContainer(t, podID, pod, containerConfig("server6", "mkdir /www && echo served-on-ipv6 > /www/index.html && exec httpd -f -p '[::1]:8081' -h /www"))
	local6 := crictlPortForward(t, podID, 8081)
	var reply string
	waitFor(t, "the forwarded IPv6 port to answer", 10*time.Second, func() bool {
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", local6), time.Second)
		if err != nil {
			return false
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := conn.Write([]byte("GET / HTTP/1.0\r\n\r\n")); err != nil {
			return false
		}
		data, _ := io.ReadAll(conn)
		reply = string(data)
		return reply != ""
	})
	if !strings.Contains(reply, "served-on-ipv6") {
		t.Fatalf("forwarded IPv6 port answered %q", reply)
	}
}

// crictlPortForward runs crictl port-forward from a free local port to a
// port of the pod until the test ends, and returns the local port.
func crictlPortForward(t *testing.T, podID string, port int) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	local := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command("crictl", "--runtime-endpoint", "unix://"+daemon.Address, "port-forward", podID, fmt.Sprintf("%d:%d", local, port))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return local
}

// TestCrictlAttach attaches to a shell started with stdin: what is typed
// runs, its output comes back, and closing stdin ends the shell.
func TestCrictlAttach(t *testing.T) {
	for _, logged := range []bool{true, false} {
		t.Run(fmt.Sprintf("log path %v", logged), func(t *testing.T) { testAttach(t, logged) })
	}
}

func testAttach(t *testing.T, logged bool) {
	c := newCRI(t)
	c.pullBusybox(t)
	pod := podConfig(t, "attach")
	pod.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_POD
	podID := c.runPod(t, pod)
	cfg := containerConfig("shell", "")
	cfg.Command = []string{"sh"}
	cfg.Stdin, cfg.StdinOnce = true, true
	if !logged {
		cfg.LogPath = "" // attach then reads a log of the plugin's own
	}
	id := c.startContainer(t, podID, pod, cfg)

	// Input that stays open: the output must come back before it ends.
	stdinR, stdinW := io.Pipe()
	var out buffer
	cmd := exec.Command("crictl", "--runtime-endpoint", "unix://"+daemon.Address, "attach", "-i", id)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdinR, &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := stdinW.Write([]byte("echo hello from attach; echo to-stderr >&2\n")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the output of what was typed", 10*time.Second, func() bool {
		return strings.Contains(out.String(), "hello from attach") && strings.Contains(out.String(), "to-stderr")
	})
	stdinW.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("crictl attach: %v\n%s", err, out.String())
	}
	waitFor(t, "the shell to end with its input", 10*time.Second, func() bool {
		return c.status(t, id).State == runtimeapi.ContainerState_CONTAINER_EXITED
	})
}

// TestAttachStdinSurvivesRestart: a container whose stdin is not "once"
// keeps reading input across attaches and across a containerd restart.
func TestAttachStdinSurvivesRestart(t *testing.T) {
	c := newCRI(t)
	c.pullBusybox(t)
	pod := podConfig(t, "stdinrestart")
	podID := c.runPod(t, pod)
	cfg := containerConfig("cat", "")
	cfg.Command = []string{"cat"}
	cfg.Stdin = true
	id := c.startContainer(t, podID, pod, cfg)

	attach := func(line string) {
		t.Helper()
		stdinR, stdinW := io.Pipe()
		var out buffer
		cmd := exec.Command("crictl", "--runtime-endpoint", "unix://"+daemon.Address, "attach", "-i", id)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = stdinR, &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { stdinW.Close(); cmd.Process.Kill(); cmd.Wait() }()
		if _, err := stdinW.Write([]byte(line + "\n")); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "cat to echo "+line, 10*time.Second, func() bool { return strings.Contains(out.String(), line) })
	}
	attach("before-restart")
	attach("second-attach")

	if err := daemon.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := daemon.Start(testContext(t)); err != nil {
		t.Fatal(err)
	}
	c = newCRI(t)
	if st := c.status(t, id); st.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Fatalf("cat stopped with containerd: %v (%s)", st.State, st.Reason)
	}
	attach("after-restart")
}

// Streamed execs without a TTY (kubectl exec, kubectl cp) leave no
// goroutine of theirs in the daemon once they end; one with a TTY has
// TERM set, as a shell on a terminal wants.
func TestCrictlExecSessionsEnd(t *testing.T) {
	c := newCRI(t)
	c.pullBusybox(t)
	pod := podConfig(t, "exec-sessions")
	podID := c.runPod(t, pod)
	id := c.startContainer(t, podID, pod, containerConfig("main", "exec sleep 600"))
	for range 5 {
		if out := crictl(t, "exec", id, "echo", "streamed"); out != "streamed" {
			t.Fatalf("crictl exec printed %q", out)
		}
	}
	waitFor(t, "the exec sessions' goroutines to end", 10*time.Second, func() bool {
		return daemonGoroutines(t, "plugin/cri.streamRuntime.Exec") == 0
	})
	// crictl wants a terminal for -t: script(1) gives it one.
	out, err := execCommand("script", "-qec", fmt.Sprintf("crictl --runtime-endpoint unix://%s exec -it %s sh -c 'echo TERM=$TERM'", daemon.Address, id), "/dev/null")
	if err != nil || !strings.Contains(out, "TERM=xterm\r\n") {
		t.Errorf("TERM in a TTY exec: %q, %v; want TERM=xterm", out, err)
	}
}

// daemonGoroutines counts the daemon's goroutines whose stack has a frame
// of fn, from its debug socket.
func daemonGoroutines(t *testing.T, fn string) int {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", daemon.DebugAddress)
	}}}
	resp, err := client.Get("http://daemon/debug/pprof/goroutine?debug=2")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, stack := range strings.Split(string(data), "\n\n") {
		if strings.Contains(stack, fn) {
			n++
		}
	}
	return n
}
