package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/containerd/v2/version"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

// RuntimeName is the runtime type containerd knows the shim by; containerd
// derives the binary name containerd-shim-mine-v2 from it.
const RuntimeName = "io.containerd.mine.v2"

// GroupAnnotation puts containers in one shim; the CRI sandbox ID does the
// same for Kubernetes pods. The first one present wins.
const GroupAnnotation = "io.containerd.mine.v2.group"

var groupAnnotations = []string{GroupAnnotation, "io.kubernetes.cri.sandbox-id"}

const defaultSocketDir = "/run/containerd/s"

// Manager is the shim binary's bootstrap side: `start` finds or spawns the
// pod's shim and `delete` cleans up after a shim that died.
type Manager struct{}

func (Manager) Name() string { return RuntimeName }

// Start runs in a short-lived process containerd forks for every new
// container. It answers with the address of the shim serving the
// container's group, spawning that shim if the group has none yet.
func (Manager) Start(ctx context.Context, params *bootapi.BootstrapParams) (_ *bootapi.BootstrapResult, retErr error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	group, err := groupOf("config.json", params.InstanceID)
	if err != nil {
		return nil, err
	}
	socketDir := params.GetSocketDir()
	if socketDir == "" {
		socketDir = defaultSocketDir
	}
	address, err := shim.CreateSocketAddress(ctx, socketDir, params.ContainerdGrpcAddress, group, false)
	if err != nil {
		return nil, err
	}
	result := &bootapi.BootstrapResult{Version: 3, Address: address, Protocol: "ttrpc"}

	listener, err := shim.NewSocket(address)
	if err != nil {
		if !shim.SocketEaddrinuse(err) {
			return nil, fmt.Errorf("create shim socket: %w", err)
		}
		if shim.CanConnect(address) {
			return result, nil // the group's shim is running: share it
		}
		// A shim that died left its socket behind.
		if err := shim.RemoveSocket(address); err != nil {
			return nil, fmt.Errorf("remove stale shim socket: %w", err)
		}
		if listener, err = shim.NewSocket(address); err != nil {
			return nil, fmt.Errorf("create shim socket: %w", err)
		}
	}
	defer func() {
		if retErr != nil {
			_ = shim.RemoveSocket(address)
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
	args := []string{"-namespace", ns, "-id", params.InstanceID, "-address", params.ContainerdGrpcAddress}
	if params.GetLogLevel() <= bootapi.LogLevel_LOG_LEVEL_DEBUG {
		args = append(args, "-debug")
	}
	cmd := exec.Command(self, args...)
	cmd.Dir, _ = os.Getwd()
	// One P is plenty for a shim and keeps its resident set small.
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	cmd.ExtraFiles = []*os.File{socket} // fd 3: pkg/shim serves on it
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() { _ = cmd.Wait() }()
	if err := shim.AdjustOOMScore(cmd.Process.Pid); err != nil {
		// Without CAP_SYS_RESOURCE the score cannot always be set; the
		// shim still works, it is just not protected from the OOM killer.
		log.G(ctx).WithError(err).Warn("adjust shim OOM score")
	}
	return result, nil
}

// groupOf reads the group a container belongs to from its OCI spec.
func groupOf(specPath, id string) (string, error) {
	data, err := os.ReadFile(specPath)
	if err != nil {
		return "", fmt.Errorf("read OCI spec: %w", err)
	}
	var spec struct {
		Annotations map[string]string `json:"annotations"`
	}
	if err := json.Unmarshal(data, &spec); err != nil {
		return "", fmt.Errorf("parse OCI spec: %w", err)
	}
	for _, a := range groupAnnotations {
		if g := spec.Annotations[a]; g != "" {
			return g, nil
		}
	}
	return id, nil
}

// Stop is `containerd-shim-mine-v2 delete`: containerd runs it, with the
// bundle as working directory, when a shim died without deleting its
// container. No RPC is possible, so it works from the bundle's files.
func (Manager) Stop(ctx context.Context, id string) (shim.StopStatus, error) {
	bundle, err := os.Getwd()
	if err != nil {
		return shim.StopStatus{}, err
	}
	if o, ok := ctx.Value(shim.OptsKey{}).(shim.Opts); ok && o.BundlePath != "" {
		bundle = o.BundlePath
	}
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return shim.StopStatus{}, err
	}
	opts, err := readOptions(bundle)
	if err != nil {
		return shim.StopStatus{}, err
	}
	r := newRunc(opts, ns, bundle)
	if err := r.Delete(ctx, id, &runc.DeleteOpts{Force: true}); err != nil {
		log.G(ctx).WithError(err).Warn("runc delete")
	}
	now := time.Now()
	if err := mount.UnmountRecursive(filepath.Join(bundle, "rootfs"), 0); err != nil {
		log.G(ctx).WithError(err).Warn("unmount rootfs")
	}
	if rec, err := readExitRecord(bundle); err == nil {
		return shim.StopStatus{Pid: rec.Pid, ExitStatus: rec.Status, ExitedAt: rec.ExitedAt}, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		log.G(ctx).WithError(err).Warn("read exit record")
	}
	pid, _ := runc.ReadPidFile(filepath.Join(bundle, initPidFile))
	return shim.StopStatus{Pid: pid, ExitStatus: 128 + int(unix.SIGKILL), ExitedAt: now}, nil
}

func (Manager) Info(ctx context.Context, _ io.Reader) (*types.RuntimeInfo, error) {
	return &types.RuntimeInfo{
		Name:    RuntimeName,
		Version: &types.RuntimeVersion{Version: version.Version, Revision: version.Revision},
	}, nil
}
