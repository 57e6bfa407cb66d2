package shim

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/v2/pkg/sys/reaper"
	"github.com/containerd/fifo"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"golang.org/x/sys/unix"
)

// serve is the long-running shim: it serves the task API on the socket
// `start` handed it as fd 3 until containerd shuts it down.
func serve(ctx context.Context, f flags) error {
	// A shim's heap is small and mostly idle: collect early rather than
	// let it grow.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(40)
	}

	// containerd reads the shim's log, and any panic, from the "log" FIFO
	// it made in the bundle.
	if logf, err := fifo.OpenFifoDup2(ctx, "log", unix.O_WRONLY, 0o700, int(os.Stderr.Fd())); err == nil {
		log.L.Logger.SetOutput(logf)
	}
	if err := raiseOOMScore("/proc/self/oom_score_adj"); err != nil {
		// The shim works all the same; it is only less protected than
		// its containers from the OOM killer.
		log.G(ctx).WithError(err).Warn("adjust shim OOM score")
	}

	signals := make(chan os.Signal, 32)
	signal.Notify(signals, unix.SIGCHLD, unix.SIGTERM, unix.SIGINT, unix.SIGPIPE)
	// Containers' processes are reparented to the shim when runc exits,
	// so that their exits reach it.
	if err := reaper.SetSubreaper(1); err != nil {
		return fmt.Errorf("become subreaper: %w", err)
	}

	l, err := net.FileListener(os.NewFile(3, "socket"))
	if err != nil {
		return fmt.Errorf("shim socket (fd 3): %w", err)
	}
	socketPath := l.Addr().String()
	var socketInode uint64
	if fi, err := os.Stat(socketPath); err == nil {
		socketInode = fi.Sys().(*syscall.Stat_t).Ino
	}

	fwd := &forwarder{address: os.Getenv(ttrpcAddressEnv)}
	events := newEventQueue(fwd.send, f.namespace)
	done := make(chan struct{})
	var once sync.Once
	svc := newService(f.namespace, events, func() { once.Do(func() { close(done) }) })
	svc.socket, svc.socketIno = socketPath, socketInode

	server, err := ttrpc.NewServer(ttrpc.WithUnaryServerInterceptor(errorInterceptor))
	if err != nil {
		return err
	}
	svc.register(server)
	go func() {
		if err := server.Serve(ctx, l); err != nil && err != ttrpc.ErrServerClosed {
			log.G(ctx).WithError(err).Error("ttrpc server")
		}
	}()
	log.G(ctx).WithField("pid", os.Getpid()).Debug("shim serving")
	go bootstrapOutcome(ctx, svc, f.id)

loop:
	for {
		select {
		case sig := <-signals:
			switch sig {
			case unix.SIGCHLD:
				if err := reaper.Reap(); err != nil {
					log.G(ctx).WithError(err).Error("reap exits")
				}
			case unix.SIGTERM, unix.SIGINT:
				break loop
			}
		case <-done:
			break loop
		}
	}

	// Answer the Shutdown call in flight before going away.
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = server.Shutdown(sctx)
	events.close()
	fwd.close()
	// Ended otherwise than by Shutdown (a signal): the group's files go
	// too, if still ours (a shim started for the pod since may already
	// serve a new socket at the same path).
	svc.mu.Lock()
	left := svc.left
	svc.mu.Unlock()
	if !left && ownsSocket(socketPath, socketInode) {
		if unlock, err := lockGroup(socketPath); err == nil {
			if err := removeGroupFiles(socketPath, socketInode); err != nil {
				log.G(ctx).WithError(err).Warn("remove shim socket")
			}
			unlock()
		}
	}
	signal.Stop(signals)
	return nil
}

// bootstrapOutcome waits for the start that spawned the shim to say it
// succeeded (a byte on fd 4). Without it (the start failed after spawning
// the shim, or died), containerd will never send this shim that first
// container, id: its claim goes, and the shim leaves, as it would after
// its last container, unless another `start` has handed it one meanwhile.
func bootstrapOutcome(ctx context.Context, svc *service, id string) {
	f := os.NewFile(4, "bootstrap")
	if f == nil {
		return
	}
	defer f.Close()
	b := make([]byte, 1)
	if n, _ := f.Read(b); n == 1 {
		svc.leaveIfIdleLater()
		return
	}
	log.G(ctx).Warn("the start that spawned this shim failed; leaving")
	unclaim(svc.socket, id)
	_, _ = svc.Shutdown(ctx, &taskAPI.ShutdownRequest{})
}
