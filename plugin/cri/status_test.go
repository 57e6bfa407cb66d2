package cri

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/mine-runtime/mine/config"
)

func TestCRISignalNames(t *testing.T) {
	for name, want := range map[string]runtimeapi.Signal{
		"SIGTERM":     runtimeapi.Signal_SIGNAL_SIGTERM,
		"TERM":        runtimeapi.Signal_SIGNAL_SIGTERM,
		"sigterm":     runtimeapi.Signal_SIGNAL_SIGTERM,
		"15":          runtimeapi.Signal_SIGNAL_SIGTERM,
		"SIGQUIT":     runtimeapi.Signal_SIGNAL_SIGQUIT,
		"SIGRTMIN+3":  runtimeapi.Signal_SIGNAL_SIGRTMINPLUS3,
		"SIGRTMAX-1":  runtimeapi.Signal_SIGNAL_SIGRTMAXMINUS1,
		"6":           runtimeapi.Signal_SIGNAL_SIGABRT, // SIGIOT too: the lowest CRI value wins
		"SIGIOT":      runtimeapi.Signal_SIGNAL_SIGIOT,
		"no-such-sig": runtimeapi.Signal_SIGNAL_RUNTIME_DEFAULT,
	} {
		if got := criSignal(name); got != want {
			t.Errorf("criSignal(%q) = %v, want %v", name, got, want)
		}
	}
	for sig, want := range map[runtimeapi.Signal]string{
		runtimeapi.Signal_SIGNAL_SIGUSR1:         "SIGUSR1",
		runtimeapi.Signal_SIGNAL_SIGRTMINPLUS3:   "SIGRTMIN+3",
		runtimeapi.Signal_SIGNAL_SIGRTMAXMINUS14: "SIGRTMAX-14",
		runtimeapi.Signal_SIGNAL_RUNTIME_DEFAULT: "",
		runtimeapi.Signal(1000):                  "",
	} {
		if got := ociSignalName(sig); got != want {
			t.Errorf("ociSignalName(%v) = %q, want %q", sig, got, want)
		}
	}
}

func TestStopSignalPrefersTheConfigsThenTheImages(t *testing.T) {
	m := &containerMeta{config: &runtimeapi.ContainerConfig{}}
	if got := stopSignal(m); got != "SIGTERM" {
		t.Errorf("default %q, want SIGTERM", got)
	}
	m.StopSignal = "SIGQUIT"
	if got := stopSignal(m); got != "SIGQUIT" {
		t.Errorf("with the image's %q, want SIGQUIT", got)
	}
	m.config.StopSignal = runtimeapi.Signal_SIGNAL_SIGUSR2
	if got := stopSignal(m); got != "SIGUSR2" {
		t.Errorf("with the config's %q, want SIGUSR2", got)
	}
}

func TestContainerUserIsTheSpecs(t *testing.T) {
	spec := &oci.Spec{Process: &specs.Process{User: specs.User{UID: 1000, GID: 3000, AdditionalGids: []uint32{3000, 42}}}}
	u := containerUser(spec).GetLinux()
	if u.GetUid() != 1000 || u.GetGid() != 3000 || !slices.Equal(u.GetSupplementalGroups(), []int64{3000, 42}) {
		t.Fatalf("user %v", u)
	}
	if u := containerUser(nil); u.GetLinux() != nil {
		t.Fatalf("user without a spec: %v", u)
	}
}

func TestRuntimeHandlersListTheDefaultFirstAsEmptyName(t *testing.T) {
	rt := config.Runtime{RuntimeType: config.DefaultRuntimeType, Options: config.RuntimeOptions{BinaryName: "no-such-oci-runtime"}}
	s := &Service{}
	s.cfg.Store(&config.Config{
		DefaultRuntimeName: "mine",
		Runtimes:           map[string]config.Runtime{"zeta": rt, "mine": rt, "alpha": rt},
	})
	var names []string
	for _, h := range s.runtimeHandlers(context.Background()) {
		names = append(names, h.Name)
		if h.Features == nil || h.Features.RecursiveReadOnlyMounts || h.Features.UserNamespaces {
			t.Errorf("handler %q of a runtime that cannot be run: %v", h.Name, h.Features)
		}
	}
	if want := []string{"", "alpha", "mine", "zeta"}; !slices.Equal(names, want) {
		t.Fatalf("handlers %q, want %q", names, want)
	}
}

func TestRecursiveReadOnlyMountsNeedKernelAndRuntime(t *testing.T) {
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		t.Fatal(err)
	}
	major, minor, err := readVersion(unix.ByteSliceToString(uts.Release[:]))
	if err != nil {
		t.Fatal(err)
	}
	if want := major > 5 || major == 5 && minor >= 12; kernelSupportsRRO() != want {
		t.Fatalf("kernel %d.%d: mount_setattr found %v, want %v", major, minor, kernelSupportsRRO(), want)
	}
	if _, err := exec.LookPath("runc"); err != nil {
		t.Skip("no runc")
	}
	// runc 1.1 and later list rro among their mount options.
	out, err := exec.Command("runc", "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	rmajor, rminor, err := readVersion(string(out))
	if err != nil {
		t.Fatal(err)
	}
	want := kernelSupportsRRO() && (rmajor > 1 || rmajor == 1 && rminor >= 1)
	if got := handlerFeatures(context.Background(), config.Runtime{}).RecursiveReadOnlyMounts; got != want {
		t.Fatalf("runc %d.%d on kernel %d.%d: RecursiveReadOnlyMounts %v, want %v", rmajor, rminor, major, minor, got, want)
	}
}

func TestProcessStartTime(t *testing.T) {
	before := time.Now()
	cmd := exec.Command("sleep", "5")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	got := time.Unix(0, processStartTime(uint32(cmd.Process.Pid)))
	// /proc's boot time is in whole seconds.
	if got.Before(before.Add(-1100*time.Millisecond)) || got.After(time.Now().Add(100*time.Millisecond)) {
		t.Fatalf("started at %v; the test started it at %v", got, before)
	}
}

// readVersion reads the first "X.Y" version in s.
func readVersion(s string) (major, minor int, err error) {
	i := strings.IndexAny(s, "0123456789")
	if i < 0 {
		return 0, 0, fmt.Errorf("no version in %q", s)
	}
	_, err = fmt.Sscanf(s[i:], "%d.%d", &major, &minor)
	return major, minor, err
}
