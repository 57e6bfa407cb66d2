package shim

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/mine-runtime/mine/extension"
)

var rawEntryRE = regexp.MustCompile(`^\S+ stdout ([PF]) (.*)$`)

// FuzzCRILog writes arbitrary output, cut into arbitrary writes, through
// the CRI log writer: every line of the file is a CRI entry no longer
// than the line limit, and the entries put back together are the output,
// byte for byte (a last line without a newline ends with the stream).
func FuzzCRILog(f *testing.F) {
	f.Add([]byte("hello\nworld\n"), []byte{3, 1}, uint8(4))
	f.Add([]byte("no newline at the end"), []byte{}, uint8(0))
	f.Add([]byte("\n\n\r\n\x00\xff long line long line\n"), []byte{1, 2, 3}, uint8(1))
	f.Fuzz(func(t *testing.T, data, cuts []byte, maxLine uint8) {
		path := filepath.Join(t.TempDir(), "0.log")
		l, err := openCRILog(extension.Log{Path: path, MaxLine: int(maxLine)})
		if err != nil {
			t.Fatal(err)
		}
		l.partialDelay = time.Hour // partial entries by size only: deterministic
		w := l.stream("stdout")
		rest := data
		for i := 0; len(rest) > 0; i++ {
			n := len(rest)
			if len(cuts) > 0 {
				n = min(n, int(cuts[i%len(cuts)])+1)
			}
			w.Write(rest[:n])
			rest = rest[n:]
		}
		w.Close()
		l.Close()
		file, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var got []byte
		lines := bytes.Split(file, []byte("\n"))
		if len(lines[len(lines)-1]) != 0 {
			t.Fatalf("the file does not end with a newline: %q", file)
		}
		for _, line := range lines[:len(lines)-1] {
			m := rawEntryRE.FindSubmatch(line)
			if m == nil {
				t.Fatalf("not a CRI log entry: %q", line)
			}
			if maxLine > 0 && len(m[2]) > int(maxLine) {
				t.Fatalf("an entry of %d bytes, over the limit %d", len(m[2]), maxLine)
			}
			got = append(got, m[2]...)
			if string(m[1]) == "F" {
				got = append(got, '\n')
			}
		}
		want := data
		if len(want) > 0 && want[len(want)-1] != '\n' {
			want = append(bytes.Clone(want), '\n')
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("entries give back %q, the output was %q", got, data)
		}
	})
}
