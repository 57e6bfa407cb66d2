package spec

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/containerd/containerd/v2/contrib/seccomp"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/mine-runtime/mine/plugin/podns"
)

// Annotations every container's OCI spec carries, as containerd's CRI
// sets them. The sandbox ID is also what puts all of a pod's containers in
// one shim.
const (
	AnnotationSandboxID     = "io.kubernetes.cri.sandbox-id"
	AnnotationContainerType = "io.kubernetes.cri.container-type"
	AnnotationContainerName = "io.kubernetes.cri.container-name"
	AnnotationImageName     = "io.kubernetes.cri.image-name"
	AnnotationPodName       = "io.kubernetes.cri.sandbox-name"
	AnnotationPodNamespace  = "io.kubernetes.cri.sandbox-namespace"
	AnnotationPodUID        = "io.kubernetes.cri.sandbox-uid"
)

// reservedAnnotationPrefixes are keys only the runtime sets: a request's
// own annotation with one of them could move the container into another
// pod's shim.
var reservedAnnotationPrefixes = []string{"io.kubernetes.cri.", "io.containerd.mine."}

// options is the container's spec as a list of steps, in the order
// containerd's CRI applies them.
func options(c *Container, h *Host) ([]oci.SpecOpts, error) {
	cfg := c.Config
	sc := cfg.GetLinux().GetSecurityContext()
	if err := Validate(cfg, c.Pod.Config); err != nil {
		return nil, err
	}
	user, err := resolveUser(c)
	if err != nil {
		return nil, err
	}
	mounts, err := withMounts(c, h)
	if err != nil {
		return nil, err
	}
	pidns, err := withPIDNamespace(c)
	if err != nil {
		return nil, err
	}
	security, err := withSecurityProfiles(c, h)
	if err != nil {
		return nil, err
	}
	userns, err := withUserNamespace(c)
	if err != nil {
		return nil, err
	}
	return []oci.SpecOpts{
		oci.WithoutRunMount,
		withoutDefaultSecurity,
		withProcessArgs(cfg, c.Image.Config.Entrypoint, c.Image.Config.Cmd),
		oci.WithDefaultPathEnv,
		oci.WithNewPrivileges,
		withWorkingDir(cfg.GetWorkingDir(), c.Image.Config.WorkingDir),
		withTTY(cfg.GetTty()),
		oci.WithEnv([]string{"HOSTNAME=" + c.Pod.Hostname}),
		withEnv(c.Image.Config.Env, cfg.GetEnvs()),
		withCgroupNamespace(cgroupNamespace(c, h)),
		mounts,
		withMaskedPaths(sc),
		withDevices(c.Devices),
		withCapabilities(sc.GetCapabilities(), h.Capabilities),
		withPrivileged(sc.GetPrivileged(), h),
		withoutAmbientCapabilities,
		withNoNewPrivileges(sc.GetNoNewPrivs()),
		withReadonlyRootfs(sc.GetReadonlyRootfs()),
		withResources(cfg.GetLinux().GetResources(), h),
		withCgroupsPath(c.Pod.Config.GetLinux().GetCgroupParent(), c.ID, c.SystemdCgroup),
		withOOMScoreAdj(cfg.GetLinux().GetResources().GetOomScoreAdj(), h.MinOOMScoreAdj),
		PodNamespaces(c.Pod.Namespaces),
		pidns,
		userns,
		withSysctls(podSysctls(c)),
		withUser(user),
		security,
		withAnnotations(c),
	}, nil
}

// Validate refuses what no spec can be made of. It needs nothing of the
// host, so callers run it before they look anything up (and make missing
// host paths).
func Validate(cfg *runtimeapi.ContainerConfig, pod *runtimeapi.PodSandboxConfig) error {
	sc := cfg.GetLinux().GetSecurityContext()
	if sc.GetPrivileged() && !pod.GetLinux().GetSecurityContext().GetPrivileged() {
		return errdefs.ErrInvalidArgument.WithMessage("a privileged container needs a privileged pod sandbox")
	}
	if sc.GetRunAsGroup() != nil && sc.GetRunAsUser() == nil && sc.GetRunAsUsername() == "" {
		return errdefs.ErrInvalidArgument.WithMessage("run_as_group needs run_as_user or run_as_username")
	}
	for _, m := range cfg.GetMounts() {
		if m.GetContainerPath() == "" || m.GetHostPath() == "" {
			return errdefs.ErrInvalidArgument.WithMessage("a mount needs a host path and a container path")
		}
		if !filepath.IsAbs(m.GetContainerPath()) {
			return errdefs.ErrInvalidArgument.WithMessage(fmt.Sprintf("mount container path %q is not absolute", m.GetContainerPath()))
		}
		if dst := filepath.Clean(m.GetContainerPath()); (dst == "/proc" || strings.HasPrefix(dst, "/proc/")) && !procOverlays[dst] {
			// runc refuses these when the container starts; refused here,
			// they are the request's mistake, not an internal error.
			return errdefs.ErrInvalidArgument.WithMessage(fmt.Sprintf("mount onto %s: only the files lxcfs-style mounts replace may be mounted over in /proc", dst))
		}
	}
	return nil
}

