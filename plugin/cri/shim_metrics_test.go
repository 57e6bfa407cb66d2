package cri

import (
	"testing"
	"time"

	"github.com/mine-runtime/mine/extension"
)

func TestShimFigures(t *testing.T) {
	f := newShimFigures()
	t0 := time.Now()
	f.observe("a", extension.ShimStats{Pid: 1, RSSBytes: 100, LogLines: 10, LogLinesSplit: 1}, t0)
	f.observe("b", extension.ShimStats{Pid: 2, RSSBytes: 200, LogLines: 5}, t0)
	// An older reading arriving late changes nothing.
	f.observe("a", extension.ShimStats{Pid: 1, RSSBytes: 50, LogLines: 8}, t0.Add(-time.Second))
	c, shims, rss := f.totals(t0.Add(-time.Minute))
	if c.LogLines != 15 || c.LogLinesSplit != 1 || shims != 2 || rss != 300 {
		t.Fatalf("totals %+v, %d shims, %d bytes", c, shims, rss)
	}
	// A new shim for pod a: the old one's counts are kept.
	f.observe("a", extension.ShimStats{Pid: 3, RSSBytes: 100, LogLines: 1}, t0.Add(time.Second))
	// Pod b removed; a reading from before its removal comes after it.
	f.removed("b")
	f.observe("b", extension.ShimStats{Pid: 2, RSSBytes: 200, LogLines: 6}, t0)
	c, shims, rss = f.totals(t0)
	if c.LogLines != 16 || shims != 1 || rss != 100 {
		t.Fatalf("totals %+v, %d shims, %d bytes", c, shims, rss)
	}
	// Only shims read since fresh count as running.
	if _, shims, _ := f.totals(t0.Add(2 * time.Second)); shims != 0 {
		t.Fatalf("%d shims read in the last instant", shims)
	}
}
