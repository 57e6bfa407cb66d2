package spec

import (
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/mine-runtime/mine/plugin/podns"
)

// kubeletContainer is a container config as kubelet v1.37 sends it for a
// plain pod on a node with 2 MiB and 1 GiB huge pages: every field kubelet
// always fills, nothing the pod did not ask for.
func kubeletContainer() *runtimeapi.ContainerConfig {
	return &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "app"},
		Image:    &runtimeapi.ImageSpec{Image: "docker.io/library/busybox:latest", UserSpecifiedImage: "busybox"},
		Command:  []string{"sleep", "3600"},
		Envs:     []*runtimeapi.KeyValue{{Key: "KUBERNETES_SERVICE_HOST", Value: []byte("10.96.0.1")}},
		Mounts: []*runtimeapi.Mount{
			{ContainerPath: "/dev/termination-log", HostPath: "/var/lib/kubelet/pods/uid/containers/app/abcd"},
		},
		Annotations: map[string]string{"io.kubernetes.container.hash": "1234"},
		LogPath:     "app/0.log",
		Linux: &runtimeapi.LinuxContainerConfig{
			Resources: &runtimeapi.LinuxContainerResources{
				CpuPeriod:   100000,
				CpuShares:   2,
				OomScoreAdj: 1000,
				HugepageLimits: []*runtimeapi.HugepageLimit{
					{PageSize: "2MB", Limit: 0},
					{PageSize: "1GB", Limit: 0},
				},
			},
			SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_POD, Pid: runtimeapi.NamespaceMode_CONTAINER, Ipc: runtimeapi.NamespaceMode_POD},
				MaskedPaths:      []string{"/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/sys/firmware"},
				ReadonlyPaths:    []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"},
				Seccomp:          &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Unconfined},
			},
		},
	}
}

func kubeletPod() *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: "web", Namespace: "default", Uid: "uid"},
		Hostname: "web",
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent: "/kubepods/besteffort/poduid",
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_POD, Pid: runtimeapi.NamespaceMode_CONTAINER, Ipc: runtimeapi.NamespaceMode_POD},
			},
		},
	}
}

// input is a container of the kubelet-shaped config in a pod with pinned
// namespaces, from an image with a root user in group wheel.
func input() *Container {
	cfg := kubeletContainer()
	hostPaths := map[string]string{}
	for _, m := range cfg.Mounts {
		hostPaths[m.HostPath] = m.HostPath
	}
	return &Container{
		ID:     "c1",
		Config: cfg,
		Image: Image{
			Name: "docker.io/library/busybox:latest",
			Config: ocispec.ImageConfig{
				Env: []string{"PATH=/image/bin:/bin", "IMAGE_ONLY=1"},
				Cmd: []string{"sh"},
			},
			Passwd: []byte("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"),
			Group:  []byte("root:x:0:\nwheel:x:10:root\napp:x:1000:\ndev:x:2000:app\nnogroup:x:65534:\n"),
		},
		Pod: Pod{
			ID:         "pod1",
			Config:     kubeletPod(),
			Hostname:   "web",
			Namespaces: podns.Paths{Net: "/run/p/ns/net", IPC: "/run/p/ns/ipc", UTS: "/run/p/ns/uts"},
			StateDir:   "/run/p",
		},
		HostPaths: hostPaths,
	}
}

// v1Node is this machine: cgroup v1 controllers, hugetlb only in the
// unified hierarchy, swap accounting, no AppArmor, no CAP_SYS_RESOURCE.
func v1Node() *Host {
	return &Host{
		Controllers:    map[string]bool{"cpu": true, "cpuacct": true, "cpuset": true, "memory": true, "pids": true, "devices": true},
		Swap:           true,
		Capabilities:   []string{"CAP_CHOWN", "CAP_KILL", "CAP_NET_ADMIN", "CAP_SYS_ADMIN", "CAP_SYS_TIME"},
		MinOOMScoreAdj: -999,
	}
}

func v2Node() *Host {
	h := v1Node()
	h.CgroupV2 = true
	h.Controllers["hugetlb"] = true
	return h
}

func generate(t *testing.T, c *Container, h *Host) *specs.Spec {
	t.Helper()
	s, err := Generate(c, h)
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	return s
}

func mountAt(s *specs.Spec, dst string) *specs.Mount {
	for i := range s.Mounts {
		if s.Mounts[i].Destination == dst {
			return &s.Mounts[i]
		}
	}
	return nil
}

func mountIndex(s *specs.Spec, dst string) int {
	return slices.IndexFunc(s.Mounts, func(m specs.Mount) bool { return m.Destination == dst })
}

func env(s *specs.Spec, key string) (string, bool) {
	for _, kv := range s.Process.Env {
		if k, v, _ := strings.Cut(kv, "="); k == key {
			return v, true
		}
	}
	return "", false
}

func hasNamespace(s *specs.Spec, typ specs.LinuxNamespaceType) (specs.LinuxNamespace, bool) {
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == typ {
			return ns, true
		}
	}
	return specs.LinuxNamespace{}, false
}

