package cri

import (
	"testing"
	"time"
)

func TestStartsUnderWayQuiet(t *testing.T) {
	var w startsUnderWay
	closed := func(c <-chan struct{}) bool {
		select {
		case <-c:
			return true
		default:
			return false
		}
	}
	if !closed(w.quiet()) {
		t.Fatal("not quiet with no start")
	}
	end1 := w.begin()
	end2 := w.begin()
	q := w.quiet()
	end1()
	end1() // a second call changes nothing
	if closed(q) || closed(w.quiet()) {
		t.Fatal("quiet with a start under way")
	}
	end2()
	if !closed(q) || !closed(w.quiet()) {
		t.Fatal("not quiet once every start ended")
	}
	end3 := w.begin()
	if closed(w.quiet()) {
		t.Fatal("quiet with a new start under way")
	}
	end3()
}

// pause waits for the starts under way to end, and returns once none has
// begun for the period, or once its bound has passed.
func TestStartsUnderWayPause(t *testing.T) {
	var w startsUnderWay
	paused := func(period, max time.Duration) <-chan struct{} {
		done := make(chan struct{})
		go func() { w.pause(period, max); close(done) }()
		return done
	}
	returns := func(what string, done <-chan struct{}) {
		t.Helper()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("pause %s: still waiting", what)
		}
	}
	returns("with no start", paused(time.Millisecond, time.Hour))

	end := w.begin()
	done := paused(time.Millisecond, time.Hour)
	select {
	case <-done:
		t.Fatal("pause returned while a start was under way")
	default:
	}
	end()
	returns("after the start ended", done)

	end = w.begin()
	defer end()
	returns("at its bound, a start still under way", paused(time.Millisecond, 10*time.Millisecond))
}
