package integration

import (
	"archive/tar"
	"bytes"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
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

// shortLayer is a layer whose descriptor claims more bytes than its blob
// has, as a truncated upload or a lying registry would serve it.
type shortLayer struct {
	v1.Layer
	missing int64
}

func (l shortLayer) Size() (int64, error) {
	n, err := l.Layer.Size()
	return n + l.missing, err
}

// TestCRIImageWithShortLayer: a layer blob shorter than its descriptor
// says is content that does not match its descriptor: a clean code naming
// the problem, not Internal, and no image is left.
func TestCRIImageWithShortLayer(t *testing.T) {
	c := newCRI(t)
	ctx := testContext(t)
	base, err := testbed.BusyboxImage()
	if err != nil {
		t.Fatal(err)
	}
	withFile, err := testbed.WithFiles(base, map[string]string{"etc/short": "truncated\n"})
	if err != nil {
		t.Fatal(err)
	}
	layers, err := withFile.Layers()
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.Append(base, mutate.Addendum{Layer: shortLayer{layers[len(layers)-1], 100}})
	if err != nil {
		t.Fatal(err)
	}
	// The blob goes up whole, with the honest image; the manifest that
	// lies about its size then finds it there.
	if _, err := registry().Push("library/shortlayer:whole", withFile); err != nil {
		t.Fatal(err)
	}
	if _, err := registry().Push("library/shortlayer:1", img); err != nil {
		t.Fatal(err)
	}
	_, err = c.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "shortlayer:1"}})
	if code := status.Code(err); code != codes.DataLoss && code != codes.FailedPrecondition {
		t.Fatalf("pull of an image with a short layer blob: %v, want DataLoss or FailedPrecondition", err)
	}
	if list, err := c.ListImages(ctx, &runtimeapi.ListImagesRequest{Filter: &runtimeapi.ImageFilter{Image: &runtimeapi.ImageSpec{Image: "shortlayer:1"}}}); err == nil && len(list.Images) != 0 {
		t.Errorf("the unusable image is listed: %v", list.Images)
	}
}
