package extension

import "testing"

func TestLogURIRoundTrip(t *testing.T) {
	uri := LogURI("/var/log/pods/ns_pod_uid/ctr/0.log", 16384)
	path, maxLine, ok, err := ParseLogURI(uri)
	if err != nil || !ok || path != "/var/log/pods/ns_pod_uid/ctr/0.log" || maxLine != 16384 {
		t.Fatalf("%s parsed as %q %d %v %v", uri, path, maxLine, ok, err)
	}
	if _, _, ok, _ := ParseLogURI("/run/fifo/stdout"); ok {
		t.Fatal("a FIFO path taken for a log URI")
	}
	if _, maxLine, _, _ := ParseLogURI(LogURI("/l", -1)); maxLine != -1 {
		t.Fatalf("no limit parsed as %d", maxLine)
	}
}
