package testbed

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/remotes/docker"
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
func Start(ctx context.Context, binDir, extraConfig string) (_ *Bed, retErr error) {
	binDir, err := filepath.Abs(binDir)
	if err != nil {
		return nil, err
	}
	for _, b := range []string{"containerd", "containerd-shim-mine-v2"} {
		if _, err := os.Stat(filepath.Join(binDir, b)); err != nil {
			return nil, fmt.Errorf("%s not built (run make): %w", b, err)
		}
	}
	b := &Bed{}
	defer func() {
		if retErr != nil {
			b.Close()
		}
	}()
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
	// Also as docker.io would name it, for tests of short names.
	if _, err = b.Registry.Push("library/busybox:latest", img); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "mine-")
	if err != nil {
		return nil, err
	}
	if b.Daemon, err = NewDaemon(dir, binDir, extraConfig); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := b.Daemon.RouteRegistry("docker.io", b.Registry.Host); err != nil {
		return nil, err
	}
	return b, b.Daemon.Start(ctx)
}

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