func TestSpec(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(c *Container, h *Host)
		check  func(t *testing.T, s *specs.Spec)
	}{
		{"devices: runc's defaults and no more, not the host console", nil, func(t *testing.T, s *specs.Spec) {
			if len(s.Linux.Devices) != 0 {
				t.Errorf("devices = %+v, want none beyond runc's", s.Linux.Devices)
			}
			for _, r := range s.Linux.Resources.Devices {
				if r.Allow {
					t.Errorf("device rule %+v allows more than runc's defaults", r)
				}
			}
		}},
		{"no no_new_privs unless asked, no rlimits, the image's /run", nil, func(t *testing.T, s *specs.Spec) {
			if s.Process.NoNewPrivileges {
				t.Error("no_new_privs set although allowPrivilegeEscalation is not false")
			}
			if len(s.Process.Rlimits) != 0 {
				t.Errorf("rlimits = %+v, want none (containerd's CRI sets none)", s.Process.Rlimits)
			}
			if m := mountAt(s, "/run"); m != nil {
				t.Errorf("a %s is mounted on /run: the image's /run is hidden", m.Type)
			}
		}},
		{"low ports and ping for pods with their own network, as containerd 2.x", func(c *Container, _ *Host) {
			c.UnprivilegedPorts, c.UnprivilegedICMP = true, true
			c.Pod.Config.Linux.Sysctls = map[string]string{"net.ipv4.ping_group_range": "1 1", "kernel.shm_rmid_forced": "1"}
		}, func(t *testing.T, s *specs.Spec) {
			want := map[string]string{"net.ipv4.ip_unprivileged_port_start": "0", "net.ipv4.ping_group_range": "1 1", "kernel.shm_rmid_forced": "1"}
			if !maps.Equal(s.Linux.Sysctl, want) {
				t.Errorf("sysctls = %v, want %v (the pod's own value wins)", s.Linux.Sysctl, want)
			}
		}},
		{"no network sysctls for host-network pods", func(c *Container, _ *Host) {
			c.UnprivilegedPorts, c.UnprivilegedICMP = true, true
			c.Pod.Config.Linux.SecurityContext.NamespaceOptions.Network = runtimeapi.NamespaceMode_NODE
			c.Config.Linux.SecurityContext.NamespaceOptions.Network = runtimeapi.NamespaceMode_NODE
			c.Pod.Namespaces.Net = ""
		}, func(t *testing.T, s *specs.Spec) {
			if len(s.Linux.Sysctl) != 0 {
				t.Errorf("sysctls = %v on the host's network namespace", s.Linux.Sysctl)
			}
		}},
		{"no_new_privs when allowPrivilegeEscalation is false", func(c *Container, _ *Host) {
			c.Config.Linux.SecurityContext.NoNewPrivs = true
		}, func(t *testing.T, s *specs.Spec) {
			if !s.Process.NoNewPrivileges {
				t.Error("no_new_privs not set")
			}
		}},
		{"hugepage limits left out without a hugetlb controller (cgroup v1 hybrid)", nil, func(t *testing.T, s *specs.Spec) {
			if len(s.Linux.Resources.HugepageLimits) != 0 {
				t.Errorf("hugepage limits %+v on a node without hugetlb", s.Linux.Resources.HugepageLimits)
			}
		}},
		{"hugepage limits kept where the controller exists (cgroup v2)", func(_ *Container, h *Host) {
			*h = *v2Node()
		}, func(t *testing.T, s *specs.Spec) {
			if len(s.Linux.Resources.HugepageLimits) != 2 {
				t.Errorf("hugepage limits = %+v, want both page sizes", s.Linux.Resources.HugepageLimits)
			}
		}},
		{"no CPU or memory limits without those controllers", func(c *Container, h *Host) {
			delete(h.Controllers, "cpu")
			delete(h.Controllers, "memory")
			c.Config.Linux.Resources.MemoryLimitInBytes = 64 << 20
		}, func(t *testing.T, s *specs.Spec) {
			if r := s.Linux.Resources; (r.CPU != nil && r.CPU.Shares != nil) || (r.Memory != nil && r.Memory.Limit != nil) {
				t.Errorf("resources %+v set for missing controllers", r)
			}
		}},
		{"swap limited to the memory limit, as containerd's CRI", func(c *Container, _ *Host) {
			c.Config.Linux.Resources.MemoryLimitInBytes = 64 << 20
		}, func(t *testing.T, s *specs.Spec) {
			m := s.Linux.Resources.Memory
			if m.Limit == nil || *m.Limit != 64<<20 || m.Swap == nil || *m.Swap != 64<<20 {
				t.Errorf("memory = %+v, want limit and swap 64 MiB", m)
			}
		}},
		{"no swap limit where swap is not accounted", func(c *Container, h *Host) {
			h.Swap = false
			c.Config.Linux.Resources.MemoryLimitInBytes = 64 << 20
		}, func(t *testing.T, s *specs.Spec) {
			if s.Linux.Resources.Memory.Swap != nil {
				t.Errorf("swap = %d on a node without swap accounting", *s.Linux.Resources.Memory.Swap)
			}
		}},
		{"unified resources only on cgroup v2", func(c *Container, _ *Host) {
			c.Config.Linux.Resources.Unified = map[string]string{"memory.high": "1000000"}
		}, func(t *testing.T, s *specs.Spec) {
			if len(s.Linux.Resources.Unified) != 0 {
				t.Errorf("unified = %v on cgroup v1", s.Linux.Resources.Unified)
			}
		}},
		{"mounts: a parent before its child, whatever the request's order", func(c *Container, _ *Host) {
			c.Config.Mounts = append(c.Config.Mounts,
				&runtimeapi.Mount{ContainerPath: "/data/a/b", HostPath: "/srv/b"},
				&runtimeapi.Mount{ContainerPath: "/data/a", HostPath: "/srv/a"})
			c.HostPaths["/srv/a"], c.HostPaths["/srv/b"] = "/srv/a", "/srv/b"
		}, func(t *testing.T, s *specs.Spec) {
			parent, child := mountIndex(s, "/data/a"), mountIndex(s, "/data/a/b")
			if parent < 0 || child < 0 || parent > child {
				t.Errorf("/data/a at %d, /data/a/b at %d: the child would be hidden", parent, child)
			}
		}},
		{"a requested /etc/hosts replaces the pod's", func(c *Container, _ *Host) {
			c.Config.Mounts = append(c.Config.Mounts, &runtimeapi.Mount{ContainerPath: "/etc/hosts", HostPath: "/var/lib/kubelet/pods/uid/etc-hosts"})
			c.HostPaths["/var/lib/kubelet/pods/uid/etc-hosts"] = "/var/lib/kubelet/pods/uid/etc-hosts"
		}, func(t *testing.T, s *specs.Spec) {
			n := 0
			for _, m := range s.Mounts {
				if m.Destination == "/etc/hosts" {
					n++
					if m.Source != "/var/lib/kubelet/pods/uid/etc-hosts" {
						t.Errorf("/etc/hosts from %s, want kubelet's file", m.Source)
					}
				}
			}
			if n != 1 {
				t.Errorf("%d mounts on /etc/hosts, want 1", n)
			}
		}},
		{"a requested /dev replaces every default mount below it", func(c *Container, _ *Host) {
			c.Config.Mounts = append(c.Config.Mounts, &runtimeapi.Mount{ContainerPath: "/dev", HostPath: "/dev"})
			c.HostPaths["/dev"] = "/dev"
		}, func(t *testing.T, s *specs.Spec) {
			for _, m := range s.Mounts {
				if strings.HasPrefix(m.Destination, "/dev/") && m.Destination != "/dev/termination-log" && m.Destination != "/dev/shm" {
					t.Errorf("default mount %s kept under a requested /dev", m.Destination)
				}
				if m.Destination == "/dev" && m.Type != "bind" {
					t.Errorf("default /dev (%s) kept", m.Type)
				}
			}
		}},
		{"pod files and /dev/shm from the pod", nil, func(t *testing.T, s *specs.Spec) {
			for dst, src := range map[string]string{"/etc/hostname": "/run/p/hostname", "/etc/hosts": "/run/p/hosts", "/etc/resolv.conf": "/run/p/resolv.conf", "/dev/shm": "/run/p/shm"} {
				if m := mountAt(s, dst); m == nil || m.Source != src {
					t.Errorf("%s: %+v, want a bind of %s", dst, m, src)
				}
			}
		}},
		{"/sys/fs/cgroup read-only, no cgroup namespace on v1", nil, func(t *testing.T, s *specs.Spec) {
			m := mountAt(s, "/sys/fs/cgroup")
			if m == nil || m.Type != "cgroup" || !slices.Contains(m.Options, "ro") {
				t.Errorf("/sys/fs/cgroup = %+v, want a read-only cgroup mount", m)
			}
			if _, ok := hasNamespace(s, specs.CgroupNamespace); ok {
				t.Error("cgroup namespace on cgroup v1")
			}
		}},
		{"a cgroup namespace on v2", func(_ *Container, h *Host) { *h = *v2Node() }, func(t *testing.T, s *specs.Spec) {
			if _, ok := hasNamespace(s, specs.CgroupNamespace); !ok {
				t.Error("no cgroup namespace on cgroup v2")
			}
		}},
		{"privileged: writable /sys/fs/cgroup, every capability, every device, no cgroup namespace", func(c *Container, h *Host) {
			*h = *v2Node()
			h.PrivilegedDevices = []specs.LinuxDevice{{Path: "/dev/sda", Type: "b", Major: 8}}
			c.Pod.Config.Linux.SecurityContext.Privileged = true
			c.Config.Linux.SecurityContext.Privileged = true
		}, func(t *testing.T, s *specs.Spec) {
			if m := mountAt(s, "/sys/fs/cgroup"); m == nil || slices.Contains(m.Options, "ro") {
				t.Errorf("/sys/fs/cgroup = %+v, want writable", m)
			}
			if _, ok := hasNamespace(s, specs.CgroupNamespace); ok {
				t.Error("cgroup namespace for a privileged container")
			}
			if !slices.Contains(s.Process.Capabilities.Bounding, "CAP_SYS_TIME") {
				t.Errorf("capabilities %v, want all the daemon's", s.Process.Capabilities.Bounding)
			}
			if len(s.Linux.Devices) != 1 || len(s.Linux.MaskedPaths) != 0 {
				t.Errorf("devices %v, masked %v", s.Linux.Devices, s.Linux.MaskedPaths)
			}
		}},
		{"capabilities: ALL added, then a drop wins", func(c *Container, _ *Host) {
			c.Config.Linux.SecurityContext.Capabilities = &runtimeapi.Capability{AddCapabilities: []string{"ALL"}, DropCapabilities: []string{"SYS_ADMIN"}}
		}, func(t *testing.T, s *specs.Spec) {
			caps := s.Process.Capabilities
			if slices.Contains(caps.Bounding, "CAP_SYS_ADMIN") || slices.Contains(caps.Effective, "CAP_SYS_ADMIN") {
				t.Errorf("CAP_SYS_ADMIN kept: %v", caps.Bounding)
			}
			if !slices.Contains(caps.Bounding, "CAP_NET_ADMIN") {
				t.Errorf("ALL did not add CAP_NET_ADMIN: %v", caps.Bounding)
			}
		}},
		{"capabilities: the same one added and dropped is dropped", func(c *Container, _ *Host) {
			c.Config.Linux.SecurityContext.Capabilities = &runtimeapi.Capability{AddCapabilities: []string{"NET_ADMIN"}, DropCapabilities: []string{"NET_ADMIN"}}
		}, func(t *testing.T, s *specs.Spec) {
			if slices.Contains(s.Process.Capabilities.Bounding, "CAP_NET_ADMIN") {
				t.Errorf("CAP_NET_ADMIN kept: %v", s.Process.Capabilities.Bounding)
			}
		}},
		{"no ambient capabilities", func(c *Container, _ *Host) {
			c.Config.Linux.SecurityContext.Capabilities = &runtimeapi.Capability{AddCapabilities: []string{"NET_ADMIN"}}
		}, func(t *testing.T, s *specs.Spec) {
			if len(s.Process.Capabilities.Ambient) != 0 {
				t.Errorf("ambient = %v", s.Process.Capabilities.Ambient)
			}
		}},
		{"the image's default user gets its groups from /etc/group", nil, func(t *testing.T, s *specs.Spec) {
			u := s.Process.User
			if u.UID != 0 || u.GID != 0 || !slices.Equal(u.AdditionalGids, []uint32{0, 10}) {
				t.Errorf("user = %+v, want 0:0 groups [0 10] (root, wheel)", u)
			}
		}},
		{"run_as_username with run_as_group: the group given wins", func(c *Container, _ *Host) {
			c.Config.Linux.SecurityContext.RunAsUsername = "app"
			c.Config.Linux.SecurityContext.RunAsGroup = &runtimeapi.Int64Value{Value: 3000}
		}, func(t *testing.T, s *specs.Spec) {
			u := s.Process.User
			if u.UID != 1000 || u.GID != 3000 || !slices.Equal(u.AdditionalGids, []uint32{2000, 3000}) {
				t.Errorf("user = %+v, want 1000:3000 groups [2000 3000]", u)
			}
		}},
		{"run_as_user with supplemental groups (fsGroup)", func(c *Container, _ *Host) {
			c.Config.Linux.SecurityContext.RunAsUser = &runtimeapi.Int64Value{Value: 1000}
			c.Config.Linux.SecurityContext.SupplementalGroups = []int64{4000, 5000}
		}, func(t *testing.T, s *specs.Spec) {
			u := s.Process.User
			if u.UID != 1000 || u.GID != 1000 || !slices.Equal(u.AdditionalGids, []uint32{1000, 2000, 4000, 5000}) {
				t.Errorf("user = %+v, want 1000:1000 groups [1000 2000 4000 5000]", u)
			}
		}},
		{"a uid the image does not know gets gid 0", func(c *Container, _ *Host) {
			c.Config.Linux.SecurityContext.RunAsUser = &runtimeapi.Int64Value{Value: 4242}
		}, func(t *testing.T, s *specs.Spec) {
			if u := s.Process.User; u.UID != 4242 || u.GID != 0 {
				t.Errorf("user = %+v, want 4242:0", u)
			}
		}},
		{"Strict supplemental groups: the primary group and the context's, not /etc/group's", func(c *Container, _ *Host) {
			c.Config.Linux.SecurityContext.RunAsUser = &runtimeapi.Int64Value{Value: 1000}
			c.Config.Linux.SecurityContext.SupplementalGroups = []int64{4000}
			c.Config.Linux.SecurityContext.SupplementalGroupsPolicy = runtimeapi.SupplementalGroupsPolicy_Strict
		}, func(t *testing.T, s *specs.Spec) {
			if u := s.Process.User; !slices.Equal(u.AdditionalGids, []uint32{1000, 4000}) {
				t.Errorf("groups = %v, want [1000 4000] (without dev's 2000)", u.AdditionalGids)
			}
		}},
		{"AppArmor unset: the runtime default where the kernel has AppArmor", func(_ *Container, h *Host) {
			h.AppArmor = true
		}, func(t *testing.T, s *specs.Spec) {
			if s.Process.ApparmorProfile != DefaultAppArmorProfile {
				t.Errorf("AppArmor profile %q, want %q", s.Process.ApparmorProfile, DefaultAppArmorProfile)
			}
		}},
		{"AppArmor unconfined when asked", func(c *Container, h *Host) {
			h.AppArmor = true
			c.Config.Linux.SecurityContext.Apparmor = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Unconfined}
		}, func(t *testing.T, s *specs.Spec) {
			if s.Process.ApparmorProfile != "" {
				t.Errorf("AppArmor profile %q, want none", s.Process.ApparmorProfile)
			}
		}},
		{"seccomp RuntimeDefault", func(c *Container, _ *Host) {
			c.Config.Linux.SecurityContext.Seccomp = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}
		}, func(t *testing.T, s *specs.Spec) {
			if s.Linux.Seccomp == nil || len(s.Linux.Seccomp.Syscalls) == 0 {
				t.Error("no default seccomp profile")
			}
		}},
		{"seccomp Unconfined, as kubelet sends by default", nil, func(t *testing.T, s *specs.Spec) {
			if s.Linux.Seccomp != nil {
				t.Error("a seccomp profile nobody asked for")
			}
		}},
		{"HOSTNAME, the image's PATH and env, the request's env over them", func(c *Container, _ *Host) {
			c.Config.Envs = append(c.Config.Envs, &runtimeapi.KeyValue{Key: "IMAGE_ONLY", Value: []byte("2")})
		}, func(t *testing.T, s *specs.Spec) {
			for k, want := range map[string]string{"HOSTNAME": "web", "PATH": "/image/bin:/bin", "IMAGE_ONLY": "2", "KUBERNETES_SERVICE_HOST": "10.96.0.1"} {
				if v, _ := env(s, k); v != want {
					t.Errorf("%s=%q, want %q", k, v, want)
				}
			}
		}},
		{"a default PATH when the image has none", func(c *Container, _ *Host) {
			c.Image.Config.Env = nil
		}, func(t *testing.T, s *specs.Spec) {
			if v, _ := env(s, "PATH"); !strings.Contains(v, "/usr/bin") {
				t.Errorf("PATH=%q, want a default one", v)
			}
		}},
		{"oom_score_adj 0 without resources, not the shim's", func(c *Container, h *Host) {
			c.Config.Linux.Resources = nil
			h.MinOOMScoreAdj = -999
		}, func(t *testing.T, s *specs.Spec) {
			if s.Process.OOMScoreAdj == nil || *s.Process.OOMScoreAdj != 0 {
				t.Errorf("oom_score_adj = %v, want 0", s.Process.OOMScoreAdj)
			}
		}},
		{"oom_score_adj raised to what the daemon may set", func(c *Container, h *Host) {
			c.Config.Linux.Resources.OomScoreAdj = -997
			h.MinOOMScoreAdj = 0
		}, func(t *testing.T, s *specs.Spec) {
			if *s.Process.OOMScoreAdj != 0 {
				t.Errorf("oom_score_adj = %d, want 0 (the floor)", *s.Process.OOMScoreAdj)
			}
		}},
		{"the pod's namespaces, a PID namespace of its own", nil, func(t *testing.T, s *specs.Spec) {
			for typ, path := range map[specs.LinuxNamespaceType]string{specs.NetworkNamespace: "/run/p/ns/net", specs.IPCNamespace: "/run/p/ns/ipc", specs.UTSNamespace: "/run/p/ns/uts", specs.PIDNamespace: ""} {
				if ns, ok := hasNamespace(s, typ); !ok || ns.Path != path {
					t.Errorf("%s namespace %+v, want %q", typ, ns, path)
				}
			}
		}},
		{"the pod's pinned PID namespace", func(c *Container, _ *Host) {
			c.Pod.Namespaces.PID = "/run/p/ns/pid"
			c.Config.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_POD
		}, func(t *testing.T, s *specs.Spec) {
			if ns, _ := hasNamespace(s, specs.PIDNamespace); ns.Path != "/run/p/ns/pid" {
				t.Errorf("PID namespace %q, want the pod's pinned one", ns.Path)
			}
		}},
		{"host network: the host's network and UTS namespaces", func(c *Container, _ *Host) {
			c.Pod.Namespaces.Net, c.Pod.Namespaces.UTS = "", ""
		}, func(t *testing.T, s *specs.Spec) {
			for _, typ := range []specs.LinuxNamespaceType{specs.NetworkNamespace, specs.UTSNamespace} {
				if _, ok := hasNamespace(s, typ); ok {
					t.Errorf("%s namespace of its own in a host-network pod", typ)
				}
			}
		}},
		{"a request's annotations cannot choose the shim group", func(c *Container, _ *Host) {
			c.Config.Annotations["io.containerd.mine.v2.group"] = "other-pod"
			c.Config.Annotations["io.kubernetes.cri.sandbox-id"] = "other-pod"
		}, func(t *testing.T, s *specs.Spec) {
			if _, ok := s.Annotations["io.containerd.mine.v2.group"]; ok {
				t.Error("the request set the shim group")
			}
			if s.Annotations[AnnotationSandboxID] != "pod1" || s.Annotations["io.kubernetes.container.hash"] != "1234" {
				t.Errorf("annotations = %v", s.Annotations)
			}
		}},
		{"cgroups path under the pod's parent", nil, func(t *testing.T, s *specs.Spec) {
			if s.Linux.CgroupsPath != "/kubepods/besteffort/poduid/c1" {
				t.Errorf("cgroups path %q", s.Linux.CgroupsPath)
			}
		}},
		{"read-only rootfs makes the pod files read-only, not /dev/shm", func(c *Container, _ *Host) {
			c.Config.Linux.SecurityContext.ReadonlyRootfs = true
		}, func(t *testing.T, s *specs.Spec) {
			if !s.Root.Readonly || !slices.Contains(mountAt(s, "/etc/hosts").Options, "ro") || slices.Contains(mountAt(s, "/dev/shm").Options, "ro") {
				t.Errorf("root ro %v, hosts %v, shm %v", s.Root.Readonly, mountAt(s, "/etc/hosts").Options, mountAt(s, "/dev/shm").Options)
			}
		}},
		{"recursive read-only mounts through runc's rro", func(c *Container, _ *Host) {
			c.RecursiveReadOnly = true
			c.Config.Mounts[0].Readonly, c.Config.Mounts[0].RecursiveReadOnly = true, true
		}, func(t *testing.T, s *specs.Spec) {
			if m := mountAt(s, "/dev/termination-log"); !slices.Contains(m.Options, "rro") {
				t.Errorf("options %v, want rro", m.Options)
			}
		}},
		{"mount propagation sets the root's", func(c *Container, _ *Host) {
			c.Config.Mounts = append(c.Config.Mounts, &runtimeapi.Mount{ContainerPath: "/mnt", HostPath: "/mnt", Propagation: runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER, Readonly: true})
			c.HostPaths["/mnt"] = "/mnt"
		}, func(t *testing.T, s *specs.Spec) {
			if m := mountAt(s, "/mnt"); !slices.Contains(m.Options, "rslave") || !slices.Contains(m.Options, "ro") || s.Linux.RootfsPropagation != "rslave" {
				t.Errorf("mount %v, root propagation %q", m.Options, s.Linux.RootfsPropagation)
			}
		}},
		{"masked and read-only paths are kubelet's", nil, func(t *testing.T, s *specs.Spec) {
			if !slices.Contains(s.Linux.MaskedPaths, "/proc/kcore") || !slices.Contains(s.Linux.ReadonlyPaths, "/proc/sys") {
				t.Errorf("masked %v, read-only %v", s.Linux.MaskedPaths, s.Linux.ReadonlyPaths)
			}
		}},
		{"ENTRYPOINT [\"\"] is no entrypoint", func(c *Container, _ *Host) {
			c.Image.Config.Entrypoint = []string{""}
			c.Config.Command = nil
		}, func(t *testing.T, s *specs.Spec) {
			if !slices.Equal(s.Process.Args, []string{"sh"}) {
				t.Errorf("args %q", s.Process.Args)
			}
		}},
		{"systemd: the last slice of kubelet's parent, as runc expands it", func(c *Container, _ *Host) {
			c.SystemdCgroup = true
			c.Pod.Config.Linux.CgroupParent = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-poduid.slice"
		}, func(t *testing.T, s *specs.Spec) {
			if s.Linux.CgroupsPath != "kubepods-burstable-poduid.slice:cri-mine:c1" {
				t.Errorf("cgroups path %q", s.Linux.CgroupsPath)
			}
		}},
		{"privileged on cgroup v2 keeps the host's cgroup2 mount options", func(c *Container, h *Host) {
			*h = *v2Node()
			h.CgroupMountOptions = []string{"nsdelegate", "memory_recursiveprot"}
			c.Pod.Config.Linux.SecurityContext.Privileged = true
			c.Config.Linux.SecurityContext.Privileged = true
		}, func(t *testing.T, s *specs.Spec) {
			if m := mountAt(s, "/sys/fs/cgroup"); !slices.Contains(m.Options, "nsdelegate") || !slices.Contains(m.Options, "memory_recursiveprot") {
				t.Errorf("options %v would clear the node's cgroup2 options", m.Options)
			}
		}},
		{"a privileged container keeps the AppArmor profile it names", func(c *Container, h *Host) {
			h.AppArmor = true
			c.Pod.Config.Linux.SecurityContext.Privileged = true
			c.Config.Linux.SecurityContext.Privileged = true
			c.Config.Linux.SecurityContext.Apparmor = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "localhost/strict"}
		}, func(t *testing.T, s *specs.Spec) {
			if s.Process.ApparmorProfile != "strict" || s.Linux.Seccomp != nil {
				t.Errorf("AppArmor %q, seccomp %v", s.Process.ApparmorProfile, s.Linux.Seccomp)
			}
		}},
		{"an lxcfs-style mount over /proc/meminfo is kept", func(c *Container, _ *Host) {
			c.Config.Mounts = append(c.Config.Mounts, &runtimeapi.Mount{ContainerPath: "/proc/meminfo", HostPath: "/var/lib/lxcfs/proc/meminfo"})
			c.HostPaths["/var/lib/lxcfs/proc/meminfo"] = "/var/lib/lxcfs/proc/meminfo"
		}, func(t *testing.T, s *specs.Spec) {
			if m := mountAt(s, "/proc/meminfo"); m == nil || mountIndex(s, "/proc/meminfo") < mountIndex(s, "/proc") {
				t.Errorf("/proc/meminfo mount %v, after /proc: %v", m, mountIndex(s, "/proc/meminfo") > mountIndex(s, "/proc"))
			}
		}},
		{"a file over /proc/sys/crypto/fips_enabled is kept, as runc allows it", func(c *Container, _ *Host) {
			c.Config.Mounts = append(c.Config.Mounts, &runtimeapi.Mount{ContainerPath: "/proc/sys/crypto/fips_enabled", HostPath: "/etc/fips"})
			c.HostPaths["/etc/fips"] = "/etc/fips"
		}, func(t *testing.T, s *specs.Spec) {
			if m := mountAt(s, "/proc/sys/crypto/fips_enabled"); m == nil {
				t.Error("no mount over /proc/sys/crypto/fips_enabled")
			}
		}},
		{"command replaces the entrypoint, args the cmd", func(c *Container, _ *Host) {
			c.Image.Config.Entrypoint = []string{"/entry"}
			c.Config.Command = nil
			c.Config.Args = []string{"x"}
		}, func(t *testing.T, s *specs.Spec) {
			if !slices.Equal(s.Process.Args, []string{"/entry", "x"}) {
				t.Errorf("args %v", s.Process.Args)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, h := input(), v1Node()
			if tc.change != nil {
				tc.change(c, h)
			}
			tc.check(t, generate(t, c, h))
		})
	}
}

