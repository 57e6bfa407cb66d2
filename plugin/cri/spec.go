package cri

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/contrib/apparmor"
	"github.com/containerd/containerd/v2/contrib/seccomp"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/mine-runtime/mine/plugin/podns"
)

// Annotations every container's OCI spec carries. The sandbox ID is also
// what puts all of a pod's containers in one shim.
const (
	annotationSandboxID     = "io.kubernetes.cri.sandbox-id"
	annotationContainerType = "io.kubernetes.cri.container-type"
	annotationContainerName = "io.kubernetes.cri.container-name"
	annotationImageName     = "io.kubernetes.cri.image-name"
	annotationPodName       = "io.kubernetes.cri.sandbox-name"
	annotationPodNamespace  = "io.kubernetes.cri.sandbox-namespace"
	annotationPodUID        = "io.kubernetes.cri.sandbox-uid"
)

// specOpts builds a container's OCI spec from its image and its CRI
// config, inside its pod.
func (s *Service) specOpts(ctx context.Context, id string, cfg *runtimeapi.ContainerConfig, sb *sandboxMeta, image containerd.Image, imgCfg *ocispec.Image) ([]oci.SpecOpts, error) {
	ic := imgCfg.Config
	opts := []oci.SpecOpts{
		oci.WithDefaultUnixDevices,
		withProcessArgs(cfg, ic),
		oci.WithEnv(ic.Env),
	}
	if cwd := cfg.GetWorkingDir(); cwd != "" {
		opts = append(opts, oci.WithProcessCwd(cwd))
	} else if ic.WorkingDir != "" {
		opts = append(opts, oci.WithProcessCwd(ic.WorkingDir))
	}
	var env []string
	for _, kv := range cfg.GetEnvs() {
		env = append(env, kv.Key+"="+string(kv.Value))
	}
	opts = append(opts, oci.WithEnv(env))
	if cfg.GetTty() {
		opts = append(opts, oci.WithTTY)
	}

	sc := cfg.GetLinux().GetSecurityContext()
	state := s.sandboxStateDir(sb.ID)
	mounts, err := containerMounts(cfg, state, sb, sc)
	if err != nil {
		return nil, err
	}
	opts = append(opts, oci.WithoutMounts("/dev/shm"), oci.WithMounts(mounts), withRootfsPropagation(cfg.GetMounts()))

	opts = append(opts, withPodNamespaces(sb.Namespaces)...)
	switch sc.GetNamespaceOptions().GetPid() {
	case runtimeapi.NamespaceMode_POD:
		pidns, err := s.podPIDNamespace(ctx, sb)
		if err != nil {
			return nil, err
		}
		if pidns != "" {
			opts = append(opts, oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.PIDNamespace, Path: pidns}))
		}
	case runtimeapi.NamespaceMode_NODE:
		opts = append(opts, oci.WithHostNamespace(specs.PIDNamespace))
	case runtimeapi.NamespaceMode_TARGET:
		pidns, err := s.pidNamespaceOf(ctx, sc.GetNamespaceOptions().GetTargetId())
		if err != nil {
			return nil, err
		}
		opts = append(opts, oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.PIDNamespace, Path: pidns}))
	}

	secOpts, err := s.securityOpts(sc, imgCfg)
	if err != nil {
		return nil, err
	}
	opts = append(opts, secOpts...)
	if res := cfg.GetLinux().GetResources(); res != nil {
		opts = append(opts, s.withResources(res))
	}
	for _, d := range cfg.GetDevices() {
		opts = append(opts, oci.WithDevices(d.HostPath, d.ContainerPath, d.Permissions))
	}
	if sysctls := sb.config.GetLinux().GetSysctls(); len(sysctls) > 0 {
		opts = append(opts, withSysctls(sysctls))
	}
	opts = append(opts, oci.WithCgroup(cgroupsPath(sb.config.GetLinux().GetCgroupParent(), id, s.systemdCgroup(sb))))

	md := sb.config.GetMetadata()
	annotations := map[string]string{}
	for k, v := range cfg.GetAnnotations() {
		annotations[k] = v
	}
	for k, v := range map[string]string{
		annotationSandboxID:     sb.ID,
		annotationContainerType: "container",
		annotationContainerName: cfg.GetMetadata().GetName(),
		annotationImageName:     cfg.GetImage().GetImage(),
		annotationPodName:       md.GetName(),
		annotationPodNamespace:  md.GetNamespace(),
		annotationPodUID:        md.GetUid(),
	} {
		annotations[k] = v
	}
	opts = append(opts, oci.WithAnnotations(annotations))
	return opts, nil
}

