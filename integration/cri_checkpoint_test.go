package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestCRICheckpoints: CheckpointContainer, CheckpointPod and RestorePod
// check their requests as the CRI specifies, then answer as the node's
// CRIU allows: FailedPrecondition with CRIU's own error where `criu check`
// fails (as bookworm's CRIU 3.17 does on this kernel), Unimplemented where
// it runs. Nothing is paused, written or made, and the pod runs on.
func TestCRICheckpoints(t *testing.T) {
	c := newCRI(t)
	c.pullBusybox(t)
	ctx := testContext(t)
	pod := podConfig(t, "checkpoint")
	podID := c.runPod(t, pod)
	id := c.startContainer(t, podID, pod, containerConfig("main", "sleep 1000"))
	created, err := c.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: containerConfig("created", "true"), SandboxConfig: pod})
	if err != nil {
		t.Fatal(err)
	}

	// What the node's CRIU allows, and the words it gives.
	want, words := codes.Unimplemented, "not implemented"
	if out, err := exec.Command("criu", "check").CombinedOutput(); err != nil {
		want, words = codes.FailedPrecondition, "needs CRIU"
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
		{"a running container", call(c.CheckpointContainer(ctx, &runtimeapi.CheckpointContainerRequest{ContainerId: id, Location: archive})), want, true},

		{"a pod that does not exist", call(c.CheckpointPod(ctx, &runtimeapi.CheckpointPodRequest{PodSandboxId: "nosuch", OutputPath: out, ContainerIds: []string{id}})), codes.NotFound, false},
		{"no containers", call(c.CheckpointPod(ctx, &runtimeapi.CheckpointPodRequest{PodSandboxId: podID, OutputPath: out})), codes.InvalidArgument, false},
		{"a container twice", call(c.CheckpointPod(ctx, &runtimeapi.CheckpointPodRequest{PodSandboxId: podID, OutputPath: out, ContainerIds: []string{id, id}})), codes.InvalidArgument, false},
		{"an option", call(c.CheckpointPod(ctx, &runtimeapi.CheckpointPodRequest{PodSandboxId: podID, OutputPath: out, ContainerIds: []string{id}, Options: map[string]string{"tcp-established": "true"}})), codes.InvalidArgument, false},
		{"an output path that does not exist", call(c.CheckpointPod(ctx, &runtimeapi.CheckpointPodRequest{PodSandboxId: podID, OutputPath: filepath.Join(out, "nosuch"), ContainerIds: []string{id}})), codes.InvalidArgument, false},
		{"a pod container not running", call(c.CheckpointPod(ctx, &runtimeapi.CheckpointPodRequest{PodSandboxId: podID, OutputPath: out, ContainerIds: []string{id, created.ContainerId}})), codes.FailedPrecondition, false},
		{"a pod's running container", call(c.CheckpointPod(ctx, &runtimeapi.CheckpointPodRequest{PodSandboxId: podID, OutputPath: out, ContainerIds: []string{id}})), want, true},

		{"a restore without containers", call(c.RestorePod(ctx, &runtimeapi.RestorePodRequest{CheckpointPath: out, Config: podConfig(t, "restored")})), codes.InvalidArgument, false},
		{"a restore on an unknown handler", call(c.RestorePod(ctx, &runtimeapi.RestorePodRequest{CheckpointPath: out, Config: podConfig(t, "restored"), RuntimeHandler: "nosuch", ContainerConfigs: []*runtimeapi.ContainerConfig{containerConfig("main", "")}})), codes.InvalidArgument, false},
		{"a restore", call(c.RestorePod(ctx, &runtimeapi.RestorePodRequest{CheckpointPath: out, Config: podConfig(t, "restored"), ContainerConfigs: []*runtimeapi.ContainerConfig{containerConfig("main", "")}})), want, true},
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
	if st := c.status(t, id); st.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Errorf("the container is %s after the refused checkpoints", st.State)
	}
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
