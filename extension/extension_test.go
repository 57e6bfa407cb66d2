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