// procOverlays are the files of /proc runc lets a bind mount replace (as
// lxcfs does, to show a container its own limits).
var procOverlays = map[string]bool{
	"/proc/cpuinfo": true, "/proc/diskstats": true, "/proc/meminfo": true, "/proc/stat": true,
	"/proc/swaps": true, "/proc/uptime": true, "/proc/loadavg": true, "/proc/slabinfo": true,
	"/proc/net/dev": true, "/proc/sys/kernel/ns_last_pid": true, "/proc/sys/crypto/fips_enabled": true,
}

// withoutDefaultSecurity undoes what containerd's default spec sets and
// its CRI does not: an RLIMIT_NOFILE of 1024, no_new_privs (set below only
// when asked for), a seccomp or AppArmor profile nobody asked for.
func withoutDefaultSecurity(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
	s.Process.Rlimits = nil
	s.Process.ApparmorProfile = ""
	s.Linux.Seccomp = nil
	return nil
}

// withProcessArgs follows the CRI's rules: command replaces the image's
// entrypoint, args replace its cmd.
func withProcessArgs(cfg *runtimeapi.ContainerConfig, entrypoint, cmd []string) oci.SpecOpts {
	if len(entrypoint) == 1 && entrypoint[0] == "" {
		// An image built with ENTRYPOINT [""] means none, as docker reads it.
		entrypoint = nil
	}
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		var args []string
		switch {
		case len(cfg.GetCommand()) > 0:
			args = append(slices.Clone(cfg.GetCommand()), cfg.GetArgs()...)
		case len(cfg.GetArgs()) > 0:
			args = append(slices.Clone(entrypoint), cfg.GetArgs()...)
		default:
			args = append(slices.Clone(entrypoint), cmd...)
		}
		if len(args) == 0 {
			return errdefs.ErrInvalidArgument.WithMessage("no command: neither the container config nor the image names one")
		}
		if args[0] == "" {
			// runc would fail it at StartContainer; found by FuzzGenerate.
			return errdefs.ErrInvalidArgument.WithMessage("the command to run is an empty string")
		}
		s.Process.Args = args
		return nil
	}
}

func withWorkingDir(requested, image string) oci.SpecOpts {
	if requested == "" {
		requested = image
	}
	if requested == "" {
		return noop
	}
	return oci.WithProcessCwd(requested)
}

func withTTY(tty bool) oci.SpecOpts {
	if !tty {
		return noop
	}
	return oci.WithTTY
}

// withEnv sets the image's environment, then the request's over it. Two
// steps, not one list: a variable in both would otherwise be there twice,
// and a program's getenv reads the first, the image's.
func withEnv(image []string, requested []*runtimeapi.KeyValue) oci.SpecOpts {
	var env []string
	for _, kv := range requested {
		env = append(env, kv.GetKey()+"="+string(kv.GetValue()))
	}
	return oci.Compose(oci.WithEnv(image), oci.WithEnv(env))
}

// cgroupNamespace: containers get one of their own on cgroup v2, unless
// privileged.
func cgroupNamespace(c *Container, h *Host) bool {
	return h.CgroupV2 && !c.Config.GetLinux().GetSecurityContext().GetPrivileged()
}

// withCgroupNamespace hides the host's cgroup tree on cgroup v2. On v1
// containers see the host's hierarchy, as with every runtime there.
func withCgroupNamespace(on bool) oci.SpecOpts {
	if !on {
		return noop
	}
	return oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.CgroupNamespace})
}

