package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mine-runtime/mine/integration/testbed"
)

func newCommand(name string, args ...string) *exec.Cmd {
	return exec.Command(name, args...)
}

func TestConfigDefaultPrintsOurSection(t *testing.T) {
	out, err := execCommand(filepath.Join(binDir, "containerd"), "config", "default")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"[plugins.'io.containerd.grpc.v1.mine']",
		"default_runtime_name = 'mine'",
		"runtime_type = 'io.containerd.mine.v2'",
		"conf_dir = '/etc/cni/net.d'",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("containerd config default lacks %q", want)
		}
	}
	if strings.Contains(out, "io.containerd.grpc.v1.cri") {
		t.Error("containerd's own CRI plugin is built in; it must be left out")
	}
}

func TestBadConfigRefusesToStart(t *testing.T) {
	d, err := testbed.NewDaemon(t.TempDir(), binDir, `
[plugins."io.containerd.grpc.v1.mine"]
  max_container_log_line_size = -7
`)
	if err != nil {
		t.Fatal(err)
	}
	err = d.Start(context.Background())
	defer d.Teardown()
	if err == nil {
		t.Fatal("the daemon started with an invalid max_container_log_line_size")
	}
	<-d.Exited()
	log, _ := os.ReadFile(d.Log)
	if !strings.Contains(string(log), `plugins."io.containerd.grpc.v1.mine".max_container_log_line_size`) {
		t.Fatalf("the daemon's error does not name the key:\n%s", err)
	}
}
