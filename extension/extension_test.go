package extension

import "testing"

func TestLogURIRoundTrip(t *testing.T) {
	uri := LogURI("/var/log/pods/ns_pod_uid/ctr/0.log", "/var/log/pods/ns_pod_uid", 16384, 0)
	l, ok, err := ParseLogURI(uri)
	if err != nil || !ok || l.Path != "/var/log/pods/ns_pod_uid/ctr/0.log" || l.Beneath != "/var/log/pods/ns_pod_uid" || l.MaxLine != 16384 || l.MaxSize != 0 {
		t.Fatalf("%s parsed as %+v %v %v", uri, l, ok, err)
	}
	if _, ok, _ := ParseLogURI("/run/fifo/stdout"); ok {
		t.Fatal("a FIFO path taken for a log URI")
	}
	if l, _, _ := ParseLogURI(LogURI("/l", "", -1, 1<<20)); l.MaxLine != -1 || l.MaxSize != 1<<20 {
		t.Fatalf("parsed as %+v", l)
	}
	// A path with characters a URL gives meaning to comes back whole.
	odd := "/var/log/pods/a?b#c/d%2e/0.log"
	if l, _, err := ParseLogURI(LogURI(odd, "", -1, 0)); err != nil || l.Path != odd {
		t.Fatalf("%q parsed as %+v, %v", odd, l, err)
	}
	// A path that is not absolute (a relative log directory once made
	// crilog:../x, read as something else) is refused.
	if _, ok, err := ParseLogURI("crilog:../../tmp/x/0.log"); !ok || err == nil {
		t.Fatal("a relative log path accepted")
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
