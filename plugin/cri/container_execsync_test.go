package cri

import (
	"bytes"
	"testing"
)

func TestCappedBufferHoldsNoMoreThanItsCap(t *testing.T) {
	var b cappedBuffer
	chunk := bytes.Repeat([]byte("x"), 1<<20+7) // odd sizes, as pipes deliver
	for range 3 * maxExecOutput / len(chunk) {
		if n, err := b.Write(chunk); n != len(chunk) || err != nil {
			t.Fatalf("write: %d, %v", n, err)
		}
	}
	got := b.Bytes()
	if len(got) != maxExecOutput || cap(b.data) > maxExecOutput {
		t.Fatalf("kept %d bytes in a buffer of %d, cap %d", len(got), cap(b.data), maxExecOutput)
	}
	b.Write([]byte("more"))
	if len(got) != maxExecOutput || got[len(got)-1] != 'x' {
		t.Fatal("a write after Bytes changed what it returned")
	}
	var small cappedBuffer
	small.Write([]byte("hello "))
	small.Write([]byte("world"))
	if string(small.Bytes()) != "hello world" {
		t.Fatalf("got %q", small.Bytes())
	}
}
