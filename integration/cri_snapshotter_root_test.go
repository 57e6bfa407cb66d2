package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/mine-runtime/mine/integration/testbed"
)

// A node that gives the snapshotter a root of its own (root_path, often a
// disk of its own) has kubelet measure the image file system, and the
// containers' writable layers, there: ImageFsInfo and the stats name the
// snapshotter's root, as containerd names it.
func TestCRIImageFsFollowsTheSnapshotterRoot(t *testing.T) {
	dir := t.TempDir()
	snapshots := filepath.Join(dir, "snapshots")
	daemonDir := filepath.Join(dir, "daemon")
	if err := os.Mkdir(daemonDir, 0o711); err != nil {
		t.Fatal(err)
	}
	d, err := testbed.NewDaemon(daemonDir, binDir, fmt.Sprintf(`
[plugins."io.containerd.snapshotter.v1.overlayfs"]
  root_path = %q
`, snapshots))
	startOwnDaemon(t, d, err)
	c := newCRI(t)
	ctx := testContext(t)
	c.pullBusybox(t)
	fs, err := c.ImageFsInfo(ctx, &runtimeapi.ImageFsInfoRequest{})
	if err != nil || len(fs.ImageFilesystems) != 1 {
		t.Fatalf("image fs info %v, %v", fs, err)
	}
	if got := fs.ImageFilesystems[0].FsId.GetMountpoint(); got != snapshots {
		t.Errorf("image file system at %q, want the snapshotter's root %q", got, snapshots)
	}
	pod := podConfig(t, "snapshotter-root")
	podID := c.runPod(t, pod)
	id := c.startContainer(t, podID, pod, containerConfig("main", "exec sleep 600"))
	st, err := c.ContainerStats(ctx, &runtimeapi.ContainerStatsRequest{ContainerId: id})
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Stats.WritableLayer.GetFsId().GetMountpoint(); got != snapshots {
		t.Errorf("writable layer on %q, want the snapshotter's root %q", got, snapshots)
	}
}