// withMounts lays out the container's mounts: the default ones, less
// those a requested or pod mount replaces (all of /dev's if /dev itself
// is replaced); /sys/fs/cgroup; then the pod's files and the requested
// mounts, parents before children whatever order they were listed in. A
// requested mount wins over a pod file at the same path.
func withMounts(c *Container, h *Host) (oci.SpecOpts, error) {
	requested := c.Config.GetMounts()
	type mount struct {
		dst     string
		m       specs.Mount
		request bool
	}
	var list []mount
	taken := map[string]bool{}
	for _, m := range requested {
		src, ok := c.HostPaths[m.GetHostPath()]
		if !ok {
			return nil, fmt.Errorf("host path %q was not resolved", m.GetHostPath())
		}
		opts, err := mountOptions(m, c.RecursiveReadOnly)
		if err != nil {
			return nil, err
		}
		dst := filepath.Clean(m.GetContainerPath())
		taken[dst] = true
		// kubelet gives a pod in its own user namespace its volumes'
		// mappings: runc then makes the bind mounts idmapped.
		list = append(list, mount{dst, specs.Mount{Destination: m.GetContainerPath(), Type: "bind", Source: src, Options: opts,
			UIDMappings: IDMappings(m.GetUidMappings()), GIDMappings: IDMappings(m.GetGidMappings())}, true})
	}
	ro := c.Config.GetLinux().GetSecurityContext().GetReadonlyRootfs()
	for _, f := range podFiles(c.Pod) {
		if taken[f.Destination] {
			continue
		}
		if ro && f.Destination != "/dev/shm" {
			f.Options = append(f.Options, "ro")
		}
		taken[f.Destination] = true
		list = append(list, mount{f.Destination, f, false})
	}
	sort.SliceStable(list, func(i, j int) bool { return depth(list[i].dst) < depth(list[j].dst) })

	cgroupOpts := []string{"nosuid", "noexec", "nodev", "relatime", "ro"}
	if !cgroupNamespace(c, h) {
		// A container in the host's cgroup namespace mounts the host's one
		// cgroup2 superblock: options it leaves out would be cleared for
		// the whole node.
		cgroupOpts = append(cgroupOpts, h.CgroupMountOptions...)
	}
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		defaults := append(s.Mounts, specs.Mount{
			Destination: "/sys/fs/cgroup",
			Type:        "cgroup",
			Source:      "cgroup",
			Options:     cgroupOpts,
		})
		s.Mounts = nil
		for _, m := range defaults {
			dst := filepath.Clean(m.Destination)
			if taken[dst] || (taken["/dev"] && strings.HasPrefix(dst, "/dev/")) {
				continue
			}
			s.Mounts = append(s.Mounts, m)
		}
		for _, m := range list {
			if m.request {
				setRootfsPropagation(s, m.m.Options)
			}
			s.Mounts = append(s.Mounts, m.m)
		}
		return nil
	}, nil
}

// podFiles are the mounts every container of a pod shares. In a pod with
// its own user namespace, its files are idmapped, as containerd mounts
// them: the host's root, who wrote them, is the container's.
func podFiles(p Pod) []specs.Mount {
	bind := func(dst, src string) specs.Mount {
		return specs.Mount{Destination: dst, Type: "bind", Source: src, Options: []string{"rbind", "rprivate"}}
	}
	file := func(dst, src string) specs.Mount {
		m := bind(dst, src)
		if u := PodUserNamespaceOf(p.Config); u != nil {
			m.UIDMappings, m.GIDMappings = IDMappings(u.GetUids()), IDMappings(u.GetGids())
		}
		return m
	}
	shm := "/dev/shm"
	if p.Namespaces.IPC != "" {
		shm = filepath.Join(p.StateDir, "shm")
	}
	return []specs.Mount{
		file("/etc/hostname", filepath.Join(p.StateDir, "hostname")),
		file("/etc/hosts", filepath.Join(p.StateDir, "hosts")),
		file("/etc/resolv.conf", filepath.Join(p.StateDir, "resolv.conf")),
		bind("/dev/shm", shm),
	}
}

func depth(p string) int {
	if p == "/" {
		return 0
	}
	return strings.Count(p, "/")
}

