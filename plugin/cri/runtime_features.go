package cri

import (
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"slices"
	"sync"
	"time"

	"github.com/containerd/log"
	"github.com/opencontainers/runtime-spec/specs-go/features"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/mine-runtime/mine/config"
)

// handlerFeatures is what Status tells kubelet a runtime handler can do.
// Recursive read-only mounts need the kernel's mount_setattr with
// AT_RECURSIVE (Linux 5.12) and an OCI runtime that knows the "rro" mount
// option (runc 1.1 and later), as with containerd's CRI. User namespaces
// are not implemented yet.
func handlerFeatures(ctx context.Context, rt config.Runtime) *runtimeapi.RuntimeHandlerFeatures {
	return &runtimeapi.RuntimeHandlerFeatures{
		RecursiveReadOnlyMounts: kernelSupportsRRO() && slices.Contains(ociMountOptions(ctx, ociBinary(rt)), "rro"),
		UserNamespaces:          false,
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

// ociFeatures caches, by binary, the mount options `BINARY features`
// lists: kubelet asks for Status every few seconds.
var ociFeatures sync.Map // string -> []string

// featuresTimeout bounds `runc features`, which only prints what it knows.
const featuresTimeout = 10 * time.Second

// ociMountOptions are the mount options an OCI runtime knows, from its
// `features` command (runc 1.1 and later, crun). A runtime without the
// command knows none worth telling; one that cannot be run now is asked
// again next time.
func ociMountOptions(ctx context.Context, binary string) []string {
	if v, ok := ociFeatures.Load(binary); ok {
		return v.([]string)
	}
	path, err := exec.LookPath(binary)
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, featuresTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "features").Output()
	var opts []string
	if err == nil {
		var f features.Features
		if err := json.Unmarshal(out, &f); err == nil {
			opts = f.MountOptions
		}
	} else if ctx.Err() != nil {
		return nil // timed out: ask again
	} else {
		log.G(ctx).WithError(err).WithField("runtime", binary).Debug("the OCI runtime has no features command")
	}
	if opts == nil {
		opts = []string{}
	}
	ociFeatures.Store(binary, opts)
	return opts
}
