package cri

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"unicode"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Checks of hostile or malformed requests, made before anything is made
// for them: what would otherwise reach the node, or fail later as
// Internal, is refused as InvalidArgument naming what was wrong.

// validNames refuses control characters in the names that reach the
// node (CNI arguments, cgroup and log paths, labels of records).
func validNames(kind string, names map[string]string) error {
	for field, v := range names {
		if i := strings.IndexFunc(v, unicode.IsControl); i >= 0 {
			return invalid(fmt.Sprintf("%s %s %q has a control character at byte %d", kind, field, v, i))
		}
	}
	return nil
}

// sysctlKey is a sysctl name as the kernel spells them: dot-separated
// parts (kubelet turns the slash form into this one).
var sysctlKey = regexp.MustCompile(`^[a-z0-9]([-_a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-_a-z0-9]*[a-z0-9])?)*$`)

// ipcSysctls are the IPC-namespaced sysctls; fs.mqueue.* are too.
var ipcSysctls = map[string]bool{
	"kernel.msgmax": true, "kernel.msgmnb": true, "kernel.msgmni": true, "kernel.sem": true,
	"kernel.shmall": true, "kernel.shmmax": true, "kernel.shmmni": true, "kernel.shm_rmid_forced": true,
}

// validSysctls accepts only well-formed, namespaced sysctls, and only for
// namespaces the pod has of its own: a pod may not set the node's. runc
// would otherwise refuse them only when the first container starts, in a
// pod reported ready.
func validSysctls(sysctls map[string]string, ns *runtimeapi.NamespaceOption) error {
	hostNet := ns.GetNetwork() == runtimeapi.NamespaceMode_NODE
	hostIPC := ns.GetIpc() == runtimeapi.NamespaceMode_NODE
	for key := range sysctls {
		var err string
		switch {
		case !sysctlKey.MatchString(key):
			err = "is not a well-formed sysctl name"
		case strings.HasPrefix(key, "net."):
			if hostNet {
				err = "is a network namespace sysctl, and the pod uses the host's network"
			}
		case ipcSysctls[key] || strings.HasPrefix(key, "fs.mqueue."):
			if hostIPC {
				err = "is an IPC namespace sysctl, and the pod uses the host's IPC namespace"
			}
		case key == "kernel.hostname" || key == "kernel.domainname":
			if hostNet {
				err = "is a UTS namespace sysctl, and the pod uses the host's UTS namespace"
			}
		case strings.HasPrefix(key, "user."):
			// Limits of the user namespace the pod's own (hostUsers:
			// false), as kubelet admits them; runc refuses them otherwise.
			if u := ns.GetUsernsOptions(); u == nil || u.GetMode() != runtimeapi.NamespaceMode_POD {
				err = "is a user namespace sysctl, and the pod uses the host's user namespace"
			}
		default:
			err = "is not namespaced: it would change the node"
		}
		if err != "" {
			return invalid(fmt.Sprintf("sysctl %q %s", key, err))
		}
	}
	return nil
}

// validUserNamespace refuses what no pod can have: a user namespace of
// the pod's own (hostUsers: false) has one UID and one GID mapping from
// container ID 0, as kubelet gives them and containerd's CRI takes them.
func validUserNamespace(ns *runtimeapi.NamespaceOption) error {
	u := ns.GetUsernsOptions()
	if u == nil {
		return nil // the host's, as NODE (whose mode is not the zero value)
	}
	switch u.GetMode() {
	case runtimeapi.NamespaceMode_NODE:
		if len(u.GetUids()) > 0 || len(u.GetGids()) > 0 {
			return invalid("user namespace mode NODE takes no ID mappings")
		}
		return nil
	case runtimeapi.NamespaceMode_POD:
		if len(u.GetUids()) != 1 || len(u.GetGids()) != 1 {
			return invalid(fmt.Sprintf("a pod's user namespace takes exactly one UID and one GID mapping, got %d and %d", len(u.GetUids()), len(u.GetGids())))
		}
		for _, m := range []*runtimeapi.IDMapping{u.GetUids()[0], u.GetGids()[0]} {
			if m.GetContainerId() != 0 || m.GetLength() == 0 {
				return invalid(fmt.Sprintf("a pod's user namespace mapping must map container ID 0 onwards, got %d+%d", m.GetContainerId(), m.GetLength()))
			}
		}
		// As kubelet validates hostUsers: false: the node's namespaces
		// belong to the node's user namespace, which the pod is not in.
		if ns.GetNetwork() == runtimeapi.NamespaceMode_NODE || ns.GetIpc() == runtimeapi.NamespaceMode_NODE || ns.GetPid() == runtimeapi.NamespaceMode_NODE {
			return invalid("a pod in a user namespace of its own cannot use the node's network, IPC or PID namespace")
		}
		return nil
	default:
		return invalid(fmt.Sprintf("user namespace mode %s: only POD or NODE", u.GetMode()))
	}
}

// containerLogPath is where a container logs: log_path within the pod's
// log_directory, which it may not leave, by "..", by being absolute, or
// through a symlink already in the directory.
func containerLogPath(dir, p string) (string, error) {
	if dir == "" || p == "" {
		return "", nil
	}
	if !filepath.IsAbs(dir) {
		return "", invalid(fmt.Sprintf("pod log_directory %q is not absolute", dir))
	}
	if !filepath.IsLocal(p) {
		return "", invalid(fmt.Sprintf("log_path %q leaves the pod's log directory", p))
	}
	full := filepath.Join(dir, p)
	// The deepest part of the path that exists must resolve inside the
	// directory (itself resolved: /var/log may be a link).
	realDir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return full, nil // made when the container starts, by the shim
	}
	for existing := filepath.Dir(full); ; existing = filepath.Dir(existing) {
		if _, err := os.Lstat(existing); err != nil {
			continue
		}
		real, err := filepath.EvalSymlinks(existing)
		if err != nil {
			return "", invalid(fmt.Sprintf("log_path %q: %v", p, err))
		}
		if rel, err := filepath.Rel(realDir, real); err != nil || !filepath.IsLocal(rel) && rel != "." {
			return "", invalid(fmt.Sprintf("log_path %q leaves the pod's log directory through a symlink", p))
		}
		break
	}
	if fi, err := os.Lstat(full); err == nil && fi.Mode()&os.ModeSymlink != 0 {
		return "", invalid(fmt.Sprintf("log_path %q is a symlink", p))
	}
	return full, nil
}

// Limits on a request's labels and annotations: the Kubernetes API's own
// total for annotations, and containerd's for one label, which CRI labels
// become on the object's record.
const (
	maxMetadataSize = 256 << 10
	maxLabelSize    = 4096
)

// validMetadataSize refuses labels and annotations past those limits.
func validMetadataSize(labels, annotations map[string]string) error {
	total := 0
	for k, v := range labels {
		if len(k)+len(v) > maxLabelSize {
			return invalid(fmt.Sprintf("label %q is longer than %d bytes with its value", k, maxLabelSize))
		}
		total += len(k) + len(v)
	}
	for k, v := range annotations {
		total += len(k) + len(v)
	}
	if total > maxMetadataSize {
		return errdefs.ErrResourceExhausted.WithMessage(fmt.Sprintf("labels and annotations take %d bytes, more than %d", total, maxMetadataSize))
	}
	return nil
}