func TestSpecRefuses(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(c *Container)
		want   error
	}{
		{"a privileged container in a pod that is not", func(c *Container) {
			c.Config.Linux.SecurityContext.Privileged = true
		}, errdefs.ErrInvalidArgument},
		{"run_as_group alone", func(c *Container) {
			c.Config.Linux.SecurityContext.RunAsGroup = &runtimeapi.Int64Value{Value: 1}
		}, errdefs.ErrInvalidArgument},
		{"a user name the image does not have", func(c *Container) {
			c.Config.Linux.SecurityContext.RunAsUsername = "ghost"
		}, errdefs.ErrFailedPrecondition},
		{"an image user the image does not have", func(c *Container) {
			c.Image.Config.User = "ghost"
		}, errdefs.ErrFailedPrecondition},
		{"no command at all", func(c *Container) {
			c.Config.Command, c.Image.Config.Cmd = nil, nil
		}, errdefs.ErrInvalidArgument},
		{"PID mode TARGET without a running target", func(c *Container) {
			c.Config.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_TARGET
		}, errdefs.ErrInvalidArgument},
		{"recursive read-only on a writable mount", func(c *Container) {
			c.RecursiveReadOnly = true
			c.Config.Mounts[0].RecursiveReadOnly = true
		}, errdefs.ErrInvalidArgument},
		{"recursive read-only where the handler cannot", func(c *Container) {
			c.Config.Mounts[0].RecursiveReadOnly = true
			c.Config.Mounts[0].Readonly = true
		}, errdefs.ErrInvalidArgument},
		{"a plain directory mounted onto /proc", func(c *Container) {
			c.Config.Mounts[0].ContainerPath = "/proc"
		}, errdefs.ErrInvalidArgument},
		{"a mount onto a /proc file runc refuses", func(c *Container) {
			c.Config.Mounts[0].ContainerPath = "/proc/sysrq-trigger"
		}, errdefs.ErrInvalidArgument},
		{"a relative container path", func(c *Container) {
			c.Config.Mounts[0].ContainerPath = "data"
		}, errdefs.ErrInvalidArgument},
		{"a container user namespace in a pod without one", func(c *Container) {
			c.Config.Linux.SecurityContext.NamespaceOptions.UsernsOptions = &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_CONTAINER}
		}, errdefs.ErrInvalidArgument},
		{"mappings other than the pod's", func(c *Container) {
			m := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: 100000, Length: 65536}}
			c.Pod.Config.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: m, Gids: m}}}
			c.Pod.Namespaces.User = "/run/pod/ns/user"
			other := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: 200000, Length: 65536}}
			c.Config.Linux.SecurityContext.NamespaceOptions.UsernsOptions = &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: other, Gids: other}
		}, errdefs.ErrInvalidArgument},
		{"a Localhost AppArmor profile without AppArmor", func(c *Container) {
			c.Config.Linux.SecurityContext.Apparmor = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "p"}
		}, errdefs.ErrFailedPrecondition},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := input()
			tc.change(c)
			_, err := Generate(c, v1Node())
			if !errors.Is(err, tc.want) {
				t.Errorf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestResolveHostPaths(t *testing.T) {
	dir := t.TempDir()
	if err := os.Symlink(filepath.Join(dir, "real"), filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "real"), 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := ResolveHostPaths([]*runtimeapi.Mount{{HostPath: filepath.Join(dir, "link")}, {HostPath: filepath.Join(dir, "new/dir")}})
	if err != nil {
		t.Fatal(err)
	}
	if got[filepath.Join(dir, "link")] != filepath.Join(dir, "real") {
		t.Errorf("link resolved to %q", got[filepath.Join(dir, "link")])
	}
	if fi, err := os.Stat(filepath.Join(dir, "new/dir")); err != nil || !fi.IsDir() {
		t.Errorf("missing host path not made as a directory: %v", err)
	}
	// A path below a file cannot be made or resolved: an error, not the
	// unresolved path.
	if _, err := ResolveHostPaths([]*runtimeapi.Mount{{HostPath: filepath.Join(file, "below")}}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("err = %v, want InvalidArgument", err)
	}
}

func TestResolveHostPathsChecksPropagation(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("mounting needs root")
	}
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	sub := filepath.Join(dir, "sub")
	mount := func(p runtimeapi.MountPropagation) error {
		_, err := ResolveHostPaths([]*runtimeapi.Mount{{HostPath: sub, ContainerPath: "/x", Propagation: p}})
		return err
	}
	if err := unix.Mount("", dir, "", unix.MS_PRIVATE, ""); err != nil {
		t.Fatal(err)
	}
	for _, p := range []runtimeapi.MountPropagation{runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL, runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER} {
		if err := mount(p); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%s from a private mount: %v, want InvalidArgument", p, err)
		}
	}
	if err := mount(runtimeapi.MountPropagation_PROPAGATION_PRIVATE); err != nil {
		t.Errorf("private from a private mount: %v", err)
	}
	if err := unix.Mount("", dir, "", unix.MS_SHARED, ""); err != nil {
		t.Fatal(err)
	}
	for _, p := range []runtimeapi.MountPropagation{runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL, runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER} {
		if err := mount(p); err != nil {
			t.Errorf("%s from a shared mount: %v", p, err)
		}
	}
}

