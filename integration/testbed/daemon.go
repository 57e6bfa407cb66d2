package testbed

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Daemon is our containerd started on a temporary root, state directory
// and socket, with a generated config.
type Daemon struct {
	Dir     string // everything the daemon owns lives below it
	BinDir  string // where containerd, containerd-shim-mine-v2 and mine-pod-init are
	Address string
	// DebugAddress is the socket of containerd's debug server (pprof).
	DebugAddress string
	Config       string // path of config.toml
	Log          string // the daemon's output
	// ShimBinary is the shim its pods run under: ours, or stock
	// containerd's runc shim.
	ShimBinary string
	Network    *cniNetwork
	cgroups    cgroupSnapshot
	cmd        *exec.Cmd
	exited     chan struct{}
}

// NewDaemon prepares a daemon below dir and writes its config.toml;
// extraConfig is appended to it.
func NewDaemon(dir, binDir, extraConfig string) (*Daemon, error) {
	d, err := newDaemon(dir, binDir)
	if err != nil {
		return nil, err
	}
	return d, d.WriteConfig("debug", extraConfig)
}

// WriteConfig writes the daemon's config.toml as NewDaemon does, with a
// log level and extraConfig of the caller's: a running daemon reloads it.
func (d *Daemon) WriteConfig(level, extraConfig string) error {
	cfg := d.baseConfig() + fmt.Sprintf(`
[debug]
  level = %q
  address = %q

[plugins."io.containerd.grpc.v1.mine".cni]
  bin_dirs = ["/opt/cni/bin"]
  conf_dir = %q

[plugins."io.containerd.grpc.v1.mine".registry]
  config_path = %q
`, level, d.DebugAddress, d.CNIConfDir(), d.RegistryHostsDir())
	// Written whole and renamed into place, as configuration managers do,
	// so a reload never reads half a file.
	tmp := d.Config + ".tmp"
	if err := os.WriteFile(tmp, []byte(cfg+extraConfig), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, d.Config)
}

// NewDaemonWithConfig prepares our daemon below dir with a config.toml of
// the caller's, written from the laid-out daemon (its Dir, Address...).
func NewDaemonWithConfig(dir, binDir string, config func(d *Daemon) ([]byte, error)) (*Daemon, error) {
	d, err := newDaemon(dir, binDir)
	if err != nil {
		return nil, err
	}
	data, err := config(d)
	if err != nil {
		return nil, err
	}
	return d, os.WriteFile(d.Config, data, 0o600)
}

// CNIConfDir and RegistryHostsDir are where the daemon's pod network and
// registry routes are, for configs written by hand.
func (d *Daemon) CNIConfDir() string       { return filepath.Join(d.Dir, "cni/net.d") }
func (d *Daemon) RegistryHostsDir() string { return filepath.Join(d.Dir, "certs.d") }

// NRISocket is where the daemon listens for NRI plugins.
func (d *Daemon) NRISocket() string { return filepath.Join(d.Dir, "nri.sock") }

// baseConfig is the config.toml both daemons share: their own root,
// state, sockets and opt directory, and NRI on (as by default) with its
// socket and plugin directories of their own, none in a host path.
func (d *Daemon) baseConfig() string {
	return fmt.Sprintf(`version = 3
root = %q
state = %q
imports = []

[grpc]
  address = %q

[ttrpc]
  address = %q

[plugins."io.containerd.internal.v1.opt"]
  path = %q

# critest holds a plugin in its Synchronize for 2 s, NRI's default request
# timeout, after which NRI drops the plugin (containerd's behaviour, which
# critest then reports as containers lost); 5 s lets the spec see that none is.
[plugins."io.containerd.nri.v1.nri"]
  socket_path = %q
  plugin_path = %q
  plugin_config_path = %q
  plugin_request_timeout = "5s"
`, filepath.Join(d.Dir, "root"), filepath.Join(d.Dir, "state"), d.Address, d.Address+".ttrpc", filepath.Join(d.Dir, "opt"),
		d.NRISocket(), filepath.Join(d.Dir, "nri/plugins"), filepath.Join(d.Dir, "nri/conf.d"))
}

