package testbed

import (
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Registry is a real OCI distribution registry served on 127.0.0.1.
type Registry struct {
	Host string // 127.0.0.1:PORT
	// BlobFetches counts blob downloads, to tell one fetch from two.
	BlobFetches atomic.Int64
	server      *http.Server
	listener    net.Listener
}

// StartRegistry serves an empty registry on a free loopback port.
func StartRegistry() (*Registry, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &Registry{Host: l.Addr().String(), listener: l}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	r.server = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/") {
			r.BlobFetches.Add(1)
		}
		reg.ServeHTTP(w, req)
	})}
	go func() { _ = r.server.Serve(l) }()
	return r, nil
}

// Push stores an image as repo:tag and returns its full reference.
func (r *Registry) Push(repoTag string, img v1.Image) (string, error) {
	ref := r.Host + "/" + repoTag
	tag, err := name.NewTag(ref, name.Insecure)
	if err != nil {
		return "", err
	}
	if err := remote.Write(tag, img); err != nil {
		return "", fmt.Errorf("push %s: %w", ref, err)
	}
	return ref, nil
}

// Close stops serving.
func (r *Registry) Close() error { return r.server.Close() }
