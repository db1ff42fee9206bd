package messenger

import (
	"testing"
	"time"
)

func TestSendLimits(t *testing.T) {
	h := newSendLimits(2, 3) // 2/s, burst 3
	t0 := time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC)
	for i := range 3 {
		if _, ok := h.allow("a", t0, nil); !ok {
			t.Fatalf("send %d of the burst refused", i+1)
		}
	}
	wait, ok := h.allow("a", t0, nil)
	if ok || wait != 500*time.Millisecond {
		t.Fatalf("fourth send: ok %v, wait %v; want refused, 500ms", ok, wait)
	}
	if _, ok := h.allow("b", t0, nil); !ok {
		t.Fatal("another credential shares the bucket")
	}
	if _, ok := h.allow("a", t0.Add(500*time.Millisecond), nil); !ok {
		t.Fatal("no token after 500ms")
	}
	// A minute on, both buckets are full again: the sweep drops them, and
	// only the one that sends then is kept.
	if _, ok := h.allow("a", t0.Add(2*time.Minute), nil); !ok {
		t.Fatal("refused after two minutes")
	}
	if len(h.buckets) != 1 {
		t.Fatalf("%d buckets after the sweep, want 1", len(h.buckets))
	}

	// Sockets keep the bucket they drew on: two of one device share it,
	// and one that the sweep dropped is looked up again.
	var s1, s2 *sendBucket
	t1 := t0.Add(3 * time.Minute)
	for i, held := range []**sendBucket{&s1, &s2, &s1} {
		if _, ok := h.allow("d", t1, held); !ok {
			t.Fatalf("send %d of d's burst refused", i+1)
		}
	}
	if _, ok := h.allow("d", t1, &s2); ok || s1 != s2 {
		t.Fatal("two sockets of d do not share its bucket")
	}
	old := s1
	h.allow("e", t1.Add(5*time.Minute), nil) // the sweep drops d's full bucket
	if !old.dropped.Load() {
		t.Fatal("the sweep did not mark d's bucket dropped")
	}
	h.allow("d", t1.Add(5*time.Minute), &s1)
	if s1 == old || h.buckets["d"] != s1 {
		t.Fatal("a socket kept a dropped bucket")
	}
}
