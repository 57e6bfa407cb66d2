package shim

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/v2/core/mount"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/mine-runtime/mine/failpoint"
)

// RuntimeName is the runtime type containerd knows the shim by; containerd
// derives the binary name containerd-shim-mine-v2 from it.
const RuntimeName = "io.containerd.mine.v2"

// GroupAnnotation puts containers in one shim; the CRI sandbox ID does the
// same for Kubernetes pods. The first one present wins.
const GroupAnnotation = "io.containerd.mine.v2.group"

var groupAnnotations = []string{GroupAnnotation, "io.kubernetes.cri.sandbox-id"}

const defaultSocketDir = "/run/containerd/s"

// start is `containerd-shim-mine-v2 start`, run by containerd for every new
// container with the bundle as working directory. It answers with the
// address of the shim serving the container's group, spawning that shim
// if the group has none yet.
func start(ctx context.Context, f flags, params *bootapi.BootstrapParams) (_ *bootapi.BootstrapResult, retErr error) {
	spec, err := readSpec("config.json", f.id)
	if err != nil {
		return nil, err
	}
	group := spec.group
	socketDir := params.GetSocketDir()
	if socketDir == "" {
		socketDir = defaultSocketDir
	}
	// One socket per containerd, namespace and group.
	sum := sha256.Sum256([]byte(filepath.Join(params.ContainerdGrpcAddress, f.namespace, group)))
	path := filepath.Join(socketDir, fmt.Sprintf("%x", sum))
	result := &bootapi.BootstrapResult{Version: 3, Address: "unix://" + path, Protocol: "ttrpc"}
	// `delete` after a crash removes the socket a dead shim left.
	if err := os.WriteFile(socketFile, []byte(path), 0o600); err != nil {
		return nil, err
	}

	// containerd leaves the directory to the shims; after a reboot, /run is
	// empty.
	if err := os.MkdirAll(socketDir, 0o711); err != nil {
		return nil, err
	}
	// Held until the shim serves or the container is claimed (claims.go).
	unlock, err := lockGroup(path)
	if err != nil {
		return nil, err
	}
	defer unlock()
	listener, err := listen(path)
	if err != nil {
		_ = removeGroupFiles(path, 0) // a lock file with no socket
		return nil, err
	}
	if listener == nil {
		// The group's shim is running: share it.
		if err := failpoint.Inject(ctx, failpoint.ShimStart); err != nil {
			return nil, fmt.Errorf("start shim: %w", err)
		}
		if err := claim(path, f.id); err != nil {
			return nil, err
		}
		return result, nil
	}
	_ = os.RemoveAll(claimsDir(path)) // a dead shim's
	// The new shim's first container is claimed too: until its Create
	// comes, the shim must not leave for another container's Shutdown.
	if err := claim(path, f.id); err != nil {
		listener.Close()
		return nil, err
	}
	var ours unix.Stat_t
	if err := unix.Stat(path, &ours); err != nil {
		listener.Close()
		return nil, err
	}
	defer func() {
		if retErr != nil {
			// Still under the group's lock: the socket, claims and lock
			// file of a shim that never served go.
			_ = removeGroupFiles(path, ours.Ino)
		}
	}()
	socket, err := listener.File()
	// The listening socket lives on in the spawned shim: closing our copy
	// must not unlink it.
	listener.SetUnlinkOnClose(false)
	listener.Close()
	if err != nil {
		return nil, err
	}
	defer socket.Close()

	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := []string{"-namespace", f.namespace, "-id", f.id, "-address", params.ContainerdGrpcAddress}
	if params.GetLogLevel() <= bootapi.LogLevel_LOG_LEVEL_DEBUG {
		args = append(args, "-debug")
	}
	cmd := exec.Command(self, args...)
	cmd.Dir, _ = os.Getwd()
	// One P is plenty for a shim and keeps its resident set small: each P
	// caches a partly used span of every size class. containerd sets
	// GOMAXPROCS=2 for every shim binary it runs; this overrides it.
	cmd.Env = append(os.Environ(), ttrpcAddressEnv+"="+params.ContainerdTtrpcAddress, "GOMAXPROCS=1")
	// fd 4: the shim learns from it whether this start succeeded. A
	// start that fails, or dies, after the shim is running leaves a shim
	// containerd never heard of: it reads end of file without the byte
	// sent on success, and leaves (bootstrapOutcome).
	outcome, done, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer done.Close()
	cmd.ExtraFiles = []*os.File{socket, outcome} // fd 3: the shim serves on it
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = cmd.Start()
	outcome.Close()
	if err != nil {
		return nil, err
	}
	if err := failpoint.Inject(ctx, failpoint.ShimStart); err != nil {
		return nil, fmt.Errorf("start shim: %w", err)
	}
	go func() { _ = cmd.Wait() }()
	if _, err := done.Write([]byte{1}); err != nil {
		return nil, fmt.Errorf("shim gone at start: %w", err)
	}
	return result, nil
}

