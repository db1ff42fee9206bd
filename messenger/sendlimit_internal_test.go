package messenger

import (
	"testing"
	"time"
)

func TestSendLimits(t *testing.T) {
	h := newSendLimits(2, 3) // 2/s, burst 3
	t0 := time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC)
	for i := range 3 {
		if _, ok := h.allow("a", t0); !ok {
			t.Fatalf("send %d of the burst refused", i+1)
		}
	}
	wait, ok := h.allow("a", t0)
	if ok || wait != 500*time.Millisecond {
		t.Fatalf("fourth send: ok %v, wait %v; want refused, 500ms", ok, wait)
	}
	if _, ok := h.allow("b", t0); !ok {
		t.Fatal("another credential shares the bucket")
	}
	if _, ok := h.allow("a", t0.Add(500*time.Millisecond)); !ok {
		t.Fatal("no token after 500ms")
	}
	// A minute on, both buckets are full again: the sweep drops them, and
	// only the one that sends then is kept.
	if _, ok := h.allow("a", t0.Add(2*time.Minute)); !ok {
		t.Fatal("refused after two minutes")
	}
	if len(h.buckets) != 1 {
		t.Fatalf("%d buckets after the sweep, want 1", len(h.buckets))
	}
}
