package extension

import (
	"testing"

	cgroupsv1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	"google.golang.org/protobuf/proto"
)

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

// The shim's figures ride on a cgroup metrics message that every other
// reader still decodes as before.
func TestShimStatsInMetrics(t *testing.T) {
	m := &cgroupsv1.Metrics{Pids: &cgroupsv1.PidsStat{Current: 3}, Memory: &cgroupsv1.MemoryStat{Cache: 7}}
	raw, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	want := ShimStats{Pid: 42, RSSBytes: 3 << 20, LogLines: 10, LogLinesSplit: 2, LogEntriesDropped: 1}
	raw = AppendShimStats(raw, want)
	var back cgroupsv1.Metrics
	if err := proto.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	if back.GetPids().GetCurrent() != 3 || back.GetMemory().GetCache() != 7 {
		t.Fatalf("metrics read back as %v", &back)
	}
	if got, ok := ShimStatsFrom(raw); !ok || got != want {
		t.Fatalf("shim stats = %+v, %v", got, ok)
	}
	if _, ok := ShimStatsFrom(raw[:len(raw)-2]); ok {
		t.Fatal("figures found in a truncated message")
	}
	plain, _ := proto.Marshal(m)
	if _, ok := ShimStatsFrom(plain); ok {
		t.Fatal("figures found in metrics without any")
	}
}
