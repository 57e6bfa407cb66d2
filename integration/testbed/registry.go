package testbed

import (
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
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
		path := req.URL.Path
		blob := req.Method == http.MethodGet && strings.Contains(path, "/blobs/")
		if blob {
			r.BlobFetches.Add(1)
		}
		switch {
		case strings.HasPrefix(path, "/v2/private/"):
			// Repositories under private/ need these credentials.
			if user, pass, ok := req.BasicAuth(); !ok || user != PrivateUser || pass != PrivatePassword {
				w.Header().Set("WWW-Authenticate", `Basic realm="mine-test"`)
				http.Error(w, "authentication required", http.StatusUnauthorized)
				return
			}
		case strings.HasPrefix(path, "/v2/stall/") && blob:
			// Blobs under stall/ never come.
			<-req.Context().Done()
			return
		case strings.HasPrefix(path, "/v2/drip/") && blob:
			// Blobs under drip/ come a byte every 100ms, for ever.
			w.Header().Set("Content-Length", "1000000")
			w.WriteHeader(http.StatusOK)
			for {
				if _, err := w.Write([]byte{0}); err != nil {
					return
				}
				w.(http.Flusher).Flush()
				select {
				case <-req.Context().Done():
					return
				case <-time.After(100 * time.Millisecond):
				}
			}
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
	var opts []remote.Option
	if strings.HasPrefix(repoTag, "private/") {
		opts = append(opts, remote.WithAuth(&authn.Basic{Username: PrivateUser, Password: PrivatePassword}))
	}
	if err := remote.Write(tag, img, opts...); err != nil {
		return "", fmt.Errorf("push %s: %w", ref, err)
	}
	return ref, nil
}

// The credentials of repositories under private/.
const (
	PrivateUser     = "mine"
	PrivatePassword = "s3cret"
)

// Close stops serving.
func (r *Registry) Close() error { return r.server.Close() }
