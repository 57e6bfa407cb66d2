package shim

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// criLog writes a container's stdout and stderr to one file in the CRI
// log format (see package extension): the shim writes it itself, so the
// container never waits on containerd.
type criLog struct {
	path    string
	maxLine int // longer lines are split into partial lines; <= 0: no limit

	mu  sync.Mutex
	f   *os.File
	buf []byte // reused to build entries
}

func openCRILog(path string, maxLine int) (*criLog, error) {
	l := &criLog{path: path, maxLine: maxLine}
	return l, l.reopen()
}

// reopen starts a new file at the path, as kubelet's log rotation needs.
func (l *criLog) reopen() error {
	if err := os.MkdirAll(filepath.Dir(l.path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return err
	}
	l.mu.Lock()
	old := l.f
	l.f = f
	l.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

// entry writes one line of a stream; full tells F (complete) from P.
func (l *criLog) entry(stream string, content []byte, full bool) {
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
	// One write per entry: a reader never sees half an entry.
	_, _ = l.f.Write(b)
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

// logStream cuts what a stream writes into lines.
type logStream struct {
	log     *criLog
	name    string
	pending []byte // the current line, not yet ended
}

func (s *logStream) Write(p []byte) (int, error) {
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
			s.log.entry(s.name, s.pending[:max], false)
			s.pending = s.pending[max:]
		}
	}
	return n, nil
}

// flush writes the pending line; a complete line longer than the limit
// goes out as partial lines ending with a full one.
func (s *logStream) flush(full bool) {
	line := s.pending
	if max := s.log.maxLine; max > 0 {
		for len(line) > max {
			s.log.entry(s.name, line[:max], false)
			line = line[max:]
		}
	}
	s.log.entry(s.name, line, full)
	s.pending = s.pending[:0]
}

// Close writes what is left of a last line without a newline.
func (s *logStream) Close() error {
	if len(s.pending) > 0 {
		s.flush(true)
	}
	return nil
}