// withPodNamespaces joins the pod's namespaces, pinned by RunPodSandbox,
// or the host's where the pod has none of its own.
func withPodNamespaces(paths podns.Paths) []oci.SpecOpts {
	var opts []oci.SpecOpts
	for typ, path := range map[specs.LinuxNamespaceType]string{
		specs.NetworkNamespace: paths.Net,
		specs.IPCNamespace:     paths.IPC,
		specs.UTSNamespace:     paths.UTS,
	} {
		if path == "" {
			opts = append(opts, oci.WithHostNamespace(typ))
		} else {
			opts = append(opts, oci.WithLinuxNamespace(specs.LinuxNamespace{Type: typ, Path: path}))
		}
	}
	return opts
}

// withProcessArgs follows the CRI's rules: command replaces the image's
// entrypoint, args replace its cmd.
func withProcessArgs(cfg *runtimeapi.ContainerConfig, ic ocispec.ImageConfig) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, sp *oci.Spec) error {
		var args []string
		switch {
		case len(cfg.GetCommand()) > 0:
			args = append(append(args, cfg.GetCommand()...), cfg.GetArgs()...)
		case len(cfg.GetArgs()) > 0:
			args = append(append(args, ic.Entrypoint...), cfg.GetArgs()...)
		default:
			args = append(append(args, ic.Entrypoint...), ic.Cmd...)
		}
		if len(args) == 0 {
			return errdefs.ErrInvalidArgument.WithMessage("no command: neither the container config nor the image names one")
		}
		sp.Process.Args = args
		return nil
	}
}

// containerMounts are the pod's files and the config's mounts.
func containerMounts(cfg *runtimeapi.ContainerConfig, state string, sb *sandboxMeta, sc *runtimeapi.LinuxContainerSecurityContext) ([]specs.Mount, error) {
	taken := map[string]bool{}
	for _, m := range cfg.GetMounts() {
		taken[filepath.Clean(m.ContainerPath)] = true
	}
	var out []specs.Mount
	ro := sc.GetReadonlyRootfs()
	for _, f := range []struct{ dst, src string }{
		{"/etc/hostname", filepath.Join(state, "hostname")},
		{"/etc/hosts", filepath.Join(state, "hosts")},
		{"/etc/resolv.conf", filepath.Join(state, "resolv.conf")},
	} {
		if taken[f.dst] {
			continue
		}
		opts := []string{"rbind", "rprivate"}
		if ro {
			opts = append(opts, "ro")
		}
		out = append(out, specs.Mount{Destination: f.dst, Type: "bind", Source: f.src, Options: opts})
	}
	if !taken["/dev/shm"] {
		src := "/dev/shm"
		if sb.Namespaces.IPC != "" {
			src = filepath.Join(state, "shm")
		}
		out = append(out, specs.Mount{Destination: "/dev/shm", Type: "bind", Source: src, Options: []string{"rbind", "rprivate"}})
	}
	for _, m := range cfg.GetMounts() {
		if m.ContainerPath == "" || m.HostPath == "" {
			return nil, errdefs.ErrInvalidArgument.WithMessage("a mount needs a host path and a container path")
		}
		src := m.HostPath
		if _, err := os.Stat(src); os.IsNotExist(err) {
			// As kubelet expects of hostPath volumes without a type.
			if err := os.MkdirAll(src, 0o755); err != nil {
				return nil, err
			}
		}
		if resolved, err := filepath.EvalSymlinks(src); err == nil {
			src = resolved
		}
		opts := []string{"rbind"}
		switch m.Propagation {
		case runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL:
			opts = append(opts, "rshared")
		case runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER:
			opts = append(opts, "rslave")
		default:
			opts = append(opts, "rprivate")
		}
		if m.Readonly {
			opts = append(opts, "ro")
		} else {
			opts = append(opts, "rw")
		}
		out = append(out, specs.Mount{Destination: m.ContainerPath, Type: "bind", Source: src, Options: opts})
	}
	return out, nil
}

