package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMakeInstall installs into a DESTDIR as a package build would: the
// binaries, a unit systemd accepts, and configuration files only where
// none exist; uninstall leaves the configuration.
func TestMakeInstall(t *testing.T) {
	runMake := func(dest, target string) {
		t.Helper()
		cmd := exec.Command("make", "-C", "..", target, "DESTDIR="+dest, "PREFIX=/usr/local")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make %s: %v\n%s", target, err, out)
		}
	}
	dest := t.TempDir()
	// An operator's configuration is kept as it is.
	custom := "version = 3\n# the operator's\n"
	if err := os.MkdirAll(filepath.Join(dest, "etc/containerd"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dest, "etc/containerd/config.toml"), []byte(custom), 0o644); err != nil {
		t.Fatal(err)
	}
	runMake(dest, "install")

	for path, mode := range map[string]os.FileMode{
		"usr/local/bin/containerd":                        0o755,
		"usr/local/bin/containerd-shim-mine-v2":           0o755,
		"usr/local/bin/mine-pod-init":                     0o755,
		"usr/local/lib/systemd/system/containerd.service": 0o644,
		"etc/crictl.yaml":                                 0o644,
	} {
		fi, err := os.Stat(filepath.Join(dest, path))
		if err != nil || fi.Mode().Perm() != mode {
			t.Errorf("%s: %v, mode %v, want %v", path, err, fi.Mode().Perm(), mode)
		}
	}
	if data, _ := os.ReadFile(filepath.Join(dest, "etc/containerd/config.toml")); string(data) != custom {
		t.Errorf("install replaced the operator's config.toml:\n%s", data)
	}
	crictl, _ := os.ReadFile(filepath.Join(dest, "etc/crictl.yaml"))
	if !strings.Contains(string(crictl), "runtime-endpoint: unix:///run/containerd/containerd.sock") {
		t.Errorf("crictl.yaml:\n%s", crictl)
	}
	unit, err := os.ReadFile(filepath.Join(dest, "usr/local/lib/systemd/system/containerd.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ExecStart=/usr/local/bin/containerd\n", "Delegate=yes", "KillMode=process", "LimitNOFILE=", "OOMScoreAdjust="} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("the unit lacks %q", want)
		}
	}
	if analyze, err := exec.LookPath("systemd-analyze"); err == nil {
		// Verified as installed, but with ExecStart at the staged binary:
		// systemd checks that it exists.
		staged := strings.Replace(string(unit), "ExecStart=/usr/local/bin/containerd", "ExecStart="+filepath.Join(dest, "usr/local/bin/containerd"), 1)
		copyPath := filepath.Join(t.TempDir(), "containerd.service")
		if err := os.WriteFile(copyPath, []byte(staged), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(analyze, "verify", copyPath).CombinedOutput(); err != nil || len(out) != 0 {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
	} else {
		t.Log("no systemd-analyze here: the unit is checked by its content only")
	}

	// Without a configuration, install puts the default one in place.
	fresh := t.TempDir()
	runMake(fresh, "install")
	if data, err := os.ReadFile(filepath.Join(fresh, "etc/containerd/config.toml")); err != nil || !strings.Contains(string(data), `[plugins."io.containerd.grpc.v1.mine"]`) {
		t.Errorf("default config.toml: %v\n%s", err, data)
	}

	runMake(dest, "uninstall")
	for _, gone := range []string{"usr/local/bin/containerd", "usr/local/bin/containerd-shim-mine-v2", "usr/local/bin/mine-pod-init", "usr/local/lib/systemd/system/containerd.service"} {
		if _, err := os.Stat(filepath.Join(dest, gone)); !os.IsNotExist(err) {
			t.Errorf("%s left after uninstall", gone)
		}
	}
	if data, _ := os.ReadFile(filepath.Join(dest, "etc/containerd/config.toml")); string(data) != custom {
		t.Error("uninstall removed the operator's config.toml")
	}
}
