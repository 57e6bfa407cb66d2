// Package testbed is the offline test bed: test images built from the
// host's static busybox, a real OCI registry on 127.0.0.1, and the daemon
// started on a temporary root.
package testbed

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path"
	"slices"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// BusyboxPath is Debian's busybox-static, which the images are built from.
const BusyboxPath = "/bin/busybox"

// BusyboxImage builds a small OCI image: busybox and its applets in /bin,
// a root and a nobody user, and `sh` as the default command.
func BusyboxImage() (v1.Image, error) {
	return BusyboxImageFrom(BusyboxPath, nil)
}

// BusyboxImageFrom is BusyboxImage with another busybox binary, and host
// files it needs (a dynamic one's libraries) copied in: image path to host
// path, links on the host followed.
func BusyboxImageFrom(busybox string, hostFiles map[string]string) (v1.Image, error) {
	bb, err := os.ReadFile(busybox)
	if err != nil {
		return nil, fmt.Errorf("busybox is needed to build test images: %w", err)
	}
	out, err := exec.Command(busybox, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("list busybox applets: %w", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Unix(0, 0)
	dir := func(name string, mode int64) {
		_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode, ModTime: mtime})
	}
	file := func(name string, mode int64, data []byte) {
		_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: mtime})
		_, _ = tw.Write(data)
	}
	for _, d := range []string{"bin/", "etc/", "tmp/", "root/", "home/", "proc/", "sys/", "dev/", "var/", "run/"} {
		mode := int64(0o755)
		if d == "tmp/" {
			mode = 0o1777
		}
		dir(d, mode)
	}
	file("bin/busybox", 0o755, bb)
	for _, applet := range strings.Fields(string(out)) {
		if applet == "busybox" {
			continue
		}
		_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeLink, Name: "bin/" + applet, Linkname: "bin/busybox", Mode: 0o755, ModTime: mtime})
	}
	made := map[string]bool{"bin": true, "etc": true, "tmp": true, "root": true, "home": true, "proc": true, "sys": true, "dev": true, "var": true, "run": true}
	var extraDirs []string
	for p := range hostFiles {
		for d := path.Dir(p); d != "." && d != "/" && !made[d]; d = path.Dir(d) {
			made[d] = true
			extraDirs = append(extraDirs, d)
		}
	}
	slices.Sort(extraDirs) // parents before children
	for _, d := range extraDirs {
		dir(d+"/", 0o755)
	}
	for _, p := range slices.Sorted(maps.Keys(hostFiles)) {
		data, err := os.ReadFile(hostFiles[p])
		if err != nil {
			return nil, err
		}
		file(p, 0o755, data)
	}
	file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n"))
	file("etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n"))
	if err := tw.Close(); err != nil {
		return nil, err
	}
	layer, err := tarLayer(buf.Bytes())
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), layer)
	if err != nil {
		return nil, err
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.Architecture = "amd64"
	cfg.OS = "linux"
	cfg.Config.Cmd = []string{"sh"}
	cfg.Config.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	return mutate.ConfigFile(img, cfg)
}

// WithConfig returns img with its config changed by change.
func WithConfig(img v1.Image, change func(*v1.Config)) (v1.Image, error) {
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	change(&cfg.Config)
	return mutate.ConfigFile(img, cfg)
}

// WithFiles returns img with a layer holding the given files (path to
// content; directories are made as needed; content starting with #! is
// made executable).
func WithFiles(img v1.Image, files map[string]string) (v1.Image, error) {
	entries := make([]Entry, 0, len(files))
	for p, content := range files {
		data := []byte(content)
		mode := int64(0o644)
		if bytes.HasPrefix(data, []byte("#!")) {
			mode = 0o755 // a script
		}
		entries = append(entries, Entry{Path: p, Mode: mode, Data: data})
	}
	return WithEntries(img, entries...)
}

// Entry is a regular file of a layer with its mode spelled out, for what
// WithFiles cannot say: a setuid binary, say.
type Entry struct {
	Path string
	Mode int64 // permissions with the setuid, setgid and sticky bits, e.g. 0o4755
	Data []byte
}

// WithEntries returns img with a layer holding entries, owned by root;
// directories are made as needed.
func WithEntries(img v1.Image, entries ...Entry) (v1.Image, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	entries = slices.Clone(entries)
	slices.SortFunc(entries, func(a, b Entry) int { return strings.Compare(a.Path, b.Path) })
	dirs := map[string]bool{}
	for _, e := range entries {
		for d := path.Dir(e.Path); d != "." && d != "/" && !dirs[d]; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	dirList := make([]string, 0, len(dirs))
	for d := range dirs {
		dirList = append(dirList, d)
	}
	sort.Strings(dirList)
	for _, d := range dirList {
		_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: time.Unix(0, 0)})
	}
	for _, e := range entries {
		_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: e.Path, Mode: e.Mode, Size: int64(len(e.Data)), ModTime: time.Unix(0, 0)})
		_, _ = tw.Write(e.Data)
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	layer, err := tarLayer(buf.Bytes())
	if err != nil {
		return nil, err
	}
	return mutate.AppendLayers(img, layer)
}

// tarLayer is an uncompressed OCI layer of a tar archive.
func tarLayer(data []byte) (v1.Layer, error) {
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer))
}

// WithRawLayer returns img with a layer of the given tar archive, as is:
// for images no honest build makes.
func WithRawLayer(img v1.Image, tarData []byte) (v1.Image, error) {
	layer, err := tarLayer(tarData)
	if err != nil {
		return nil, err
	}
	return mutate.AppendLayers(img, layer)
}
