package integration

import (
	"io"
	"slices"
	"testing"

	"google.golang.org/grpc"
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
