// Package spec builds a CRI container's OCI runtime spec. Generate is a
// pure function of the CRI request, the image, the pod and the host's
// facts: it reads no file and asks no daemon, so that every rule below is
// tested by a table of requests shaped as kubelet sends them. What it
// needs from the host (the real path of a hostPath, a device's numbers,
// the image's /etc/passwd, which cgroup controllers exist) is looked up
// beforehand by the functions in host.go.
//
// Where the CRI leaves a choice to the runtime, the spec is the one
// containerd's CRI plugin generates; the options are in the order it
// applies them, each a small named function in opts.go.
package spec

import (
	"context"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/mine-runtime/mine/plugin/podns"
)

// Container is everything a container's spec is made from.
type Container struct {
	ID     string
	Config *runtimeapi.ContainerConfig
	Image  Image
	Pod    Pod
	// HostPaths maps each mount's host path, as requested, to the path it
	// resolves to (ResolveHostPaths).
	HostPaths map[string]string
	// Devices are the requested devices as the host has them
	// (ResolveDevices).
	Devices Devices
	// TargetPIDNamespace is the PID namespace of the container a
	// NamespaceMode_TARGET request names, resolved by the caller.
	TargetPIDNamespace string
	// SeccompProfile is the content of a Localhost seccomp profile.
	SeccompProfile []byte
	// SystemdCgroup: the runtime handler places containers with systemd.
	SystemdCgroup bool
	// RecursiveReadOnly: the runtime handler can make mounts read-only
	// recursively (its Status feature).
	RecursiveReadOnly bool
	// UnprivilegedPorts and UnprivilegedICMP let a pod with its own
	// network namespace bind low ports and ping without privileges
	// (enable_unprivileged_ports and enable_unprivileged_icmp).
	UnprivilegedPorts, UnprivilegedICMP bool
}

// Image is what the spec takes from the container's image.
type Image struct {
	Name   string // as the request named it
	Config ocispec.ImageConfig
	// Passwd and Group are the image's /etc/passwd and /etc/group, nil
	// where it has none: user names and groups are resolved in them.
	Passwd, Group []byte
}

// Pod is what the spec takes from the container's pod.
type Pod struct {
	ID       string
	Config   *runtimeapi.PodSandboxConfig
	Hostname string // the pod's hostname: its config's, else the node's
	// Namespaces are the pod's pinned namespaces; an empty path is the
	// host's namespace.
	Namespaces podns.Paths
	// StateDir holds the files every container of the pod mounts:
	// hostname, hosts, resolv.conf and shm.
	StateDir string
}

// Devices are device nodes with the cgroup rules that allow them.
type Devices struct {
	Nodes []specs.LinuxDevice
	Rules []specs.LinuxDeviceCgroup
}

// Host holds the facts of the node the spec depends on (DetectHost).
type Host struct {
	// CgroupV2 is true on a unified hierarchy; a hybrid one is v1 for
	// containers, as runc uses it.
	CgroupV2 bool
	// Controllers are the cgroup controllers containers can be limited by.
	Controllers map[string]bool
	// Swap tells whether memory+swap can be limited.
	Swap bool
	// AppArmor tells whether the kernel enforces AppArmor.
	AppArmor bool
	// Capabilities are those the daemon holds: what "ALL" and privileged
	// mean, since a container cannot be given one its runtime lacks.
	Capabilities []string
	// CgroupMountOptions are the host's cgroup2 mount options a container
	// mounting the same superblock must repeat (nsdelegate,
	// memory_recursiveprot).
	CgroupMountOptions []string
	// MinOOMScoreAdj is the lowest oom_score_adj a container may get.
	MinOOMScoreAdj int
	// PrivilegedDevices are the host's devices, which a privileged
	// container gets; looked up only for one.
	PrivilegedDevices []specs.LinuxDevice
}

// Generate builds the container's OCI spec.
func Generate(c *Container, h *Host) (*specs.Spec, error) {
	opts, err := options(c, h)
	if err != nil {
		return nil, err
	}
	// containerd's default spec wants a namespace; its only use, the
	// default cgroups path, is replaced.
	ctx := namespaces.WithNamespace(context.Background(), "k8s.io")
	return oci.GenerateSpec(ctx, nil, &containers.Container{ID: c.ID}, opts...)
}
