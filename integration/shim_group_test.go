package integration

import (
	"fmt"
	"testing"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"golang.org/x/sync/errgroup"

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
