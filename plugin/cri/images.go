package cri

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"
	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/singleflight"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	mineconfig "github.com/mine-runtime/mine/config"
)

// imageService pulls images through containerd and keeps, for each, the
// names kubelet looks it up by: its tags, its repo digests and its ID
// (the config digest), all as containerd image records.
type imageService struct {
	client *containerd.Client
	// config is the configuration in force, which a reload may replace.
	config func() *mineconfig.Config
	// hostsDir holds the hosts.toml files made from registry.mirrors
	// and registry.configs.
	hostsDir string
	pulls    singleflight.Group
}

// normalize makes a reference fully qualified, as kubelet and docker do:
// busybox is docker.io/library/busybox:latest.
func normalize(ref string) (reference.Named, error) {
	if ref == "" {
		return nil, errdefs.ErrInvalidArgument.WithMessage("image reference must not be empty")
	}
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return nil, errdefs.ErrInvalidArgument.WithMessage(fmt.Sprintf("image reference %q: %v", ref, err))
	}
	return named, nil
}

// resolver reaches registries as the hosts.toml files in
// registry.config_path say, with the request's credentials, which go only
// to the hosts of the registry they were given for: the AuthConfig's
// server_address, else the image's own registry, as hosts.toml routes it.
func (is *imageService) resolver(named reference.Named, auth *runtimeapi.AuthConfig, progress *pullProgress) docker.ResolverOptions {
	opts := config.HostOptions{UpdateClient: func(c *http.Client) error {
		base := c.Transport
		if base == nil {
			base = http.DefaultTransport
		}
		c.Transport = &countingTransport{base: base, progress: progress}
		return nil
	}}
	reg := is.config().Registry
	opts.HostDir = is.hostDir(reg.ConfigPath)
	var allowed map[string]bool
	if auth != nil {
		allowed = credentialHosts(credentialRegistry(named, auth), opts)
	}
	creds := func(host string) (string, string, error) {
		if auth == nil || !allowed[host] {
			// registry.configs' credentials are for the host they name.
			user, secret, _ := reg.Credentials(host)
			return user, secret, nil
		}
		if auth.IdentityToken != "" {
			return "", auth.IdentityToken, nil
		}
		user, secret := auth.Username, auth.Password
		if auth.Auth != "" {
			decoded, err := base64.StdEncoding.DecodeString(auth.Auth)
			if err != nil {
				return "", "", fmt.Errorf("auth: %w", err)
			}
			u, p, ok := strings.Cut(string(decoded), ":")
			if !ok {
				return "", "", errors.New("auth: not user:password")
			}
			user, secret = u, p
		}
		return user, secret, nil
	}
	opts.Credentials = creds
	return docker.ResolverOptions{Hosts: config.ConfigureHosts(context.Background(), opts)}
}

// hostDir finds a registry's hosts.toml directory: under config_path
// first, else among those made from registry.mirrors and configs.
func (is *imageService) hostDir(configPath string) func(string) (string, error) {
	// config_path's directories in their order, as containerd takes its
	// colon-separated list, then those the registry settings made.
	var roots []func(string) (string, error)
	for _, root := range filepath.SplitList(configPath) {
		roots = append(roots, config.HostDirFromRoot(root))
	}
	roots = append(roots, config.HostDirFromRoot(is.hostsDir))
	return func(host string) (dir string, err error) {
		for _, root := range roots {
			if dir, err = root(host); dir != "" || (err != nil && !errdefs.IsNotFound(err)) {
				return dir, err
			}
		}
		return dir, err
	}
}

