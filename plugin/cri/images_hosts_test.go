package cri

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/mine-runtime/mine/config"
)

// The registry hosts made from mirrors and configs are swapped in whole;
// the set before stays for a pull that resolved the link just before, and
// older ones go.
func TestWriteHostFiles(t *testing.T) {
	is := &imageService{hostsDir: filepath.Join(t.TempDir(), "registry-hosts")}
	for _, endpoint := range []string{"https://a.example", "https://b.example", "https://c.example"} {
		reg := config.Registry{Mirrors: map[string]config.Mirror{"docker.io": {Endpoints: []string{endpoint}}}}
		if err := is.writeHostFiles(reg); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(filepath.Join(is.hostsDir, "docker.io", "hosts.toml"))
		if err != nil {
			t.Fatal(err)
		}
		if want := reg.HostFiles()["docker.io"]; string(data) != want {
			t.Fatalf("hosts.toml:\n%s\nwant\n%s", data, want)
		}
	}
	sets, _ := filepath.Glob(is.hostsDir + ".*")
	if len(sets) != 2 {
		t.Fatalf("sets kept: %v, want the current one and the one before", sets)
	}
}

// config_path names several directories, colon-separated, as containerd
// takes it: a host's hosts.toml is the first directory's that has one,
// then the registry settings'.
func TestHostDirFromSeveralRoots(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	is := &imageService{hostsDir: filepath.Join(t.TempDir(), "registry-hosts")}
	for _, d := range []string{filepath.Join(b, "docker.io"), filepath.Join(a, "quay.io"), filepath.Join(b, "quay.io"), filepath.Join(is.hostsDir, "ghcr.io")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	hostDir := is.hostDir(a + ":" + b)
	for host, want := range map[string]string{"docker.io": filepath.Join(b, "docker.io"), "quay.io": filepath.Join(a, "quay.io"), "ghcr.io": filepath.Join(is.hostsDir, "ghcr.io"), "example.com": ""} {
		if got, err := hostDir(host); got != want || (err != nil && want != "") {
			t.Errorf("%s: %q, %v; want %q", host, got, err, want)
		}
	}
}
