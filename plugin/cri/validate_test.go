package cri

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestValidSysctls(t *testing.T) {
	pod := &runtimeapi.NamespaceOption{}
	hostNet := &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE}
	hostIPC := &runtimeapi.NamespaceOption{Ipc: runtimeapi.NamespaceMode_NODE}
	userns := &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD}}
	for _, tc := range []struct {
		key string
		ns  *runtimeapi.NamespaceOption
		ok  bool
	}{
		{"net.ipv4.ip_unprivileged_port_start", pod, true},
		{"net.core.somaxconn", hostNet, false},
		{"kernel.shm_rmid_forced", pod, true},
		{"kernel.shm_rmid_forced", hostIPC, false},
		{"fs.mqueue.msg_max", pod, true},
		{"kernel.panic", pod, false}, // not namespaced: the node's
		{"vm.overcommit_memory", pod, false},
		{"user.max_user_namespaces", userns, true},
		{"user.max_user_namespaces", pod, false}, // the node's
		{"net/ipv4/ip_forward", pod, false},
		{"net.ipv4..conf", pod, false},
		{"net.ipv4.conf.all.forwarding/../../kernel", pod, false},
	} {
		err := validSysctls(map[string]string{tc.key: "1"}, tc.ns)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, errdefs.ErrInvalidArgument)) {
			t.Errorf("%s (%v): %v, want ok=%v", tc.key, tc.ns, err, tc.ok)
		}
	}
}

func TestContainerLogPath(t *testing.T) {
	dir := t.TempDir()
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(dir, "escape")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "f"), filepath.Join(dir, "link.log")); err != nil {
		t.Fatal(err)
	}
	if got, err := containerLogPath(dir, "app/0.log"); err != nil || got != filepath.Join(dir, "app/0.log") {
		t.Errorf("a plain log path: %q, %v", got, err)
	}
	for _, p := range []string{"../../../../etc/cron.d/evil", "/etc/cron.d/evil", "app/../../x", "escape/0.log", "link.log"} {
		if _, err := containerLogPath(dir, p); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("log_path %q: %v, want InvalidArgument", p, err)
		}
	}
	if _, err := containerLogPath("../../tmp/x", "0.log"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("a relative log directory: %v, want InvalidArgument", err)
	}
}

func TestValidNames(t *testing.T) {
	if err := validNames("pod sandbox", map[string]string{"name": "web\x00x"}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("NUL in a name: %v", err)
	}
	if err := validNames("pod sandbox", map[string]string{"name": "web-1.a_b"}); err != nil {
		t.Errorf("a plain name: %v", err)
	}
}

func TestValidMetadataSize(t *testing.T) {
	big := string(make([]byte, maxMetadataSize))
	if err := validMetadataSize(nil, map[string]string{"a": big}); !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Errorf("oversized annotations: %v, want ResourceExhausted", err)
	}
	if err := validMetadataSize(map[string]string{"l": big[:maxLabelSize]}, nil); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("a label containerd cannot hold: %v, want InvalidArgument", err)
	}
	if err := validMetadataSize(map[string]string{"io.kubernetes.pod.name": "web"}, map[string]string{"a": big[:1000]}); err != nil {
		t.Errorf("ordinary metadata: %v", err)
	}
}

func TestValidUserNamespace(t *testing.T) {
	m := func(c, h, l uint32) []*runtimeapi.IDMapping {
		return []*runtimeapi.IDMapping{{ContainerId: c, HostId: h, Length: l}}
	}
	for _, tc := range []struct {
		name string
		u    *runtimeapi.UserNamespace
		want codes.Code
	}{
		{"none", nil, codes.OK},
		{"node", &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_NODE}, codes.OK},
		{"node with mappings", &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_NODE, Uids: m(0, 1000, 10)}, codes.InvalidArgument},
		{"pod", &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: m(0, 1000, 100000), Gids: m(0, 1000, 100000)}, codes.OK},
		{"pod, two mappings", &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: append(m(0, 1000, 10), m(0, 2000, 10)...), Gids: m(0, 1000, 10)}, codes.InvalidArgument},
		{"pod, 0 unmapped", &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: m(1, 1000, 10), Gids: m(1, 1000, 10)}, codes.InvalidArgument},
		{"container", &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_CONTAINER}, codes.InvalidArgument},
		{"target", &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_TARGET}, codes.InvalidArgument},
	} {
		if got := status.Code(toStatus(validUserNamespace(&runtimeapi.NamespaceOption{UsernsOptions: tc.u}))); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
	pod := &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: m(0, 1000, 100000), Gids: m(0, 1000, 100000)}
	if err := validUserNamespace(&runtimeapi.NamespaceOption{UsernsOptions: pod, Network: runtimeapi.NamespaceMode_NODE}); status.Code(toStatus(err)) != codes.InvalidArgument {
		t.Errorf("a pod of its own user namespace on the node's network: %v, want InvalidArgument", err)
	}
}
