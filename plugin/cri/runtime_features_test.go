package cri

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/mine-runtime/mine/config"
)

// fakeRuntime writes an OCI runtime that answers only --version, as
// crun 1.8.1 does.
func fakeRuntime(t *testing.T, version string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "fake-oci-runtime")
	script := "#!/bin/sh\ncase \"$1\" in\n--version) printf '" + version + "';;\n*) echo \"unknown command $1\" >&2; exit 1;;\nesac\n"
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestSpecVersionFor(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name, out, want string
	}{
		{"crun 1.8.1: only 1.0", "crun version 1.8.1\ncommit: 1f0b9d6\nrundir: /run/crun\nspec: 1.0.0\n+SYSTEMD +SELINUX\n", "1.0.0"},
		{"newer than ours: ours", "runtime version 9\nspec: 9.1.0\n", specs.Version},
		{"says nothing: ours", "runtime version 1\n", specs.Version},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rt := config.Runtime{Options: config.RuntimeOptions{BinaryName: fakeRuntime(t, tc.out)}}
			if got := specVersionFor(ctx, rt); got != tc.want {
				t.Fatalf("spec version %q, want %q", got, tc.want)
			}
			if opts := ociRuntimeInfo(ctx, rt.Options.BinaryName).MountOptions; len(opts) != 0 {
				t.Fatalf("mount options %v from a runtime without features", opts)
			}
		})
	}
}

func TestOlderVersion(t *testing.T) {
	for _, tc := range []struct {
		a, b  string
		older bool
	}{
		{"1.0.0", "1.3.0", true},
		{"1.0.2", "1.0.10", true},
		{"1.3.0", "1.3.0", false},
		{"1.3.0-dev", "1.2.1", false},
		{"2.0.0", "1.9.9", false},
	} {
		if got := olderVersion(tc.a, tc.b); got != tc.older {
			t.Errorf("olderVersion(%s, %s) = %v", tc.a, tc.b, got)
		}
	}
}
