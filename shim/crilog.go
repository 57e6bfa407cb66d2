package shim

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mine-runtime/mine/extension"
	"github.com/mine-runtime/mine/failpoint"
)

// criLog writes a container's stdout and stderr to one file in the CRI
// log format (see package extension): the shim writes it itself, so the
// container never waits on containerd.
type criLog struct {
	path    string
	beneath string // the directory path must stay in, "" for none
	maxLine int    // longer lines are split into partial lines; <= 0: no limit
	maxSize int64  // the file starts over past this size; 0: no limit

	// partialDelay is how long a line start waits for its end before it
	// is written as a partial entry (partialFlushDelay).
	partialDelay time.Duration

	mu      sync.Mutex
	f       *os.File
	written int64  // the file's size, for maxSize
	buf     []byte // reused to build entries
}

func openCRILog(l extension.Log) (*criLog, error) {
	if err := failpoint.Inject(context.Background(), failpoint.LogOpen); err != nil {
		return nil, fmt.Errorf("open log %s: %w", l.Path, err)
	}
	log := &criLog{path: l.Path, beneath: l.Beneath, maxLine: l.MaxLine, maxSize: l.MaxSize, partialDelay: partialFlushDelay}
	return log, log.reopen()
}

// reopen starts a new file at the path, as kubelet's log rotation needs.
func (l *criLog) reopen() error {
	f, err := l.open()
	if err != nil {
		return err
	}
	var size int64
	if fi, err := f.Stat(); err == nil {
		size = fi.Size()
	}
	l.mu.Lock()
	old := l.f
	l.f, l.written = f, size
	l.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

// open makes the log file, and its directory, and opens it for appending.
// Beneath a directory, it is done through that directory: no link in it
// (a rotated file swapped for a symlink, say) leads the shim out of it.
func (l *criLog) open() (*os.File, error) {
	const flags, perm = os.O_WRONLY | os.O_CREATE | os.O_APPEND, 0o640
	if l.beneath == "" {
		if err := os.MkdirAll(filepath.Dir(l.path), 0o755); err != nil {
			return nil, err
		}
		return os.OpenFile(l.path, flags, perm)
	}
	rel, err := filepath.Rel(l.beneath, l.path)
	if err != nil || !filepath.IsLocal(rel) {
		return nil, fmt.Errorf("log %s is not within %s", l.path, l.beneath)
	}
	// The directory itself is trusted (kubelet makes it, and /var/log may
	// well be a link); what is below it is not.
	if err := os.MkdirAll(l.beneath, 0o755); err != nil {
		return nil, err
	}
	root, err := os.OpenRoot(l.beneath)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	if err := root.MkdirAll(filepath.Dir(rel), 0o755); err != nil {
		return nil, err
	}
	return root.OpenFile(rel, flags, perm)
}

// logCounters are the shim's log figures, for all the containers it has
// served (extension.ShimStats).
var logCounters struct {
	lines, split, dropped atomic.Uint64
}

// entry writes one line of a stream; full tells F (complete) from P.
// It reports whether the entry was written.
func (l *criLog) entry(stream string, content []byte, full bool) bool {
	tag := "P "
	if full {
		tag = "F "
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buf[:0]
	b = time.Now().UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, ' ')
	b = append(b, stream...)
	b = append(b, ' ')
	b = append(b, tag...)
	b = append(b, content...)
	b = append(b, '\n')
	l.buf = b
	if l.maxSize > 0 && l.written+int64(len(b)) > l.maxSize {
		// Appends go to the new end: the file simply starts over.
		if l.f.Truncate(0) == nil {
			l.written = 0
		}
	}
	// One write per entry: a reader never sees half an entry.
	n, err := l.f.Write(b)
	l.written += int64(n)
	if err != nil {
		logCounters.dropped.Add(1)
		return false
	}
	return true
}

func (l *criLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Close()
}

// stream returns the writer for one of the container's streams.
func (l *criLog) stream(name string) io.WriteCloser {
	return &logStream{log: l, name: name}
}

// partialFlushDelay is how long the start of a line may wait for its end
// before it is written as a partial (P) entry: a prompt, or output without
// a newline, is then in the log (and so in attach and kubectl logs -f) at
// once rather than when the line ends.
const partialFlushDelay = 100 * time.Millisecond

// logStream cuts what a stream writes into lines.
type logStream struct {
	log     *criLog
	name    string
	mu      sync.Mutex
	pending []byte // the current line, not yet ended
	timer   *time.Timer
	// open: the last entry written was partial, so the line goes on.
	open bool
}

// write writes one entry of the stream. Called with mu held.
func (s *logStream) write(content []byte, full bool) {
	if s.log.entry(s.name, content, full) && full {
		logCounters.lines.Add(1)
		if s.open {
			logCounters.split.Add(1)
		}
	}
	s.open = !full
}

func (s *logStream) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			s.pending = append(s.pending, p...)
			break
		}
		s.pending = append(s.pending, p[:i]...)
		p = p[i+1:]
		s.flush(true)
	}
	if max := s.log.maxLine; max > 0 {
		for len(s.pending) >= max {
			s.write(s.pending[:max], false)
			s.pending = s.pending[max:]
		}
	}
	if len(s.pending) > 0 && s.timer == nil {
		s.timer = time.AfterFunc(s.log.partialDelay, s.flushPartial)
	}
	return n, nil
}

// flushPartial writes a line start that has waited partialFlushDelay.
func (s *logStream) flushPartial() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.timer = nil
	if len(s.pending) > 0 {
		s.write(s.pending, false)
		s.pending = s.pending[:0]
	}
}

// flush writes the pending line; a complete line longer than the limit
// goes out as partial lines ending with a full one. Called with mu held.
func (s *logStream) flush(full bool) {
	line := s.pending
	if max := s.log.maxLine; max > 0 {
		for len(line) > max {
			s.write(line[:max], false)
			line = line[max:]
		}
	}
	s.write(line, full)
	s.pending = s.pending[:0]
}

// Close writes what is left of a last line without a newline, as a full
// entry; a last line already written out as partial entries (it filled
// the line limit, or waited partialFlushDelay) is ended with an empty
// full one, so that every stream ends with a whole line, whatever its
// length (found by FuzzCRILog).
func (s *logStream) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	if len(s.pending) > 0 {
		s.flush(true)
	} else if s.open {
		s.write(nil, true)
	}
	return nil
}