// listen creates the group's socket. It returns nil, nil when a live shim
// already serves it.
func listen(path string) (*net.UnixListener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o711); err != nil {
		return nil, err
	}
	for range 2 {
		l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err == nil {
			return l, os.Chmod(path, 0o600)
		}
		if !errors.Is(err, unix.EADDRINUSE) {
			return nil, fmt.Errorf("create shim socket: %w", err)
		}
		if conn, err := net.DialTimeout("unix", path, time.Second); err == nil {
			conn.Close()
			return nil, nil
		}
		// A shim that died left its socket behind.
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale shim socket: %w", err)
		}
	}
	return nil, fmt.Errorf("create shim socket %s: address in use", path)
}

// raiseOOMScore makes the shim a slightly likelier OOM victim than
// containerd, as every shim is: raising a score needs no privilege. The
// shim inherited containerd's score through `start`, and raises its own,
// in the server: `start` may write nothing but its result, as containerd
// reads its stdout and stderr together as the bootstrap result.
func raiseOOMScore(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	score, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		return err
	}
	if score >= 1000 {
		return nil
	}
	return os.WriteFile(path, []byte(strconv.Itoa(score+1)), 0)
}

// cleanup is `containerd-shim-mine-v2 delete`: containerd runs it, with the
// bundle as working directory, when a shim died without deleting its
// container. No RPC is possible, so it works from the bundle's files.
func cleanup(ctx context.Context, f flags) (*taskAPI.DeleteResponse, error) {
	bundle := f.bundle
	if bundle == "" {
		var err error
		if bundle, err = os.Getwd(); err != nil {
			return nil, err
		}
	}
	opts, err := readOptions(bundle)
	if err != nil {
		return nil, err
	}
	r := newRunc(opts, f.namespace, bundle)
	// containerd runs this after every shim's exit, most often after the
	// shim deleted the container itself: runc's state directory is gone
	// then, and a runc delete would cost a process start to say so.
	if _, err := os.Stat(filepath.Join(r.Root, f.id)); err == nil {
		if err := r.Delete(ctx, f.id, &runc.DeleteOpts{Force: true}); err != nil {
			log.G(ctx).WithError(err).Warn("runc delete")
		}
	}
	now := time.Now()
	if err := mount.UnmountRecursive(filepath.Join(bundle, "rootfs"), 0); err != nil {
		log.G(ctx).WithError(err).Warn("unmount rootfs")
	}
	// containerd also runs this for a container it gave up on between
	// `start` and Create (it died in between): its claim on the group's
	// shim goes now, so that the shim can leave once idle, not claimTTL
	// later. After a Create it is gone already.
	if data, err := os.ReadFile(filepath.Join(bundle, socketFile)); err == nil {
		unclaim(string(data), f.id)
		removeStaleSocket(ctx, string(data))
	}
	if rec, err := readExitRecord(bundle); err == nil {
		return &taskAPI.DeleteResponse{Pid: uint32(rec.Pid), ExitStatus: uint32(rec.Status), ExitedAt: timestamppb.New(rec.ExitedAt)}, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		log.G(ctx).WithError(err).Warn("read exit record")
	}
	pid, _ := runc.ReadPidFile(filepath.Join(bundle, initPidFile))
	return &taskAPI.DeleteResponse{Pid: uint32(pid), ExitStatus: 128 + uint32(unix.SIGKILL), ExitedAt: timestamppb.New(now)}, nil
}

// removeStaleSocket removes the group's socket at path if no shim answers
// on it any more: a killed shim cannot remove it itself.
func removeStaleSocket(ctx context.Context, path string) {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return // gone already; its lock and claims went with it
	}
	unlock, err := lockGroup(path)
	if err != nil {
		log.G(ctx).WithError(err).Warn("lock the shim group")
		return
	}
	defer unlock()
	if conn, err := net.DialTimeout("unix", path, time.Second); err == nil {
		conn.Close() // another container of the pod keeps the shim alive
		return
	}
	if err := removeGroupFiles(path, st.Ino); err != nil {
		log.G(ctx).WithError(err).Warn("remove stale shim socket")
	}
}
