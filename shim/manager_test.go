package shim

import (
	"os"
	"path/filepath"
	"testing"
)

func TestGroupOf(t *testing.T) {
	for _, tc := range []struct {
		spec, want string
	}{
		{`{"annotations":{"io.kubernetes.cri.sandbox-id":"pod1"}}`, "pod1"},
		{`{"annotations":{"io.kubernetes.cri.sandbox-id":"pod1","io.containerd.mine.v2.group":"g"}}`, "g"},
		{`{"annotations":{}}`, "ctr"},
		{`{}`, "ctr"},
	} {
		path := filepath.Join(t.TempDir(), "config.json")
		if err := os.WriteFile(path, []byte(tc.spec), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := groupOf(path, "ctr")
		if err != nil || got != tc.want {
			t.Errorf("groupOf(%s) = %q, %v; want %q", tc.spec, got, err, tc.want)
		}
	}
}

func TestRuncErrorAddsRuncsLastError(t *testing.T) {
	bundle := t.TempDir()
	log := `{"level":"info","msg":"starting"}
{"level":"error","msg":"exec: \"nope\": executable file not found in $PATH"}
`
	if err := os.WriteFile(filepath.Join(bundle, runcLogFile), []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	err := runcError(bundle, os.ErrInvalid)
	if want := `invalid argument: exec: "nope": executable file not found in $PATH`; err.Error() != want {
		t.Fatalf("got %q, want %q", err, want)
	}
}
