package podns

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

func TestPinAndRemove(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("pinning namespaces needs root")
	}
	dir := t.TempDir()
	paths, err := Pin(dir, Request{Net: true, IPC: true, UTS: true, Hostname: "pod-host"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { Remove(paths) }) // when an assertion below fails
	// A new process starts in the daemon's namespaces, which Pin must
	// have left as they were.
	host, err := exec.Command("readlink", "/proc/self/ns/net").Output()
	if err != nil {
		t.Fatal(err)
	}
	pinned, err := exec.Command("nsenter", "--net="+paths.Net, "readlink", "/proc/self/ns/net").Output()
	if err != nil {
		t.Fatal(err)
	}
	if string(host) == string(pinned) {
		t.Fatalf("the pinned network namespace is the host's (%s)", host)
	}
	checkLoopbackUp(t, paths.Net)
	// A process joining the pinned UTS namespace sees the pod's hostname.
	out, err := exec.Command("nsenter", "--uts="+paths.UTS, "hostname").Output()
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(out)) != "pod-host" {
		t.Fatalf("hostname in the pod's UTS namespace is %q", out)
	}
	if err := Remove(paths); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("files left after Remove: %v", entries)
	}
	if err := Remove(paths); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "net")); !os.IsNotExist(err) {
		t.Fatal("net pin left behind")
	}
}

func TestPinProcess(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("pinning namespaces needs root")
	}
	// A process in a PID namespace of its own, as a pod's init is.
	cmd := exec.Command("unshare", "--pid", "--fork", "sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var child string
	deadline := time.Now().Add(10 * time.Second)
	for child == "" && time.Now().Before(deadline) {
		// unshare forks sleep as pid 1 of the new namespace.
		data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid))
		child = strings.TrimSpace(string(data))
		time.Sleep(10 * time.Millisecond)
	}
	if child == "" {
		t.Fatal("unshare started no child")
	}
	pid, _ := strconv.Atoi(child)
	want, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
	if err != nil {
		t.Fatal(err)
	}

	path := filepath.Join(t.TempDir(), "ns", "pid")
	if err := PinProcess(path, pid, "pid", func() bool { return false }); err == nil {
		t.Fatal("pinned the namespace of a process that is not the one meant")
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatal("a refused pin left its file")
	}
	if err := PinProcess(path, pid, "pid", func() bool { return true }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { Remove(Paths{PID: path}) })
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprintf("pid:[%d]", st.Ino); got != want {
		t.Fatalf("pinned %s, want %s", got, want)
	}
	if err := Remove(Paths{PID: path}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatal("pid pin left behind")
	}
}

func TestPinUserNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("pinning namespaces needs root")
	}
	ids := &IDMap{
		UIDs: []specs.LinuxIDMapping{{ContainerID: 0, HostID: 300000, Size: 65536}},
		GIDs: []specs.LinuxIDMapping{{ContainerID: 0, HostID: 300000, Size: 65536}},
	}
	paths, err := Pin(t.TempDir(), Request{Net: true, IPC: true, UTS: true, Hostname: "userns-pod", User: ids})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { Remove(paths) })
	out, err := exec.Command("nsenter", "--user="+paths.User, "--uts="+paths.UTS, "sh", "-c", "cat /proc/self/uid_map; hostname; cat /proc/self/setgroups").Output()
	if err != nil {
		t.Fatal(err)
	}
	// setgroups stays allowed: runc gives containers their groups.
	if f := strings.Fields(string(out)); len(f) != 5 || f[0] != "0" || f[1] != "300000" || f[2] != "65536" || f[3] != "userns-pod" || f[4] != "allow" {
		t.Errorf("uid_map, hostname and setgroups in the pod's namespaces: %q", out)
	}
	checkLoopbackUp(t, paths.Net)
	// The pod's other namespaces belong to its user namespace.
	var user unix.Stat_t
	if err := unix.Stat(paths.User, &user); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{paths.Net, paths.IPC, paths.UTS} {
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		owner, err := unix.IoctlRetInt(fd, unix.NS_GET_USERNS)
		unix.Close(fd)
		if err != nil {
			t.Fatal(err)
		}
		var st unix.Stat_t
		unix.Fstat(owner, &st)
		unix.Close(owner)
		if st.Ino != user.Ino {
			t.Errorf("%s is owned by user namespace %d, not the pod's %d", p, st.Ino, user.Ino)
		}
	}
	if err := Remove(paths); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(paths.User); !os.IsNotExist(err) {
		t.Errorf("the user namespace is still pinned: %v", err)
	}
}

// checkLoopbackUp checks that lo is up in the pinned network namespace,
// with its address, as CNI's loopback plugin would leave it.
func checkLoopbackUp(t *testing.T, netns string) {
	t.Helper()
	out, err := exec.Command("nsenter", "--net="+netns, "ip", "-o", "addr", "show", "dev", "lo", "up").CombinedOutput()
	if err != nil {
		t.Fatalf("ip addr in the pod's network namespace: %v: %s", err, out)
	}
	if !strings.Contains(string(out), "inet 127.0.0.1/8") {
		t.Errorf("lo is not up with 127.0.0.1 in the pod's network namespace:\n%s", out)
	}
}
