package integration

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// A pod on the crun handler: crun 1.8.1 accepts only OCI spec 1.0.x, and
// the spec is written in the version crun says it takes (stock containerd
// writes 1.3.0, and crun refuses every pod with "unknown version
// specified"). On a host whose cgroup2 mount holds controllers beside v1
// ones (this machine's hybrid layout, with hugetlb in cgroup2), crun 1.8.1
// runs no container at all ("cgroups in hybrid mode not supported"): there
// the test checks that crun took the spec and failed on the host alone,
// leaving nothing; elsewhere, that the container runs, logs and execs.
func TestCRIPodOnCrun(t *testing.T) {
	c := newCRI(t)
	ctx := testContext(t)
	c.pullBusybox(t)
	pod := podConfig(t, "on-crun")
	resp, err := c.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: pod, RuntimeHandler: "crun"})
	if err != nil {
		t.Fatal(err)
	}
	podID := resp.PodSandboxId
	t.Cleanup(func() {
		c.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID})
		c.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID})
	})
	created, err := c.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, SandboxConfig: pod,
		Config: containerConfig("main", "echo on crun; exec sleep 600")})
	if err != nil {
		t.Fatal(err)
	}
	id := created.ContainerId
	st, err := c.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		RuntimeSpec struct {
			Version string `json:"ociVersion"`
		} `json:"runtimeSpec"`
	}
	if err := json.Unmarshal([]byte(st.Info["info"]), &info); err != nil {
		t.Fatal(err)
	}
	if info.RuntimeSpec.Version != "1.0.0" {
		t.Fatalf("spec version %q, want crun's 1.0.0", info.RuntimeSpec.Version)
	}

	_, err = c.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: id})
	if hybridWithV2Controllers() {
		if err == nil || !strings.Contains(err.Error(), "cgroups in hybrid mode not supported") || strings.Contains(err.Error(), "version") {
			t.Fatalf("StartContainer on crun, hybrid host: %v", err)
		}
		if _, err := c.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
			t.Fatal(err)
		}
		if out, _ := exec.Command("crun", "--root", "/run/containerd/runc/k8s.io", "list").CombinedOutput(); strings.Contains(string(out), id) {
			t.Fatalf("crun still lists the container:\n%s", out)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if out := mustExec(t, c, id, "echo", "exec on crun"); out != "exec on crun\n" {
		t.Fatalf("exec printed %q", out)
	}
	waitFor(t, "the container's log line", 10*time.Second, func() bool {
		data, _ := os.ReadFile(filepath.Join(pod.LogDirectory, "main.log"))
		return strings.Contains(string(data), " stdout F on crun\n")
	})
	// crun, not runc, knows the container.
	if out, err := exec.Command("crun", "--root", "/run/containerd/runc/k8s.io", "state", id).CombinedOutput(); err != nil {
		t.Fatalf("crun state: %v: %s", err, out)
	}
	if _, err := c.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 5}); err != nil {
		t.Fatal(err)
	}
}

// hybridWithV2Controllers tells whether the host mounts cgroup v1
// controllers and a cgroup2 hierarchy that holds controllers too.
func hybridWithV2Controllers() bool {
	data, err := os.ReadFile("/sys/fs/cgroup/unified/cgroup.controllers")
	return err == nil && strings.TrimSpace(string(data)) != ""
}

// User namespace modes no pod can have are InvalidArgument, and a pod of
// its own user namespace on a handler whose OCI runtime has no idmapped
// mounts (Debian's crun 1.8.1) FailedPrecondition; nothing is made for
// any of them. Status says which handlers can.
func TestCRIUserNamespacePodsRefused(t *testing.T) {
	c := newCRI(t)
	ctx := testContext(t)
	before, err := c.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	mapping := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: 100000, Length: 65536}}
	for _, tc := range []struct {
		userns  *runtimeapi.UserNamespace
		handler string
		code    codes.Code
	}{
		{&runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: mapping, Gids: mapping}, "crun", codes.FailedPrecondition},
		{&runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: append(mapping, mapping...), Gids: mapping}, "", codes.InvalidArgument},
		{&runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: []*runtimeapi.IDMapping{{ContainerId: 1, HostId: 100000, Length: 10}}, Gids: mapping}, "", codes.InvalidArgument},
		{&runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_CONTAINER}, "", codes.InvalidArgument},
		{&runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_TARGET}, "", codes.InvalidArgument},
	} {
		pod := podConfig(t, "userns")
		pod.Linux.SecurityContext.NamespaceOptions.UsernsOptions = tc.userns
		_, err := c.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: pod, RuntimeHandler: tc.handler})
		if status.Code(err) != tc.code {
			t.Errorf("user namespace %v on handler %q: %v, want %s", tc.userns, tc.handler, err, tc.code)
		}
	}
	after, err := c.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(after.Items) != len(before.Items) {
		t.Fatalf("refused pods were made: %d pods, %d before", len(after.Items), len(before.Items))
	}
	st, err := c.Status(ctx, &runtimeapi.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range st.RuntimeHandlers {
		if want := h.Name != "crun"; h.Features.GetUserNamespaces() != want {
			t.Errorf("handler %q: user namespaces %v, want %v", h.Name, h.Features.GetUserNamespaces(), want)
		}
	}
	node := podConfig(t, "userns-node")
	node.Linux.SecurityContext.NamespaceOptions.UsernsOptions = &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_NODE}
	c.runPod(t, node) // kubelet's hostUsers: true
}

