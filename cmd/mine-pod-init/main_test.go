package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestPodInit runs the pod init as PID 1 of a new PID namespace, as a pod
// runs it, built as the Makefile builds it and as a plain go build does:
// it reaps an orphan that lands on it and exits 0 on SIGTERM and SIGINT.
func TestPodInit(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root: a PID namespace of its own")
	}
	builds := map[string]string{"go runtime": "-s -w"}
	if runtime.GOARCH == "amd64" {
		builds["entry start"] = "-s -w -E main.start"
	}
	for name, ldflags := range builds {
		t.Run(name, func(t *testing.T) {
			bin := filepath.Join(t.TempDir(), "mine-pod-init")
			build := exec.Command(goTool(), "build", "-trimpath", "-ldflags", ldflags, "-o", bin, ".")
			build.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := build.CombinedOutput(); err != nil {
				t.Fatalf("go build: %v\n%s", err, out)
			}

			init := startInit(t, bin)
			if name == "entry start" {
				// Go's runtime starts threads of its own (sysmon at least)
				// before main; this build runs none of it.
				if threads, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", init.pid)); err != nil || len(threads) != 1 {
					t.Fatalf("%d threads (%v): the entry point did not bypass Go's runtime", len(threads), err)
				}
			}

			// nsenter's shell is in the init's namespace; the sleep it
			// leaves behind is reparented to the init when the shell exits.
			if out, err := exec.Command("nsenter", "--target", strconv.Itoa(init.pid), "--pid", "--", "sh", "-c", "sleep 1 >/dev/null 2>&1 &").CombinedOutput(); err != nil {
				t.Fatalf("nsenter: %v\n%s", err, out)
			}
			var orphan int
			waitFor(t, "the orphan to be reparented to the init", func() bool {
				kids := children(init.pid)
				if len(kids) > 0 {
					orphan = kids[0]
				}
				return orphan != 0
			})
			waitFor(t, "the orphan to exit and be reaped", func() bool {
				_, err := os.Stat(fmt.Sprintf("/proc/%d", orphan))
				return errors.Is(err, os.ErrNotExist)
			})
			stopInit(t, init, syscall.SIGTERM)

			stopInit(t, startInit(t, bin), syscall.SIGINT)
		})
	}
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// initProcess is a pod init the test started.
type initProcess struct {
	pid    int
	exited chan struct{} // closed once it has exited and been waited for
	err    error         // how it exited
}

// startInit starts bin as PID 1 of a new PID namespace.
func startInit(t *testing.T, bin string) *initProcess {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &initProcess{pid: cmd.Process.Pid, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			cmd.Process.Kill()
			<-p.exited
		}
	})
	return p
}

// stopInit signals the init until it exits, and wants exit status 0. The
// init of a PID namespace is spared every signal it neither handles nor
// blocks, so one sent before it has set itself up is lost: it is sent
// again.
func stopInit(t *testing.T, p *initProcess, sig syscall.Signal) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		syscall.Kill(p.pid, sig)
		select {
		case <-p.exited:
			if p.err != nil {
				t.Fatalf("after %v: %v, want exit status 0", sig, p.err)
			}
			return
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("the init did not exit on %v", sig)
		}
	}
}

func children(pid int) []int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if p, err := strconv.Atoi(f); err == nil {
			pids = append(pids, p)
		}
	}
	return pids
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