// writeHostFiles replaces the hosts.toml files made from the registry
// settings, whole: hostsDir is a link swapped in one rename to a new
// directory, so a pull sees the old set or the new one.
func (is *imageService) writeHostFiles(reg mineconfig.Registry) error {
	parent := filepath.Dir(is.hostsDir)
	if err := os.MkdirAll(parent, 0o711); err != nil {
		return err
	}
	dir, err := os.MkdirTemp(parent, filepath.Base(is.hostsDir)+".")
	if err != nil {
		return err
	}
	for host, content := range reg.HostFiles() {
		if err := os.MkdirAll(filepath.Join(dir, host), 0o700); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, host, "hosts.toml"), []byte(content), 0o600); err != nil {
			return err
		}
	}
	previous, _ := os.Readlink(is.hostsDir)
	link := dir + ".link"
	if err := os.Symlink(filepath.Base(dir), link); err != nil {
		return err
	}
	if err := os.Rename(link, is.hostsDir); err != nil {
		return err
	}
	// Sets before the previous one, and any a crash left half made: the
	// previous set stays, for a pull that resolved the link just before.
	stale, _ := filepath.Glob(is.hostsDir + ".*")
	for _, p := range stale {
		if p != dir && filepath.Base(p) != previous {
			_ = os.RemoveAll(p)
		}
	}
	return nil
}

// credentialRegistry is the registry a request's credentials are for:
// the AuthConfig's server_address (a docker config key such as
// https://index.docker.io/v1/ included), else the image's registry.
func credentialRegistry(named reference.Named, auth *runtimeapi.AuthConfig) string {
	addr := auth.GetServerAddress()
	if addr == "" {
		return reference.Domain(named)
	}
	if u, err := url.Parse(addr); err == nil && u.Host != "" {
		addr = u.Host
	} else {
		addr, _, _ = strings.Cut(addr, "/")
	}
	if addr == "index.docker.io" || addr == "registry-1.docker.io" {
		addr = "docker.io"
	}
	return addr
}

// credentialHosts are the hosts a registry is reached at, as hosts.toml
// configures it (or the registry's default host).
func credentialHosts(registry string, opts config.HostOptions) map[string]bool {
	hosts, err := config.ConfigureHosts(context.Background(), opts)(registry)
	allowed := map[string]bool{registry: true}
	if err == nil {
		for _, h := range hosts {
			allowed[h.Host] = true
		}
	}
	return allowed
}

