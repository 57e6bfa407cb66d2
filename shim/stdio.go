package shim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/console"
	"github.com/containerd/fifo"
	runc "github.com/containerd/go-runc"
)

// drainTimeout bounds how long an exit waits for the process's output to
// be copied out. Output left in the pipes when a process exits takes
// milliseconds; the bound only matters when a daemonized child still holds
// the pipe open, and then the exit must not wait for it.
const drainTimeout = 2 * time.Second

type stdioPaths struct {
	stdin, stdout, stderr string
	terminal             bool
}

// processIO connects a process's stdio to the FIFOs (or files) containerd
// handed us. Without a TTY the process writes to pipes the shim copies
// from; with a TTY the shim copies between the console master and the
// FIFOs.
type processIO struct {
	paths   stdioPaths
	pipes   runc.IO         // nil with a TTY
	socket  *runc.Socket    // console socket, with a TTY
	console console.Console // set once the master has been received

	stdinMu sync.Mutex
	stdinW  io.WriteCloser // where the client's stdin is copied to
	closers []io.Closer
	copies  sync.WaitGroup
}

func newProcessIO(paths stdioPaths, uid, gid int) (*processIO, error) {
	pio := &processIO{paths: paths}
	if paths.terminal {
		s, err := runc.NewTempConsoleSocket()
		if err != nil {
			return nil, fmt.Errorf("console socket: %w", err)
		}
		pio.socket = s
		return pio, nil
	}
	pipes, err := runc.NewPipeIO(uid, gid, func(o *runc.IOOption) {
		o.OpenStdin = paths.stdin != ""
		o.OpenStdout = paths.stdout != ""
		o.OpenStderr = paths.stderr != ""
	})
	if err != nil {
		return nil, fmt.Errorf("stdio pipes: %w", err)
	}
	pio.pipes = pipes
	return pio, nil
}

// runcIO is what runc's create/exec get: the pipes, or nothing with a TTY.
func (pio *processIO) runcIO() runc.IO {
	if pio.pipes == nil {
		return nil
	}
	return pio.pipes
}

func (pio *processIO) consoleSocket() runc.ConsoleSocket {
	if pio.socket == nil {
		return nil
	}
	return pio.socket
}

// start begins copying. It is called after runc has created the process,
// so that with a TTY the console master can be received.
func (pio *processIO) start(ctx context.Context) error {
	var stdout, stderr io.Reader
	var stdin io.WriteCloser
	if pio.socket != nil {
		con, err := pio.socket.ReceiveMaster()
		pio.socket.Close()
		pio.socket = nil
		if err != nil {
			return fmt.Errorf("receive console master: %w", err)
		}
		pio.console = con
		pio.closers = append(pio.closers, con)
		stdout, stdin = con, con
	} else {
		stdout, stderr, stdin = pio.pipes.Stdout(), pio.pipes.Stderr(), pio.pipes.Stdin()
		pio.closers = append(pio.closers, pio.pipes)
	}

	if err := pio.copyOut(ctx, stdout, pio.paths.stdout); err != nil {
		return err
	}
	if err := pio.copyOut(ctx, stderr, pio.paths.stderr); err != nil {
		return err
	}
	if pio.paths.stdin == "" {
		if stdin != nil && pio.console == nil {
			stdin.Close()
		}
		return nil
	}
	in, err := openInput(ctx, pio.paths.stdin)
	if err != nil {
		return err
	}
	pio.closers = append(pio.closers, in)
	pio.stdinW = stdin
	go func() {
		buf := make([]byte, 8<<10)
		_, _ = io.CopyBuffer(stdin, in, buf)
		// The client closed its end: the process sees EOF on stdin, but a
		// console is left open since it also carries the output.
		if pio.console == nil {
			pio.closeStdin()
		}
	}()
	return nil
}

func (pio *processIO) copyOut(ctx context.Context, r io.Reader, path string) error {
	if r == nil || path == "" {
		return nil
	}
	w, err := openOutput(ctx, path)
	if err != nil {
		return err
	}
	pio.closers = append(pio.closers, w)
	pio.copies.Add(1)
	go func() {
		defer pio.copies.Done()
		buf := make([]byte, 32<<10)
		// A console master reads EIO once the last slave is closed: that is
		// its end of file.
		_, _ = io.CopyBuffer(w, r, buf)
	}()
	return nil
}

// closeStdin is the task API's CloseIO: the process reads EOF.
func (pio *processIO) closeStdin() {
	pio.stdinMu.Lock()
	defer pio.stdinMu.Unlock()
	if pio.stdinW != nil && pio.console == nil {
		pio.stdinW.Close()
		pio.stdinW = nil
	}
}

// drain waits, boundedly, for the output copies to reach end of file.
func (pio *processIO) drain() {
	done := make(chan struct{})
	go func() { pio.copies.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(drainTimeout):
	}
}

func (pio *processIO) Close() error {
	if pio.socket != nil {
		pio.socket.Close()
	}
	var errs []error
	for _, c := range pio.closers {
		if err := c.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// openOutput opens where a stream goes: a FIFO path (what containerd's cio
// creates) or a file:// URI. A FIFO is opened read-write so that opening
// never blocks on the client and a client that goes away does not make the
// process die of SIGPIPE.
func openOutput(ctx context.Context, path string) (io.WriteCloser, error) {
	if u, err := url.Parse(path); err == nil && u.Scheme == "file" {
		return os.OpenFile(u.Path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	}
	f, err := fifo.OpenFifo(ctx, path, syscall.O_RDWR|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open stdio %s: %w", path, err)
	}
	return f, nil
}

func openInput(ctx context.Context, path string) (io.ReadCloser, error) {
	f, err := fifo.OpenFifo(ctx, path, syscall.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open stdin %s: %w", path, err)
	}
	return f, nil
}
