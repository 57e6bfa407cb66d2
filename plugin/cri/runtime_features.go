package cri

import (
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/opencontainers/runtime-spec/specs-go/features"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/mine-runtime/mine/config"
)

// handlerFeatures is what Status tells kubelet a runtime handler can do.
// Recursive read-only mounts need the kernel's mount_setattr with
// AT_RECURSIVE (Linux 5.12) and an OCI runtime that knows the "rro" mount
// option (runc 1.1 and later), as with containerd's CRI. Pods in user
// namespaces of their own need an OCI runtime with idmapped mounts (runc
// 1.2 and later; kubelet's volumes are mounted so).
func handlerFeatures(ctx context.Context, rt config.Runtime) *runtimeapi.RuntimeHandlerFeatures {
	info := ociRuntimeInfo(ctx, ociBinary(rt))
	return &runtimeapi.RuntimeHandlerFeatures{
		RecursiveReadOnlyMounts: kernelSupportsRRO() && slices.Contains(info.MountOptions, "rro"),
		UserNamespaces:          info.IDMapMounts,
	}
}

// ociBinary is the OCI runtime a handler's shim runs.
func ociBinary(rt config.Runtime) string {
	if rt.Options.BinaryName != "" {
		return rt.Options.BinaryName
	}
	return "runc"
}

// kernelSupportsRRO tells whether the kernel has mount_setattr, which
// makes a bind mount read-only recursively. The probe changes nothing:
// a request without attributes is a no-op, and only a kernel without the
// system call answers ENOSYS.
var kernelSupportsRRO = sync.OnceValue(func() bool {
	err := unix.MountSetattr(-1, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &unix.MountAttr{})
	return !errors.Is(err, unix.ENOSYS)
})

// ociRuntime is what the plugin knows of an OCI runtime binary.
type ociRuntime struct {
	// MountOptions are the mount options it knows ("rro" among them).
	MountOptions []string
	// SpecVersion is the newest OCI spec version it accepts, "" when it
	// does not say.
	SpecVersion string
	// IDMapMounts: it makes idmapped mounts, for user namespaces.
	IDMapMounts bool
}

// ociRuntimes caches, by binary, what each OCI runtime says of itself:
// kubelet asks for Status every few seconds, and every container's spec
// depends on it.
var ociRuntimes sync.Map // string -> ociRuntime

// featuresTimeout bounds `runc features`, which only prints what it knows.
const featuresTimeout = 10 * time.Second

// ociRuntimeInfo asks an OCI runtime what it supports, once: its
// `features` command (runc 1.1 and later, crun 1.9 and later), else its
// version output's "spec:" line (crun 1.8.1 has no features command and
// accepts only OCI spec 1.0.x). One that cannot be run now is asked again
// next time.
func ociRuntimeInfo(ctx context.Context, binary string) ociRuntime {
	if v, ok := ociRuntimes.Load(binary); ok {
		return v.(ociRuntime)
	}
	path, err := exec.LookPath(binary)
	if err != nil {
		return ociRuntime{MountOptions: []string{}}
	}
	ctx, cancel := context.WithTimeout(ctx, featuresTimeout)
	defer cancel()
	info := ociRuntime{MountOptions: []string{}}
	out, err := exec.CommandContext(ctx, path, "features").Output()
	if err == nil {
		var f features.Features
		if err := json.Unmarshal(out, &f); err == nil {
			if f.MountOptions != nil {
				info.MountOptions = f.MountOptions
			}
			info.SpecVersion = f.OCIVersionMax
			if l := f.Linux; l != nil && l.MountExtensions != nil && l.MountExtensions.IDMap != nil && l.MountExtensions.IDMap.Enabled != nil {
				info.IDMapMounts = *l.MountExtensions.IDMap.Enabled && slices.Contains(l.Namespaces, "user")
			}
		}
	} else if ctx.Err() != nil {
		return info // timed out: ask again
	} else {
		log.G(ctx).WithError(err).WithField("runtime", binary).Debug("the OCI runtime has no features command")
	}
	if info.SpecVersion == "" {
		if out, err := exec.CommandContext(ctx, path, "--version").Output(); err == nil {
			info.SpecVersion = specLine(string(out))
		} else if ctx.Err() != nil {
			return info
		}
	}
	ociRuntimes.Store(binary, info)
	return info
}

// specLine finds "spec: 1.0.0" in a runtime's --version output.
func specLine(out string) string {
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "spec:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// specVersionFor is the OCI spec version to write for a runtime: the
// version of the spec package the plugin builds with, unless the runtime
// accepts only older ones. Containers' specs use nothing newer than 1.0
// did that such a runtime would need, and stock containerd writing 1.3.0
// for crun 1.8.1 fails every pod.
func specVersionFor(ctx context.Context, rt config.Runtime) string {
	have := ociRuntimeInfo(ctx, ociBinary(rt)).SpecVersion
	if have != "" && olderVersion(have, specs.Version) {
		return have
	}
	return specs.Version
}

// olderVersion compares two x.y.z versions, suffixes ("-dev") ignored.
func olderVersion(a, b string) bool {
	pa, pb := versionParts(a), versionParts(b)
	for i := range pa {
		if pa[i] != pb[i] {
			return pa[i] < pb[i]
		}
	}
	return false
}

func versionParts(v string) [3]int {
	var out [3]int
	v, _, _ = strings.Cut(v, "-")
	for i, p := range strings.SplitN(v, ".", 3) {
		out[i], _ = strconv.Atoi(p)
	}
	return out
}
