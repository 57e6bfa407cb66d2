package cri

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-streaming/pkg/streaming"
	remotecommand "k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"

	"github.com/mine-runtime/mine/failpoint"
	"github.com/mine-runtime/mine/plugin/podns"
)

// startStreaming serves exec, attach and port-forward streams on
// stream_server_address:stream_server_port. The listener is made first so
// that the URLs handed out carry the real port, also for port 0.
func (s *Service) startStreaming(ctx context.Context) error {
	l, err := net.Listen("tcp", net.JoinHostPort(s.config().StreamServerAddress, s.config().StreamServerPort))
	if err != nil {
		return fmt.Errorf("stream server: %w", err)
	}
	cfg := streaming.DefaultConfig
	cfg.Addr = l.Addr().String()
	cfg.BaseURL = &url.URL{Scheme: "http", Host: l.Addr().String()}
	srv, err := streaming.NewServer(cfg, streamRuntime{s})
	if err != nil {
		l.Close()
		return err
	}
	s.streams = srv
	go func() {
		if err := http.Serve(l, srv); err != nil && !errors.Is(err, net.ErrClosed) {
			log.G(ctx).WithError(err).Error("stream server")
		}
	}()
	log.G(ctx).WithField("address", l.Addr().String()).Info("stream server serving")
	return nil
}

// Exec returns the URL where kubelet streams an interactive command.
func (s *Service) Exec(ctx context.Context, r *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
	ctx = s.nsContext(ctx)
	c, _, err := s.runningTask(ctx, r.GetContainerId())
	if err != nil {
		return nil, toStatus(err)
	}
	r.ContainerId = c.ID()
	resp, err := s.streams.GetExec(r)
	return resp, toStatus(err)
}

// PortForward returns the URL where kubelet streams connections to a
// port of the pod.
func (s *Service) PortForward(ctx context.Context, r *runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error) {
	ctx = s.nsContext(ctx)
	id, err := s.names.resolve(kindSandbox, r.GetPodSandboxId())
	if err != nil {
		return nil, toStatus(err)
	}
	r.PodSandboxId = id
	resp, err := s.streams.GetPortForward(r)
	return resp, toStatus(err)
}

// streamRuntime runs what the stream server's clients ask for.
type streamRuntime struct{ s *Service }

// Exec runs a command in a container with the client's streams, and
// returns its exit code as the error kubelet expects.
func (rt streamRuntime) Exec(ctx context.Context, containerID string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	s := rt.s
	ctx = s.nsContext(ctx)
	if err := failpoint.Inject(ctx, failpoint.StreamServer); err != nil {
		return err
	}
	c, task, err := s.runningTask(ctx, containerID)
	if err != nil {
		return err
	}
	spec, err := c.Spec(ctx)
	if err != nil {
		return err
	}
	pspec := *spec.Process
	pspec.Args = cmd
	pspec.Terminal = tty
	if tty {
		// A shell on a terminal wants TERM, which a container made
		// without one lacks; as containerd sets it.
		pspec.Env = append(slices.Clone(pspec.Env), "TERM=xterm")
	}
	opts := []cio.Opt{cio.WithStreams(in, nilIfNoWriter(out), nilIfNoWriter(errw))}
	if tty {
		opts = append(opts, cio.WithTerminal)
	}
	streams, drain := drainingCreator(cio.NewCreator(opts...))
	proc, err := task.Exec(ctx, newID()[:16], &pspec, streams)
	if err != nil {
		return err
	}
	defer proc.Delete(context.WithoutCancel(ctx), containerd.WithProcessKill)
	exitC, err := proc.Wait(ctx)
	if err != nil {
		return err
	}
	if err := proc.Start(ctx); err != nil {
		return err
	}
	// Resizes are followed until this session ends, whatever its context.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	followResize(ctx, resize, proc.Resize)
	select {
	case st := <-exitC:
		// Deleting closes the shim's end of the FIFOs: the output left in
		// them reaches the client before the stream ends.
		drain()
		if _, err := proc.Delete(context.WithoutCancel(ctx), containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			return err
		}
		if code := st.ExitCode(); code != 0 {
			return &utilexec.CodeExitError{Err: fmt.Errorf("command %q exited with %d", cmd, code), Code: int(code)}
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// followResize applies a terminal's size changes until the session ends.
// A session without a TTY has no resize channel: there is nothing to
// follow, and a goroutine reading a nil channel would never end.
func followResize(ctx context.Context, resize <-chan remotecommand.TerminalSize, apply func(ctx context.Context, w, h uint32) error) {
	if resize == nil {
		return
	}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case size, ok := <-resize:
				if !ok {
					return
				}
				_ = apply(ctx, uint32(size.Width), uint32(size.Height))
			}
		}
	}()
}

// nilIfNoWriter keeps a missing stream missing: cio treats a nil writer
// as no stream.
func nilIfNoWriter(w io.WriteCloser) io.Writer {
	if w == nil {
		return nil
	}
	return w
}

// PortForward connects the stream to a port on the pod's loopback (IPv4's,
// else IPv6's), from inside the pod's network namespace.
func (rt streamRuntime) PortForward(ctx context.Context, podSandboxID string, port int32, stream io.ReadWriteCloser) error {
	s := rt.s
	ctx = s.nsContext(ctx)
	_, sb, err := s.loadSandbox(ctx, podSandboxID)
	if err != nil {
		return err
	}
	if port <= 0 || port > 65535 {
		return errdefs.ErrInvalidArgument.WithMessage("invalid port " + strconv.Itoa(int(port)))
	}
	// IPv4's loopback first, then IPv6's, as containerd does: a server
	// may listen on ::1 or on [::] with IPV6_V6ONLY only.
	conn, err := dialInNetNS(sb.Namespaces.Net, net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
	if err != nil {
		var err6 error
		if conn, err6 = dialInNetNS(sb.Namespaces.Net, net.JoinHostPort("::1", strconv.Itoa(int(port)))); err6 != nil {
			err = fmt.Errorf("%w; %w", err, err6)
		} else {
			err = nil
		}
	}
	if err != nil {
		return fmt.Errorf("connect to port %d of pod %s: %w", port, podSandboxID, err)
	}
	defer conn.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _ = io.Copy(conn, stream)
		if tcp, ok := conn.(*net.TCPConn); ok {
			_ = tcp.CloseWrite()
		}
	}()
	_, err = io.Copy(stream, conn)
	stream.Close()
	wg.Wait()
	return err
}

// dialInNetNS opens a TCP connection from inside a network namespace ("":
// the host's). The socket belongs to the namespace it was made in, so
// the thread can go back at once.
func dialInNetNS(netns, addr string) (net.Conn, error) {
	if netns == "" {
		return net.Dial("tcp", addr)
	}
	var conn net.Conn
	err := podns.In(netns, "net", unix.CLONE_NEWNET, func() (err error) {
		conn, err = net.Dial("tcp", addr)
		return err
	})
	return conn, err
}
