package shim

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mine-runtime/mine/extension"
)

var entryRE = regexp.MustCompile(`^(\S+) (stdout|stderr) ([PF]) (.*)$`)

func readEntries(t *testing.T, path string) [][]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]string
	for _, line := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		m := entryRE.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("not a CRI log entry: %q", line)
		}
		out = append(out, m[2:])
	}
	return out
}

func TestCRILogFormatAndSplitting(t *testing.T) {
	path := filepath.Join(t.TempDir(), "0.log")
	l, err := openCRILog(extension.Log{Path: path, MaxLine: 8})
	if err != nil {
		t.Fatal(err)
	}
	l.partialDelay = time.Hour // this test is about whole lines
	out, errs := l.stream("stdout"), l.stream("stderr")
	out.Write([]byte("hello\nwor"))
	errs.Write([]byte("oops\n"))
	out.Write([]byte("ld\n0123456789abcdefXY\ntail"))
	out.Close()
	errs.Close()
	l.Close()
	want := [][]string{
		{"stdout", "F", "hello"},
		{"stderr", "F", "oops"},
		{"stdout", "F", "world"},
		{"stdout", "P", "01234567"},
		{"stdout", "P", "89abcdef"},
		{"stdout", "F", "XY"},
		{"stdout", "F", "tail"},
	}
	got := readEntries(t, path)
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if strings.Join(got[i], " ") != strings.Join(want[i], " ") {
			t.Fatalf("entry %d: got %v, want %v", i, got[i], want[i])
		}
	}
}

func TestCRILogReopen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "0.log")
	l, err := openCRILog(extension.Log{Path: path, MaxLine: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	s := l.stream("stdout")
	s.Write([]byte("before\n"))
	if err := os.Rename(path, path+".1"); err != nil { // kubelet's rotation
		t.Fatal(err)
	}
	if err := l.reopen(); err != nil {
		t.Fatal(err)
	}
	s.Write([]byte("after\n"))
	if e := readEntries(t, path+".1"); len(e) != 1 || e[0][2] != "before" {
		t.Fatalf("rotated file: %v", e)
	}
	if e := readEntries(t, path); len(e) != 1 || e[0][2] != "after" {
		t.Fatalf("new file: %v", e)
	}
}

func TestCRILogMaxSizeStartsOver(t *testing.T) {
	path := filepath.Join(t.TempDir(), "0.log")
	l, err := openCRILog(extension.Log{Path: path, MaxLine: -1, MaxSize: 200})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	s := l.stream("stdout")
	for i := 0; i < 20; i++ {
		s.Write([]byte("a line of some length\n"))
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() > 200 || fi.Size() == 0 {
		t.Fatalf("log of %d bytes with max_size 200", fi.Size())
	}
	readEntries(t, path) // still whole entries only
}

// TestCRILogFlushesALineStartThatWaits writes a prompt without a newline:
// it reaches the log as a partial entry without waiting for the line's end.
func TestCRILogFlushesALineStartThatWaits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "0.log")
	l, err := openCRILog(extension.Log{Path: path, MaxLine: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	s := l.stream("stdout")
	s.Write([]byte("password: "))
	deadline := time.Now().Add(5 * time.Second)
	for {
		if data, _ := os.ReadFile(path); len(data) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a line start without its end never reached the log")
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.Write([]byte("secret\n"))
	s.Close()
	got := readEntries(t, path)
	if len(got) != 2 || strings.Join(got[0], " ") != "stdout P password: " || strings.Join(got[1], " ") != "stdout F secret" {
		t.Fatalf("entries %q", got)
	}
}

// A log beneath its pod's directory is never made through a link out of
// it: not when first opened, not when reopened after a rotation.
func TestCRILogStaysBeneathItsDirectory(t *testing.T) {
	dir, outside := t.TempDir(), t.TempDir()
	path := filepath.Join(dir, "app", "0.log")
	l, err := openCRILog(extension.Log{Path: path, Beneath: dir, MaxLine: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// The file is rotated away and its name replaced by a link out.
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "evil"), path); err != nil {
		t.Fatal(err)
	}
	if err := l.reopen(); err == nil {
		t.Error("reopened the log through a link out of its directory")
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, "app")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "app")); err != nil {
		t.Fatal(err)
	}
	if _, err := openCRILog(extension.Log{Path: path, Beneath: dir, MaxLine: -1}); err == nil {
		t.Error("opened a log through a linked directory out of its directory")
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("files made outside the log directory: %v", entries)
	}
}

// The shim counts the lines it writes, those it splits, and the entries
// it could not write (extension.ShimStats).
func TestCRILogCounters(t *testing.T) {
	lines, split, dropped := logCounters.lines.Load(), logCounters.split.Load(), logCounters.dropped.Load()
	path := filepath.Join(t.TempDir(), "0.log")
	l, err := openCRILog(extension.Log{Path: path, MaxLine: 4})
	if err != nil {
		t.Fatal(err)
	}
	l.partialDelay = time.Hour
	out := l.stream("stdout")
	out.Write([]byte("ab\n0123456789\ncd\n"))
	// A write that fails: the file is closed under the stream.
	l.f.Close()
	out.Write([]byte("lost\n"))
	if got := logCounters.lines.Load() - lines; got != 3 {
		t.Errorf("lines = %d, want 3", got)
	}
	if got := logCounters.split.Load() - split; got != 1 {
		t.Errorf("split lines = %d, want 1", got)
	}
	if got := logCounters.dropped.Load() - dropped; got != 1 {
		t.Errorf("dropped entries = %d, want 1", got)
	}
	if st := ownStats(); st.RSSBytes == 0 || st.Pid == 0 || st.LogLines < 3 {
		t.Errorf("own stats %+v", st)
	}
}
