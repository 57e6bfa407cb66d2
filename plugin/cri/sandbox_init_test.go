package cri

import "testing"

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
