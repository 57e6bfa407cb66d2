package integration

import (
	"context"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/api/services/tasks/v1"
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
			// kubelet drops an event without its pod's status: a
			// deletion's too.
			if ev.PodSandboxStatus.GetMetadata().GetUid() != pod.Metadata.Uid {
				t.Errorf("%s event of %s without its pod's status: %v", ev.ContainerEventType, ev.ContainerId, ev.PodSandboxStatus)
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

// A pod whose init dies is stopped for kubelet at once: its evented PLEG
// hears of it from a CONTAINER_STOPPED_EVENT of the pod, with its status
// NOTREADY, rather than at its next relist.
func TestCRIPodInitExitIsAnEvent(t *testing.T) {
	c := newCRI(t)
	ctx, cancel := context.WithCancel(testContext(t))
	defer cancel()
	stream, err := c.GetContainerEvents(ctx, &runtimeapi.GetEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	pod := podConfig(t, "init-dies")
	// Its init starts within RunPodSandbox.
	pod.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_POD
	podID := c.runPod(t, pod)
	task, err := criClient(t).TaskService().Get(ctx, &tasks.GetRequest{ContainerID: podID})
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(int(task.Process.Pid), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// kubelet asks for the pod's status meanwhile, and finds it first, most
	// often before the init's exit event: the event comes all the same.
	waitFor(t, "the pod's status to say NOTREADY", 10*time.Second, func() bool {
		st, err := c.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: podID})
		return err == nil && st.Status.State == runtimeapi.PodSandboxState_SANDBOX_NOTREADY
	})
	for {
		ev, err := stream.Recv()
		if err != nil {
			t.Fatalf("no stop event of the pod: %v", err)
		}
		if ev.ContainerId == podID && ev.ContainerEventType == runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT {
			if st := ev.PodSandboxStatus.GetState(); st != runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
				t.Errorf("the pod's status in its stop event: %s", st)
			}
			break
		}
	}
	list, err := c.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{Id: podID}})
	if err != nil || len(list.Items) != 1 || list.Items[0].State != runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
		t.Fatalf("listed after its init died: %v, %v", list, err)
	}
}
