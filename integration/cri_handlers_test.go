package integration

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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

// A pod asking for a user namespace of its own is refused (not run in the
// host's, which is what it asked not to be) until they are implemented,
// with Unimplemented; modes no pod can have are InvalidArgument. Nothing
// is made for either.
func TestCRIUserNamespacePodsRefused(t *testing.T) {
	c := newCRI(t)
	ctx := testContext(t)
	before, err := c.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	mapping := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: 100000, Length: 65536}}
	for _, tc := range []struct {
		userns *runtimeapi.UserNamespace
		code   codes.Code
	}{
		{&runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: mapping, Gids: mapping}, codes.Unimplemented},
		{&runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_CONTAINER}, codes.InvalidArgument},
	} {
		pod := podConfig(t, "userns")
		pod.Linux.SecurityContext.NamespaceOptions.UsernsOptions = tc.userns
		_, err := c.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: pod})
		if status.Code(err) != tc.code {
			t.Errorf("user namespace mode %s: %v, want %s", tc.userns.Mode, err, tc.code)
		}
	}
	after, err := c.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(after.Items) != len(before.Items) {
		t.Fatalf("refused pods were made: %d pods, %d before", len(after.Items), len(before.Items))
	}
	node := podConfig(t, "userns-node")
	node.Linux.SecurityContext.NamespaceOptions.UsernsOptions = &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_NODE}
	c.runPod(t, node) // kubelet's hostUsers: true
}
