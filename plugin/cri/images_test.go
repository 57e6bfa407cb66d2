package cri

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/distribution/reference"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestCredentialRegistry(t *testing.T) {
	named, err := reference.ParseNormalizedNamed("busybox")
	if err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[string]string{
		"":                            "docker.io", // the image's own registry
		"https://index.docker.io/v1/": "docker.io",
		"registry.example.com:5000":   "registry.example.com:5000",
		"https://quay.io":             "quay.io",
		"quay.io/org":                 "quay.io",
	} {
		if got := credentialRegistry(named, &runtimeapi.AuthConfig{ServerAddress: addr}); got != want {
			t.Errorf("server_address %q: %q, want %q", addr, got, want)
		}
	}
}

// A pull with no request to the registry open (its layers being unpacked,
// or one waiting for a layer another pull fetches) is not stuck; one with
// a request open that receives nothing is.
func TestWatchProgressCountsOpenRequestsOnly(t *testing.T) {
	named, err := reference.ParseNormalizedNamed("busybox")
	if err != nil {
		t.Fatal(err)
	}
	const idle = 100 * time.Millisecond
	var p pullProgress
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	done := make(chan struct{})
	go func() { watchProgress(ctx, cancel, named, idle, &p); close(done) }()
	// No request open for ten times idle: the pull goes on.
	time.Sleep(10 * idle)
	if err := context.Cause(ctx); err != nil {
		t.Fatalf("cancelled with no request open: %v", err)
	}
	// A request open, nothing received: cancelled.
	p.active.Add(1)
	<-done
	if err := context.Cause(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("cause %v, want a DeadlineExceeded", err)
	}
}

// The transport counts a request open from its sending to its body's end
// or close, whichever comes first, once.
func TestCountingTransportTracksOpenRequests(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "layer") }))
	defer srv.Close()
	var p pullProgress
	client := &http.Client{Transport: &countingTransport{base: http.DefaultTransport, progress: &p}}
	resp, err := client.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if n := p.active.Load(); n != 1 {
		t.Fatalf("%d requests open before the body is read, want 1", n)
	}
	if _, err := io.ReadAll(resp.Body); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if n, got := p.active.Load(), p.received.Load(); n != 0 || got != 5 {
		t.Fatalf("%d requests open, %d bytes received after the body; want 0 and 5", n, got)
	}
}
