package cri

import (
	"bytes"
	"context"
	"fmt"
	"sync"
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
	execID := newID()[:16]
	proc, err := task.Exec(ctx, execID, &pspec, cio.NewCreator(cio.WithStreams(nil, &stdout, &stderr)))
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

// cappedBuffer keeps the first maxExecOutput bytes written to it.
type cappedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := maxExecOutput - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (b *cappedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]byte(nil), b.buf.Bytes()...)
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
