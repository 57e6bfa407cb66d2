package shim

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	runc "github.com/containerd/go-runc"
	"golang.org/x/sys/unix"
)

// fifos makes the three FIFOs containerd's client would.
func fifos(t *testing.T) stdioPaths {
	dir := t.TempDir()
	p := stdioPaths{
		stdin:  filepath.Join(dir, "stdin"),
		stdout: filepath.Join(dir, "stdout"),
		stderr: filepath.Join(dir, "stderr"),
	}
	for _, f := range []string{p.stdin, p.stdout, p.stderr} {
		if err := unix.Mkfifo(f, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// startWithStdio runs a host command with the stdio the shim would give a
// container and starts copying.
func startWithStdio(t *testing.T, paths stdioPaths, script string) (*processIO, *exec.Cmd) {
	t.Helper()
	pio, err := newProcessIO(paths, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pio.Close() })
	cmd := exec.Command("sh", "-c", script)
	pio.runcIO().Set(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if err := pio.runcIO().(runc.StartCloser).CloseAfterStart(); err != nil {
		t.Fatal(err)
	}
	if err := pio.start(); err != nil {
		t.Fatal(err)
	}
	return pio, cmd
}

// TestPipesCopyToAndFromFIFOs runs a host process with the stdio the shim
// gives a container and checks both directions arrive whole.
func TestPipesCopyToAndFromFIFOs(t *testing.T) {
	paths := fifos(t)
	pio, cmd := startWithStdio(t, paths, "cat; echo done >&2")

	stdout, err := os.Open(paths.stdout)
	if err != nil {
		t.Fatal(err)
	}
	defer stdout.Close()
	stderr, err := os.Open(paths.stderr)
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	stdin, err := os.OpenFile(paths.stdin, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, 256<<10) // more than a pipe holds
	for i := range payload {
		payload[i] = byte('a' + i%26)
	}
	go func() {
		stdin.Write(payload)
		stdin.Close() // the process must read EOF
	}()
	got := make([]byte, len(payload))
	if _, err := io.ReadFull(stdout, got); err != nil {
		t.Fatal(err)
	}
	if string(got) != string(payload) {
		t.Fatal("stdout differs from what was written to stdin")
	}
	line := make([]byte, 5)
	if _, err := io.ReadFull(stderr, line); err != nil || string(line) != "done\n" {
		t.Fatalf("stderr %q, %v", line, err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	pio.drain()
}

// TestCloseIOEndsStdin checks CloseIO gives the process EOF even when
// the client keeps its end of the stdin FIFO open.
func TestCloseIOEndsStdin(t *testing.T) {
	paths := fifos(t)
	paths.stderr = ""
	pio, cmd := startWithStdio(t, paths, "cat; echo eof")
	stdout, err := os.Open(paths.stdout)
	if err != nil {
		t.Fatal(err)
	}
	defer stdout.Close()
	stdin, err := os.OpenFile(paths.stdin, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	if _, err := stdin.Write([]byte("x\n")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 2)
	if _, err := io.ReadFull(stdout, got); err != nil || string(got) != "x\n" {
		t.Fatalf("stdout %q, %v", got, err)
	}
	pio.closeStdin()
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	rest := make([]byte, 4)
	if _, err := io.ReadFull(stdout, rest); err != nil || string(rest) != "eof\n" {
		t.Fatalf("after CloseIO stdout %q, %v", rest, err)
	}
}

// CloseIO returns even when the process reads none of its stdin and the
// copy is stuck writing to the full pipe.
func TestCloseIOReturnsWhenStdinIsNotRead(t *testing.T) {
	paths := fifos(t)
	paths.stdout, paths.stderr = "", ""
	pio, cmd := startWithStdio(t, paths, "exec sleep 600")
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	stdin, err := os.OpenFile(paths.stdin, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close() })
	// More than the pipe and the FIFO hold: the copy blocks in its
	// write, and so does this one once the FIFO is full.
	go stdin.Write(make([]byte, 256<<10))
	closed := make(chan struct{})
	go func() { pio.closeStdin(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatal("CloseIO still waits for a process that does not read its stdin")
	}
}

// A reader slower than the exit's drain still gets the whole output: a
// Delete lets the copies finish before it closes the pipes.
func TestDeleteLetsASlowReaderFinish(t *testing.T) {
	paths := fifos(t)
	const size = 120 << 10 // more than a pipe or a FIFO holds, less than both and the copy's buffer
	pio, cmd := startWithStdio(t, paths, fmt.Sprintf("head -c %d /dev/zero", size))
	stdout, err := os.Open(paths.stdout)
	if err != nil {
		t.Fatal(err)
	}
	defer stdout.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	pio.drain() // the exit's: nobody reads yet, so it gives up
	read := make(chan int)
	go func() {
		n := 0
		buf := make([]byte, 16<<10)
		for {
			time.Sleep(50 * time.Millisecond) // a slow reader
			m, err := stdout.Read(buf)
			n += m
			if err != nil {
				read <- n
				return
			}
		}
	}()
	pio.closeAfterCopies()
	if n := <-read; n != size {
		t.Fatalf("the reader got %d bytes of %d", n, size)
	}
}
