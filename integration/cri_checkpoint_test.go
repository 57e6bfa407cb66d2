package integration

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestCRICheckpoints: CheckpointContainer, CheckpointPod and RestorePod
// check their requests as the CRI specifies, then answer as the node's
// CRIU allows: FailedPrecondition with CRIU's own error where `criu check`
// fails; where it runs (CRIU 4.2 from hack/install-deps.sh, here),
// CheckpointContainer writes kubelet's checkpoint archive of a running
// container, which goes on running, and the pod RPCs answer
// Unimplemented. Nothing is paused, written or made by a refused call.
func TestCRICheckpoints(t *testing.T) {
	c := newCRI(t)
	c.pullBusybox(t)
	ctx := testContext(t)
	pod := podConfig(t, "checkpoint")
	podID := c.runPod(t, pod)
	id := c.startContainer(t, podID, pod, containerConfig("main", "i=0; while true; do i=$((i+1)); echo $i > /count; sleep 0.1; done"))
	created, err := c.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: containerConfig("created", "true"), SandboxConfig: pod})
	if err != nil {
		t.Fatal(err)
	}

	// What the node's CRIU allows, and the words it gives.
	criuRuns := true
	checkpointCode, words := codes.OK, ""
	if out, err := exec.Command("criu", "check").CombinedOutput(); err != nil {
		criuRuns = false
		checkpointCode, words = codes.FailedPrecondition, "needs CRIU"
		if first := firstErrorLine(string(out)); first != "" {
			words = first
		}
		t.Logf("criu check fails here: %s", strings.TrimSpace(string(out)))
	}

	out := t.TempDir()
	archive := filepath.Join(out, "main.tar")
	for _, tc := range []struct {
		what string
		err  error
		code codes.Code
		criu bool // answered by what CRIU allows
	}{
		{"an unknown container", call(c.CheckpointContainer(ctx, &runtimeapi.CheckpointContainerRequest{ContainerId: "nosuch", Location: archive})), codes.NotFound, false},
		{"a relative location", call(c.CheckpointContainer(ctx, &runtimeapi.CheckpointContainerRequest{ContainerId: id, Location: "main.tar"})), codes.InvalidArgument, false},
		{"a container not running", call(c.CheckpointContainer(ctx, &runtimeapi.CheckpointContainerRequest{ContainerId: created.ContainerId, Location: archive})), codes.FailedPrecondition, false},

		{"a pod that does not exist", call(c.CheckpointPod(ctx, &runtimeapi.CheckpointPodRequest{PodSandboxId: "nosuch", OutputPath: out, ContainerIds: []string{id}})), codes.NotFound, false},
		{"no containers", call(c.CheckpointPod(ctx, &runtimeapi.CheckpointPodRequest{PodSandboxId: podID, OutputPath: out})), codes.InvalidArgument, false},
		{"a container twice", call(c.CheckpointPod(ctx, &runtimeapi.CheckpointPodRequest{PodSandboxId: podID, OutputPath: out, ContainerIds: []string{id, id}})), codes.InvalidArgument, false},
		{"an option", call(c.CheckpointPod(ctx, &runtimeapi.CheckpointPodRequest{PodSandboxId: podID, OutputPath: out, ContainerIds: []string{id}, Options: map[string]string{"tcp-established": "true"}})), codes.InvalidArgument, false},
		{"an output path that does not exist", call(c.CheckpointPod(ctx, &runtimeapi.CheckpointPodRequest{PodSandboxId: podID, OutputPath: filepath.Join(out, "nosuch"), ContainerIds: []string{id}})), codes.InvalidArgument, false},
		{"a pod container not running", call(c.CheckpointPod(ctx, &runtimeapi.CheckpointPodRequest{PodSandboxId: podID, OutputPath: out, ContainerIds: []string{id, created.ContainerId}})), codes.FailedPrecondition, false},

		{"a restore without containers", call(c.RestorePod(ctx, &runtimeapi.RestorePodRequest{CheckpointPath: out, Config: podConfig(t, "restored")})), codes.InvalidArgument, false},
		{"a restore on an unknown handler", call(c.RestorePod(ctx, &runtimeapi.RestorePodRequest{CheckpointPath: out, Config: podConfig(t, "restored"), RuntimeHandler: "nosuch", ContainerConfigs: []*runtimeapi.ContainerConfig{containerConfig("main", "")}})), codes.InvalidArgument, false},
	} {
		if got := status.Code(tc.err); got != tc.code {
			t.Errorf("%s: %v, want %s", tc.what, tc.err, tc.code)
		} else if tc.criu && !strings.Contains(tc.err.Error(), words) {
			t.Errorf("%s: %q does not say %q", tc.what, tc.err, words)
		}
	}
	if entries, _ := os.ReadDir(out); len(entries) != 0 {
		t.Errorf("something was written: %v", entries)
	}

	// Counted past 20: a restored process goes on from there, a new one
	// would start again from 1.
	waitFor(t, "the container to count past 20", 20*time.Second, func() bool {
		n, _ := strconv.Atoi(strings.TrimSpace(mustExec(t, c, id, "cat", "/count")))
		return n > 20
	})
	start := time.Now()
	_, err = c.CheckpointContainer(ctx, &runtimeapi.CheckpointContainerRequest{ContainerId: id, Location: archive})
	took := time.Since(start)
	if status.Code(err) != checkpointCode {
		t.Fatalf("checkpoint of a running container: %v, want %s", err, checkpointCode)
	}
	if !criuRuns {
		if !strings.Contains(err.Error(), words) {
			t.Errorf("%q does not say %q", err, words)
		}
		_, err := c.CheckpointPod(ctx, &runtimeapi.CheckpointPodRequest{PodSandboxId: podID, OutputPath: out, ContainerIds: []string{id}})
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), words) {
			t.Errorf("CheckpointPod without CRIU: %v", err)
		}
	} else {
		t.Logf("CheckpointContainer took %v", took)
		files := tarEntries(t, archive)
		for _, want := range []string{"checkpoint/inventory.img", "checkpoint/descriptors.json", "spec.dump", "config.dump", "rootfs-diff.tar"} {
			if _, ok := files[want]; !ok {
				t.Errorf("the archive lacks %s: %v", want, keys(files))
			}
		}
		// The writable layer's changes, as an OCI layer: the counter's file.
		diff := tarEntriesOf(t, files["rootfs-diff.tar"])
		if _, ok := diff["count"]; !ok {
			t.Errorf("rootfs-diff.tar lacks the file the container wrote: %v", keys(diff))
		}
		var spec struct {
			Process struct{ Args []string } `json:"process"`
		}
		if err := json.Unmarshal(files["spec.dump"], &spec); err != nil || !slices.Contains(spec.Process.Args, "sh") {
			t.Errorf("spec.dump: %v, %s", err, files["spec.dump"])
		}
		if entries, _ := os.ReadDir(out); len(entries) != 1 {
			t.Errorf("the checkpoint left more than its archive: %v", entries)
		}

		// Restored as kubelet restores: a container whose image is the
		// archive, created, then started. Its root file system's diff
		// gzipped, as containerd's CRI writes it: an archive made on a
		// node before it ran mine restores too.
		var gz bytes.Buffer
		zw := gzip.NewWriter(&gz)
		zw.Write(files["rootfs-diff.tar"])
		zw.Close()
		zipped := filepath.Join(out, "containerd-made.tar")
		rewriteTar(t, archive, zipped, "rootfs-diff.tar", gz.Bytes())
		start = time.Now()
		cfg := containerConfig("restored", "echo this command does not run; exit 7")
		cfg.Image.Image = zipped
		resp, err := c.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
		if err != nil {
			t.Fatal(err)
		}
		if st := c.status(t, resp.ContainerId); st.State != runtimeapi.ContainerState_CONTAINER_CREATED {
			t.Errorf("the container made from the archive is %s, want CREATED", st.State)
		}
		if _, err := c.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: resp.ContainerId}); err != nil {
			t.Fatal(err)
		}
		t.Logf("CreateContainer and StartContainer from the archive took %v", time.Since(start))
		restored := resp.ContainerId
		at := mustExec(t, c, restored, "cat", "/count")
		waitFor(t, "the restored process to count on", 10*time.Second, func() bool {
			return mustExec(t, c, restored, "cat", "/count") != at
		})
		if n := readCount(t, c, restored); n <= 20 {
			t.Errorf("the restored container counts from %d: its process started afresh, not from its checkpoint", n)
		}
		if st := c.status(t, restored); st.State != runtimeapi.ContainerState_CONTAINER_RUNNING || !strings.Contains(st.Image.GetImage(), "busybox") {
			t.Errorf("the restored container is %s, of image %q (want the checkpoint's, busybox)", st.State, st.Image.GetImage())
		}

		// An archive whose image is not on the node: FailedPrecondition,
		// and nothing made.
		foreign := filepath.Join(out, "foreign.tar")
		rewriteTar(t, archive, foreign, "config.dump", []byte(`{"id":"x","name":"main","rootfsImage":"nosuch:1","rootfsImageRef":"sha256:`+strings.Repeat("0", 64)+`"}`))
		before, _ := criClient(t).Containers(ctx)
		cfg = containerConfig("foreign", "true")
		cfg.Image.Image = foreign
		_, err = c.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "nosuch:1") {
			t.Errorf("restore of an archive whose image is missing: %v, want FailedPrecondition naming it", err)
		}
		if after, _ := criClient(t).Containers(ctx); len(after) != len(before) {
			t.Errorf("the refused restore made a container: %d records, %d before", len(after), len(before))
		}

		testPodCheckpoint(t, c, podID, id)
	}

	// The container runs on, counting.
	if st := c.status(t, id); st.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Errorf("the container is %s after the checkpoints", st.State)
	}
	first := mustExec(t, c, id, "cat", "/count")
	waitFor(t, "the container to count on after its checkpoint", 10*time.Second, func() bool {
		return mustExec(t, c, id, "cat", "/count") != first
	})
	pods, err := c.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.Metadata.Name == "restored" {
			t.Errorf("a refused restore made pod %s", p.Id)
		}
	}
}

