package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// noShimServes waits until no shim of the daemon was started for id.
func noShimServes(t *testing.T, id string) {
	t.Helper()
	waitFor(t, "no shim left for "+id, 10*time.Second, func() bool {
		for _, pid := range daemon.Shims() {
			if cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); strings.Contains(string(cmdline), id) {
				return false
			}
		}
		return true
	})
}

// listedState is a container's state as ListContainers reports it.
func (c *cri) listedState(t *testing.T, id string) runtimeapi.ContainerState {
	t.Helper()
	resp, err := c.ListContainers(testContext(t), &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{Id: id}})
	if err != nil || len(resp.Containers) != 1 {
		t.Fatalf("list %s: %v, %v", id, resp, err)
	}
	return resp.Containers[0].State
}

// A start that fails is the container's exit: kubelet then applies the
// restart policy instead of starting it again at every sync.
func TestCRIFailedStartIsAnExit(t *testing.T) {
	c := newCRI(t)
	ctx := testContext(t)
	c.pullBusybox(t)
	pod := podConfig(t, "starterror")
	podID := c.runPod(t, pod)
	cfg := containerConfig("missing", "")
	cfg.Command = []string{"/does-not-exist"}
	created, err := c.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
	if err != nil {
		t.Fatal(err)
	}
	id := created.ContainerId
	if _, err := c.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: id}); err == nil {
		t.Fatal("a container with a missing command started")
	}
	st := c.status(t, id)
	if st.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.ExitCode != 128 || st.Reason != "StartError" || st.FinishedAt == 0 || st.StartedAt != 0 {
		t.Fatalf("after a failed start: %v, exit %d, reason %q, started %d, finished %d", st.State, st.ExitCode, st.Reason, st.StartedAt, st.FinishedAt)
	}
	if !strings.Contains(st.Message, "/does-not-exist") {
		t.Fatalf("message %q does not name the missing command", st.Message)
	}
	if got := c.listedState(t, id); got != runtimeapi.ContainerState_CONTAINER_EXITED {
		t.Fatalf("listed as %v", got)
	}
	if _, err := c.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: id}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("second start of a failed container: %v, want FailedPrecondition", err)
	}
	client, err := daemon.Client("k8s.io")
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if cont, err := client.LoadContainer(ctx, id); err != nil {
		t.Fatal(err)
	} else if _, err := cont.Task(ctx, nil); err == nil {
		t.Fatal("the failed start left a task")
	}
	noShimServes(t, id)
	if _, err := c.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
}

func TestCRIContainerStatusFields(t *testing.T) {
	c := newCRI(t)
	ctx := testContext(t)
	imageID := c.pullBusybox(t)
	img, err := c.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: "busybox"}})
	if err != nil || img.Image == nil || len(img.Image.RepoDigests) == 0 {
		t.Fatalf("busybox: %v, %v", img, err)
	}
	pod := podConfig(t, "statusfields")
	podID := c.runPod(t, pod)
	// The shell, PID 1 of its namespace, gets only the signals it
	// handles: exit 42 tells that StopContainer sent SIGUSR1.
	cfg := containerConfig("app", "trap 'exit 42' USR1; while :; do sleep 0.1; done")
	cfg.Image = &runtimeapi.ImageSpec{Image: imageID} // as kubelet names it
	cfg.Linux.SecurityContext = &runtimeapi.LinuxContainerSecurityContext{
		RunAsUser:          &runtimeapi.Int64Value{Value: 1234},
		RunAsGroup:         &runtimeapi.Int64Value{Value: 5678},
		SupplementalGroups: []int64{42},
	}
	cfg.StopSignal = runtimeapi.Signal_SIGNAL_SIGUSR1
	id := c.startContainer(t, podID, pod, cfg)

	resp, err := c.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	st := resp.Status
	if st.ImageRef != img.Image.RepoDigests[0] || st.ImageId != imageID {
		t.Errorf("image ref %q and ID %q, want %q and %q", st.ImageRef, st.ImageId, img.Image.RepoDigests[0], imageID)
	}
	if st.Image.GetImage() != img.Image.RepoTags[0] {
		t.Errorf("image %q, want its tag %q", st.Image.GetImage(), img.Image.RepoTags[0])
	}
	u := st.User.GetLinux()
	if u.GetUid() != 1234 || u.GetGid() != 5678 || !slices.Contains(u.GetSupplementalGroups(), 42) {
		t.Errorf("user %v", u)
	}
	if st.StopSignal != runtimeapi.Signal_SIGNAL_SIGUSR1 {
		t.Errorf("stop signal %v, want the config's SIGUSR1", st.StopSignal)
	}
	var info struct {
		SandboxID   string `json:"sandboxID"`
		Pid         int    `json:"pid"`
		ImageRef    string `json:"imageRef"`
		RuntimeType string `json:"runtimeType"`
		SnapshotKey string `json:"snapshotKey"`
		RuntimeSpec struct {
			Process struct {
				User struct{ UID int }
			}
		} `json:"runtimeSpec"`
	}
	jsonUnmarshal(t, resp.Info["info"], &info)
	if info.SandboxID != podID || info.Pid == 0 || info.ImageRef != st.ImageRef || info.RuntimeType != runtimeName || info.SnapshotKey != id || info.RuntimeSpec.Process.User.UID != 1234 {
		t.Errorf("verbose info %s", resp.Info["info"])
	}

	// Without a stop signal of its own, the image's, else SIGTERM.
	plain := c.startContainer(t, podID, pod, containerConfig("plain", "exec sleep 600"))
	if got := c.status(t, plain).StopSignal; got != runtimeapi.Signal_SIGNAL_SIGTERM {
		t.Errorf("default stop signal %v", got)
	}
	// The config's stop signal is the one StopContainer sends.
	if _, err := c.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 10}); err != nil {
		t.Fatal(err)
	}
	if st := c.status(t, id); st.ExitCode != 42 {
		t.Errorf("stopped with exit %d, want 42 from the SIGUSR1 trap", st.ExitCode)
	}
}

