package cri

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/errdefs"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// maxExecOutput caps what ExecSync keeps of each stream.
const maxExecOutput = 16 << 20

// ExecSync runs a command in a container and returns its output and exit
// code. With a timeout it returns once the timeout has passed, whatever
// the command or its children do with their output.
func (s *Service) ExecSync(ctx context.Context, r *runtimeapi.ExecSyncRequest) (*runtimeapi.ExecSyncResponse, error) {
	ctx = s.nsContext(ctx)
	if len(r.GetCmd()) == 0 {
		return nil, toStatus(invalid("exec needs a command"))
	}
	c, task, err := s.runningTask(ctx, r.GetContainerId())
	if err != nil {
		return nil, toStatus(err)
	}
	id := c.ID()
	spec, err := c.Spec(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	pspec := *spec.Process
	pspec.Args = r.GetCmd()
	pspec.Terminal = false

	var stdout, stderr cappedBuffer
	streams, drain := drainingCreator(cio.NewCreator(cio.WithStreams(nil, &stdout, &stderr)))
	execID := newID()[:16]
	proc, err := task.Exec(ctx, execID, &pspec, streams)
	if err != nil {
		return nil, toStatus(fmt.Errorf("exec in %s: %w", id, err))
	}
	defer proc.Delete(context.WithoutCancel(ctx), containerd.WithProcessKill)
	exitC, err := proc.Wait(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	if err := proc.Start(ctx); err != nil {
		return nil, toStatus(fmt.Errorf("exec in %s: %w", id, err))
	}
	var timeout <-chan time.Time
	if t := r.GetTimeout(); t > 0 {
		timer := time.NewTimer(time.Duration(t) * time.Second)
		defer timer.Stop()
		timeout = timer.C
	}
	select {
	case st := <-exitC:
		// Deleting the process makes the shim close its end of the FIFOs,
		// so what is still in them is copied here before we answer.
		drain()
		if _, err := proc.Delete(context.WithoutCancel(ctx)); err != nil && !errdefs.IsNotFound(err) {
			return nil, toStatus(err)
		}
		return &runtimeapi.ExecSyncResponse{Stdout: stdout.Bytes(), Stderr: stderr.Bytes(), ExitCode: int32(st.ExitCode())}, nil
	case <-timeout:
		proc.Kill(context.WithoutCancel(ctx), syscall.SIGKILL)
		return nil, status.Errorf(codes.DeadlineExceeded, "command %q timed out after %ds", r.GetCmd(), r.GetTimeout())
	case <-ctx.Done():
		proc.Kill(context.WithoutCancel(ctx), syscall.SIGKILL)
		return nil, toStatus(ctx.Err())
	}
}

// drainingIO is an exec's output FIFOs, whose Cancel, once the process
// has exited, leaves the copies to read the FIFOs to their end. The
// containerd client's Process.Delete cancels (closes the reading ends)
// before it waits for the copies: output the shim had written, and the
// copy not yet read, was lost, about one ExecSync in 300 on this machine
// (found by make soak). The shim closes its ends when the process is
// deleted, so the copies end by themselves.
type drainingIO struct {
	cio.IO
	drain atomic.Bool
}

func (d *drainingIO) Cancel() {
	if !d.drain.Load() {
		d.IO.Cancel()
	}
}

// drainingCreator makes an exec's IO a drainingIO; drain, called once the
// process has exited, makes its Cancel leave the copies to finish.
func drainingCreator(create cio.Creator) (cio.Creator, func()) {
	var d *drainingIO
	return func(id string) (cio.IO, error) {
			io, err := create(id)
			if err != nil {
				return nil, err
			}
			d = &drainingIO{IO: io}
			return d, nil
		}, func() {
			if d != nil {
				d.drain.Store(true)
			}
		}
}

// cappedBuffer keeps the first maxExecOutput bytes written to it, and
// never holds more: a bytes.Buffer doubles, and would hold up to twice the
// cap per stream, and Bytes would copy it once more.
type cappedBuffer struct {
	mu   sync.Mutex
	data []byte
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	room := maxExecOutput - len(b.data)
	if room <= 0 {
		return len(p), nil
	}
	keep := p[:min(len(p), room)]
	if need := len(b.data) + len(keep); need > cap(b.data) {
		grown := make([]byte, len(b.data), min(max(2*cap(b.data), need, 4096), maxExecOutput))
		copy(grown, b.data)
		b.data = grown
	}
	b.data = append(b.data, keep...)
	return len(p), nil
}

// Bytes is what was kept; later writes do not change it.
func (b *cappedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.data[:len(b.data):len(b.data)]
}

// runningTask finds a container by ID or prefix, and its running task.
func (s *Service) runningTask(ctx context.Context, idOrPrefix string) (containerd.Container, containerd.Task, error) {
	id, err := s.names.resolve(kindContainer, idOrPrefix)
	if err != nil {
		return nil, nil, err
	}
	c, err := s.client.LoadContainer(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	task, err := c.Task(ctx, nil)
	if err != nil {
		return nil, nil, errdefs.ErrFailedPrecondition.WithMessage("container " + id + " is not running")
	}
	return c, task, nil
}
