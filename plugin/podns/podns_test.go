package podns

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
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
