package integration

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestCRIVersionAndStatus(t *testing.T) {
	c := newCRI(t)
	ctx := testContext(t)
	v, err := c.Version(ctx, &runtimeapi.VersionRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if v.RuntimeName != "mine" || v.RuntimeApiVersion != "v1" {
		t.Fatalf("version %+v", v)
	}
	st, err := c.Status(ctx, &runtimeapi.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, cond := range st.Status.Conditions {
		if !cond.Status {
			t.Errorf("condition %s is false: %s", cond.Type, cond.Message)
		}
	}
}

func TestCRIImages(t *testing.T) {
	c := newCRI(t)
	ctx := testContext(t)
	id := c.pullBusybox(t)
	if !strings.HasPrefix(id, "sha256:") {
		t.Fatalf("image ref %q is not a config digest", id)
	}
	st, err := c.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: "busybox:latest"}})
	if err != nil || st.Image == nil {
		t.Fatalf("status of busybox: %v, %v", st, err)
	}
	img := st.Image
	if img.Id != id || len(img.RepoTags) != 1 || img.RepoTags[0] != "docker.io/library/busybox:latest" {
		t.Fatalf("image %s tags %v, want %s tagged docker.io/library/busybox:latest", img.Id, img.RepoTags, id)
	}
	if len(img.RepoDigests) != 1 || !strings.HasPrefix(img.RepoDigests[0], "docker.io/library/busybox@sha256:") {
		t.Fatalf("repo digests %v", img.RepoDigests)
	}
	if img.Size == 0 || img.Uid == nil || img.Uid.Value != 0 {
		// The image config names no user: it runs as uid 0.
		if img.Size == 0 || img.Username != "" {
			t.Fatalf("size %d, uid %v, username %q", img.Size, img.Uid, img.Username)
		}
	}
	// By digest and by ID too.
	for _, ref := range []string{img.RepoDigests[0], id, strings.TrimPrefix(id, "sha256:")[:12]} {
		st, err := c.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
		if err != nil || st.Image == nil || st.Image.Id != id {
			t.Fatalf("status by %s: %v, %v", ref, st, err)
		}
	}
	list, err := c.ListImages(ctx, &runtimeapi.ListImagesRequest{Filter: &runtimeapi.ImageFilter{Image: &runtimeapi.ImageSpec{Image: "busybox"}}})
	if err != nil || len(list.Images) != 1 || list.Images[0].Id != id {
		t.Fatalf("filtered list %v, %v", list, err)
	}
	fs, err := c.ImageFsInfo(ctx, &runtimeapi.ImageFsInfoRequest{})
	if err != nil || len(fs.ImageFilesystems) != 1 || fs.ImageFilesystems[0].UsedBytes.GetValue() == 0 {
		t.Fatalf("image fs info %v, %v", fs, err)
	}

	// Pulling by digest gives the same image.
	pulled, err := c.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: img.RepoDigests[0]}})
	if err != nil || pulled.ImageRef != id {
		t.Fatalf("pull by digest: %v, %v", pulled, err)
	}
	if _, err := c.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: id}}); err != nil {
		t.Fatal(err)
	}
	if st, err := c.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: "busybox"}}); err != nil || st.Image != nil {
		t.Fatalf("after remove: %v, %v", st, err)
	}
	if _, err := c.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: id}}); err != nil {
		t.Fatalf("second remove: %v", err)
	}
}

func TestCRIConcurrentPullsShareOneFetch(t *testing.T) {
	c := newCRI(t)
	ctx := testContext(t)
	for _, name := range []string{"concurrent", "single"} {
		img, err := uniqueImage(name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := registry().Push("library/"+name+":1", img); err != nil {
			t.Fatal(err)
		}
	}
	pull := func(ref string) (string, error) {
		resp, err := c.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
		if err != nil {
			return "", err
		}
		t.Cleanup(func() {
			c.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: resp.ImageRef}})
		})
		return resp.ImageRef, nil
	}

	before := registry().BlobFetches.Load()
	if _, err := pull("single:1"); err != nil {
		t.Fatal(err)
	}
	single := registry().BlobFetches.Load() - before

	before = registry().BlobFetches.Load()
	var wg sync.WaitGroup
	refs := make([]string, 4)
	errs := make([]error, 4)
	for i := range refs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			refs[i], errs[i] = pull("concurrent:1")
		}()
	}
	wg.Wait()
	for i := range refs {
		if errs[i] != nil || refs[i] != refs[0] {
			t.Fatalf("pull %d: %q, %v; want %q", i, refs[i], errs[i], refs[0])
		}
	}
	if got := registry().BlobFetches.Load() - before; got != single || single == 0 {
		t.Fatalf("4 concurrent pulls fetched %d blobs; one pull of the same shape fetches %d", got, single)
	}
}

var logLine = regexp.MustCompile(`^\S+Z (stdout|stderr) ([PF]) (.*)$`)

// logEntries reads a CRI log as stream, tag and content.
func logEntries(t *testing.T, path string) [][3]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out [][3]string
	for _, line := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		if line == "" {
			continue
		}
		m := logLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("not a CRI log line: %q", line)
		}
		out = append(out, [3]string{m[1], m[2], m[3]})
	}
	return out
}