func TestCRIPodSandboxStatusVerbose(t *testing.T) {
	c := newCRI(t)
	ctx := testContext(t)
	pod := podConfig(t, "podverbose")
	pod.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_POD
	podID := c.runPod(t, pod)
	resp, err := c.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: podID, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		Pid           int    `json:"pid"`
		ProcessStatus string `json:"processStatus"`
		Namespaces    struct {
			Net, IPC, UTS string
		} `json:"namespaces"`
		CNIResult struct {
			Interfaces map[string]struct {
				IPConfigs []struct{ IP string }
			}
		} `json:"cniResult"`
		RuntimeHandler string `json:"runtimeHandler"`
		RuntimeType    string `json:"runtimeType"`
		Config         struct {
			Metadata struct{ Name string }
		} `json:"config"`
		RuntimeSpec struct {
			Process struct{ Args []string }
		} `json:"runtimeSpec"`
	}
	jsonUnmarshal(t, resp.Info["info"], &info)
	if info.Pid == 0 || info.ProcessStatus != "running" || !processAlive(info.Pid) {
		t.Errorf("pod init pid %d, %q", info.Pid, info.ProcessStatus)
	}
	for _, p := range []string{info.Namespaces.Net, info.Namespaces.IPC, info.Namespaces.UTS} {
		if _, err := os.Stat(p); p == "" || err != nil {
			t.Errorf("namespace path %q: %v", p, err)
		}
	}
	var ips []string
	for _, iface := range info.CNIResult.Interfaces {
		for _, ipc := range iface.IPConfigs {
			ips = append(ips, ipc.IP)
		}
	}
	if ip := resp.Status.GetNetwork().GetIp(); ip == "" || !slices.Contains(ips, ip) {
		t.Errorf("the CNI result's IPs %v lack the pod's %q", ips, ip)
	}
	if info.RuntimeHandler != "mine" || info.RuntimeType != runtimeName || info.Config.Metadata.Name != "podverbose" || len(info.RuntimeSpec.Process.Args) == 0 {
		t.Errorf("verbose info %s", resp.Info["info"])
	}
}

