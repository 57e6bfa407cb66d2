package integration

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// recvAll reads a Stream* RPC to its end.
func recvAll[R any](stream grpc.ServerStreamingClient[R], err error) ([]*R, error) {
	if err != nil {
		return nil, err
	}
	var out []*R
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, msg)
	}
}

// TestCRIStreamListsMatchLists: every Stream* list answers what its List
// answers.
func TestCRIStreamListsMatchLists(t *testing.T) {
	c := newCRI(t)
	ctx := testContext(t)
	c.pullBusybox(t)
	pod := podConfig(t, "streams")
	podID := c.runPod(t, pod)
	c.startContainer(t, podID, pod, containerConfig("a", "exec sleep 600"))
	c.startContainer(t, podID, pod, containerConfig("b", "exec sleep 600"))

	ids := func(n int, id func(int) string) []string {
		var out []string
		for i := range n {
			out = append(out, id(i))
		}
		slices.Sort(out)
		return out
	}
	same := func(what string, streamed, listed []string) {
		t.Helper()
		if !slices.Equal(streamed, listed) || len(listed) == 0 {
			t.Errorf("%s: streamed %v, listed %v", what, streamed, listed)
		}
	}

	pods, err := c.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var streamedPods []string
	podMsgs, err := recvAll(c.StreamPodSandboxes(ctx, &runtimeapi.StreamPodSandboxesRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range podMsgs {
		for _, p := range m.PodSandboxes {
			streamedPods = append(streamedPods, p.Id)
		}
	}
	slices.Sort(streamedPods)
	same("pods", streamedPods, ids(len(pods.Items), func(i int) string { return pods.Items[i].Id }))

	filter := &runtimeapi.ContainerFilter{PodSandboxId: podID}
	ctrs, err := c.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: filter})
	if err != nil {
		t.Fatal(err)
	}
	var streamedCtrs []string
	ctrMsgs, err := recvAll(c.StreamContainers(ctx, &runtimeapi.StreamContainersRequest{Filter: filter}))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ctrMsgs {
		for _, ctr := range m.Containers {
			streamedCtrs = append(streamedCtrs, ctr.Id)
		}
	}
	slices.Sort(streamedCtrs)
	same("containers", streamedCtrs, ids(len(ctrs.Containers), func(i int) string { return ctrs.Containers[i].Id }))

	var streamedStats []string
	statMsgs, err := recvAll(c.StreamContainerStats(ctx, &runtimeapi.StreamContainerStatsRequest{Filter: &runtimeapi.ContainerStatsFilter{PodSandboxId: podID}}))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range statMsgs {
		for _, st := range m.ContainerStats {
			streamedStats = append(streamedStats, st.Attributes.Id)
		}
	}
	slices.Sort(streamedStats)
	same("container stats", streamedStats, streamedCtrs)

	var streamedPodStats []string
	podStatMsgs, err := recvAll(c.StreamPodSandboxStats(ctx, &runtimeapi.StreamPodSandboxStatsRequest{Filter: &runtimeapi.PodSandboxStatsFilter{Id: podID}}))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range podStatMsgs {
		for _, st := range m.PodSandboxStats {
			streamedPodStats = append(streamedPodStats, st.Attributes.Id)
		}
	}
	same("pod stats", streamedPodStats, []string{podID})

	images, err := c.ListImages(ctx, &runtimeapi.ListImagesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var streamedImages []string
	imageMsgs, err := recvAll(c.StreamImages(ctx, &runtimeapi.StreamImagesRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range imageMsgs {
		for _, img := range m.Images {
			streamedImages = append(streamedImages, img.Id)
		}
	}
	slices.Sort(streamedImages)
	same("images", streamedImages, ids(len(images.Images), func(i int) string { return images.Images[i].Id }))
}

// TestCRIStreamBeyondMessageLimit: a node whose containers' list is more
// than kubelet's 16 MiB message limit (70 containers with 240 KiB of
// annotations each, near the most an object may carry) cannot be listed
// by ListContainers, and is streamed whole by StreamContainers under
// gRPC's default 4 MiB limit.
func TestCRIStreamBeyondMessageLimit(t *testing.T) {
	c := newCRI(t)
	ctx := testContext(t)
	c.pullBusybox(t)
	pod := podConfig(t, "streambig")
	podID := c.runPod(t, pod)
	const n = 70
	big := strings.Repeat("a", 240<<10)
	for i := range n {
		cfg := containerConfig(fmt.Sprintf("c%d", i), "true")
		cfg.Annotations = map[string]string{"big": big}
		if _, err := c.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod}); err != nil {
			t.Fatal(err)
		}
	}
	filter := &runtimeapi.ContainerFilter{PodSandboxId: podID}
	_, err := c.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: filter}, grpc.MaxCallRecvMsgSize(16<<20))
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("ListContainers of %d containers of 240 KiB under a 16 MiB limit: %v, want ResourceExhausted (the list must be larger than one message)", n, err)
	}
	msgs, err := recvAll(c.StreamContainers(ctx, &runtimeapi.StreamContainersRequest{Filter: filter}))
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for _, m := range msgs {
		got += len(m.Containers)
	}
	if got != n {
		t.Errorf("StreamContainers sent %d containers in %d messages, want %d", got, len(msgs), n)
	}
	t.Logf("%d containers in %d messages", got, len(msgs))
}