// withRootfsPropagation makes the container's root propagate as its
// mounts need: a mount cannot propagate past a private root.
func withRootfsPropagation(mounts []*runtimeapi.Mount) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, sp *oci.Spec) error {
		for _, m := range mounts {
			switch m.Propagation {
			case runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL:
				sp.Linux.RootfsPropagation = "rshared"
			case runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER:
				if sp.Linux.RootfsPropagation != "rshared" {
					sp.Linux.RootfsPropagation = "rslave"
				}
			}
		}
		return nil
	}
}

// securityOpts applies the security context.
func (s *Service) securityOpts(sc *runtimeapi.LinuxContainerSecurityContext, imgCfg *ocispec.Image) ([]oci.SpecOpts, error) {
	var opts []oci.SpecOpts
	if sc.GetRunAsGroup() != nil && sc.GetRunAsUser() == nil && sc.GetRunAsUsername() == "" {
		return nil, errdefs.ErrInvalidArgument.WithMessage("run_as_group needs run_as_user or run_as_username")
	}
	// The user: from the context, else the image.
	switch {
	case sc.GetRunAsUser() != nil && sc.GetRunAsGroup() != nil:
		opts = append(opts, oci.WithUIDGID(uint32(sc.GetRunAsUser().GetValue()), uint32(sc.GetRunAsGroup().GetValue())))
	case sc.GetRunAsUser() != nil:
		opts = append(opts, oci.WithUserID(uint32(sc.GetRunAsUser().GetValue())))
	case sc.GetRunAsUsername() != "":
		opts = append(opts, oci.WithUsername(sc.GetRunAsUsername()))
	case imgCfg.Config.User != "":
		opts = append(opts, oci.WithUser(imgCfg.Config.User))
	default:
		opts = append(opts, oci.WithUserID(0))
	}
	user := imgCfg.Config.User
	if sc.GetRunAsUser() != nil {
		user = strconv.FormatInt(sc.GetRunAsUser().GetValue(), 10)
	} else if sc.GetRunAsUsername() != "" {
		user = sc.GetRunAsUsername()
	}
	if user != "" {
		opts = append(opts, oci.WithAdditionalGIDs(user))
	}
	if groups := sc.GetSupplementalGroups(); len(groups) > 0 {
		opts = append(opts, withSupplementalGroups(groups))
	}

	if sc.GetPrivileged() {
		opts = append(opts, oci.WithPrivileged, oci.WithAllDevicesAllowed, oci.WithHostDevices,
			oci.WithMaskedPaths(nil), oci.WithReadonlyPaths(nil), oci.WithWriteableSysfs, oci.WithWriteableCgroupfs)
	} else {
		if caps := sc.GetCapabilities(); caps != nil {
			opts = append(opts, withCapabilities(caps.AddCapabilities, caps.DropCapabilities))
		}
		if sc.GetMaskedPaths() != nil {
			opts = append(opts, oci.WithMaskedPaths(sc.GetMaskedPaths()))
		}
		if sc.GetReadonlyPaths() != nil {
			opts = append(opts, oci.WithReadonlyPaths(sc.GetReadonlyPaths()))
		}
		switch p := apparmorProfile(sc); p.GetProfileType() {
		case runtimeapi.SecurityProfile_RuntimeDefault:
			// Where the kernel has no AppArmor, the default is unconfined,
			// as with containerd's CRI.
			if apparmorEnabled() {
				opts = append(opts, apparmor.WithDefaultProfile(defaultAppArmorProfile))
			}
		case runtimeapi.SecurityProfile_Localhost:
			opts = append(opts, withLocalAppArmorProfile(p.GetLocalhostRef()))
		}
		switch p := seccompProfile(sc); p.GetProfileType() {
		case runtimeapi.SecurityProfile_RuntimeDefault:
			opts = append(opts, seccomp.WithDefaultProfile())
		case runtimeapi.SecurityProfile_Localhost:
			opts = append(opts, seccomp.WithProfile(p.GetLocalhostRef()))
		}
	}
	if sc.GetReadonlyRootfs() {
		opts = append(opts, oci.WithRootFSReadonly())
	}
	if sc.GetNoNewPrivs() {
		opts = append(opts, oci.WithNoNewPrivileges)
	}
	return opts, nil
}

