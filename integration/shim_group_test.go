package integration

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"

	"github.com/mine-runtime/mine/shim"
)

// A pod's next container is handed to the pod's shim while its last one
// is deleted, 200 times: the shim, told to shut down as it goes empty,
// must not leave between the hand-over and the new container's Create
// (shim/claims.go). Each round may end on the old shim or on a new one;
// none may fail.
func TestShimHandOverWhileLastContainerIsDeleted(t *testing.T) {
	c := newClient(t)
	ctx := testContext(t)
	group := containerID(t, "group")
	grouped := oci.WithAnnotations(map[string]string{shim.GroupAnnotation: group})
	run := func(i int) (containerd.Task, error) {
		ctr := newContainer(t, c, containerID(t, fmt.Sprint(i)), grouped, oci.WithProcessArgs("sleep", "600"))
		task, err := ctr.NewTask(ctx, cio.NullIO)
		if err != nil {
			return nil, fmt.Errorf("create: %w", err)
		}
		if err := task.Start(ctx); err != nil {
			return nil, fmt.Errorf("start: %w", err)
		}
		return task, nil
	}
	last, err := run(0)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 200; i++ {
		var g errgroup.Group
		prev := last
		g.Go(func() error {
			if _, err := prev.Delete(ctx, containerd.WithProcessKill); err != nil {
				return fmt.Errorf("delete the last container: %w", err)
			}
			return nil
		})
		g.Go(func() (err error) {
			last, err = run(i)
			return err
		})
		if err := g.Wait(); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
	}
	if _, err := last.Delete(ctx, containerd.WithProcessKill); err != nil {
		t.Fatal(err)
	}
}

// A shim that `start` spawned but that containerd never sends a container
// (containerd died in between) leaves on its own after claimTTL (30 s),
// taking its group's socket and lock file with it.
func TestShimNeverGivenAContainerLeaves(t *testing.T) {
	bundle := t.TempDir()
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte(`{}`), 0o600); err != nil {
		t.Fatal(err)
	}
	id := containerID(t, "")
	// Short: a unix socket's path has a hundred-odd bytes.
	socketDir, err := os.MkdirTemp("", "s")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(socketDir)
	// Not there yet, as /run/containerd/s after a reboot: start makes it.
	socketDir = filepath.Join(socketDir, "s")
	params, err := proto.Marshal(&bootapi.BootstrapParams{
		InstanceID: id, Namespace: namespace,
		ContainerdGrpcAddress: daemon.Address, ContainerdTtrpcAddress: daemon.Address + ".ttrpc",
		SocketDir: &socketDir,
	})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(binDir, "containerd-shim-mine-v2"), "-namespace", namespace, "-id", id, "-address", daemon.Address, "start")
	cmd.Dir = bundle
	cmd.Stdin = bytes.NewReader(params)
	cmd.Env = append(os.Environ(), "TTRPC_ADDRESS="+daemon.Address+".ttrpc")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("start: %v: %s", err, stderr.String())
	}
	var result bootapi.BootstrapResult
	if err := proto.Unmarshal(out, &result); err != nil {
		t.Fatal(err)
	}
	socket := strings.TrimPrefix(result.Address, "unix://")
	conn, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatalf("the new shim does not serve: %v", err)
	}
	conn.Close()
	start := time.Now()
	waitFor(t, "the idle shim to leave", 45*time.Second, func() bool {
		_, serr := os.Stat(socket)
		_, lerr := os.Stat(socket + ".lock")
		return os.IsNotExist(serr) && os.IsNotExist(lerr)
	})
	if waited := time.Since(start); waited < 20*time.Second {
		t.Fatalf("the shim left after %v, before any Create could have come", waited)
	}
	if _, err := net.Dial("unix", socket); err == nil {
		t.Fatal("something still serves the group's socket")
	}
}
