package integration

import (
	"archive/tar"
	"bytes"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/mine-runtime/mine/integration/testbed"
)

// TestCRIImageWithHostileLayer: a layer whose hard link points out of the
// image cannot be used: FailedPrecondition, not Internal, and nothing of
// the host is linked.
func TestCRIImageWithHostileLayer(t *testing.T) {
	c := newCRI(t)
	ctx := testContext(t)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeLink, Name: "etc/host-passwd", Linkname: "../../../../../../etc/passwd", Mode: 0o644}); err != nil {
		t.Fatal(err)
	}
	tw.Close()
	base, err := testbed.BusyboxImage()
	if err != nil {
		t.Fatal(err)
	}
	img, err := testbed.WithRawLayer(base, buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := registry().Push("library/hostilelayer:1", img); err != nil {
		t.Fatal(err)
	}
	_, err = c.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "hostilelayer:1"}})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("pull of an image with a hard link out of its layer: %v, want FailedPrecondition", err)
	}
	if list, err := c.ListImages(ctx, &runtimeapi.ListImagesRequest{Filter: &runtimeapi.ImageFilter{Image: &runtimeapi.ImageSpec{Image: "hostilelayer:1"}}}); err == nil && len(list.Images) != 0 {
		t.Errorf("the unusable image is listed: %v", list.Images)
	}
}