// seccompProfile is the context's seccomp profile, from the profile or the
// deprecated path string; none at all means unconfined.
func seccompProfile(sc *runtimeapi.LinuxContainerSecurityContext) *runtimeapi.SecurityProfile {
	if p := sc.GetSeccomp(); p != nil {
		return p
	}
	return legacyProfile(sc.GetSeccompProfilePath())
}

func apparmorProfile(sc *runtimeapi.LinuxContainerSecurityContext) *runtimeapi.SecurityProfile {
	if p := sc.GetApparmor(); p != nil {
		return p
	}
	return legacyProfile(sc.GetApparmorProfile())
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

// defaultAppArmorProfile is loaded, once, for RuntimeDefault.
const defaultAppArmorProfile = "mine-default"

func apparmorEnabled() bool {
	data, err := os.ReadFile("/sys/module/apparmor/parameters/enabled")
	return err == nil && strings.TrimSpace(string(data)) == "Y"
}

// withLocalAppArmorProfile applies a profile loaded on the node; asking for
// one where the kernel has no AppArmor is an error, not a silent no-op.
func withLocalAppArmorProfile(name string) oci.SpecOpts {
	return func(ctx context.Context, client oci.Client, c *containers.Container, sp *oci.Spec) error {
		if !apparmorEnabled() {
			return errdefs.ErrFailedPrecondition.WithMessage("AppArmor profile " + name + " requested, but this host's kernel has no AppArmor")
		}
		return apparmor.WithProfile(strings.TrimPrefix(name, "localhost/"))(ctx, client, c, sp)
	}
}

// withCapabilities adds and drops capabilities over the default set;
// "ALL" stands for every capability.
func withCapabilities(add, drop []string) oci.SpecOpts {
	norm := func(cs []string) []string {
		var out []string
		for _, c := range cs {
			c = strings.ToUpper(c)
			if c != "ALL" && !strings.HasPrefix(c, "CAP_") {
				c = "CAP_" + c
			}
			out = append(out, c)
		}
		return out
	}
	add, drop = norm(add), norm(drop)
	return func(ctx context.Context, client oci.Client, c *containers.Container, sp *oci.Spec) error {
		for _, d := range drop {
			if d == "ALL" {
				if err := oci.WithCapabilities(nil)(ctx, client, c, sp); err != nil {
					return err
				}
				continue
			}
			if err := oci.WithDroppedCapabilities([]string{d})(ctx, client, c, sp); err != nil {
				return err
			}
		}
		for _, a := range add {
			if a == "ALL" {
				// Every capability the daemon holds: a container cannot be
				// given one its runtime lacks.
				if err := oci.WithAllCurrentCapabilities(ctx, client, c, sp); err != nil {
					return err
				}
				continue
			}
			if err := oci.WithAddedCapabilities([]string{a})(ctx, client, c, sp); err != nil {
				return err
			}
		}
		return nil
	}
}

func withSupplementalGroups(groups []int64) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, sp *oci.Spec) error {
		for _, g := range groups {
			sp.Process.User.AdditionalGids = append(sp.Process.User.AdditionalGids, uint32(g))
		}
		return nil
	}
}