// mountOptions are a requested mount's bind options.
func mountOptions(m *runtimeapi.Mount, rroSupported bool) ([]string, error) {
	opts := []string{"rbind"}
	switch m.GetPropagation() {
	case runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL:
		opts = append(opts, "rshared")
	case runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER:
		opts = append(opts, "rslave")
	default:
		opts = append(opts, "rprivate")
	}
	switch {
	case m.GetRecursiveReadOnly() && !m.GetReadonly():
		return nil, errdefs.ErrInvalidArgument.WithMessage(fmt.Sprintf("recursive read-only mount of %q conflicts with a read-write mount", m.GetHostPath()))
	case m.GetRecursiveReadOnly() && !rroSupported:
		return nil, errdefs.ErrInvalidArgument.WithMessage(fmt.Sprintf("recursive read-only mount of %q: the runtime handler does not support it", m.GetHostPath()))
	case m.GetRecursiveReadOnly() && m.GetPropagation() != runtimeapi.MountPropagation_PROPAGATION_PRIVATE:
		return nil, errdefs.ErrInvalidArgument.WithMessage(fmt.Sprintf("recursive read-only mount of %q needs private propagation, got %s", m.GetHostPath(), m.GetPropagation()))
	case m.GetRecursiveReadOnly():
		opts = append(opts, "rro")
	case m.GetReadonly():
		opts = append(opts, "ro")
	default:
		opts = append(opts, "rw")
	}
	return opts, nil
}

// setRootfsPropagation makes the root propagate as a mount needs: a mount
// cannot propagate past a private root.
func setRootfsPropagation(s *oci.Spec, opts []string) {
	switch {
	case slices.Contains(opts, "rshared"):
		s.Linux.RootfsPropagation = "rshared"
	case slices.Contains(opts, "rslave") && s.Linux.RootfsPropagation != "rshared":
		s.Linux.RootfsPropagation = "rslave"
	}
}

// withMaskedPaths: kubelet sends the paths to mask and make read-only
// (its defaults, or none for an Unmasked proc mount); the spec's own
// defaults give way to them, as in containerd's CRI.
func withMaskedPaths(sc *runtimeapi.LinuxContainerSecurityContext) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		s.Linux.MaskedPaths = slices.Clone(sc.GetMaskedPaths())
		s.Linux.ReadonlyPaths = slices.Clone(sc.GetReadonlyPaths())
		return nil
	}
}

// withDevices adds the requested devices. Nothing else: the default
// device rules are runc's own, which leave out the host's console.
func withDevices(d Devices) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		s.Linux.Devices = append(s.Linux.Devices, d.Nodes...)
		if len(d.Rules) > 0 {
			if s.Linux.Resources == nil {
				s.Linux.Resources = &specs.LinuxResources{}
			}
			s.Linux.Resources.Devices = append(s.Linux.Resources.Devices, d.Rules...)
		}
		return nil
	}
}

// withCapabilities: "ALL" first (added or dropped), then the named adds,
// then the named drops, so that a drop always wins.
func withCapabilities(caps *runtimeapi.Capability, all []string) oci.SpecOpts {
	if caps == nil {
		return noop
	}
	var opts []oci.SpecOpts
	named := func(list []string) []string {
		var out []string
		for _, c := range list {
			c = strings.ToUpper(c)
			if c == "ALL" {
				continue
			}
			if !strings.HasPrefix(c, "CAP_") {
				c = "CAP_" + c
			}
			out = append(out, c)
		}
		return out
	}
	hasAll := func(list []string) bool {
		return slices.ContainsFunc(list, func(c string) bool { return strings.EqualFold(c, "ALL") })
	}
	if hasAll(caps.GetAddCapabilities()) {
		opts = append(opts, oci.WithCapabilities(all))
	}
	if hasAll(caps.GetDropCapabilities()) {
		opts = append(opts, oci.WithCapabilities(nil))
	}
	opts = append(opts,
		oci.WithAddedCapabilities(named(caps.GetAddCapabilities())),
		oci.WithDroppedCapabilities(named(caps.GetDropCapabilities())))
	return oci.Compose(opts...)
}

// withPrivileged gives every capability the daemon has, the host's
// devices, writable /sys and /sys/fs/cgroup, nothing masked, no profile.
func withPrivileged(on bool, h *Host) oci.SpecOpts {
	if !on {
		return noop
	}
	return oci.Compose(
		oci.WithCapabilities(h.Capabilities),
		oci.WithMaskedPaths(nil),
		oci.WithReadonlyPaths(nil),
		oci.WithWriteableSysfs,
		oci.WithWriteableCgroupfs,
		oci.WithApparmorProfile(""),
		oci.WithSeccompUnconfined,
		func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
			s.Linux.Devices = append(s.Linux.Devices, h.PrivilegedDevices...)
			s.Linux.Resources.Devices = []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}
			return nil
		},
	)
}

