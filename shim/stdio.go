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
	"github.com/mine-runtime/mine/extension"
)

// drainTimeout bounds how long an exit waits for the process's output to
// be copied out. Output left in the pipes when a process exits takes
// milliseconds; the bound only matters when a daemonized child still holds
// the pipe open, and then the exit must not wait for it.
const drainTimeout = 500 * time.Millisecond

// deleteDrain bounds how much longer a Delete waits for the output copies
// before it closes the pipes, as containerd's runc shim waits in delete:
// a reader slower than drainTimeout (kubectl cp over a slow link) still
// gets the output's end.
const deleteDrain = 2 * time.Second

// stdinGrace is how long CloseIO lets the client's last stdin bytes
// arrive when the client has not closed its end of the FIFO.
const stdinGrace = time.Second

type stdioPaths struct {
	stdin, stdout, stderr string
	terminal              bool
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
	log     *criLog         // set when the streams go to a CRI log

	stdinR    io.ReadCloser // the client's stdin FIFO
	stdinDone chan struct{} // closed when the stdin copy has ended
	closers   []io.Closer
	copies    sync.WaitGroup
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
	var (
		pipes runc.IO
		err   error
	)
	if paths.stdin == "" && paths.stdout == "" && paths.stderr == "" {
		pipes, err = runc.NewNullIO()
	} else {
		// Output pipes are always opened: runc must never inherit the
		// shim's own stdio, and a stream nobody asked for is discarded.
		pipes, err = runc.NewPipeIO(uid, gid, func(o *runc.IOOption) {
			o.OpenStdin = paths.stdin != ""
		})
	}
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
func (pio *processIO) start() error {
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
	}

	if err := pio.copyOut(stdout, pio.paths.stdout, "stdout"); err != nil {
		return err
	}
	if err := pio.copyOut(stderr, pio.paths.stderr, "stderr"); err != nil {
		return err
	}
	if pio.paths.stdin == "" {
		if stdin != nil && pio.console == nil {
			stdin.Close()
		}
		return nil
	}
	in, err := openInput(pio.paths.stdin)
	if err != nil {
		return err
	}
	pio.stdinR = in
	pio.stdinDone = make(chan struct{})
	go func() {
		defer close(pio.stdinDone)
		buf := make([]byte, 8<<10)
		_, _ = io.CopyBuffer(stdin, in, buf)
		in.Close()
		// The client closed its end: the process reads EOF. A console
		// stays open, since it carries the output too.
		if pio.console == nil {
			stdin.Close()
		}
	}()
	return nil
}

func (pio *processIO) copyOut(r io.Reader, path, stream string) error {
	if r == nil {
		return nil
	}
	w, err := pio.output(path, stream)
	if err != nil {
		return err
	}
	pio.copies.Add(1)
	go func() {
		defer pio.copies.Done()
		buf := make([]byte, 32<<10)
		// A console master reads EIO once the last slave is closed: that is
		// its end of file.
		_, _ = io.CopyBuffer(w, r, buf)
		w.Close()
	}()
	return nil
}

// output opens where a stream goes: nowhere, a CRI log (shared by both
// streams), a file:// URI, or a FIFO path, which is what containerd's cio
// creates.
func (pio *processIO) output(path, stream string) (io.WriteCloser, error) {
	if path == "" {
		return nopWriteCloser{io.Discard}, nil
	}
	logURI, isLog, err := extension.ParseLogURI(path)
	if err != nil {
		return nil, err
	}
	if isLog {
		if pio.log == nil {
			if pio.log, err = openCRILog(logURI); err != nil {
				return nil, fmt.Errorf("open container log: %w", err)
			}
			pio.closers = append(pio.closers, pio.log)
		}
		return pio.log.stream(stream), nil
	}
	f, err := openOutput(path)
	if err != nil {
		return nil, err
	}
	pio.closers = append(pio.closers, f)
	return f, nil
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

// closeStdin is the task API's CloseIO: the process reads EOF once what
// the client wrote has been copied. Clients close their end of the FIFO
// before they call CloseIO, so the copy normally ends by itself; a client
// that keeps it open has it closed after stdinGrace. It returns within
// twice stdinGrace.
func (pio *processIO) closeStdin() {
	if pio.stdinDone == nil {
		return
	}
	select {
	case <-pio.stdinDone:
	case <-time.After(stdinGrace):
		pio.stdinR.Close()
		// A process that does not read its stdin holds the copy in a
		// write to the full pipe until it exits: CloseIO does not wait
		// for that.
		select {
		case <-pio.stdinDone:
		case <-time.After(stdinGrace):
		}
	}
}

// drain waits, boundedly, for the output copies to reach end of file.
func (pio *processIO) drain() { pio.waitCopies(drainTimeout) }

// closeAfterCopies is a Delete's Close: the copies get up to deleteDrain
// more to finish first.
func (pio *processIO) closeAfterCopies() error {
	pio.waitCopies(deleteDrain)
	return pio.Close()
}

func (pio *processIO) waitCopies(timeout time.Duration) {
	done := make(chan struct{})
	go func() { pio.copies.Wait(); close(done) }()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
	}
}

func (pio *processIO) Close() error {
	if pio.socket != nil {
		pio.socket.Close()
	}
	var errs []error
	if pio.stdinR != nil {
		pio.stdinR.Close()
	}
	// The pipes are closed whether or not copying ever started (a process
	// runc failed to start must not leave their descriptors open), and
	// first, so that the copies end before what they write to is closed.
	var closers []io.Closer
	if pio.pipes != nil {
		closers = append(closers, pio.pipes)
	}
	for _, c := range append(closers, pio.closers...) {
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
func openOutput(path string) (io.WriteCloser, error) {
	if u, err := url.Parse(path); err == nil && u.Scheme == "file" {
		return os.OpenFile(u.Path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	}
	// The FIFO outlives the RPC that opens it: no request context here.
	f, err := fifo.OpenFifo(context.Background(), path, syscall.O_RDWR|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open stdio %s: %w", path, err)
	}
	return f, nil
}

// openInput opens the stdin FIFO. One kept open (package extension) is
// opened read-write: the shim being a writer too, the process never reads
// end of file, whoever else comes and goes.
func openInput(uri string) (io.ReadCloser, error) {
	path, keepOpen := extension.ParseStdin(uri)
	flag := syscall.O_RDONLY | syscall.O_NONBLOCK
	if keepOpen {
		flag = syscall.O_RDWR
	}
	f, err := fifo.OpenFifo(context.Background(), path, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("open stdin %s: %w", path, err)
	}
	return f, nil
}