func TestCRIStatusListsHandlers(t *testing.T) {
	c := newCRI(t)
	resp, err := c.Status(testContext(t), &runtimeapi.StatusRequest{Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, h := range resp.RuntimeHandlers {
		names = append(names, h.Name)
		// This kernel has mount_setattr, and the test runc is 1.1 or
		// later, with idmapped mounts; crun 1.8.1 has no features command
		// to say it knows rro or idmap.
		runc := h.Name != "crun"
		if h.Features.GetRecursiveReadOnlyMounts() != runc || h.Features.GetUserNamespaces() != runc {
			t.Errorf("handler %q: features %v", h.Name, h.Features)
		}
	}
	if len(names) < 3 || names[0] != "" || !slices.IsSorted(names[1:]) || !slices.Contains(names, "mine") || !slices.Contains(names, "crun") {
		t.Errorf("handlers %q: want the default as \"\" first, then all by name", names)
	}
	if !resp.GetFeatures().GetSupplementalGroupsPolicy() {
		t.Error("Status does not say supplemental groups policies are applied: kubelet refuses Strict pods")
	}
	for _, key := range []string{"config", "golang", "cniconfig", "lastCNILoadStatus"} {
		if resp.Info[key] == "" {
			t.Errorf("verbose status lacks %s: %v", key, resp.Info)
		}
	}
}

// A start containerd died in after task.Start and before recording it:
// simulated by starting the task of a CRI container with containerd's
// own client. The container is running, and a retried start does not
// start it twice.
func TestCRIUnrecordedStartIsFound(t *testing.T) {
	c := newCRI(t)
	ctx := testContext(t)
	c.pullBusybox(t)
	pod := podConfig(t, "unrecorded")
	podID := c.runPod(t, pod)
	client, err := daemon.Client("k8s.io")
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	create := func(name string) (string, containerd.Task) {
		t.Helper()
		resp, err := c.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: containerConfig(name, "exec sleep 600"), SandboxConfig: pod})
		if err != nil {
			t.Fatal(err)
		}
		cont, err := client.LoadContainer(ctx, resp.ContainerId)
		if err != nil {
			t.Fatal(err)
		}
		task, err := cont.NewTask(ctx, cio.NullIO)
		if err != nil {
			t.Fatal(err)
		}
		return resp.ContainerId, task
	}

	started, task := create("started")
	if err := task.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if got := c.listedState(t, started); got != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Fatalf("listed as %v, want RUNNING", got)
	}
	st := c.status(t, started)
	if st.State != runtimeapi.ContainerState_CONTAINER_RUNNING || st.StartedAt == 0 || st.StartedAt < st.CreatedAt {
		t.Fatalf("status %v, started %d, created %d", st.State, st.StartedAt, st.CreatedAt)
	}
	if _, err := c.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: started}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("retried start: %v, want FailedPrecondition", err)
	}
	if pid := c.pid(t, started); pid != int(task.Pid()) {
		t.Fatalf("pid %d, want the task's %d", pid, task.Pid())
	}
	if pids, err := task.Pids(ctx); err != nil || len(pids) != 1 {
		t.Fatalf("processes of the container: %v, %v", pids, err)
	}

	// A task created and never started is replaced by the start.
	unstarted, leftover := create("unstarted")
	leftoverPid := leftover.Pid()
	if st := c.status(t, unstarted); st.State != runtimeapi.ContainerState_CONTAINER_CREATED {
		t.Fatalf("container with a task never started: %v, want CREATED", st.State)
	}
	if _, err := c.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: unstarted}); err != nil {
		t.Fatal(err)
	}
	if st := c.status(t, unstarted); st.State != runtimeapi.ContainerState_CONTAINER_RUNNING || c.pid(t, unstarted) == int(leftoverPid) {
		t.Fatalf("after start: %v", st.State)
	}
	if processAlive(int(leftoverPid)) {
		t.Fatal("the task left never started still has its process")
	}
}

// A pod whose containers share one PID namespace loses them all when its
// init dies: the kernel kills a PID namespace's processes with its init,
// and their exits are reported.
func TestCRIPodInitExitEndsItsContainers(t *testing.T) {
	c := newCRI(t)
	ctx := testContext(t)
	c.pullBusybox(t)
	pod := podConfig(t, "initexit")
	pod.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_POD
	podID := c.runPod(t, pod)
	shared := &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_POD}
	var ids []string
	var pids []int
	for _, name := range []string{"a", "b"} {
		cfg := containerConfig(name, "exec sleep 600")
		cfg.Linux.SecurityContext = &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: shared}
		id := c.startContainer(t, podID, pod, cfg)
		ids, pids = append(ids, id), append(pids, c.pid(t, id))
	}
	resp, err := c.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: podID, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		Pid int `json:"pid"`
	}
	jsonUnmarshal(t, resp.Info["info"], &info)
	if info.Pid == 0 || mustReadlink(t, fmt.Sprintf("/proc/%d/ns/pid", info.Pid)) != mustReadlink(t, fmt.Sprintf("/proc/%d/ns/pid", pids[0])) {
		t.Fatalf("pod init %d does not hold the containers' PID namespace", info.Pid)
	}
	if err := syscall.Kill(info.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		waitFor(t, "container "+id+" to exit with its pod's init", 10*time.Second, func() bool {
			return c.status(t, id).State == runtimeapi.ContainerState_CONTAINER_EXITED
		})
		if st := c.status(t, id); st.ExitCode != 137 || st.Reason != "Error" {
			t.Errorf("container %s: exit %d, reason %q; want 137, Error", id, st.ExitCode, st.Reason)
		}
		if got := c.listedState(t, id); got != runtimeapi.ContainerState_CONTAINER_EXITED {
			t.Errorf("container %s listed as %v", id, got)
		}
		if processAlive(pids[i]) {
			t.Errorf("process %d of container %s outlived the pod's init", pids[i], id)
		}
	}
	waitFor(t, "the pod to be not ready", 10*time.Second, func() bool {
		st, err := c.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: podID})
		return err == nil && st.Status.State == runtimeapi.PodSandboxState_SANDBOX_NOTREADY
	})
}