// withoutAmbientCapabilities: what ambient capabilities mean for a
// non-root user is not defined by Kubernetes; none, as with docker.
func withoutAmbientCapabilities(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
	if s.Process.Capabilities != nil {
		s.Process.Capabilities.Ambient = nil
	}
	return nil
}

// withNoNewPrivileges: kubelet asks for no_new_privs when
// allowPrivilegeEscalation is false; otherwise setuid binaries work.
func withNoNewPrivileges(on bool) oci.SpecOpts {
	if !on {
		return noop
	}
	return oci.WithNoNewPrivileges
}

func withReadonlyRootfs(on bool) oci.SpecOpts {
	if !on {
		return noop
	}
	return oci.WithRootFSReadonly()
}

// withResources sets the limits the node can enforce. kubelet sends a
// hugepage limit for every page size the node has, 0 where the pod asks
// for none; where the hugetlb controller (or any other) is missing, runc
// would fail the container, so the limit is left out, as containerd's CRI
// leaves it out.
func withResources(r *runtimeapi.LinuxContainerResources, h *Host) oci.SpecOpts {
	if r == nil {
		return noop
	}
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		if s.Linux.Resources == nil {
			s.Linux.Resources = &specs.LinuxResources{}
		}
		ApplyResources(s.Linux.Resources, r, h)
		return nil
	}
}

// ApplyResources sets the CRI resources in out, for the controllers the
// node has. UpdateContainerResources uses it too: a limit changed later
// follows the same rules.
func ApplyResources(out *specs.LinuxResources, r *runtimeapi.LinuxContainerResources, h *Host) {
	if h.Controllers["cpu"] {
		if out.CPU == nil {
			out.CPU = &specs.LinuxCPU{}
		}
		if v := uint64(r.GetCpuShares()); v != 0 {
			out.CPU.Shares = &v
		}
		if v := r.GetCpuQuota(); v != 0 {
			out.CPU.Quota = &v
		}
		if v := uint64(r.GetCpuPeriod()); v != 0 {
			out.CPU.Period = &v
		}
	}
	if h.Controllers["cpuset"] {
		if out.CPU == nil {
			out.CPU = &specs.LinuxCPU{}
		}
		if v := r.GetCpusetCpus(); v != "" {
			out.CPU.Cpus = v
		}
		if v := r.GetCpusetMems(); v != "" {
			out.CPU.Mems = v
		}
	}
	if h.Controllers["memory"] {
		if out.Memory == nil {
			out.Memory = &specs.LinuxMemory{}
		}
		limit, swap := r.GetMemoryLimitInBytes(), r.GetMemorySwapLimitInBytes()
		if limit != 0 {
			out.Memory.Limit = &limit
			// No swap beyond the memory limit unless asked for, as
			// containerd's CRI: memory+swap equals memory.
			if swap == 0 && h.Swap {
				out.Memory.Swap = &limit
			}
		}
		if swap != 0 && h.Swap {
			out.Memory.Swap = &swap
		}
	}
	if h.Controllers["hugetlb"] && len(r.GetHugepageLimits()) > 0 {
		out.HugepageLimits = nil // replaced, not added to: updates repeat them
		for _, l := range r.GetHugepageLimits() {
			out.HugepageLimits = append(out.HugepageLimits, specs.LinuxHugepageLimit{Pagesize: l.GetPageSize(), Limit: l.GetLimit()})
		}
	}
	// Unified keys are cgroup v2 files; runc refuses them on v1.
	if h.CgroupV2 && len(r.GetUnified()) > 0 {
		if out.Unified == nil {
			out.Unified = map[string]string{}
		}
		maps.Copy(out.Unified, r.GetUnified())
	}
}

// withCgroupsPath places the container under its pod's cgroup parent.
func withCgroupsPath(parent, id string, systemd bool) oci.SpecOpts {
	return oci.WithCgroup(CgroupsPath(parent, id, systemd))
}