// call keeps a CRI call's error.
func call[T any](_ T, err error) error { return err }

// firstErrorLine is CRIU's first "Error" line: the cause.
func firstErrorLine(out string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "Error") {
			return strings.TrimSpace(l)
		}
	}
	return ""
}

// tarEntries reads a tar file's regular files.
func tarEntries(t *testing.T, path string) map[string][]byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return tarEntriesOf(t, data)
}

func tarEntriesOf(t *testing.T, data []byte) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			b, _ := io.ReadAll(tr)
			out[strings.TrimPrefix(h.Name, "./")] = b
		}
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// rewriteTar copies a tar with one file's content replaced.
func rewriteTar(t *testing.T, from, to, name string, data []byte) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	tr, tw := tar.NewReader(in), tar.NewWriter(out)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		var body io.Reader = tr
		if h.Name == name {
			h.Size = int64(len(data))
			body = bytes.NewReader(data)
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(tw, body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
}

// testPodCheckpoint: CheckpointPod writes one archive per selected
// container, which runs on; RestorePod makes a new pod with the container
// CREATED, whose process counts on from its checkpoint once started; a
// restore whose configurations do not name the checkpoint's containers is
// InvalidArgument and makes nothing.
func testPodCheckpoint(t *testing.T, c *cri, podID, id string) {
	ctx := testContext(t)
	dir := t.TempDir()
	start := time.Now()
	if _, err := c.CheckpointPod(ctx, &runtimeapi.CheckpointPodRequest{PodSandboxId: podID, OutputPath: dir, ContainerIds: []string{id}}); err != nil {
		t.Fatal(err)
	}
	t.Logf("CheckpointPod took %v", time.Since(start))
	if entries, _ := os.ReadDir(dir); len(entries) != 1 || entries[0].Name() != "main.tar" {
		t.Fatalf("the pod checkpoint holds %v, want main.tar", entries)
	}
	if st := c.status(t, id); st.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Errorf("the container is %s after its pod's checkpoint", st.State)
	}
	at := mustExec(t, c, id, "cat", "/count")
	waitFor(t, "the container to count on after its pod's checkpoint (resumed)", 10*time.Second, func() bool {
		return mustExec(t, c, id, "cat", "/count") != at
	})

	bad := podConfig(t, "restored-bad")
	if _, err := c.RestorePod(ctx, &runtimeapi.RestorePodRequest{CheckpointPath: dir, Config: bad, ContainerConfigs: []*runtimeapi.ContainerConfig{containerConfig("other", "")}}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("a restore naming containers the checkpoint has not: %v, want InvalidArgument", err)
	}

	pod := podConfig(t, "restored-pod")
	start = time.Now()
	resp, err := c.RestorePod(ctx, &runtimeapi.RestorePodRequest{CheckpointPath: dir, Config: pod, ContainerConfigs: []*runtimeapi.ContainerConfig{containerConfig("main", "exit 9")}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("RestorePod took %v", time.Since(start))
	t.Cleanup(func() {
		c.StopPodSandbox(context.Background(), &runtimeapi.StopPodSandboxRequest{PodSandboxId: resp.PodSandboxId})
		c.RemovePodSandbox(context.Background(), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: resp.PodSandboxId})
	})
	if len(resp.RestoredContainers) != 1 || resp.RestoredContainers[0].Name != "main" {
		t.Fatalf("restored containers %v, want main", resp.RestoredContainers)
	}
	restored := resp.RestoredContainers[0].ContainerId
	if st := c.status(t, restored); st.State != runtimeapi.ContainerState_CONTAINER_CREATED {
		t.Errorf("the restored container is %s before its start, want CREATED", st.State)
	}
	if _, err := c.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: restored}); err != nil {
		t.Fatal(err)
	}
	first := mustExec(t, c, restored, "cat", "/count")
	waitFor(t, "the restored pod's container to count on", 10*time.Second, func() bool {
		return mustExec(t, c, restored, "cat", "/count") != first
	})
	if n := readCount(t, c, restored); n <= 20 {
		t.Errorf("the restored pod's container counts from %d: not from its checkpoint", n)
	}
	pods, err := c.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.Metadata.Name == "restored-bad" {
			t.Errorf("the refused restore made pod %s", p.Id)
		}
	}
}

// readCount reads the counter a counting container writes: the shell's
// `echo $i > /count` truncates the file before it writes it, so a read in
// between finds it empty and is made again.
func readCount(t *testing.T, c *cri, id string) int {
	t.Helper()
	var n int
	waitFor(t, "a count in /count of "+id, 10*time.Second, func() bool {
		var err error
		n, err = strconv.Atoi(strings.TrimSpace(mustExec(t, c, id, "cat", "/count")))
		return err == nil
	})
	return n
}
