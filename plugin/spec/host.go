package spec

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/containerd/v2/pkg/apparmor"
	"github.com/containerd/containerd/v2/pkg/cap"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// This file gathers what Generate takes from the host. Nothing else in
// the package reads the host.

// DetectHost reads the node's cgroup layout, AppArmor and capabilities.
// minOOMScoreAdj is the floor the daemon worked out for itself.
func DetectHost(minOOMScoreAdj int) (*Host, error) {
	h := &Host{Controllers: map[string]bool{}, MinOOMScoreAdj: minOOMScoreAdj}
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/cgroup", &st); err != nil {
		return nil, fmt.Errorf("statfs /sys/fs/cgroup: %w", err)
	}
	h.CgroupV2 = st.Type == unix.CGROUP2_SUPER_MAGIC
	if h.CgroupV2 {
		data, _ := os.ReadFile("/sys/fs/cgroup/cgroup.controllers")
		for _, c := range strings.Fields(string(data)) {
			h.Controllers[c] = true
		}
		_, err := os.Stat(filepath.Join("/sys/fs/cgroup", ownCgroupV2(), "memory.swap.max"))
		h.Swap = err == nil
	} else {
		// A hybrid node's cgroup2 mount holds no controller runc uses.
		entries, _ := os.ReadDir("/sys/fs/cgroup")
		for _, e := range entries {
			if e.Name() == "unified" || e.Name() == "systemd" {
				continue
			}
			// Co-mounted controllers appear as one directory ("cpu,cpuacct").
			for _, c := range strings.Split(e.Name(), ",") {
				h.Controllers[c] = true
			}
		}
		_, err := os.Stat("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")
		h.Swap = err == nil
	}
	if h.CgroupV2 {
		if m, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter("/sys/fs/cgroup")); err == nil && len(m) > 0 {
			for _, opt := range strings.Split(m[0].VFSOptions, ",") {
				if opt == "nsdelegate" || opt == "memory_recursiveprot" {
					h.CgroupMountOptions = append(h.CgroupMountOptions, opt)
				}
			}
		}
	}
	// As containerd decides it: the kernel has AppArmor, apparmor_parser
	// is there, and the daemon does not run in a container.
	h.AppArmor = apparmor.HostSupports()
	var err error
	if h.Capabilities, err = cap.Current(); err != nil {
		return nil, fmt.Errorf("read the daemon's capabilities: %w", err)
	}
	return h, nil
}

// ownCgroupV2 is the daemon's own cgroup on a unified hierarchy.
func ownCgroupV2() string {
	data, _ := os.ReadFile("/proc/self/cgroup")
	for _, line := range strings.Split(string(data), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return p
		}
	}
	return "/"
}

// ResolveHostPaths resolves each mount's host path: a missing one is made
// as a directory (what kubelet expects of a hostPath without a type), a
// symlink is followed. One that cannot be resolved fails the container:
// binding the unresolved path could bind something else.
func ResolveHostPaths(mounts []*runtimeapi.Mount) (map[string]string, error) {
	out := map[string]string{}
	for _, m := range mounts {
		src := m.GetHostPath()
		if src == "" {
			continue
		}
		if _, err := os.Stat(src); os.IsNotExist(err) {
			if err := os.MkdirAll(src, 0o755); err != nil {
				return nil, errdefs.ErrInvalidArgument.WithMessage(fmt.Sprintf("create host path %q: %v", src, err))
			}
		} else if err != nil {
			return nil, errdefs.ErrInvalidArgument.WithMessage(fmt.Sprintf("host path %q: %v", src, err))
		}
		resolved, err := filepath.EvalSymlinks(src)
		if err != nil {
			return nil, errdefs.ErrInvalidArgument.WithMessage(fmt.Sprintf("resolve host path %q: %v", src, err))
		}
		if err := checkPropagation(resolved, m.GetPropagation()); err != nil {
			return nil, err
		}
		out[src] = resolved
	}
	return out, nil
}

// ResolveDevices looks the requested devices up on the host (a directory
// stands for every device below it), with the cgroup rules allowing them.
func ResolveDevices(devices []*runtimeapi.Device) (Devices, error) {
	scratch := &oci.Spec{Linux: &specs.Linux{Resources: &specs.LinuxResources{}}}
	for _, d := range devices {
		path, err := filepath.EvalSymlinks(d.GetHostPath())
		if err != nil {
			return Devices{}, errdefs.ErrInvalidArgument.WithMessage(fmt.Sprintf("device %q: %v", d.GetHostPath(), err))
		}
		if err := oci.WithDevices(path, d.GetContainerPath(), d.GetPermissions())(context.Background(), nil, nil, scratch); err != nil {
			return Devices{}, errdefs.ErrInvalidArgument.WithMessage(fmt.Sprintf("device %q: %v", d.GetHostPath(), err))
		}
	}
	return Devices{Nodes: scratch.Linux.Devices, Rules: scratch.Linux.Resources.Devices}, nil
}

// checkPropagation refuses a propagation the host path's mount cannot
// give: mounts propagate into the container only from a shared or slave
// mount, back to the host only from a shared one. Silently not
// propagating would break what the pod relies on (a CSI plugin's mounts).
func checkPropagation(path string, p runtimeapi.MountPropagation) error {
	if p != runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL && p != runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER {
		return nil
	}
	mounts, err := mountinfo.GetMounts(mountinfo.ParentsFilter(path))
	if err != nil || len(mounts) == 0 {
		return errdefs.ErrInvalidArgument.WithMessage(fmt.Sprintf("find the mount of %q: %v", path, err))
	}
	// The deepest mount holding the path is the one bound.
	m := mounts[0]
	for _, c := range mounts[1:] {
		if len(c.Mountpoint) >= len(m.Mountpoint) {
			m = c
		}
	}
	shared := strings.Contains(m.Optional, "shared:")
	slave := strings.Contains(m.Optional, "master:")
	switch {
	case p == runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL && !shared:
		return errdefs.ErrInvalidArgument.WithMessage(fmt.Sprintf("bidirectional propagation of %q needs a shared mount; %s is not", path, m.Mountpoint))
	case p == runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER && !shared && !slave:
		return errdefs.ErrInvalidArgument.WithMessage(fmt.Sprintf("host-to-container propagation of %q needs a shared or slave mount; %s is neither", path, m.Mountpoint))
	}
	return nil
}
