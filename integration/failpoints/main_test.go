// Package failpoints runs the daemon and shim built with failpoints
// (make failpoint-binaries) and makes each named step fail, hang or crash
// the daemon: the RPC answers a clean code naming the step, nothing is
// left on the host, and the retry kubelet would make succeeds.
package failpoints

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/mine-runtime/mine/failpoint"
	"github.com/mine-runtime/mine/integration/testbed"
)

var (
	bed *testbed.Bed
	// armed is the failpoints file the daemon and its shims read.
	armed string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "failpoint tests run containers and need root")
		return 1
	}
	binDir, err := filepath.Abs("../../bin/failpoints")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	dir, err := os.MkdirTemp("", "mine-failpoints-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	armed = filepath.Join(dir, "failpoints")
	// The daemon inherits it, and its shims from the daemon.
	os.Setenv(failpoint.Env, armed)
	ctx := context.Background()
	bed, err = testbed.Start(ctx, binDir, "")
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

// arm arms failpoints ("NAME ACTION [COUNT]" lines) until the test ends.
func arm(t *testing.T, lines ...string) {
	t.Helper()
	os.Remove(armed + ".fired")
	if err := os.WriteFile(armed, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(disarm)
}

func disarm() {
	os.Remove(armed)
	os.Remove(armed + ".fired")
}

type cri struct {
	runtimeapi.RuntimeServiceClient
	runtimeapi.ImageServiceClient
}

func newCRI(t *testing.T) *cri {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+bed.Daemon.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &cri{runtimeapi.NewRuntimeServiceClient(conn), runtimeapi.NewImageServiceClient(conn)}
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), "k8s.io"), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// podConfig is a pod whose containers share its PID namespace: its init
// (and so its shim) starts within RunPodSandbox, so the shim's steps are
// taken there and the host's state after the call is the pod's whole.
func podConfig(t *testing.T, name string) *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "failpoints", Uid: name + "-uid"},
		Hostname:     name,
		LogDirectory: t.TempDir(),
		Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_POD},
		}},
	}
}

func containerConfig(name, script string) *runtimeapi.ContainerConfig {
	return &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: name},
		Image:    &runtimeapi.ImageSpec{Image: "busybox"},
		Command:  []string{"sh", "-c", script},
		LogPath:  name + ".log",
		Linux: &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_POD},
		}},
	}
}

// failed checks that an RPC failed with a clean code and a message naming
// the failpoint.
func failed(t *testing.T, what string, err error, name string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s succeeded with failpoint %s armed", what, name)
	}
	switch status.Code(err) {
	case codes.OK, codes.Unknown:
		t.Fatalf("%s: code %s: %v", what, status.Code(err), err)
	}
	if !strings.Contains(err.Error(), "failpoint "+name) {
		t.Fatalf("%s: the error does not say what failed: %v", what, err)
	}
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
