//go:build failpoints

package failpoint

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestInject(t *testing.T) {
	path := filepath.Join(t.TempDir(), "failpoints")
	t.Setenv(Env, path)
	ctx := context.Background()
	if err := Inject(ctx, CNIAdd); err != nil {
		t.Fatalf("no file: %v", err)
	}
	os.WriteFile(path, []byte("cni-add error 2\nrunc-start hang\n"), 0o600)
	for i := 0; i < 2; i++ {
		if err := Inject(ctx, CNIAdd); err == nil || !strings.Contains(err.Error(), "failpoint cni-add") {
			t.Fatalf("act %d: %v", i, err)
		}
	}
	if err := Inject(ctx, CNIAdd); err != nil {
		t.Fatalf("acted more than its count: %v", err)
	}
	if err := Inject(ctx, CNIDel); err != nil {
		t.Fatalf("a failpoint not armed: %v", err)
	}
	done := make(chan error)
	go func() { done <- Inject(ctx, RuncStart) }()
	select {
	case err := <-done:
		t.Fatalf("hang returned at once: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	os.WriteFile(path, nil, 0o600)
	if err := <-done; err != nil {
		t.Fatalf("hang disarmed: %v", err)
	}
	os.WriteFile(path, []byte("runc-start hang\n"), 0o600)
	os.Remove(path + ".fired")
	tctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := Inject(tctx, RuncStart); err == nil {
		t.Fatal("hang outlived its context")
	}
}
