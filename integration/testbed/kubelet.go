package testbed

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// Kubelet is a real kubelet in standalone mode (no API server, no
// kubeconfig) running static pods from a manifest directory against a
// daemon's CRI socket. Its root directory, pod logs, certificates, ports
// and cgroup root are its own, so it shares nothing with a kubelet the
// host may run, and teardown can remove everything it made.
type Kubelet struct {
	Dir       string // everything the kubelet owns on disk lives below it
	Binary    string
	NodeName  string // static pods are named <manifest name>-<NodeName>
	Manifests string // staticPodPath
	PodLogs   string // podLogsDir: <ns>_<pod>_<uid>/<container>/<restart>.log
	RootDir   string
	// CgroupRoot is the kubelet's cgroupRoot, made below the root of
	// every hierarchy (each v1 controller and cgroup2). Its name holds
	// the test process's PID, which tells other beds to leave it alone.
	CgroupRoot   string
	Config       string
	Log          string
	Port         int // the authenticated API: exec, logs, metrics
	ReadOnlyPort int // /pods, /stats/summary, without authentication
	HealthzPort  int
	endpoint     string
	cmd          *exec.Cmd
	exited       chan struct{}
	host         hostState
	client       *http.Client
}

// NewKubelet prepares a kubelet below dir for the CRI at endpoint (a
// unix:// address) and writes its configuration; extraConfig is appended
// to the KubeletConfiguration YAML.
func NewKubelet(dir, binary, endpoint, extraConfig string) (*Kubelet, error) {
	if _, err := os.Stat(binary); err != nil {
		return nil, fmt.Errorf("kubelet not built (run hack/install-kubelet.sh): %w", err)
	}
	suffix := make([]byte, 4)
	if _, err := rand.Read(suffix); err != nil {
		return nil, err
	}
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	k := &Kubelet{
		Dir:          dir,
		Binary:       binary,
		NodeName:     "mine-e2e-node",
		Manifests:    filepath.Join(dir, "manifests"),
		PodLogs:      filepath.Join(dir, "pod-logs"),
		RootDir:      filepath.Join(dir, "root"),
		CgroupRoot:   fmt.Sprintf("/%s%d-%s", kubeletCgroupPrefix, os.Getpid(), hex.EncodeToString(suffix)),
		Config:       filepath.Join(dir, "kubelet.yaml"),
		Log:          filepath.Join(dir, "kubelet.log"),
		Port:         ports[0],
		ReadOnlyPort: ports[1],
		HealthzPort:  ports[2],
		endpoint:     endpoint,
		// Its serving certificate is self-signed, made at start-up.
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
		}},
	}
	for _, sub := range []string{"manifests", "pod-logs", "root", "pki", "volume-plugins"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o750); err != nil {
			return nil, err
		}
	}
	// Eviction thresholds low enough that this machine never evicts, image
	// GC off (tests pull nothing twice), container logs rotated early and
	// often, and every address on loopback.
	cfg := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
staticPodPath: %q
podLogsDir: %q
volumePluginDir: %q
containerRuntimeEndpoint: %q
cgroupDriver: cgroupfs
cgroupRoot: %q
failSwapOn: false
failCgroupV1: false
address: 127.0.0.1
port: %d
readOnlyPort: %d
healthzBindAddress: 127.0.0.1
healthzPort: %d
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
imageGCHighThresholdPercent: 100
evictionHard:
  memory.available: 50Mi
  nodefs.available: 1%%
  nodefs.inodesFree: 1%%
  imagefs.available: 1%%
  imagefs.inodesFree: 1%%