// newDaemon lays out a daemon's directory and its pod network.
func newDaemon(dir, binDir string) (*Daemon, error) {
	d := &Daemon{
		Dir:          dir,
		BinDir:       binDir,
		Address:      filepath.Join(dir, "containerd.sock"),
		DebugAddress: filepath.Join(dir, "debug.sock"),
		Config:       filepath.Join(dir, "config.toml"),
		Log:          filepath.Join(dir, "containerd.log"),
		ShimBinary:   "containerd-shim-mine-v2",
		cgroups:      takeCgroupSnapshot(),
		Network:      newCNINetwork(dir),
	}
	// Traversable, as containerd's own /var/lib/containerd and
	// /run/containerd are: the root of a pod in a user namespace of its
	// own reaches its root file system through it.
	if err := os.Chmod(dir, 0o711); err != nil {
		return nil, err
	}
	for _, sub := range []string{"root", "state", "cni/net.d", "certs.d", "opt"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o711); err != nil {
			return nil, err
		}
	}
	return d, d.Network.writeConfig(filepath.Join(dir, "cni/net.d"))
}

// NewStockDaemon prepares stock containerd, with its own CRI plugin, below
// dir, configured as NewDaemon configures ours: same CNI network layout,
// same registry routing, runc pods with a pause image. It is what
// benchmarks measure mine against.
func NewStockDaemon(dir, binDir, pauseImage string) (*Daemon, error) {
	d, err := newDaemon(dir, binDir)
	if err != nil {
		return nil, err
	}
	d.ShimBinary = "containerd-shim-runc-v2"
	cfg := d.baseConfig() + fmt.Sprintf(`
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = %[3]q
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = %[2]q

[plugins."io.containerd.cri.v1.runtime"]
  # Stock containerd gives pause containers oom_score_adj -998, which a
  # daemon without CAP_SYS_RESOURCE may not set: it fails every pod unless
  # told to clamp. mine detects this by itself.
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["/opt/cni/bin"]
    conf_dir = %[1]q
`, filepath.Join(dir, "cni/net.d"), filepath.Join(dir, "certs.d"), pauseImage)
	return d, os.WriteFile(d.Config, []byte(cfg), 0o600)
}

