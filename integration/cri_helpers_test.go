package integration

import (
	"context"
	"encoding/json"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/mine-runtime/mine/integration/testbed"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// cri is a CRI client on the daemon's socket, as kubelet has.
type cri struct {
	runtimeapi.RuntimeServiceClient
	runtimeapi.ImageServiceClient
}

func newCRI(t *testing.T) *cri {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+daemon.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &cri{runtimeapi.NewRuntimeServiceClient(conn), runtimeapi.NewImageServiceClient(conn)}
}

// podConfig is a pod of the test's own name, with its own log directory.
func podConfig(t *testing.T, name string) *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "test", Uid: containerID(t, name)},
		Hostname:     name,
		LogDirectory: t.TempDir(),
		Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER},
		}},
	}
}

// runPod runs a pod and removes it when the test ends.
func (c *cri) runPod(t *testing.T, cfg *runtimeapi.PodSandboxConfig) string {
	t.Helper()
	ctx := testContext(t)
	resp, err := c.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	id := resp.PodSandboxId
	t.Cleanup(func() {
		ctx := context.Background()
		if _, err := c.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
			t.Errorf("cleanup: stop pod %s: %v", id, err)
		}
		if _, err := c.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
			t.Errorf("cleanup: remove pod %s: %v", id, err)
		}
	})
	return id
}

// pullBusybox pulls busybox by its short name.
func (c *cri) pullBusybox(t *testing.T) string {
	t.Helper()
	resp, err := c.PullImage(testContext(t), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "busybox"}})
	if err != nil {
		t.Fatal(err)
	}
	return resp.ImageRef
}

// containerConfig runs a shell script in busybox and logs to name.log.
func containerConfig(name, script string) *runtimeapi.ContainerConfig {
	return &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: name},
		Image:    &runtimeapi.ImageSpec{Image: "busybox"},
		Command:  []string{"sh", "-c", script},
		LogPath:  name + ".log",
		Linux:    &runtimeapi.LinuxContainerConfig{},
	}
}

// startContainer creates and starts a container in a pod.
func (c *cri) startContainer(t *testing.T, podID string, pod *runtimeapi.PodSandboxConfig, cfg *runtimeapi.ContainerConfig) string {
	t.Helper()
	ctx := testContext(t)
	resp, err := c.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: resp.ContainerId}); err != nil {
		t.Fatal(err)
	}
	return resp.ContainerId
}

func (c *cri) status(t *testing.T, id string) *runtimeapi.ContainerStatus {
	t.Helper()
	resp, err := c.ContainerStatus(testContext(t), &runtimeapi.ContainerStatusRequest{ContainerId: id})
	if err != nil {
		t.Fatal(err)
	}
	return resp.Status
}

// pid is a running container's pid, from the verbose status.
func (c *cri) pid(t *testing.T, id string) int {
	t.Helper()
	resp, err := c.ContainerStatus(testContext(t), &runtimeapi.ContainerStatusRequest{ContainerId: id, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		Pid int `json:"pid"`
	}
	if err := json.Unmarshal([]byte(resp.Info["info"]), &info); err != nil || info.Pid == 0 {
		t.Fatalf("no pid in %q (%v)", resp.Info["info"], err)
	}
	return info.Pid
}

func (c *cri) execSync(t *testing.T, id string, timeout int64, cmd ...string) (*runtimeapi.ExecSyncResponse, error) {
	t.Helper()
	return c.ExecSync(testContext(t), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: cmd, Timeout: timeout})
}

func mustExec(t *testing.T, c *cri, id string, cmd ...string) string {
	t.Helper()
	resp, err := c.execSync(t, id, 10, cmd...)
	if err != nil {
		t.Fatal(err)
	}
	if resp.ExitCode != 0 {
		t.Fatalf("%v exited %d: %s", cmd, resp.ExitCode, resp.Stderr)
	}
	return string(resp.Stdout)
}

func jsonUnmarshal(t *testing.T, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("%v: %s", err, s)
	}
}

func registry() *testbed.Registry { return bed.Registry }

// uniqueImage is busybox with a layer of its own, so its pull fetches
// blobs no other image shares.
func uniqueImage(name string) (v1.Image, error) {
	base, err := testbed.BusyboxImage()
	if err != nil {
		return nil, err
	}
	return testbed.WithFiles(base, map[string]string{"etc/" + name: name + "\n"})
}

// pullImage serves img as docker.io/library/<nameTag> from the loopback
// registry, pulls it by its short name, and removes it when the test ends.
func (c *cri) pullImage(t *testing.T, nameTag string, img v1.Image) string {
	t.Helper()
	ctx := testContext(t)
	if _, err := registry().Push("library/"+nameTag, img); err != nil {
		t.Fatal(err)
	}
	resp, err := c.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: nameTag}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.RemoveImage(context.Background(), &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: resp.ImageRef}})
	})
	return resp.ImageRef
}