func TestSpecUserNamespace(t *testing.T) {
	c := input()
	s := generate(t, c, v1Node())
	if ns, ok := hasNamespace(s, specs.UserNamespace); ok || len(s.Linux.UIDMappings) > 0 {
		t.Errorf("a pod in the host's user namespace: %+v, %+v", ns, s.Linux.UIDMappings)
	}
	// POD is the mode's zero value: without mappings it asks for nothing.
	c.Config.Linux.SecurityContext.NamespaceOptions.UsernsOptions = &runtimeapi.UserNamespace{}
	generate(t, c, v1Node())

	m := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: 100000, Length: 65536}}
	c = input()
	c.Pod.Config.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: m, Gids: m}}}
	c.Pod.Namespaces.User = "/run/pod/ns/user"
	c.Config.Mounts[0].UidMappings, c.Config.Mounts[0].GidMappings = m, m
	s = generate(t, c, v1Node())
	want := []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}
	if ns, ok := hasNamespace(s, specs.UserNamespace); !ok || ns.Path != "/run/pod/ns/user" {
		t.Errorf("user namespace %+v, want the pod's pinned one", ns)
	}
	if !slices.Equal(s.Linux.UIDMappings, want) || !slices.Equal(s.Linux.GIDMappings, want) {
		t.Errorf("mappings %+v %+v, want %+v", s.Linux.UIDMappings, s.Linux.GIDMappings, want)
	}
	if vol := mountAt(s, c.Config.Mounts[0].ContainerPath); vol == nil || !slices.Equal(vol.UIDMappings, want) || !slices.Equal(vol.GIDMappings, want) {
		t.Errorf("the volume kubelet gave mappings is not idmapped: %+v", vol)
	}
	// The pod's files are idmapped too, as containerd mounts them; its
	// /dev/shm, a tmpfs anyone may write to, is not.
	for _, f := range []string{"/etc/hostname", "/etc/hosts", "/etc/resolv.conf"} {
		if m := mountAt(s, f); m == nil || !slices.Equal(m.UIDMappings, want) || !slices.Equal(m.GIDMappings, want) {
			t.Errorf("pod file %s is not idmapped: %+v", f, m)
		}
	}
	if shm := mountAt(s, "/dev/shm"); shm == nil || shm.UIDMappings != nil {
		t.Errorf("/dev/shm got mappings: %+v", shm)
	}
}
