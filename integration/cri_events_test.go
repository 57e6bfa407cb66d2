package integration

import (
	"context"
	"slices"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestCRIContainerEvents follows a pod and a container through their
// lifecycle on GetContainerEvents, as kubelet's evented PLEG does.
func TestCRIContainerEvents(t *testing.T) {
	c := newCRI(t)
	c.pullBusybox(t)
	ctx, cancel := context.WithCancel(testContext(t))
	defer cancel()
	stream, err := c.GetContainerEvents(ctx, &runtimeapi.GetEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	events := make(chan *runtimeapi.ContainerEventResponse, 100)
	go func() {
		for {
			ev, err := stream.Recv()
			if err != nil {
				close(events)
				return
			}
			events <- ev
		}
	}()

	pod := podConfig(t, "events")
	resp, err := c.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: pod})
	if err != nil {
		t.Fatal(err)
	}
	podID := resp.PodSandboxId
	id := c.startContainer(t, podID, pod, containerConfig("main", "exit 3"))
	waitFor(t, "the container to exit", 10*time.Second, func() bool {
		return c.status(t, id).State == runtimeapi.ContainerState_CONTAINER_EXITED
	})
	if _, err := c.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatal(err)
	}

	all := []runtimeapi.ContainerEventType{
		runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT,
		runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT,
		runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT,
		runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT,
	}
	got := map[string][]runtimeapi.ContainerEventType{}
	deadline := time.After(20 * time.Second)
	for len(got[id]) < len(all) || len(got[podID]) < len(all) {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("the event stream ended; events so far: %v", got)
			}
			if ev.ContainerId != id && ev.ContainerId != podID {
				continue
			}
			got[ev.ContainerId] = append(got[ev.ContainerId], ev.ContainerEventType)
			if ev.ContainerId == id && ev.ContainerEventType == runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT {
				if len(ev.ContainersStatuses) != 1 || ev.ContainersStatuses[0].ExitCode != 3 || ev.PodSandboxStatus.GetId() != podID {
					t.Errorf("the stop event's statuses: %v, pod %v", ev.ContainersStatuses, ev.PodSandboxStatus)
				}
			}
			if ev.CreatedAt == 0 {
				t.Errorf("event %v has no time", ev)
			}
		case <-deadline:
			t.Fatalf("events after 20s: container %v, pod %v", got[id], got[podID])
		}
	}
	for who, seen := range map[string][]runtimeapi.ContainerEventType{"container": got[id], "pod": got[podID]} {
		if !slices.Equal(seen, all) {
			t.Errorf("%s events %v, want %v", who, seen, all)
		}
	}
}
