package testbed

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Bed is a whole test bed: the busybox image in a loopback registry and
// our daemon on a temporary root.
type Bed struct {
	Registry *Registry
	ImageRef string // the busybox image, as served by Registry
	Daemon   *Daemon
}

// Start builds and serves the image, then starts the daemon from binDir;
// extraConfig is appended to its config.toml.
func Start(ctx context.Context, binDir, extraConfig string) (*Bed, error) {
	binDir, err := filepath.Abs(binDir)
	if err != nil {
		return nil, err
	}
	for _, b := range []string{"containerd", "containerd-shim-mine-v2", "mine-pod-init"} {
		if _, err := os.Stat(filepath.Join(binDir, b)); err != nil {
			return nil, fmt.Errorf("%s not built (run make): %w", b, err)
		}
	}
	return start(ctx, "mine-", func(dir string) (*Daemon, error) { return NewDaemon(dir, binDir, extraConfig) })
}

// StartStock is Start with stock containerd v2.4.2 from stockDir in place
// of ours, for measuring against: the same registry and images, and
// PauseImage as the sandbox image.
func StartStock(ctx context.Context, stockDir string) (*Bed, error) {
	if _, err := os.Stat(filepath.Join(stockDir, "containerd")); err != nil {
		return nil, fmt.Errorf("stock containerd not built (run hack/install-bench-deps.sh): %w", err)
	}
	return start(ctx, "mine-stock-", func(dir string) (*Daemon, error) { return NewStockDaemon(dir, stockDir, PauseImage) })
}

// start serves busybox (as mine/busybox, and as docker.io's busybox for
// tests of short names) and the pause image, then starts the daemon that
// newDaemon lays out in a new directory, with docker.io and
// registry.k8s.io routed to the registry.
func start(ctx context.Context, prefix string, newDaemon func(dir string) (*Daemon, error)) (_ *Bed, retErr error) {
	b := &Bed{}
	defer func() {
		if retErr != nil {
			b.Close()
		}
	}()
	var err error
	if b.Registry, err = StartRegistry(); err != nil {
		return nil, err
	}
	img, err := BusyboxImage()
	if err != nil {
		return nil, err
	}
	if b.ImageRef, err = b.Registry.Push("mine/busybox:latest", img); err != nil {
		return nil, err
	}
	if _, err = b.Registry.Push("library/busybox:latest", img); err != nil {
		return nil, err
	}
	pause, err := WithConfig(img, func(c *v1.Config) { c.Cmd = []string{"sleep", "2147483647"} })
	if err != nil {
		return nil, err
	}
	if _, err := b.Registry.Push("pause:3.10", pause); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return nil, err
	}
	if b.Daemon, err = newDaemon(dir); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	for _, host := range []string{"docker.io", "registry.k8s.io"} {
		if err := b.Daemon.RouteRegistry(host, b.Registry.Host); err != nil {
			return nil, err
		}
	}
	return b, b.Daemon.Start(ctx)
}

// PauseImage is the sandbox image stock containerd runs, served by every
// bed's registry: busybox sleeping, in place of the real pause binary.
const PauseImage = "registry.k8s.io/pause:3.10"

// Pull pulls and unpacks the busybox image into a namespace.
func (b *Bed) Pull(ctx context.Context, namespace string) error {
	c, err := b.Daemon.Client(namespace)
	if err != nil {
		return err
	}
	defer c.Close()
	resolver := docker.NewResolver(docker.ResolverOptions{
		Hosts: docker.ConfigureDefaultRegistries(docker.WithPlainHTTP(docker.MatchLocalhost)),
	})
	_, err = c.Pull(ctx, b.ImageRef, containerd.WithPullUnpack, containerd.WithResolver(resolver))
	return err
}

// Close tears everything down. It fails if a shim or a mount was left
// behind, and then keeps the daemon's directory for its log.
func (b *Bed) Close() error {
	var err error
	if b.Daemon != nil {
		if err = b.Daemon.Teardown(); err == nil {
			os.RemoveAll(b.Daemon.Dir)
		} else {
			err = fmt.Errorf("%w (the daemon's log is kept in %s)", err, b.Daemon.Log)
		}
	}
	if b.Registry != nil {
		b.Registry.Close()
	}
	return err
}
