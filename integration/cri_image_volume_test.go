package integration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Image volumes (KEP-4639): an image mounted read-only into a container,
// whole or a subpath of it, with its digest in ContainerStatus; the image
// stays while mounted; refused when not read-only or when the subpath is
// not in the image; nothing left once the container is removed.
func TestCRIImageVolume(t *testing.T) {
	c := newCRI(t)
	ctx := testContext(t)
	c.pullBusybox(t)
	img, err := uniqueImage("image-volume")
	if err != nil {
		t.Fatal(err)
	}
	c.pullImage(t, "image-volume:1", img)
	spec := &runtimeapi.ImageSpec{Image: "image-volume:1"}
	pod := podConfig(t, "image-volume")
	podID := c.runPod(t, pod)

	for _, tc := range []struct {
		name  string
		mount *runtimeapi.Mount
		code  codes.Code
		want  string
	}{
		{"read-write", &runtimeapi.Mount{ContainerPath: "/mnt/v", Image: spec}, codes.InvalidArgument, "image volumes are read-only"},
		{"missing subpath", &runtimeapi.Mount{ContainerPath: "/mnt/v", Image: spec, Readonly: true, ImageSubPath: "not-existing"}, codes.FailedPrecondition, `subpath "not-existing"`},
		{"subpath out of the image", &runtimeapi.Mount{ContainerPath: "/mnt/v", Image: spec, Readonly: true, ImageSubPath: "../../etc"}, codes.InvalidArgument, "leaves the image"},
	} {
		cfg := containerConfig("refused", "exec sleep 600")
		cfg.Mounts = []*runtimeapi.Mount{tc.mount}
		_, err := c.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
		if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %s saying %q", tc.name, err, tc.code, tc.want)
		}
	}

	cfg := containerConfig("mounts", "exec sleep 600")
	cfg.Mounts = []*runtimeapi.Mount{
		{ContainerPath: "/mnt/whole", Image: spec, Readonly: true},
		{ContainerPath: "/mnt/etc", Image: spec, Readonly: true, ImageSubPath: "etc"},
	}
	id := c.startContainer(t, podID, pod, cfg)
	if out := mustExec(t, c, id, "cat", "/mnt/whole/etc/image-volume"); out != "image-volume\n" {
		t.Errorf("the image's file reads %q", out)
	}
	if out := mustExec(t, c, id, "cat", "/mnt/etc/image-volume"); out != "image-volume\n" {
		t.Errorf("the subpath's file reads %q", out)
	}
	if resp, err := c.execSync(t, id, 10, "touch", "/mnt/whole/written"); err != nil || resp.ExitCode == 0 {
		t.Errorf("wrote into an image volume: %v, %v", resp, err)
	}
	if out := mustExec(t, c, id, "/mnt/whole/bin/echo", "exec ok"); out != "exec ok\n" {
		t.Errorf("a binary of the image volume ran as %q", out)
	}
	st := c.status(t, id)
	imageID := ""
	for _, m := range st.Mounts {
		if m.GetImage() != nil {
			if m.GetImage().GetImageRef() == "" || !strings.HasPrefix(m.GetImage().GetImageRef(), "sha256:") {
				t.Errorf("mount %s: image_ref %q", m.ContainerPath, m.GetImage().GetImageRef())
			}
			imageID = m.GetImage().GetImageRef()
		}
	}
	if imageID == "" {
		t.Fatal("no image volume in ContainerStatus mounts")
	}
	if _, err := c.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: spec}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("removing an image mounted as a volume: %v", err)
	}

	if _, err := c.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(data), filepath.Join("containers", id, "image-volumes")) {
		t.Error("an image volume is still mounted")
	}
	client, err := daemon.Client("k8s.io")
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	client.SnapshotService("overlayfs").Walk(namespaces.WithNamespace(ctx, "k8s.io"), func(_ context.Context, info snapshots.Info) error {
		if strings.HasPrefix(info.Name, id) {
			t.Errorf("snapshot %s left", info.Name)
		}
		return nil
	})
	if _, err := c.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: spec}); err != nil {
		t.Errorf("removing the image once no container mounts it: %v", err)
	}
}
