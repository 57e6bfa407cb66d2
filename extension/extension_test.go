package extension

import "testing"

func TestLogURIRoundTrip(t *testing.T) {
	uri := LogURI("/var/log/pods/ns_pod_uid/ctr/0.log", 16384, 0)
	l, ok, err := ParseLogURI(uri)
	if err != nil || !ok || l.Path != "/var/log/pods/ns_pod_uid/ctr/0.log" || l.MaxLine != 16384 || l.MaxSize != 0 {
		t.Fatalf("%s parsed as %+v %v %v", uri, l, ok, err)
	}
	if _, ok, _ := ParseLogURI("/run/fifo/stdout"); ok {
		t.Fatal("a FIFO path taken for a log URI")
	}
	if l, _, _ := ParseLogURI(LogURI("/l", -1, 1<<20)); l.MaxLine != -1 || l.MaxSize != 1<<20 {
		t.Fatalf("parsed as %+v", l)
	}
}

func TestStdinURI(t *testing.T) {
	if p, keep := ParseStdin(KeptOpenStdinURI("/run/x/stdin")); p != "/run/x/stdin" || !keep {
		t.Fatalf("parsed as %q %v", p, keep)
	}
	if p, keep := ParseStdin("/run/fifo/stdin"); p != "/run/fifo/stdin" || keep {
		t.Fatalf("a plain path parsed as %q %v", p, keep)
	}
}