func withSysctls(sysctls map[string]string) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, sp *oci.Spec) error {
		if sp.Linux.Sysctl == nil {
			sp.Linux.Sysctl = map[string]string{}
		}
		for k, v := range sysctls {
			sp.Linux.Sysctl[k] = v
		}
		return nil
	}
}

// withResources applies CPU, memory, hugepage and OOM settings; the OOM
// score is clamped to what the daemon may set.
func (s *Service) withResources(r *runtimeapi.LinuxContainerResources) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, sp *oci.Spec) error {
		sp.Linux.Resources = toOCIResources(r, sp.Linux.Resources)
		score := int(s.clampOOMScore(r.GetOomScoreAdj()))
		sp.Process.OOMScoreAdj = &score
		return nil
	}
}

func toOCIResources(r *runtimeapi.LinuxContainerResources, out *specs.LinuxResources) *specs.LinuxResources {
	if out == nil {
		out = &specs.LinuxResources{}
	}
	if out.CPU == nil {
		out.CPU = &specs.LinuxCPU{}
	}
	if out.Memory == nil {
		out.Memory = &specs.LinuxMemory{}
	}
	if v := r.GetCpuShares(); v > 0 {
		shares := uint64(v)
		out.CPU.Shares = &shares
	}
	if v := r.GetCpuQuota(); v != 0 {
		out.CPU.Quota = &v
	}
	if v := r.GetCpuPeriod(); v > 0 {
		period := uint64(v)
		out.CPU.Period = &period
	}
	if v := r.GetCpusetCpus(); v != "" {
		out.CPU.Cpus = v
	}
	if v := r.GetCpusetMems(); v != "" {
		out.CPU.Mems = v
	}
	if v := r.GetMemoryLimitInBytes(); v > 0 {
		out.Memory.Limit = &v
	}
	if v := r.GetMemorySwapLimitInBytes(); v > 0 {
		out.Memory.Swap = &v
	}
	if limits := r.GetHugepageLimits(); len(limits) > 0 {
		out.HugepageLimits = nil // replaced, not added to: updates repeat them
		for _, h := range limits {
			out.HugepageLimits = append(out.HugepageLimits, specs.LinuxHugepageLimit{Pagesize: h.PageSize, Limit: h.Limit})
		}
	}
	if len(r.GetUnified()) > 0 {
		out.Unified = r.GetUnified()
	}
	return out
}

// cgroupsPath places a container under its pod's cgroup parent.
func cgroupsPath(parent, id string, systemd bool) string {
	if systemd {
		if parent == "" {
			parent = "system.slice"
		}
		return parent + ":cri-mine:" + id
	}
	if parent == "" {
		parent = "/k8s.io"
	}
	return filepath.Join(parent, id)
}

func (s *Service) systemdCgroup(sb *sandboxMeta) bool {
	_, rt, err := s.runtimeFor(sb.RuntimeHandler)
	return err == nil && rt.Options.SystemdCgroup
}

// pidNamespaceOf is the PID namespace of a running container, for
// NamespaceMode_TARGET.
func (s *Service) pidNamespaceOf(ctx context.Context, target string) (string, error) {
	id, err := s.names.resolve(kindContainer, target)
	if err != nil {
		return "", err
	}
	c, err := s.client.LoadContainer(ctx, id)
	if err != nil {
		return "", err
	}
	task, err := c.Task(ctx, nil)
	if err != nil {
		return "", errdefs.ErrFailedPrecondition.WithMessage("target container " + id + " is not running")
	}
	return fmt.Sprintf("/proc/%d/ns/pid", task.Pid()), nil
}
