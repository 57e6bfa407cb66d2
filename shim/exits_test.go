package shim

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/containerd/cgroups/v3/cgroup2"
	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/api/types"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/typeurl/v2"
)

// recorder is a publisher that keeps what it is sent, in order.
type recorder struct {
	mu     sync.Mutex
	events []any
	added  chan struct{}
}

func newRecorder() *recorder { return &recorder{added: make(chan struct{}, 100)} }

func (r *recorder) send(_ context.Context, env *types.Envelope) error {
	e, err := typeurl.UnmarshalAny(env.Event)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
	r.added <- struct{}{}
	return nil
}

// wait returns the first n events, failing the test if they do not come.
func (r *recorder) wait(t *testing.T, n int) []any {
	t.Helper()
	for {
		r.mu.Lock()
		got := append([]any(nil), r.events...)
		r.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-r.added:
		case <-time.After(5 * time.Second):
			t.Fatalf("got %d events, want %d: %v", len(got), n, got)
		}
	}
}

func testService(t *testing.T) (*service, *recorder, chan runc.Exit) {
	rec := newRecorder()
	s := &service{
		namespace:  "test",
		containers: make(map[string]*container),
		creating:   make(map[string]chan struct{}),
		abandoned:  make(map[string]bool),
		pids:       make(map[int]*process),
		early:      make(map[int]runc.Exit),
		events:     newEventQueue(rec.send, "test"),
		// A Delete's leaveIfIdleLater may end an idle test service
		// claimTTL later.
		shutdown: func() {},
	}
	exits := make(chan runc.Exit)
	go s.exitLoop(exits)
	t.Cleanup(func() { close(exits); s.events.close() })
	return s, rec, exits
}

// addContainer registers a container whose init has the given pid.
func addContainer(s *service, id string, pid int) *container {
	c := &container{id: id, bundle: tempBundle, execs: map[string]*process{}}
	c.init = newProcess(id, "", stdioPaths{})
	s.mu.Lock()
	s.containers[id] = c
	s.starting++
	s.endStartLocked(c.init, pid)
	s.mu.Unlock()
	return c
}

var tempBundle string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mine-shim-test-")
	if err != nil {
		panic(err)
	}
	tempBundle = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func TestExitBeforePidIsKnownIsNotLost(t *testing.T) {
	s, rec, exits := testService(t)
	c := &container{id: "c", bundle: tempBundle, execs: map[string]*process{}}
	p := newProcess("c", "", stdioPaths{})
	c.init = p
	s.mu.Lock()
	s.containers["c"] = c
	s.mu.Unlock()

	s.beginStart() // runc create in flight
	exits <- runc.Exit{Pid: 4242, Status: 3, Timestamp: time.Now()}
	s.mu.Lock()
	s.endStartLocked(p, 4242) // now runc reports the pid
	s.mu.Unlock()

	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		t.Fatal("the early exit was lost")
	}
	if p.exitCode != 3 {
		t.Fatalf("exit code %d, want 3", p.exitCode)
	}
	e := rec.wait(t, 1)[0].(*eventstypes.TaskExit)
	if e.Pid != 4242 || e.ExitStatus != 3 {
		t.Fatalf("TaskExit %+v", e)
	}
	rs, err := readExitRecord(tempBundle)
	if err != nil || rs.Status != 3 || rs.Pid != 4242 {
		t.Fatalf("exit record %+v, %v: the exit must be on disk before TaskExit", rs, err)
	}
}

func TestUnknownExitsAreDroppedWhenNothingStarts(t *testing.T) {
	s, _, exits := testService(t)
	exits <- runc.Exit{Pid: 777, Status: 1}
	exits <- runc.Exit{Pid: 778, Status: 1} // the loop has handled 777 once this is taken
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.early) != 0 {
		t.Fatalf("exits of unrelated processes are kept: %v", s.early)
	}
}

func TestInitExitIsPublishedAfterItsExecs(t *testing.T) {
	s, rec, exits := testService(t)
	// A real child stands in for the exec: the shim kills live execs when
	// their init exits, and that must hit a process of ours.
	child := exec.Command("sleep", "60")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer child.Wait()
	c := addContainer(s, "c", 5000)
	x := newProcess("c", "x", stdioPaths{})
	s.mu.Lock()
	c.execs["x"] = x
	s.starting++
	s.endStartLocked(x, child.Process.Pid)
	s.mu.Unlock()

	exits <- runc.Exit{Pid: 5000, Status: 0, Timestamp: time.Now()}
	// The exec is killed by the shim; its exit comes after the init's.
	if err := child.Wait(); err == nil {
		t.Fatal("the exec outlived its container's init")
	}
	exits <- runc.Exit{Pid: child.Process.Pid, Status: 137, Timestamp: time.Now()}

	got := rec.wait(t, 2)
	first, second := got[0].(*eventstypes.TaskExit), got[1].(*eventstypes.TaskExit)
	if first.ID != "x" || second.ID != "c" {
		t.Fatalf("exit events for %q then %q; want the exec x before the init c", first.ID, second.ID)
	}
}

func TestExitWaitsForStartEvent(t *testing.T) {
	s, rec, exits := testService(t)
	c := addContainer(s, "c", 6000)
	gate := make(chan struct{})
	s.mu.Lock()
	c.init.startGate = gate
	s.mu.Unlock()

	exits <- runc.Exit{Pid: 6000, Status: 0, Timestamp: time.Now()}
	select {
	case <-c.init.exited:
		t.Fatal("exit published while Start was still publishing TaskStart")
	case <-time.After(100 * time.Millisecond):
	}
	s.publish("/tasks/start", &eventstypes.TaskStart{ContainerID: "c", Pid: 6000})
	close(gate)
	got := rec.wait(t, 2)
	if _, ok := got[0].(*eventstypes.TaskStart); !ok {
		t.Fatalf("first event %T, want TaskStart", got[0])
	}
	if _, ok := got[1].(*eventstypes.TaskExit); !ok {
		t.Fatalf("second event %T, want TaskExit", got[1])
	}
}

// A Delete retried after its unmount failed stops the container's OOM
// watch again: on cgroup v2, a second close of its channel would have
// ended the shim.
func TestOOMWatchStopsTwice(t *testing.T) {
	s, _, _ := testService(t)
	mountpoint := "/sys/fs/cgroup/unified" // this machine's hybrid layout
	if _, err := os.Stat(filepath.Join(mountpoint, "cgroup.controllers")); err != nil {
		mountpoint = "/sys/fs/cgroup"
	}
	group := fmt.Sprintf("/mine-test-oom-%d", os.Getpid())
	cg, err := cgroup2.NewManager(mountpoint, group, &cgroup2.Resources{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cg.Delete() })
	stop := s.watchOOM("ctr", cg)
	stop()
	stop()
}