// TestCRIUpdatePodSandboxResources records a resized pod's resources, as
// kubelet reports an in-place resize, leaves its cgroup as kubelet set it,
// and refuses an unknown pod.
func TestCRIUpdatePodSandboxResources(t *testing.T) {
	c := newCRI(t)
	ctx := testContext(t)
	_, err := c.UpdatePodSandboxResources(ctx, &runtimeapi.UpdatePodSandboxResourcesRequest{PodSandboxId: "no-such-pod"})
	if status.Code(err) != codes.NotFound {
		t.Errorf("unknown pod: %v, want NotFound", err)
	}
	podID := c.runPod(t, podConfig(t, "resize"))
	if _, err := c.UpdatePodSandboxResources(ctx, &runtimeapi.UpdatePodSandboxResourcesRequest{
		PodSandboxId: podID,
		Resources:    &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 123456789},
		Overhead:     &runtimeapi.LinuxContainerResources{CpuShares: 77},
	}); err != nil {
		t.Fatal(err)
	}
	resp, err := c.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: podID, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		Config *runtimeapi.PodSandboxConfig `json:"config"`
	}
	jsonUnmarshal(t, resp.Info["info"], &info)
	if info.Config.GetLinux().GetResources().GetMemoryLimitInBytes() != 123456789 || info.Config.GetLinux().GetOverhead().GetCpuShares() != 77 {
		t.Errorf("recorded pod config %v", info.Config.GetLinux())
	}

	// A pod with a cgroup parent, as kubelet makes one. kubelet resizes
	// it first, to the containers' sum plus the pod's overhead, then
	// reports the sum without the overhead: the cgroup keeps kubelet's.
	parent := fmt.Sprintf("/mine-test-resize-%d", os.Getpid())
	t.Cleanup(func() {
		dirs, _ := filepath.Glob("/sys/fs/cgroup/*" + parent)
		for _, d := range append(dirs, "/sys/fs/cgroup"+parent) {
			os.Remove(d)
		}
	})
	c.pullBusybox(t)
	pod := podConfig(t, "resize-cgroup")
	pod.Linux.CgroupParent = parent
	podID = c.runPod(t, pod)
	c.startContainer(t, podID, pod, containerConfig("main", "sleep 1000"))
	kubelets := map[string]string{"cpu/cpu.shares": "333", "memory/memory.limit_in_bytes": "209715200"}
	for file, value := range kubelets {
		if err := os.WriteFile(filepath.Join("/sys/fs/cgroup", filepath.Dir(file), parent, filepath.Base(file)), []byte(value), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.UpdatePodSandboxResources(ctx, &runtimeapi.UpdatePodSandboxResourcesRequest{
		PodSandboxId: podID,
		Resources:    &runtimeapi.LinuxContainerResources{CpuShares: 300, MemoryLimitInBytes: 150 << 20},
		Overhead:     &runtimeapi.LinuxContainerResources{CpuShares: 33, MemoryLimitInBytes: 50 << 20},
	}); err != nil {
		t.Fatal(err)
	}
	for file, want := range kubelets {
		data, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", filepath.Dir(file), parent, filepath.Base(file)))
		if err != nil || strings.TrimSpace(string(data)) != want {
			t.Errorf("the pod cgroup's %s: %q (%v), want kubelet's %s", file, data, err, want)
		}
	}
}

// TestCRIRuntimeConfig: kubelet learns the cgroup driver of the default
// handler (cgroupfs here: SystemdCgroup is off) and hands over its pod
// CIDR, which CNI's configuration already covers.
func TestCRIRuntimeConfig(t *testing.T) {
	c := newCRI(t)
	ctx := testContext(t)
	resp, err := c.RuntimeConfig(ctx, &runtimeapi.RuntimeConfigRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if d := resp.GetLinux().GetCgroupDriver(); d != runtimeapi.CgroupDriver_CGROUPFS {
		t.Errorf("cgroup driver %s, want CGROUPFS", d)
	}
	if _, err := c.UpdateRuntimeConfig(ctx, &runtimeapi.UpdateRuntimeConfigRequest{RuntimeConfig: &runtimeapi.RuntimeConfig{NetworkConfig: &runtimeapi.NetworkConfig{PodCidr: "10.88.0.0/16"}}}); err != nil {
		t.Errorf("UpdateRuntimeConfig: %v", err)
	}
}
