package integration

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/mine-runtime/mine/integration/testbed"
)

// The volumes an image's config declares (a Dockerfile's VOLUME) are
// directories of the container's own, as containerd makes them: writable
// under a read-only root file system, holding at first what the image has
// there (owners and modes kept), and gone with the container. A CRI mount
// at the same path replaces one.
func TestCRIImageDeclaredVolumes(t *testing.T) {
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	for _, h := range []*tar.Header{
		{Typeflag: tar.TypeDir, Name: "data/", Mode: 0o700, Uid: 1000, Gid: 1000, ModTime: time.Unix(0, 0)},
		{Typeflag: tar.TypeReg, Name: "data/seed", Mode: 0o600, Uid: 1000, Gid: 1000, Size: 7, ModTime: time.Unix(0, 0)},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
	}
	tw.Write([]byte("seeded\n"))
	tw.Close()
	img, err := uniqueImage("declared-volumes")
	if err == nil {
		img, err = testbed.WithRawLayer(img, layer.Bytes())
	}
	if err == nil {
		img, err = testbed.WithConfig(img, func(c *v1.Config) {
			c.Volumes = map[string]struct{}{"/data": {}, "/empty": {}, "/replaced": {}}
		})
	}
	if err != nil {
		t.Fatal(err)
	}
	c := newCRI(t)
	ctx := testContext(t)
	c.pullImage(t, "declared-volumes:1", img)
	pod := podConfig(t, "declared-volumes")
	podID := c.runPod(t, pod)
	host := t.TempDir()
	if err := os.WriteFile(filepath.Join(host, "from-host"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := containerConfig("main", "exec sleep 600")
	cfg.Image = &runtimeapi.ImageSpec{Image: "declared-volumes:1"}
	cfg.Linux.SecurityContext = &runtimeapi.LinuxContainerSecurityContext{ReadonlyRootfs: true}
	cfg.Mounts = []*runtimeapi.Mount{{ContainerPath: "/replaced", HostPath: host}}
	id := c.startContainer(t, podID, pod, cfg)

	got := mustExec(t, c, id, "sh", "-c", `stat -c '%u %a' /data /data/seed; cat /data/seed; echo new > /data/new && echo /data writable; touch /empty/f && echo /empty writable; ls /replaced; touch /etc/x 2>/dev/null || echo rootfs read-only`)
	want := "1000 700\n1000 600\nseeded\n/data writable\n/empty writable\nfrom-host\nrootfs read-only\n"
	if got != want {
		t.Errorf("in the container:\n%s\nwant\n%s", got, want)
	}
	// On disk, under the daemon's root, as containerd keeps them.
	dir := filepath.Join(daemon.Dir, "root", "io.containerd.grpc.v1.mine", "containers", id)
	if _, err := os.Stat(filepath.Join(dir, "volumes")); err != nil {
		t.Fatalf("the container's volumes are not in its directory: %v", err)
	}
	if _, err := c.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the container's directory, its volumes with it, outlived it: %v", err)
	}
}
