package shim

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	"google.golang.org/protobuf/types/known/anypb"
)

// addExec adds an exec to a container through the task API, as containerd
// does before it starts one.
func addExec(t *testing.T, s *service, containerID, execID string) {
	t.Helper()
	_, err := s.Exec(context.Background(), &taskAPI.ExecProcessRequest{
		ID: containerID, ExecID: execID, Spec: &anypb.Any{Value: []byte(`{"args":["true"],"cwd":"/"}`)},
	})
	if err != nil {
		t.Fatal(err)
	}
}

// waitAsync calls Wait in the background and hands over its answer.
func waitAsync(s *service, containerID, execID string) <-chan *taskAPI.WaitResponse {
	done := make(chan *taskAPI.WaitResponse, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		resp, _ := s.Wait(ctx, &taskAPI.WaitRequest{ID: containerID, ExecID: execID})
		done <- resp
	}()
	return done
}

func mustReturn(t *testing.T, what string, done <-chan *taskAPI.WaitResponse) *taskAPI.WaitResponse {
	t.Helper()
	select {
	case resp := <-done:
		if resp == nil {
			t.Fatalf("%s: Wait failed", what)
		}
		return resp
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: Wait still blocks", what)
	}
	return nil
}

func TestWaitReturnsWhenExecStartFails(t *testing.T) {
	s, rec, _ := testService(t)
	c := addContainer(s, "c", 7000)
	// A runc that fails every command: the exec never gets a pid.
	c.runc = &runc.Runc{Command: "false"}
	addExec(t, s, "c", "x")
	done := waitAsync(s, "c", "x")

	if _, err := s.Start(context.Background(), &taskAPI.StartRequest{ID: "c", ExecID: "x"}); err == nil {
		t.Fatal("the exec started with a runc that always fails")
	}
	if resp := mustReturn(t, "after a failed start", done); resp.ExitStatus != neverRanStatus {
		t.Fatalf("exit status %d, want %d", resp.ExitStatus, neverRanStatus)
	}
	st, err := s.State(context.Background(), &taskAPI.StateRequest{ID: "c", ExecID: "x"})
	if err != nil || st.Status != task.Status_STOPPED {
		t.Fatalf("state after a failed start: %v, %v", st, err)
	}
	if _, err := s.Delete(context.Background(), &taskAPI.DeleteRequest{ID: "c", ExecID: "x"}); err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.events) != 1 { // TaskExecAdded only: nothing started, nothing exited
		t.Fatalf("events %v", rec.events)
	}
}

