package shim

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
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
		spec, err := readSpec(path, "ctr")
		if got := spec.group; err != nil || got != tc.want {
			t.Errorf("readSpec(%s).group = %q, %v; want %q", tc.spec, got, err, tc.want)
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

// The group's lock and claims (claims.go): a claim is fresh until
// claimTTL, the files go with the socket that owns them, and the lock is
// taken again when its file was removed under a waiter.
func TestGroupClaims(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "group")
	unlock, err := lockGroup(socket)
	if err != nil {
		t.Fatal(err)
	}
	if err := claim(socket, "c1"); err != nil {
		t.Fatal(err)
	}
	if n := freshClaims(socket); n != 1 {
		t.Fatalf("%d fresh claims, want 1", n)
	}
	old := time.Now().Add(-2 * claimTTL)
	if err := os.Chtimes(filepath.Join(claimsDir(socket), "c1"), old, old); err != nil {
		t.Fatal(err)
	}
	if n := freshClaims(socket); n != 0 {
		t.Fatalf("%d fresh claims after claimTTL, want 0", n)
	}
	claim(socket, "c2")
	unclaim(socket, "c2")
	if n := freshClaims(socket); n != 0 {
		t.Fatalf("%d fresh claims after unclaim, want 0", n)
	}

	// A waiter blocked on the lock while its holder removes the files
	// ends up holding a lock on a file at the path.
	l, err := listen(socket)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var st unix.Stat_t
	if err := unix.Stat(socket, &st); err != nil {
		t.Fatal(err)
	}
	got := make(chan func())
	go func() {
		u, err := lockGroup(socket)
		if err != nil {
			t.Error(err)
		}
		got <- u
	}()
	select {
	case <-got:
		t.Fatal("the lock was taken twice")
	case <-time.After(50 * time.Millisecond):
	}
	if err := removeGroupFiles(socket, st.Ino+1); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(socket); err != nil {
		t.Fatal("another socket's files removed")
	}
	if err := removeGroupFiles(socket, st.Ino); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{socket, lockPath(socket), claimsDir(socket)} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s left", p)
		}
	}
	unlock()
	u := <-got
	if _, err := os.Stat(lockPath(socket)); err != nil {
		t.Fatalf("the waiter holds a lock on no file at the path: %v", err)
	}
	u()
}

// `delete` for a container whose Create never came releases the claim
// `start` left on the group's shim.
func TestCleanupReleasesClaim(t *testing.T) {
	bundle := t.TempDir()
	socket := filepath.Join(t.TempDir(), "group")
	if err := os.WriteFile(filepath.Join(bundle, socketFile), []byte(socket), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := claim(socket, "never-created"); err != nil {
		t.Fatal(err)
	}
	if err := claim(socket, "other"); err != nil {
		t.Fatal(err)
	}
	if _, err := cleanup(context.Background(), flags{namespace: "mine-test", id: "never-created", bundle: bundle}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(claimsDir(socket), "never-created")); !os.IsNotExist(err) {
		t.Fatalf("the claim is still there: %v", err)
	}
	if n := freshClaims(socket); n != 1 {
		t.Fatalf("%d fresh claims left, want the other container's", n)
	}
}

// containerd, restarted after it died between `start` and Create, deletes
// the container it never sent: its claim goes with that Delete, so that
// the Shutdown which follows ends the shim at once, not claimTTL later.
func TestDeleteReleasesClaim(t *testing.T) {
	s, _, _ := testService(t)
	s.socket = filepath.Join(t.TempDir(), "group")
	if err := claim(s.socket, "never-created"); err != nil {
		t.Fatal(err)
	}
	if err := claim(s.socket, "other"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Delete(context.Background(), &taskAPI.DeleteRequest{ID: "never-created"}); !errdefs.IsNotFound(err) {
		t.Fatalf("Delete of a container never created: %v, want NotFound", err)
	}
	if _, err := os.Stat(filepath.Join(claimsDir(s.socket), "never-created")); !os.IsNotExist(err) {
		t.Fatalf("the claim is still there: %v", err)
	}
	if n := freshClaims(s.socket); n != 1 {
		t.Fatalf("%d fresh claims left, want the other container's", n)
	}
}

// The server raises the score it inherited from containerd by one, and
// leaves the highest alone.
func TestRaiseOOMScore(t *testing.T) {
	for _, tc := range []struct{ from, want string }{
		{"0\n", "1"},
		{"-999\n", "-998"},
		{"999", "1000"},
		{"1000\n", "1000\n"},
	} {
		path := filepath.Join(t.TempDir(), "oom_score_adj")
		if err := os.WriteFile(path, []byte(tc.from), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := raiseOOMScore(path); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(path); string(got) != tc.want {
			t.Errorf("raiseOOMScore(%q) wrote %q, want %q", tc.from, got, tc.want)
		}
	}
}