// pull fetches and unpacks an image, once for concurrent requests of the
// same reference and credentials, and returns its ID.
func (is *imageService) pull(ctx context.Context, named reference.Named, auth *runtimeapi.AuthConfig) (string, error) {
	key := named.String()
	if auth != nil {
		key += "\x00" + auth.String()
	}
	ch := is.pulls.DoChan(key, func() (any, error) {
		// The pull outlives a client that gives up: the next request for
		// the same image then finds it done or joins it.
		return is.doPull(context.WithoutCancel(ctx), named, auth)
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return "", r.Err
		}
		return r.Val.(string), nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

func (is *imageService) doPull(ctx context.Context, named reference.Named, auth *runtimeapi.AuthConfig) (_ string, retErr error) {
	var progress pullProgress
	defer func(start time.Time) { observePull(start, progress.received.Load(), retErr) }(time.Now())
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if total := is.config().PullTimeout(); total > 0 {
		var stop context.CancelFunc
		ctx, stop = context.WithTimeoutCause(ctx, total, fmt.Errorf("pull of %s took longer than image_pull_timeout (%s): %w", named, total, context.DeadlineExceeded))
		defer stop()
	}
	if idle := is.config().PullProgressTimeout(); idle > 0 {
		go watchProgress(ctx, cancel, named, idle, &progress)
	}
	img, err := is.client.Pull(ctx, named.String(),
		containerd.WithPullUnpack,
		containerd.WithPullSnapshotter(is.config().Snapshotter),
		containerd.WithResolver(docker.NewResolver(is.resolver(named, auth, &progress))),
	)
	if err != nil {
		if cause := context.Cause(ctx); cause != nil && cause != context.Canceled {
			err = cause
		} else if strings.Contains(err.Error(), unpackFailure) {
			// The registry served the image, and it cannot be used as it is
			// (a hard link out of its layer, say): the image's fault, not
			// the runtime's.
			err = errdefs.ErrFailedPrecondition.WithMessage(err.Error())
		} else if errors.Is(err, io.ErrUnexpectedEOF) && strings.Contains(err.Error(), "short read") {
			// The registry's blob ended, cleanly, before the size its
			// descriptor gives: content that does not match what it is
			// said to be. (One that does not match its digest is already
			// FailedPrecondition, from containerd's content store.)
			return "", status.Errorf(codes.DataLoss, "pull %s: a blob is shorter than its descriptor says: %v", named, err)
		}
		return "", fmt.Errorf("pull %s: %w", named, err)
	}
	return is.recordNames(ctx, img.Metadata())
}

// unpackFailure starts the error containerd's unpacker gives for a layer
// that does not apply; it wraps the applier's error in no type of its own.
const unpackFailure = "failed to extract layer"

// pullProgress is what a pull's registry traffic shows of its progress:
// the bytes received, and the requests open (sent and not yet read to
// their end).
type pullProgress struct {
	received atomic.Int64
	active   atomic.Int64
}

// watchProgress cancels a pull when, for idle, a request to the registry
// was open and no byte arrived: a pull that is merely slow goes on, a
// stuck one fails with a clear error. Time with no request open is not
// counted, as containerd counts it: layers being unpacked once all are
// fetched (minutes, for a big image), or a layer another pull is fetching.
func watchProgress(ctx context.Context, cancel context.CancelCauseFunc, named reference.Named, idle time.Duration, p *pullProgress) {
	last := p.received.Load()
	lastChange := time.Now()
	tick := time.NewTicker(min(idle/4, time.Second))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if n := p.received.Load(); n != last || p.active.Load() == 0 {
			last, lastChange = n, time.Now()
			continue
		}
		if time.Since(lastChange) >= idle {
			cancel(fmt.Errorf("pull of %s made no progress for image_pull_progress_timeout (%s): %w", named, idle, context.DeadlineExceeded))
			return
		}
	}
}

// countingTransport counts the bytes of registry responses as they
// arrive (containerd's content store only sees them in large blocks) and
// the requests open.
type countingTransport struct {
	base     http.RoundTripper
	progress *pullProgress
}

func (t *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	t.progress.active.Add(1)
	resp, err := t.base.RoundTrip(req)
	if err != nil || resp.Body == nil {
		t.progress.active.Add(-1)
		return resp, err
	}
	resp.Body = &countingBody{ReadCloser: resp.Body, progress: t.progress}
	return resp, nil
}

type countingBody struct {
	io.ReadCloser
	progress *pullProgress
	done     sync.Once
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.progress.received.Add(int64(n))
	if err != nil {
		b.end()
	}
	return n, err
}

func (b *countingBody) Close() error {
	b.end()
	return b.ReadCloser.Close()
}

// end closes the request, once: at the body's end, or its close.
func (b *countingBody) end() { b.done.Do(func() { b.progress.active.Add(-1) }) }

// recordNames gives a pulled image its repo digest and ID names beside the
// one it was pulled by, and returns the ID.
func (is *imageService) recordNames(ctx context.Context, img images.Image) (string, error) {
	cimg := containerd.NewImage(is.client, img)
	cfg, err := cimg.Config(ctx)
	if err != nil {
		return "", err
	}
	id := cfg.Digest.String()
	named, err := reference.ParseNormalizedNamed(img.Name)
	if err != nil {
		return "", err
	}
	names := []string{id}
	if digested, err := reference.WithDigest(reference.TrimNamed(named), img.Target.Digest); err == nil {
		names = append(names, digested.String())
	}
	store := is.client.ImageService()
	for _, name := range names {
		rec := images.Image{Name: name, Target: img.Target, Labels: img.Labels}
		if _, err := store.Create(ctx, rec); errdefs.IsAlreadyExists(err) {
			_, err = store.Update(ctx, rec, "target")
			if err != nil {
				return "", err
			}
		} else if err != nil {
			return "", err
		}
	}
	return id, nil
}

// criImage is one image as the CRI sees it: all the names of one config.
type criImage struct {
	id      string
	tags    []string
	digests []string
	target  ocispec.Descriptor
	record  images.Image
	pinned  bool // any of its names is
}

// list returns every image.
func (is *imageService) list(ctx context.Context) ([]*criImage, error) {
	recs, err := is.client.ImageService().List(ctx)
	if err != nil {
		return nil, err
	}
	return is.group(ctx, recs), nil
}

// group gathers image records by what they point to: the names of one
// pulled image. The ID comes from the record named by it, which pulls
// through the CRI make, so listing reads no content; only images pulled
// otherwise (with ctr, say) have their config read.
func (is *imageService) group(ctx context.Context, recs []images.Image) []*criImage {
	byTarget := map[string]*criImage{}
	var order []*criImage
	for _, rec := range recs {
		key := rec.Target.Digest.String()
		ci := byTarget[key]
		if ci == nil {
			ci = &criImage{target: rec.Target, record: rec}
			byTarget[key] = ci
			order = append(order, ci)
		}
		if rec.Labels[pinnedLabel] == "pinned" {
			ci.pinned = true
		}
		switch {
		case isImageID(rec.Name):
			ci.id = rec.Name
		case strings.Contains(rec.Name, "@"):
			ci.digests = append(ci.digests, rec.Name)
		default:
			ci.tags = append(ci.tags, rec.Name)
			ci.record = rec
		}
	}
	out := order[:0]
	for _, ci := range order {
		if ci.id == "" {
			cfg, err := containerd.NewImage(is.client, ci.record).Config(ctx)
			if err != nil {
				continue // not an image we can run, or its content is gone
			}
			ci.id = cfg.Digest.String()
		}
		out = append(out, ci)
	}
	return out
}

func isImageID(name string) bool {
	return strings.HasPrefix(name, "sha256:") && len(name) == len("sha256:")+64
}

// find returns the image a reference names (a tag, a digest, or an ID,
// full or an unambiguous prefix of at least 12 characters), or NotFound.
func (is *imageService) find(ctx context.Context, ref string) (*criImage, error) {
	if ref == "" {
		return nil, errdefs.ErrInvalidArgument.WithMessage("image reference must not be empty")
	}
	store := is.client.ImageService()
	candidates := []string{ref, "sha256:" + ref}
	if named, err := reference.ParseDockerRef(ref); err == nil {
		candidates = append([]string{named.String()}, candidates...)
	}
	for _, name := range candidates {
		rec, err := store.Get(ctx, name)
		if errdefs.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		siblings, err := store.List(ctx, fmt.Sprintf("target.digest==%s", rec.Target.Digest))
		if err != nil {
			return nil, err
		}
		if found := is.group(ctx, siblings); len(found) > 0 {
			return found[0], nil
		}
	}
	// A short ID: rare enough to look through every image for.
	if prefix := strings.TrimPrefix(ref, "sha256:"); len(prefix) >= 12 && isHex(prefix) {
		all, err := is.list(ctx)
		if err != nil {
			return nil, err
		}
		var match *criImage
		for _, ci := range all {
			if strings.HasPrefix(ci.id, "sha256:"+prefix) {
				if match != nil {
					return nil, errdefs.ErrInvalidArgument.WithMessage("image ID prefix " + prefix + " matches more than one image")
				}
				match = ci
			}
		}
		if match != nil {
			return match, nil
		}
	}
	return nil, errdefs.ErrNotFound.WithMessage("image " + ref + " not found")
}

func isHex(s string) bool {
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// toCRI describes an image for ListImages and ImageStatus.
func (is *imageService) toCRI(ctx context.Context, ci *criImage) (*runtimeapi.Image, error) {
	img := containerd.NewImage(is.client, ci.record)
	size, err := img.Size(ctx)
	if err != nil {
		return nil, err
	}
	out := &runtimeapi.Image{
		Id:          ci.id,
		RepoTags:    ci.tags,
		RepoDigests: ci.digests,
		Size:        uint64(size),
		Spec:        &runtimeapi.ImageSpec{Image: ci.id},
		Pinned:      ci.pinned,
	}
	if cfg, err := imageConfig(ctx, img); err == nil {
		user, _, _ := strings.Cut(cfg.Config.User, ":")
		if uid, err := strconv.ParseInt(user, 10, 64); err == nil {
			out.Uid = &runtimeapi.Int64Value{Value: uid}
		} else {
			out.Username = user
		}
	}
	return out, nil
}

// pinnedLabel marks images that must not be garbage collected by kubelet.
const pinnedLabel = "io.cri-containerd.pinned"