// Start runs the daemon and waits until it serves its socket.
func (d *Daemon) Start(ctx context.Context) error {
	logf, err := os.OpenFile(d.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(d.BinDir, "containerd"), "--config", d.Config)
	cmd.Stdout, cmd.Stderr = logf, logf
	// A test binary killed by its timeout must not leave the daemon running.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	// containerd finds shims on PATH.
	cmd.Env = append(os.Environ(), "PATH="+d.BinDir+":"+os.Getenv("PATH"))
	if err := cmd.Start(); err != nil {
		return err
	}
	d.cmd = cmd
	d.exited = make(chan struct{})
	go func() { _ = cmd.Wait(); close(d.exited) }()

	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		select {
		case <-d.exited:
			return fmt.Errorf("containerd exited during start-up: %s", d.tail())
		case <-ctx.Done():
			return fmt.Errorf("containerd did not serve %s: %w", d.Address, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
		if _, err := os.Stat(d.Address); err != nil {
			continue
		}
		c, err := containerd.New(d.Address, containerd.WithTimeout(time.Second))
		if err != nil {
			continue
		}
		// Each attempt is short: a daemon that died must be noticed.
		attempt, cancelAttempt := context.WithTimeout(ctx, 500*time.Millisecond)
		serving, err := c.IsServing(attempt)
		cancelAttempt()
		c.Close()
		if err == nil && serving {
			return nil
		}
	}
}

// Exited is closed when the daemon process has ended.
func (d *Daemon) Exited() <-chan struct{} { return d.exited }

// Stop ends the daemon with SIGTERM, as an operator would, or SIGKILL if
// it does not stop in time. Its shims keep running, as they should.
func (d *Daemon) Stop() error {
	return d.signal(syscall.SIGTERM, 30*time.Second)
}

// Kill ends the daemon with SIGKILL, as a crash would.
func (d *Daemon) Kill() error {
	return d.signal(syscall.SIGKILL, 10*time.Second)
}

func (d *Daemon) signal(sig syscall.Signal, grace time.Duration) error {
	if d.cmd == nil {
		return nil
	}
	_ = d.cmd.Process.Signal(sig)
	select {
	case <-d.exited:
	case <-time.After(grace):
		_ = d.cmd.Process.Kill()
		<-d.exited
	}
	d.cmd = nil
	return nil
}

// Client connects to the daemon in a namespace.
func (d *Daemon) Client(namespace string) (*containerd.Client, error) {
	return containerd.New(d.Address, containerd.WithDefaultNamespace(namespace))
}

// Pid is the daemon's process ID, 0 when it is not running.
func (d *Daemon) Pid() int {
	if d.cmd == nil {
		return 0
	}
	return d.cmd.Process.Pid
}

func (d *Daemon) tail() string {
	data, _ := os.ReadFile(d.Log)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return strings.Join(lines, "\n")
}

// Shims lists the PIDs of the ShimBinary processes serving this daemon:
// those started with its address.
func (d *Daemon) Shims() []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(cmdline), "\x00")
		if len(args) == 0 || filepath.Base(args[0]) != d.ShimBinary {
			continue
		}
		for i, a := range args {
			if a == "-address" && i+1 < len(args) && args[i+1] == d.Address {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// Mounts lists what is mounted below the daemon's directory, deepest first.
func (d *Daemon) Mounts() ([]string, error) {
	return mountsBelow(d.Dir)
}

// RouteRegistry makes the daemon reach host (docker.io, say) at the
// loopback registry, through a hosts.toml in its registry config_path: no
// test resolves a public registry.
func (d *Daemon) RouteRegistry(host, loopback string) error {
	dir := filepath.Join(d.Dir, "certs.d", host)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	toml := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", "http://"+loopback, "http://"+loopback)
	return os.WriteFile(filepath.Join(dir, "hosts.toml"), []byte(toml), 0o644)
}

// Teardown stops the daemon and reports anything left behind: shims still
// running or mounts below its directory. Leftovers are then removed, so
// one broken test does not break the next, but they are still an error.
func (d *Daemon) Teardown() error {
	var errs []error
	// Pods a failed test left are removed through the CRI first, so that
	// their network (IP allocations, rules) and shims' files go too.
	if n, err := d.removePods(); err != nil || n > 0 {
		errs = append(errs, fmt.Errorf("pods left behind: %d (removed; %v)", n, err))
	}
	_ = d.Stop()
	// A shim answers containerd's Shutdown before it exits: one whose pod
	// was removed just now may still be on its way out.
	for deadline := time.Now().Add(5 * time.Second); len(d.Shims()) > 0 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if pids := d.Shims(); len(pids) > 0 {
		errs = append(errs, fmt.Errorf("shims left running: %v", pids))
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	mounts, err := d.Mounts()
	if err != nil {
		errs = append(errs, err)
	}
	if len(mounts) > 0 {
		errs = append(errs, fmt.Errorf("mounts left behind: %v", mounts))
		for _, m := range mounts {
			_ = syscall.Unmount(m, syscall.MNT_DETACH)
		}
	}
	if d.Network != nil {
		if err := d.Network.remove(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := d.cgroups.removeNew(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// removePods stops and removes every pod the daemon lists; a daemon that
// died (a test crashed it) is started again for it, if it can be.
func (d *Daemon) removePods() (int, error) {
	if d.exited == nil {
		return 0, nil
	}
	select {
	case <-d.exited:
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := d.Start(ctx)
		cancel()
		if err != nil {
			return 0, nil // one that cannot start made nothing to remove
		}
	default:
	}
	conn, err := grpc.NewClient("unix://"+d.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	rs := runtimeapi.NewRuntimeServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pods, err := rs.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return 0, err
	}
	var errs []error
	for _, p := range pods.Items {
		if _, err := rs.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.Id}); err != nil {
			errs = append(errs, err)
		}
		if _, err := rs.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.Id}); err != nil {
			errs = append(errs, err)
		}
	}
	return len(pods.Items), errors.Join(errs...)
}
