package cri

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	remotecommand "k8s.io/cri-streaming/pkg/streaming/remotecommand"
)

// Attach connects to a running container's main process: its output is
// followed in its CRI log (the shim writes it; nothing else carries it),
// its input goes through the stdin FIFO the container was started with.

// logPollInterval is how often a followed log is read for new lines.
const logPollInterval = 50 * time.Millisecond

// stdinFIFOs holds, for each container started with stdin, the plugin's
// end of its stdin FIFO: held open so that the container does not read
// end of file before anyone attaches.
type stdinFIFOs struct {
	mu    sync.Mutex
	files map[string]*os.File
}

// open makes the FIFO a container's stdin is read from and returns its
// path.
func (f *stdinFIFOs) open(dir, id string) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	path := filepath.Join(dir, "stdin")
	if err := unix.Mkfifo(path, 0o600); err != nil && !os.IsExist(err) {
		return "", err
	}
	// Read-write: opening does not wait for the shim.
	file, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return "", err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.files == nil {
		f.files = map[string]*os.File{}
	}
	f.files[id] = file
	return path, nil
}

// take returns the stdin of a container; with once, the caller owns it
// and its closing is the container's end of input. After a restart the
// daemon has no writer yet: it opens the FIFO again, which the shim kept
// open for a container whose stdin is not once.
func (f *stdinFIFOs) take(dir, id string, once bool) *os.File {
	f.mu.Lock()
	defer f.mu.Unlock()
	file := f.files[id]
	if file == nil && !once {
		if reopened, err := os.OpenFile(filepath.Join(dir, "stdin"), os.O_RDWR, 0); err == nil {
			if f.files == nil {
				f.files = map[string]*os.File{}
			}
			f.files[id], file = reopened, reopened
		}
	}
	if once {
		delete(f.files, id)
	}
	return file
}

func (f *stdinFIFOs) close(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if file := f.files[id]; file != nil {
		file.Close()
		delete(f.files, id)
	}
}

// Attach returns the URL where kubelet streams a container's main process.
func (s *Service) Attach(ctx context.Context, r *runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error) {
	ctx = s.nsContext(ctx)
	c, _, err := s.runningTask(ctx, r.GetContainerId())
	if err != nil {
		return nil, toStatus(err)
	}
	r.ContainerId = c.ID()
	resp, err := s.streams.GetAttach(r)
	return resp, toStatus(err)
}

func (rt streamRuntime) Attach(ctx context.Context, id string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	s := rt.s
	ctx = s.nsContext(ctx)
	c, task, err := s.runningTask(ctx, id)
	if err != nil {
		return err
	}
	_, m, err := s.loadContainer(ctx, c.ID())
	if err != nil {
		return err
	}
	exitC, err := task.Wait(ctx)
	if err != nil {
		return err
	}
	// Resizes are followed until this session ends, whatever its context.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	followResize(ctx, resize, task.Resize)
	following := out != nil || errw != nil
	logPath := s.outputLog(m)
	var tail *os.File
	if following {
		// From the log's end as it is now, before any input is passed on:
		// the output of that input is then never missed.
		if tail, err = os.Open(logPath); err != nil {
			return err
		}
		if _, err := tail.Seek(0, io.SeekEnd); err != nil {
			tail.Close()
			return err
		}
	}
	if in != nil {
		stdin := s.stdins.take(s.containerDir(c.ID()), c.ID(), m.config.GetStdinOnce())
		if stdin == nil {
			if tail != nil {
				tail.Close()
			}
			return errdefs.ErrFailedPrecondition.WithMessage("container " + c.ID() + " was not started with stdin")
		}
		go func() {
			_, _ = io.Copy(stdin, in)
			if m.config.GetStdinOnce() {
				stdin.Close() // the container reads end of file
			}
		}()
	}
	if !following {
		select {
		case <-exitC:
		case <-ctx.Done():
		}
		return nil
	}
	return followLog(ctx, tail, logPath, out, errw, exitC)
}

// followLog copies the log lines written after f's offset to the client's
// streams until the container exits (and its last lines are out) or the
// client goes away. A rotated log is followed into the new file at path.
// It closes f, or the file it moved on to.
func followLog(ctx context.Context, f *os.File, path string, out, errw io.Writer, exited <-chan containerd.ExitStatus) error {
	defer func() { f.Close() }()
	r := bufio.NewReader(f)
	var partial []byte
	done := false
	for {
		line, err := r.ReadBytes('\n')
		if err == nil {
			if werr := writeLogLine(line, out, errw); werr != nil {
				return werr
			}
			continue
		}
		partial = append(partial, line...)
		if len(partial) > 0 {
			// An entry still being written: read on from where it began.
			if _, serr := f.Seek(-int64(len(partial)), io.SeekCurrent); serr == nil {
				r.Reset(f)
			}
			partial = partial[:0]
		}
		if done {
			return nil
		}
		if truncated(f) {
			// A log of ours that started over: read it from the top.
			if _, serr := f.Seek(0, io.SeekStart); serr == nil {
				r.Reset(f)
				continue
			}
		}
		if rotated(f, path) {
			nf, oerr := os.Open(path)
			if oerr == nil {
				f.Close()
				f = nf
				r.Reset(f)
				continue
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-exited:
			done = true // one more pass for the last lines
		case <-time.After(logPollInterval):
		}
	}
}

// truncated tells whether f is now shorter than where it is read.
func truncated(f *os.File) bool {
	pos, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Size() < pos
}

// rotated tells whether the file at path is no longer the open one.
func rotated(f *os.File, path string) bool {
	var open, now syscall.Stat_t
	if syscall.Fstat(int(f.Fd()), &open) != nil || syscall.Stat(path, &now) != nil {
		return false
	}
	return open.Ino != now.Ino
}

// writeLogLine writes one CRI log entry's content to its stream: a full
// line (F) with its newline, a partial one (P) without.
func writeLogLine(entry []byte, out, errw io.Writer) error {
	f := bytes.SplitN(bytes.TrimSuffix(entry, []byte("\n")), []byte(" "), 4)
	if len(f) < 3 {
		return nil
	}
	content := []byte{}
	if len(f) == 4 {
		content = f[3]
	}
	w := out
	if string(f[1]) == "stderr" {
		w = errw
	}
	if w == nil {
		return nil
	}
	if string(f[2]) == "F" {
		content = append(content, '\n')
	}
	_, err := w.Write(content)
	if err != nil {
		return fmt.Errorf("attach: %w", err)
	}
	return nil
}