// CgroupsPath is a container's (or a pod init's) cgroups path.
func CgroupsPath(parent, id string, systemd bool) string {
	// kubelet's systemd driver sends the slice's whole path
	// (/kubepods.slice/kubepods-burstable.slice/...): runc wants its last
	// element and expands it itself.
	if base := filepath.Base(parent); strings.HasSuffix(base, ".slice") {
		return base + ":cri-mine:" + id
	}
	if systemd {
		return "system.slice:cri-mine:" + id
	}
	if parent == "" {
		parent = "/k8s.io"
	}
	return filepath.Join(parent, id)
}

// withOOMScoreAdj sets the score kubelet asks for, 0 when it asks for none
// (not the shim's own score, which the container would inherit), raised
// to what the daemon may set.
func withOOMScoreAdj(score int64, floor int) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		adj := max(int(score), floor)
		s.Process.OOMScoreAdj = &adj
		return nil
	}
}

// PodNamespaces joins the pod's network, IPC and UTS namespaces, or the
// host's where the pod has none of its own.
func PodNamespaces(paths podns.Paths) oci.SpecOpts {
	return func(ctx context.Context, client oci.Client, c *containers.Container, s *oci.Spec) error {
		for _, ns := range []struct {
			typ  specs.LinuxNamespaceType
			path string
		}{
			{specs.NetworkNamespace, paths.Net},
			{specs.IPCNamespace, paths.IPC},
			{specs.UTSNamespace, paths.UTS},
		} {
			opt := oci.WithHostNamespace(ns.typ)
			if ns.path != "" {
				opt = oci.WithLinuxNamespace(specs.LinuxNamespace{Type: ns.typ, Path: ns.path})
			}
			if err := opt(ctx, client, c, s); err != nil {
				return err
			}
		}
		return nil
	}
}

// withPIDNamespace: a PID namespace of its own (CONTAINER), the pod's
// pinned one (POD), the host's (NODE), or a running container's (TARGET).
func withPIDNamespace(c *Container) (oci.SpecOpts, error) {
	switch c.Config.GetLinux().GetSecurityContext().GetNamespaceOptions().GetPid() {
	case runtimeapi.NamespaceMode_POD:
		if c.Pod.Namespaces.PID == "" {
			// The pod itself does not share one (NamespaceMode_POD is the
			// zero value, which clients send without meaning it): a
			// namespace of the container's own.
			return noop, nil
		}
		return oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.PIDNamespace, Path: c.Pod.Namespaces.PID}), nil
	case runtimeapi.NamespaceMode_NODE:
		return oci.WithHostNamespace(specs.PIDNamespace), nil
	case runtimeapi.NamespaceMode_TARGET:
		if c.TargetPIDNamespace == "" {
			return nil, errdefs.ErrInvalidArgument.WithMessage("PID namespace mode TARGET needs a running target container of the same pod")
		}
		return oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.PIDNamespace, Path: c.TargetPIDNamespace}), nil
	}
	return noop, nil
}

// withUserNamespace puts a container of a pod with a user namespace of its
// own (hostUsers: false) in it, with its mappings. Every container of such
// a pod is in it: the pod's other namespaces belong to it.
func withUserNamespace(c *Container) (oci.SpecOpts, error) {
	u := c.Config.GetLinux().GetSecurityContext().GetNamespaceOptions().GetUsernsOptions()
	if c.Pod.Namespaces.User == "" {
		// POD is the mode's zero value: without mappings it asks for
		// nothing (clients send it without meaning it).
		if u != nil && (u.GetMode() == runtimeapi.NamespaceMode_CONTAINER || u.GetMode() == runtimeapi.NamespaceMode_TARGET || len(u.GetUids())+len(u.GetGids()) > 0) {
			return nil, errdefs.ErrInvalidArgument.WithMessage(fmt.Sprintf("user namespace mode %s with %d mappings: the pod has no user namespace of its own", u.GetMode(), len(u.GetUids())))
		}
		return noop, nil
	}
	pod := PodUserNamespaceOf(c.Pod.Config)
	if u != nil {
		if u.GetMode() != runtimeapi.NamespaceMode_POD || !sameMappings(u.GetUids(), pod.GetUids()) || !sameMappings(u.GetGids(), pod.GetGids()) {
			return nil, errdefs.ErrInvalidArgument.WithMessage("a container's user namespace must be its pod's, with the same mappings")
		}
	}
	return PodUserNamespace(c.Pod.Namespaces.User, pod), nil
}

