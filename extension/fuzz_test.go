package extension

import (
	"path/filepath"
	"testing"
)

// FuzzLogURI: whatever a log path holds (spaces, '?', '#', '%', invalid
// UTF-8), its URI reads back as exactly that path and those limits, so no
// part of it can be taken for anything else; any string parses without a
// panic.
func FuzzLogURI(f *testing.F) {
	f.Add("/var/log/pods/ns_pod_uid/app/0.log", "/var/log/pods/ns_pod_uid", 16384, int64(0))
	f.Add("/a b/?x=1#frag/%2e%2e/0.log", "/a b", -1, int64(1<<20))
	f.Fuzz(func(t *testing.T, path, beneath string, maxLine int, maxSize int64) {
		ParseLogURI(path) // arbitrary input: no panic, whatever it returns
		if !filepath.IsAbs(path) {
			return
		}
		l, ok, err := ParseLogURI(LogURI(path, beneath, maxLine, maxSize))
		if !ok || err != nil {
			t.Fatalf("LogURI(%q) does not parse: %v, %v", path, ok, err)
		}
		wantLine, wantSize := maxLine, maxSize
		if wantLine <= 0 {
			wantLine = -1
		}
		if wantSize < 0 {
			wantSize = 0
		}
		if l.Path != path || l.Beneath != beneath || l.MaxLine != wantLine || l.MaxSize != wantSize {
			t.Fatalf("LogURI(%q, %q, %d, %d) reads back as %+v", path, beneath, maxLine, maxSize, l)
		}
	})
}

// FuzzStdinURI: a kept-open stdin FIFO's URI reads back as its path.
func FuzzStdinURI(f *testing.F) {
	f.Add("/run/containerd/fifo/abc/stdin")
	f.Fuzz(func(t *testing.T, path string) {
		ParseStdin(path)
		if !filepath.IsAbs(path) {
			return
		}
		if got, keep := ParseStdin(KeptOpenStdinURI(path)); got != path || !keep {
			t.Fatalf("KeptOpenStdinURI(%q) reads back as %q, %v", path, got, keep)
		}
	})
}
