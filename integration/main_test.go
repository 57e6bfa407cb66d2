// Package integration runs end-to-end tests against the real thing: our
// containerd on a temporary root, containerd-shim-mine-v2, real runc, and
// images served by a registry on 127.0.0.1.
package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"

	"github.com/mine-runtime/mine/integration/testbed"
)

const (
	namespace   = "mine-test"
	runtimeName = "io.containerd.mine.v2"
	shimBinary  = "containerd-shim-mine-v2"
)

var (
	daemon   *testbed.Daemon
	registry *testbed.Registry
	imageRef string
	binDir   string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "integration tests run containers and need root")
		return 1
	}
	var err error
	binDir = os.Getenv("MINE_BIN_DIR")
	if binDir == "" {
		binDir = "../bin"
	}
	if binDir, err = filepath.Abs(binDir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for _, b := range []string{"containerd", shimBinary} {
		if _, err := os.Stat(filepath.Join(binDir, b)); err != nil {
			fmt.Fprintf(os.Stderr, "%s not built (run make): %v\n", b, err)
			return 1
		}
	}
	registry, err = testbed.StartRegistry()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer registry.Close()
	img, err := testbed.BusyboxImage()
	if err == nil {
		imageRef, err = registry.Push("mine/busybox:latest", img)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}

	dir, err := os.MkdirTemp("", "mine-it-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	daemon, err = testbed.NewDaemon(dir, binDir, "")
	if err == nil {
		err = daemon.Start(context.Background())
	}
	if err == nil {
		err = pullImage()
	}
	code := 1
	if err != nil {
		fmt.Fprintln(os.Stderr, "set-up:", err)
	} else {
		code = m.Run()
	}
	if err := daemon.Teardown(); err != nil {
		fmt.Fprintln(os.Stderr, "teardown found leftovers:", err)
		code = 1
	}
	if code == 0 {
		os.RemoveAll(dir)
	} else {
		fmt.Fprintf(os.Stderr, "the daemon's log is kept in %s\n", daemon.Log)
	}
	return code
}

func pullImage() error {
	c, err := daemon.Client(namespace)
	if err != nil {
		return err
	}
	defer c.Close()
	resolver := docker.NewResolver(docker.ResolverOptions{
		Hosts: docker.ConfigureDefaultRegistries(docker.WithPlainHTTP(docker.MatchLocalhost)),
	})
	_, err = c.Pull(context.Background(), imageRef, containerd.WithPullUnpack, containerd.WithResolver(resolver))
	return err
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
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "PPid:"); ok {
			ppid, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatal(err)
			}
			return ppid
		}
	}
	t.Fatalf("no PPid in /proc/%d/status", pid)
	return 0
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