// PodUserNamespaceOf is the user namespace a pod asks for, nil for the
// host's (none given, or NODE).
func PodUserNamespaceOf(pod *runtimeapi.PodSandboxConfig) *runtimeapi.UserNamespace {
	u := pod.GetLinux().GetSecurityContext().GetNamespaceOptions().GetUsernsOptions()
	if u == nil || u.GetMode() != runtimeapi.NamespaceMode_POD {
		return nil
	}
	return u
}

// PodUserNamespace joins the pod's pinned user namespace, with its
// mappings (runc checks them against the namespace's).
func PodUserNamespace(path string, u *runtimeapi.UserNamespace) oci.SpecOpts {
	uids, gids := IDMappings(u.GetUids()), IDMappings(u.GetGids())
	return func(ctx context.Context, client oci.Client, c *containers.Container, s *oci.Spec) error {
		if err := oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.UserNamespace, Path: path})(ctx, client, c, s); err != nil {
			return err
		}
		s.Linux.UIDMappings, s.Linux.GIDMappings = uids, gids
		return nil
	}
}

// IDMappings are CRI ID mappings as the OCI spec has them, nil for none.
func IDMappings(in []*runtimeapi.IDMapping) []specs.LinuxIDMapping {
	if len(in) == 0 {
		return nil
	}
	out := make([]specs.LinuxIDMapping, 0, len(in))
	for _, m := range in {
		out = append(out, specs.LinuxIDMapping{ContainerID: m.GetContainerId(), HostID: m.GetHostId(), Size: m.GetLength()})
	}
	return out
}

func sameMappings(a, b []*runtimeapi.IDMapping) bool {
	if len(a) == 0 {
		return true // kubelet's, not repeated: the pod's
	}
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].GetContainerId() != b[i].GetContainerId() || a[i].GetHostId() != b[i].GetHostId() || a[i].GetLength() != b[i].GetLength() {
			return false
		}
	}
	return true
}

// podSysctls are the pod's sysctls and, where the pod has its own network
// namespace and sets none of its own, containerd's defaults for low ports
// and ping (both on in containerd 2.x). They are in every container's spec:
// a pod may have no sandbox container to carry them, and writing the same
// value into the shared namespace again is harmless.
func podSysctls(c *Container) map[string]string {
	pod := c.Pod.Config.GetLinux()
	sysctls := pod.GetSysctls()
	if pod.GetSecurityContext().GetNamespaceOptions().GetNetwork() == runtimeapi.NamespaceMode_NODE {
		return sysctls
	}
	defaults := map[string]string{}
	if c.UnprivilegedPorts {
		defaults["net.ipv4.ip_unprivileged_port_start"] = "0"
	}
	// As containerd: not in a user namespace, whose groups the range
	// would name from the host's side.
	if u := pod.GetSecurityContext().GetNamespaceOptions().GetUsernsOptions(); c.UnprivilegedICMP && (u == nil || u.GetMode() == runtimeapi.NamespaceMode_NODE) {
		defaults["net.ipv4.ping_group_range"] = "0 2147483647"
	}
	if len(defaults) == 0 {
		return sysctls
	}
	maps.Copy(defaults, sysctls)
	return defaults
}

func withSysctls(sysctls map[string]string) oci.SpecOpts {
	if len(sysctls) == 0 {
		return noop
	}
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		if s.Linux.Sysctl == nil {
			s.Linux.Sysctl = map[string]string{}
		}
		maps.Copy(s.Linux.Sysctl, sysctls)
		return nil
	}
}

func withUser(u specs.User) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		s.Process.User = u
		return nil
	}
}