containerLogMaxSize: 1Mi
containerLogMaxFiles: 2
containerLogMonitorInterval: 3s
`, k.Manifests, k.PodLogs, filepath.Join(dir, "volume-plugins"), endpoint, k.CgroupRoot, k.Port, k.ReadOnlyPort, k.HealthzPort)
	return k, os.WriteFile(k.Config, []byte(cfg+extraConfig), 0o600)
}

// freePorts finds n free loopback ports, held open together so that they
// differ.
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// Start records the host state the kubelet changes, makes its cgroup
// root, runs it and waits until it is healthy.
func (k *Kubelet) Start(ctx context.Context) error {
	k.host = takeHostState()
	if err := k.makeCgroupRoot(); err != nil {
		return err
	}
	if err := k.host.linkContainerdSocket(strings.TrimPrefix(k.endpoint, "unix://")); err != nil {
		return err
	}
	logf, err := os.OpenFile(k.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(k.Binary,
		"--config", k.Config,
		"--root-dir", k.RootDir,
		"--cert-dir", filepath.Join(k.Dir, "pki"),
		"--hostname-override", k.NodeName,
		// 2 logs probe failures and pod sync errors, not every request.
		"--v", "2")
	cmd.Stdout, cmd.Stderr = logf, logf
	// A test binary killed by its timeout must not leave the kubelet running.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return err
	}
	k.cmd = cmd
	k.exited = make(chan struct{})
	go func() { _ = cmd.Wait(); close(k.exited) }()

	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	healthz := fmt.Sprintf("http://127.0.0.1:%d/healthz", k.HealthzPort)
	for {
		select {
		case <-k.exited:
			return fmt.Errorf("kubelet exited during start-up:\n%s", k.Tail(30))
		case <-ctx.Done():
			return fmt.Errorf("kubelet not healthy at %s: %w\n%s", healthz, ctx.Err(), k.Tail(30))
		case <-time.After(100 * time.Millisecond):
		}
		if body, err := k.get(ctx, healthz); err == nil && strings.TrimSpace(string(body)) == "ok" {
			// The read-only API comes up on its own goroutine.
			if _, err := k.ReadOnly(ctx, "/pods"); err == nil {
				return nil
			}
		}
	}
}

// makeCgroupRoot creates CgroupRoot in every hierarchy: kubelet refuses a
// cgroup root that does not exist.
func (k *Kubelet) makeCgroupRoot() error {
	for _, h := range hierarchies() {
		if _, err := os.Stat(filepath.Join(h, "cgroup.procs")); err != nil {
			continue // the tmpfs holding v1 hierarchies
		}
		dir := filepath.Join(h, k.CgroupRoot)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
		// A v1 cpuset starts with no CPUs and no memory nodes; nothing
		// below it could run until they are copied from the parent.
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if v, err := os.ReadFile(filepath.Join(h, f)); err == nil {
				if err := os.WriteFile(filepath.Join(dir, f), v, 0o644); err != nil {
					return fmt.Errorf("%s: %w", filepath.Join(dir, f), err)
				}
			}
		}
	}
	return nil
}

// Exited is closed when the kubelet process has ended.
func (k *Kubelet) Exited() <-chan struct{} { return k.exited }

// Stop ends the kubelet with SIGTERM, or SIGKILL if it does not stop in
// time. Its pods keep running, as they do when a node's kubelet restarts.
func (k *Kubelet) Stop() {
	if k.cmd == nil {
		return
	}
	_ = k.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-k.exited:
	case <-time.After(30 * time.Second):
		_ = k.cmd.Process.Kill()
		<-k.exited
	}
	k.cmd = nil
}

// Teardown stops the kubelet and undoes what it did to the host: mounts
// below its directory (its root directory is bind-mounted onto itself
// rshared, volumes below it), its cgroup root, the iptables chains it
// made, the sysctls it set and its symlinks in /var/log/containers.
// Processes left in its cgroups are an error; the rest is its normal
// residue.
func (k *Kubelet) Teardown() error {
	k.Stop()
	var errs []error
	mounts, err := mountsBelow(k.Dir)
	if err != nil {
		errs = append(errs, err)
	}
	for _, m := range mounts {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
			errs = append(errs, fmt.Errorf("unmount %s: %w", m, err))
		}
	}
	for _, h := range hierarchies() {
		if dir := filepath.Join(h, k.CgroupRoot); exists(filepath.Join(dir, "cgroup.procs")) {
			if err := removeCgroupTree(dir); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := k.host.restore(k.PodLogs); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// ReadOnly GETs path from the read-only port.
func (k *Kubelet) ReadOnly(ctx context.Context, path string) ([]byte, error) {
	return k.get(ctx, fmt.Sprintf("http://127.0.0.1:%d%s", k.ReadOnlyPort, path))
}

// Get GETs path from the authenticated port, as an anonymous user that
// AlwaysAllow lets in: /containerLogs, /metrics and the rest of what the
// read-only port leaves out.
func (k *Kubelet) Get(ctx context.Context, path string) ([]byte, error) {
	return k.get(ctx, fmt.Sprintf("https://127.0.0.1:%d%s", k.Port, path))
}

func (k *Kubelet) get(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return body, fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

// Tail is the end of the kubelet's log.
func (k *Kubelet) Tail(lines int) string {
	data, _ := os.ReadFile(k.Log)
	all := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// mountsBelow lists the mount points at or below dir, deepest first.
func mountsBelow(dir string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) > 4 && (fields[4] == dir || strings.HasPrefix(fields[4], dir+"/")) {
			out = append(out, fields[4])
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(out)))
	return out, s.Err()
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// hostState is what a kubelet changes outside its own directories, as it
// was before it started.
type hostState struct {
	taken bool // a kubelet that never started changed nothing
	// sysctls kubelet sets to its liking at start-up (kernel.panic,
	// vm.overcommit_memory, ...), by path below /proc/sys.
	sysctls map[string]string
	// chains kubelet makes for kube-proxy and to block martian packets to
	// 127.0.0.0/8, that existed already.
	chains map[iptablesChain]bool
	// varLogContainers tells whether /var/log/containers, where kubelet
	// links every container's log, existed.
	varLogContainers bool
	// linked is the containerd socket link made for cAdvisor, and made is
	// its directory if that was made for it too.
	linked, made string
}

// containerdSocket is where cAdvisor, inside kubelet, looks for containerd
// (its -containerd flag, which kubelet does not expose). From there it
// learns which cgroup is which pod's container, by the CRI labels; without
// it, /stats/summary has no network stats for any pod. It is where a
// node's containerd, ours or stock, serves.
const containerdSocket = "/run/containerd/containerd.sock"

// linkContainerdSocket points containerdSocket at the daemon under test,
// unless a containerd serves there already. A link to a socket that is
// gone (a test process killed before it could restore the host) is
// replaced: cAdvisor would find no containerd through it.
func (h *hostState) linkContainerdSocket(socket string) error {
	if _, err := os.Lstat(containerdSocket); err == nil {
		if _, err := os.Stat(containerdSocket); err == nil {
			return nil
		}
		if target, err := os.Readlink(containerdSocket); err != nil || !strings.HasPrefix(target, os.TempDir()) {
			return nil // not a link of ours: left alone
		}
		if err := os.Remove(containerdSocket); err != nil {
			return err
		}
	}
	dir := filepath.Dir(containerdSocket)
	if !exists(dir) {
		if err := os.MkdirAll(dir, 0o711); err != nil {
			return err
		}
		h.made = dir
	}
	if err := os.Symlink(socket, containerdSocket); err != nil {
		return err
	}
	h.linked = containerdSocket
	return nil
}

type iptablesChain struct{ binary, table, chain string }

// kubeletChains are the chains of pkg/kubelet's iptables set-up, and the
// canary it watches to recreate them.
var kubeletChains = func() []iptablesChain {
	var out []iptablesChain
	for _, bin := range []string{"iptables", "ip6tables"} {
		for _, tc := range [][2]string{
			{"filter", "KUBE-FIREWALL"},
			{"mangle", "KUBE-IPTABLES-HINT"},
			{"mangle", "KUBE-KUBELET-CANARY"},
			{"nat", "KUBE-KUBELET-CANARY"},
			{"filter", "KUBE-KUBELET-CANARY"},
		} {
			out = append(out, iptablesChain{bin, tc[0], tc[1]})
		}
	}
	return out
}()

var kubeletSysctls = []string{
	"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
}

const varLogContainers = "/var/log/containers"

func takeHostState() hostState {
	h := hostState{taken: true, sysctls: map[string]string{}, chains: map[iptablesChain]bool{}, varLogContainers: exists(varLogContainers)}
	for _, s := range kubeletSysctls {
		if v, err := os.ReadFile(filepath.Join("/proc/sys", s)); err == nil {
			h.sysctls[s] = strings.TrimSpace(string(v))
		}
	}
	for _, c := range kubeletChains {
		h.chains[c] = c.exists()
	}
	return h
}

// restore puts the host back as it was, once the kubelet has stopped
// (while it runs, it recreates its chains within a minute).
func (h hostState) restore(podLogs string) error {
	if !h.taken {
		return nil
	}
	var errs []error
	for s, v := range h.sysctls {
		p := filepath.Join("/proc/sys", s)
		if now, err := os.ReadFile(p); err == nil && strings.TrimSpace(string(now)) != v {
			if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
				errs = append(errs, fmt.Errorf("restore sysctl %s=%s: %w", s, v, err))
			}
		}
	}
	// Jumps first, then the chains: a chain that is jumped to cannot go.
	for _, c := range kubeletChains {
		if !h.chains[c] && c.exists() {
			if err := c.removeJumps(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for _, c := range kubeletChains {
		if !h.chains[c] && c.exists() {
			if err := c.remove(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	// Links into this kubelet's pod logs; other kubelets' are theirs.
	if entries, err := os.ReadDir(varLogContainers); err == nil {
		for _, e := range entries {
			p := filepath.Join(varLogContainers, e.Name())
			if target, err := os.Readlink(p); err == nil && strings.HasPrefix(target, podLogs+"/") {
				os.Remove(p)
			}
		}
	}
	if h.linked != "" {
		if err := os.Remove(h.linked); err != nil {
			errs = append(errs, err)
		}
	}
	if h.made != "" {
		// Daemons put their shim sockets and runc state there too, ours
		// included: it stays while they have something in it.
		if err := os.Remove(h.made); err != nil && !errors.Is(err, syscall.ENOTEMPTY) {
			errs = append(errs, err)
		}
	}
	if !h.varLogContainers {
		if err := os.Remove(varLogContainers); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("%s (made by the kubelet) not empty: %w", varLogContainers, err))
		}
	}
	return errors.Join(errs...)
}

func (c iptablesChain) exists() bool {
	return exec.Command(c.binary, "-w", "-t", c.table, "-S", c.chain).Run() == nil
}

// removeJumps deletes the rules of c's table that jump to c. Rules are
// replayed through the shell, which keeps their quoted comments whole.
func (c iptablesChain) removeJumps() error {
	out, err := exec.Command(c.binary, "-w", "-t", c.table, "-S").Output()
	if err != nil {
		return fmt.Errorf("%s -t %s -S: %w", c.binary, c.table, err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "-A ") && strings.HasSuffix(line, "-j "+c.chain) {
			rule := c.binary + " -w -t " + c.table + " -D" + strings.TrimPrefix(line, "-A")
			if out, err := exec.Command("sh", "-c", rule).CombinedOutput(); err != nil {
				return fmt.Errorf("%s: %v: %s", rule, err, out)
			}
		}
	}
	return nil
}

func (c iptablesChain) remove() error {
	for _, op := range []string{"-F", "-X"} {
		if out, err := exec.Command(c.binary, "-w", "-t", c.table, op, c.chain).CombinedOutput(); err != nil {
			return fmt.Errorf("%s -t %s %s %s: %v: %s", c.binary, c.table, op, c.chain, err, out)
		}
	}
	return nil
}
