// Package integration runs end-to-end tests against the real thing: our
// containerd on a temporary root, containerd-shim-mine-v2, real runc, and
// images served by a registry on 127.0.0.1.
package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"

	"github.com/mine-runtime/mine/integration/testbed"
)

const (
	namespace   = "mine-test"
	runtimeName = "io.containerd.mine.v2"
	shimBinary  = "containerd-shim-mine-v2"
)

var (
	// metricsAddress is where the daemon serves containerd's metrics.
	metricsAddress string
	bed            *testbed.Bed
	daemon         *testbed.Daemon
	imageRef       string
	binDir         string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "integration tests run containers and need root")
		return 1
	}
	binDir = os.Getenv("MINE_BIN_DIR")
	if binDir == "" {
		binDir = "../bin"
	}
	var err error
	if binDir, err = filepath.Abs(binDir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx := context.Background()
	if metricsAddress, err = freeLoopbackAddress(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// Short pull timeouts, for the tests of stuck and endless pulls; every
	// other pull is local and takes milliseconds. A short stats period, for
	// the collector's test to see passes.
	bed, err = testbed.Start(ctx, binDir, fmt.Sprintf(`
[metrics]
  address = %q

[plugins."io.containerd.grpc.v1.mine"]
  image_pull_progress_timeout = "2s"
  image_pull_timeout = "6s"
  stats_collect_period = "1s"

[plugins."io.containerd.grpc.v1.mine".runtimes.mine]
  runtime_type = "io.containerd.mine.v2"

# A second OCI runtime: Debian's crun 1.8.1, which accepts only OCI spec
# 1.0.x and has no features command.
[plugins."io.containerd.grpc.v1.mine".runtimes.crun]
  runtime_type = "io.containerd.mine.v2"
  [plugins."io.containerd.grpc.v1.mine".runtimes.crun.options]
    BinaryName = "crun"
`, metricsAddress))
	if err == nil {
		daemon, imageRef = bed.Daemon, bed.ImageRef
		err = bed.Pull(ctx, namespace)
	}
	code := 1
	if err != nil {
		fmt.Fprintln(os.Stderr, "set-up:", err)
	} else {
		code = m.Run()
	}
	if bed != nil {
		if err := bed.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "teardown:", err)
			code = 1
		}
	}
	return code
}

// testContext is the namespaced context tests talk to containerd with.
func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func newClient(t *testing.T) *containerd.Client {
	t.Helper()
	c, err := daemon.Client(namespace)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

var idUnsafe = regexp.MustCompile(`[^a-zA-Z0-9_.-]+`)

// containerID derives a container ID from the test's name.
func containerID(t *testing.T, suffix string) string {
	id := strings.ToLower(idUnsafe.ReplaceAllString(t.Name(), "-"))
	if suffix != "" {
		id += "-" + suffix
	}
	return id
}

// newContainer creates a busybox container run by our shim, and removes
// it, with its task, when the test ends.
func newContainer(t *testing.T, c *containerd.Client, id string, opts ...oci.SpecOpts) containerd.Container {
	t.Helper()
	ctx := testContext(t)
	image, err := c.GetImage(ctx, imageRef)
	if err != nil {
		t.Fatal(err)
	}
	specOpts := append([]oci.SpecOpts{oci.WithImageConfig(image)}, opts...)
	container, err := c.NewContainer(ctx, id,
		containerd.WithNewSnapshot(id+"-rootfs", image),
		containerd.WithRuntime(runtimeName, nil),
		containerd.WithNewSpec(specOpts...),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c, err := daemon.Client(namespace) // the test may have restarted the daemon
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		defer c.Close()
		container, err := c.LoadContainer(ctx, id)
		if err != nil {
			return
		}
		if task, err := container.Task(ctx, nil); err == nil {
			if _, err := task.Delete(ctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
				t.Errorf("cleanup: delete task %s: %v", id, err)
			}
		}
		if err := container.Delete(ctx, containerd.WithSnapshotCleanup); err != nil {
			t.Errorf("cleanup: delete container %s: %v", id, err)
		}
	})
	return container
}

// buffer is a bytes.Buffer safe for the client's copy goroutines.
type buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// shimOf returns the PID of the shim supervising a container process: the
// process's parent, since the shim is the subreaper runc's init is
// reparented to. It checks that the parent is our shim.
func shimOf(t *testing.T, pid uint32) int {
	t.Helper()
	ppid := parentPid(t, int(pid))
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", ppid))
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(exe) != shimBinary {
		t.Fatalf("container process %d runs under %s (pid %d), not %s", pid, exe, ppid, shimBinary)
	}
	return ppid
}

func parentPid(t *testing.T, pid int) int {
	t.Helper()
	ppid, err := strconv.Atoi(statusField(t, pid, "PPid"))
	if err != nil {
		t.Fatal(err)
	}
	return ppid
}

// statusField is a field of /proc/PID/status, as it stands after the
// colon, spaces trimmed.
func statusField(t *testing.T, pid int, name string) string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no %s in /proc/%d/status", name, pid)
	return ""
}

// processAlive tells whether pid is a live process (not gone, not a zombie).
func processAlive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses.
	i := bytes.LastIndexByte(data, ')')
	return i > 0 && i+2 < len(data) && data[i+2] != 'Z'
}

// subscribe returns the events on topics matching filter, decoded, until
// the test ends.
func subscribe(t *testing.T, c *containerd.Client, filter string) func(what string) any {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	events, errs := c.Subscribe(ctx, filter)
	return func(what string) any {
		t.Helper()
		select {
		case e := <-events:
			v, err := typeurl.UnmarshalAny(e.Event)
			if err != nil {
				t.Fatal(err)
			}
			return v
		case err := <-errs:
			t.Fatal(err)
		case <-time.After(30 * time.Second):
			t.Fatalf("no event: %s", what)
		}
		return nil
	}
}

// firstReply connects to addr until a server there sends something, and
// returns what it sent before closing.
func firstReply(t *testing.T, what, addr string) string {
	t.Helper()
	var reply string
	waitFor(t, what, 10*time.Second, func() bool {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false
		}
		defer conn.Close()
		conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		data, _ := io.ReadAll(conn)
		reply = string(data)
		return reply != ""
	})
	return reply
}

// freeLoopbackAddress is a loopback address with a port free now.
func freeLoopbackAddress() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