// withSecurityProfiles applies AppArmor and seccomp, after capabilities:
// the default seccomp profile allows the syscalls the capabilities need.
// A privileged container has no seccomp profile, and AppArmor only if it
// names a profile.
func withSecurityProfiles(c *Container, h *Host) (oci.SpecOpts, error) {
	sc := c.Config.GetLinux().GetSecurityContext()
	var opts []oci.SpecOpts
	switch p := apparmorProfile(sc); p.GetProfileType() {
	case runtimeapi.SecurityProfile_RuntimeDefault:
		// Where the kernel has no AppArmor, there is nothing to confine
		// with, as with containerd's CRI; a privileged container is not
		// confined by default, but by a profile it names.
		if h.AppArmor && !sc.GetPrivileged() {
			opts = append(opts, oci.WithApparmorProfile(DefaultAppArmorProfile))
		}
	case runtimeapi.SecurityProfile_Localhost:
		if !h.AppArmor {
			return nil, errdefs.ErrFailedPrecondition.WithMessage("AppArmor profile " + p.GetLocalhostRef() + " requested, but this host's kernel has no AppArmor")
		}
		opts = append(opts, oci.WithApparmorProfile(strings.TrimPrefix(p.GetLocalhostRef(), "localhost/")))
	}
	if sc.GetPrivileged() {
		return oci.Compose(opts...), nil
	}
	switch p := seccompProfile(sc); p.GetProfileType() {
	case runtimeapi.SecurityProfile_RuntimeDefault:
		opts = append(opts, seccomp.WithDefaultProfile())
	case runtimeapi.SecurityProfile_Localhost:
		profile := &specs.LinuxSeccomp{}
		if err := jsonUnmarshal(c.SeccompProfile, profile); err != nil {
			return nil, errdefs.ErrInvalidArgument.WithMessage(fmt.Sprintf("seccomp profile %s: %v", p.GetLocalhostRef(), err))
		}
		opts = append(opts, func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
			s.Linux.Seccomp = profile
			return nil
		})
	}
	return oci.Compose(opts...), nil
}

// DefaultAppArmorProfile is the profile RuntimeDefault applies; DetectHost
// loads it.
const DefaultAppArmorProfile = "mine-default"

// apparmorProfile is the context's AppArmor profile; none at all means
// the runtime's default, as the CRI says.
func apparmorProfile(sc *runtimeapi.LinuxContainerSecurityContext) *runtimeapi.SecurityProfile {
	if p := sc.GetApparmor(); p != nil {
		return p
	}
	if s := sc.GetApparmorProfile(); s != "" {
		return legacyProfile(s)
	}
	return &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}
}

// seccompProfile is the context's seccomp profile; none at all means
// unconfined, as kubelet's default and containerd's CRI have it.
func seccompProfile(sc *runtimeapi.LinuxContainerSecurityContext) *runtimeapi.SecurityProfile {
	if p := sc.GetSeccomp(); p != nil {
		return p
	}
	return legacyProfile(sc.GetSeccompProfilePath())
}

// SeccompLocalhostRef is the path of a Localhost seccomp profile the
// context asks for, "" for none: the caller reads it.
func SeccompLocalhostRef(sc *runtimeapi.LinuxContainerSecurityContext) string {
	if sc.GetPrivileged() {
		return ""
	}
	if p := seccompProfile(sc); p.GetProfileType() == runtimeapi.SecurityProfile_Localhost {
		return p.GetLocalhostRef()
	}
	return ""
}

// legacyProfile reads the deprecated string form: "runtime/default",
// "docker/default", "unconfined", "localhost/<ref>" or "".
func legacyProfile(s string) *runtimeapi.SecurityProfile {
	switch {
	case s == "runtime/default" || s == "docker/default":
		return &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}
	case strings.HasPrefix(s, "localhost/"):
		return &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: strings.TrimPrefix(s, "localhost/")}
	}
	return &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Unconfined}
}

// withAnnotations: the request's annotations, less the keys only the
// runtime sets, then the CRI's own.
func withAnnotations(c *Container) oci.SpecOpts {
	a := map[string]string{}
	for k, v := range c.Config.GetAnnotations() {
		if !slices.ContainsFunc(reservedAnnotationPrefixes, func(p string) bool { return strings.HasPrefix(k, p) }) {
			a[k] = v
		}
	}
	md := c.Pod.Config.GetMetadata()
	maps.Copy(a, map[string]string{
		AnnotationSandboxID:     c.Pod.ID,
		AnnotationContainerType: "container",
		AnnotationContainerName: c.Config.GetMetadata().GetName(),
		AnnotationImageName:     c.Image.Name,
		AnnotationPodName:       md.GetName(),
		AnnotationPodNamespace:  md.GetNamespace(),
		AnnotationPodUID:        md.GetUid(),
	})
	return oci.WithAnnotations(a)
}

// jsonUnmarshal decodes a profile; an empty one is an error.
func jsonUnmarshal(data []byte, v any) error {
	if len(data) == 0 {
		return fmt.Errorf("empty profile")
	}
	return json.Unmarshal(data, v)
}

func noop(context.Context, oci.Client, *containers.Container, *oci.Spec) error { return nil }

// uidString formats a CRI user ID.
func uidString(v *runtimeapi.Int64Value) string { return strconv.FormatInt(v.GetValue(), 10) }