func TestCRIPodAndContainerLifecycle(t *testing.T) {
	c := newCRI(t)
	ctx := testContext(t)
	c.pullBusybox(t)
	pod := podConfig(t, "lifecycle")
	pod.DnsConfig = &runtimeapi.DNSConfig{Servers: []string{"10.0.0.10"}, Searches: []string{"test.svc"}, Options: []string{"ndots:5"}}
	pod.Labels = map[string]string{"app": "lifecycle"}
	podID := c.runPod(t, pod)

	ps, err := c.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: podID})
	if err != nil {
		t.Fatal(err)
	}
	if ps.Status.State != runtimeapi.PodSandboxState_SANDBOX_READY || !strings.HasPrefix(ps.Status.Network.GetIp(), "10.200.") {
		t.Fatalf("pod status %v, ip %q", ps.Status.State, ps.Status.Network.GetIp())
	}

	cfg := containerConfig("main", `echo to-stdout; echo to-stderr >&2; printf 'x%.0s' $(seq 1 20000); echo; exec sleep 600`)
	cfg.Envs = []*runtimeapi.KeyValue{{Key: "GREETING", Value: []byte("hi")}}
	cfg.WorkingDir = "/tmp"
	cfg.Labels = map[string]string{"tier": "web"}
	cfg.Linux.SecurityContext = &runtimeapi.LinuxContainerSecurityContext{RunAsUser: &runtimeapi.Int64Value{Value: 65534}}
	id := c.startContainer(t, podID, pod, cfg)

	st := c.status(t, id)
	if st.State != runtimeapi.ContainerState_CONTAINER_RUNNING || st.StartedAt == 0 {
		t.Fatalf("status %v, started %d", st.State, st.StartedAt)
	}
	logPath := filepath.Join(pod.LogDirectory, "main.log")
	if st.LogPath != logPath {
		t.Fatalf("log path %q, want %q", st.LogPath, logPath)
	}
	waitFor(t, "the container's output in its log", 10*time.Second, func() bool {
		data, _ := os.ReadFile(logPath)
		return strings.Count(string(data), "\n") >= 4
	})
	entries := logEntries(t, logPath)
	if entries[0] != [3]string{"stdout", "F", "to-stdout"} && entries[1] != [3]string{"stdout", "F", "to-stdout"} {
		t.Fatalf("log entries %v", entries[:2])
	}
	var partial int
	for _, e := range entries {
		if e[1] == "P" {
			partial++
		}
	}
	if partial != 1 { // 20000 bytes: one 16 KiB partial line, then the rest
		t.Fatalf("%d partial lines for a 20000-byte line, want 1", partial)
	}

	if out := mustExec(t, c, id, "sh", "-c", "id -u; pwd; echo $GREETING; hostname; cat /etc/resolv.conf"); out != "65534\n/tmp\nhi\nlifecycle\nnameserver 10.0.0.10\nsearch test.svc\noptions ndots:5\n" {
		t.Fatalf("inside the container:\n%s", out)
	}
	resp, err := c.execSync(t, id, 10, "sh", "-c", "echo out; echo err >&2; exit 3")
	if err != nil || resp.ExitCode != 3 || string(resp.Stdout) != "out\n" || string(resp.Stderr) != "err\n" {
		t.Fatalf("exec: %+v, %v", resp, err)
	}
	// A truncated ID works as crictl users type it.
	if got := c.status(t, id[:12]); got.Id != id {
		t.Fatalf("status by prefix: %s", got.Id)
	}
	list, err := c.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{
		PodSandboxId: podID, LabelSelector: map[string]string{"tier": "web"},
		State: &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING},
	}})
	if err != nil || len(list.Containers) != 1 || list.Containers[0].Id != id {
		t.Fatalf("list: %v, %v", list, err)
	}

	if _, err := c.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 1}); err != nil {
		t.Fatal(err)
	}
	st = c.status(t, id)
	// sh as PID 1 ignores SIGTERM: SIGKILL ends it after the timeout.
	if st.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.ExitCode != 137 || st.Reason != "Error" || st.FinishedAt == 0 {
		t.Fatalf("after stop: %v, exit %d, reason %q", st.State, st.ExitCode, st.Reason)
	}
	if _, err := c.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: id}); err != nil {
		t.Fatalf("second stop: %v", err)
	}
	if _, err := c.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id}); status.Code(err) != codes.NotFound {
		t.Fatalf("status of a removed container: %v, want NotFound", err)
	}

	var info struct {
		Namespaces struct{ Net string } `json:"namespaces"`
	}
	verbose, err := c.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: podID, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	jsonUnmarshal(t, verbose.Info["info"], &info)
	if _, err := c.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatal(err)
	}
	ps, err = c.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: podID})
	if err != nil || ps.Status.State != runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
		t.Fatalf("after stop: %v, %v", ps, err)
	}
	if _, err := os.Stat(info.Namespaces.Net); !os.IsNotExist(err) {
		t.Fatalf("the pod's network namespace %s outlived StopPodSandbox", info.Namespaces.Net)
	}
	if _, err := c.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatalf("second stop: %v", err)
	}
}

func TestCRIExecSyncTimeoutHolds(t *testing.T) {
	c := newCRI(t)
	c.pullBusybox(t)
	pod := podConfig(t, "execsync")
	podID := c.runPod(t, pod)
	id := c.startContainer(t, podID, pod, containerConfig("main", "exec sleep 600"))

	// The command exits at once, but a child keeps its output open.
	start := time.Now()
	resp, err := c.execSync(t, id, 2, "sh", "-c", "sleep 30 & echo started")
	if err != nil || resp.ExitCode != 0 || string(resp.Stdout) != "started\n" {
		t.Fatalf("exec with a background child: %+v, %v", resp, err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("ExecSync with timeout 2s returned after %v", took)
	}
	// The command outlives the timeout.
	start = time.Now()
	_, err = c.execSync(t, id, 1, "sleep", "30")
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("exec past its timeout: %v, want DeadlineExceeded", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("ExecSync with timeout 1s returned after %v", took)
	}
}