// TestCRIUserNamespacePod runs pods as kubelet runs hostUsers: false: the
// containers' root is host ID 200000, their image files are theirs (an
// idmapped root file system), a volume kubelet gives mappings is idmapped,
// and the pod owns its network, hostname and, shared, its PID namespace.
func TestCRIUserNamespacePod(t *testing.T) {
	c := newCRI(t)
	c.pullBusybox(t)
	mapping := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: 200000, Length: 65536}}
	for _, pidMode := range []runtimeapi.NamespaceMode{runtimeapi.NamespaceMode_CONTAINER, runtimeapi.NamespaceMode_POD} {
		t.Run(pidMode.String(), func(t *testing.T) {
			pod := podConfig(t, "userns-pod")
			opts := pod.Linux.SecurityContext.NamespaceOptions
			opts.Pid = pidMode
			opts.UsernsOptions = &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: mapping, Gids: mapping}
			// A limit of the pod's own user namespace, as kubelet admits
			// user.* sysctls for hostUsers: false.
			pod.Linux.Sysctls = map[string]string{"user.max_user_namespaces": "7"}
			podID := c.runPod(t, pod)

			vol := t.TempDir() // the host's root owns it
			cfg := containerConfig("main", "sleep 1000")
			cfg.Linux.SecurityContext = &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: opts, SupplementalGroups: []int64{1234}}
			cfg.Mounts = []*runtimeapi.Mount{{ContainerPath: "/vol", HostPath: vol, UidMappings: mapping, GidMappings: mapping}}
			id := c.startContainer(t, podID, pod, cfg)

			if got := strings.Fields(mustExec(t, c, id, "cat", "/proc/self/uid_map")); strings.Join(got, " ") != "0 200000 65536" {
				t.Errorf("uid_map: %q", got)
			}
			if uid := hostUID(t, c.pid(t, id)); uid != "200000" {
				t.Errorf("the container's root is host UID %s, want 200000", uid)
			}
			// The image's files are root's in the container, and its root
			// file system writable by it.
			if got := mustExec(t, c, id, "sh", "-c", "stat -c %u /bin/busybox; touch /new && stat -c %u /new"); got != "0\n0\n" {
				t.Errorf("owners of an image file and a new file: %q", got)
			}
			if got := mustExec(t, c, id, "sh", "-c", "stat -c %u /vol; touch /vol/f"); got != "0\n" {
				t.Errorf("owner of the idmapped volume: %q", got)
			}
			var st syscall.Stat_t
			if err := syscall.Stat(filepath.Join(vol, "f"), &st); err != nil || st.Uid != 0 {
				t.Errorf("a file the container's root made in the volume is host UID %d (%v), want 0 through the idmapped mount", st.Uid, err)
			}
			// The pod's files are the container's root's, as its own
			// image's are, and it may change them.
			if got := mustExec(t, c, id, "sh", "-c", "stat -c %u /etc/hostname /etc/hosts /etc/resolv.conf; echo '# edited' >> /etc/resolv.conf && echo edited"); got != "0\n0\n0\nedited\n" {
				t.Errorf("owners of the pod's files, and an edit: %q", got)
			}
			if got := mustExec(t, c, id, "cat", "/proc/sys/user/max_user_namespaces"); got != "7\n" {
				t.Errorf("user.max_user_namespaces in the pod: %q, want 7", got)
			}
			if got := mustExec(t, c, id, "hostname"); got != "userns-pod\n" {
				t.Errorf("hostname: %q", got)
			}
			if got := strings.Fields(mustExec(t, c, id, "id", "-G")); !slices.Contains(got, "1234") {
				t.Errorf("groups %q lack the supplementary group 1234", got)
			}
			// PID 1 is the pod's init where the pod shares one PID
			// namespace (in the pod's user namespace, or /proc would not
			// mount), the container's own process where it does not.
			wantInit := map[runtimeapi.NamespaceMode]string{runtimeapi.NamespaceMode_POD: "pod-init", runtimeapi.NamespaceMode_CONTAINER: "sleep"}[pidMode]
			if got := mustExec(t, c, id, "cat", "/proc/1/cmdline"); !strings.Contains(got, wantInit) {
				t.Errorf("PID 1 is %q, want %s", got, wantInit)
			}
			if out := mustExec(t, c, id, "cat", "/sys/class/net/eth0/operstate"); strings.TrimSpace(out) != "up" {
				t.Errorf("the pod's eth0 in its sysfs: %q", out)
			}
		})
	}
}

// hostUID is a process's real UID as the host sees it.
func hostUID(t *testing.T, pid int) string {
	t.Helper()
	return strings.Fields(statusField(t, pid, "Uid"))[0]
}