func TestDeleteOfUnstartedExecReleasesWait(t *testing.T) {
	s, _, _ := testService(t)
	addContainer(s, "c", 7100)
	addExec(t, s, "c", "x")
	done := waitAsync(s, "c", "x")
	select {
	case <-done:
		t.Fatal("Wait returned before the exec started or was deleted")
	case <-time.After(100 * time.Millisecond):
	}
	resp, err := s.Delete(context.Background(), &taskAPI.DeleteRequest{ID: "c", ExecID: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.ExitStatus != neverRanStatus || resp.Pid != 0 {
		t.Fatalf("delete of an unstarted exec: %+v", resp)
	}
	if w := mustReturn(t, "after delete", done); w.ExitStatus != neverRanStatus {
		t.Fatalf("exit status %d, want %d", w.ExitStatus, neverRanStatus)
	}
}

func TestDeleteWaitsForAStartUnderway(t *testing.T) {
	s, _, _ := testService(t)
	c := addContainer(s, "c", 7200)
	addExec(t, s, "c", "x")
	gate := make(chan struct{})
	s.mu.Lock()
	c.execs["x"].startGate = gate // a Start is in flight
	s.mu.Unlock()

	deleted := make(chan error, 1)
	go func() {
		_, err := s.Delete(context.Background(), &taskAPI.DeleteRequest{ID: "c", ExecID: "x"})
		deleted <- err
	}()
	select {
	case err := <-deleted:
		t.Fatalf("delete did not wait for the start under way: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	s.releaseUnstarted(c.execs["x"]) // the start failed
	close(gate)
	select {
	case err := <-deleted:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("delete still blocks after the start ended")
	}
}

func TestInitDeleteReleasesUnstartedExecs(t *testing.T) {
	s, _, exits := testService(t)
	c := addContainer(s, "c", 7300)
	c.runc = &runc.Runc{Command: "true"}
	c.init.io = &processIO{}
	addExec(t, s, "c", "x")
	done := waitAsync(s, "c", "x")

	exits <- runc.Exit{Pid: 7300, Status: 0, Timestamp: time.Now()}
	select {
	case <-c.init.exited:
	case <-time.After(5 * time.Second):
		t.Fatal("init exit not recorded")
	}
	if _, err := s.Delete(context.Background(), &taskAPI.DeleteRequest{ID: "c"}); err != nil {
		t.Fatal(err)
	}
	mustReturn(t, "after the container's delete", done)
}

// A container stored while its Create is under way (a pod init made by
// runc run in Create) is not yet a task: State answers NotFound and
// Connect no pid, as for a container runc is still creating, never pid 0
// (kubelet's cAdvisor keeps the first pid it gets). Once Create is over,
// both give its pid.
func TestNoTaskWhileCreating(t *testing.T) {
	s, _, _ := testService(t)
	addContainer(s, "c", 7100)
	s.mu.Lock()
	s.creating["c"] = make(chan struct{})
	s.mu.Unlock()
	ctx := context.Background()
	if _, err := s.State(ctx, &taskAPI.StateRequest{ID: "c"}); !errdefs.IsNotFound(err) {
		t.Fatalf("State while creating: %v, want NotFound", err)
	}
	if resp, err := s.Connect(ctx, &taskAPI.ConnectRequest{ID: "c"}); err != nil || resp.TaskPid != 0 {
		t.Fatalf("Connect while creating: pid %d, %v; want none", resp.GetTaskPid(), err)
	}
	s.mu.Lock()
	s.endCreateLocked("c", s.creating["c"])
	s.mu.Unlock()
	if st, err := s.State(ctx, &taskAPI.StateRequest{ID: "c"}); err != nil || st.Pid != 7100 {
		t.Fatalf("State once created: pid %d, %v; want 7100", st.GetPid(), err)
	}
	if resp, err := s.Connect(ctx, &taskAPI.ConnectRequest{ID: "c"}); err != nil || resp.TaskPid != 7100 {
		t.Fatalf("Connect once created: pid %d, %v; want 7100", resp.GetTaskPid(), err)
	}
}

// containerd, restarted after it died in a Create, deletes the container
// it finds no task for while the shim's Create goes on: the Delete waits
// for the Create to end, then deletes what it made.
func TestDeleteWaitsForACreateUnderway(t *testing.T) {
	s, _, exits := testService(t)
	creatingContainer(s, "c", 7400)

	deleted := make(chan error, 1)
	go func() {
		_, err := s.Delete(context.Background(), &taskAPI.DeleteRequest{ID: "c"})
		deleted <- err
	}()
	select {
	case err := <-deleted:
		t.Fatalf("delete did not wait for the Create under way: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	s.mu.Lock()
	s.endCreateLocked("c", s.creating["c"])
	s.mu.Unlock()
	// runc delete --force kills the created init; its exit comes through
	// the reaper.
	exits <- runc.Exit{Pid: 7400, Status: 137, Timestamp: time.Now()}
	select {
	case err := <-deleted:
		if err != nil {
			t.Fatalf("delete once the Create was over: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("delete still blocks after the Create ended")
	}
	if hasContainer(s, "c") {
		t.Fatal("the container is still in the shim after its delete")
	}
}

// containerd gives up on a Delete that waits for a Create (a restarted
// containerd gives its clean-up 5 s): what the Create made is deleted once
// it is over, and the shim, then idle, leaves.
func TestAbandonedCreateIsDeletedWhenOver(t *testing.T) {
	s, _, exits := testService(t)
	left := make(chan struct{})
	var once sync.Once
	s.shutdown = func() { once.Do(func() { close(left) }) }
	creatingContainer(s, "c", 7500)

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: "c"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Delete past its deadline with the Create under way: %v", err)
	}
	s.mu.Lock()
	s.endCreateLocked("c", s.creating["c"])
	s.mu.Unlock()
	exits <- runc.Exit{Pid: 7500, Status: 137, Timestamp: time.Now()}
	select {
	case <-left:
	case <-time.After(5 * time.Second):
		t.Fatal("the shim did not leave once the abandoned container was deleted")
	}
	if hasContainer(s, "c") {
		t.Fatal("the abandoned container is still in the shim")
	}
}

// creatingContainer adds a container whose init has the given pid as one
// stored while its Create is still under way (createRunning), with a runc
// whose delete succeeds.
func creatingContainer(s *service, id string, pid int) {
	c := addContainer(s, id, pid)
	c.runc = &runc.Runc{Command: "true"}
	c.init.io = &processIO{}
	s.mu.Lock()
	s.creating[id] = make(chan struct{})
	s.mu.Unlock()
}

func hasContainer(s *service, id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.containers[id]
	return ok
}
