package storage

import (
	"slices"
	"testing"
)

// TestMsgRuns: runs stay in seq order whatever order they are added in,
// a run added again is kept once, after finds the runs above a seq, and
// drop takes a generation's runs away.
func TestMsgRuns(t *testing.T) {
	r := newMsgRuns()
	r.add("c", 1, 1, 5)
	r.add("c", 3, 11, 15)
	r.add("c", 2, 6, 10) // before the last: a retried checkpoint
	r.add("c", 2, 6, 10) // again
	r.add("c", 1, 2, 4)  // inside one already there
	want := []msgRun{{1, 1, 5}, {2, 6, 10}, {3, 11, 15}}
	if got := r.of("c"); !slices.Equal(got, want) {
		t.Fatalf("runs %v, want %v", got, want)
	}
	for _, c := range []struct {
		seq  uint64
		want []msgRun
	}{{0, want}, {5, want[1:]}, {7, want[1:]}, {10, want[2:]}, {15, nil}} {
		if got := r.after("c", c.seq); !slices.Equal(got, c.want) {
			t.Errorf("after %d: %v, want %v", c.seq, got, c.want)
		}
	}
	held := r.of("c")
	r.drop("c", 2)
	if got := r.of("c"); !slices.Equal(got, []msgRun{{1, 1, 5}, {3, 11, 15}}) {
		t.Fatalf("after dropping generation 2: %v", got)
	}
	if !slices.Equal(held, want) {
		t.Fatalf("a reader's slice changed under it: %v", held)
	}
	r.drop("c", 1)
	r.drop("c", 3)
	if n := r.count(); n != 0 || r.m["c"] != nil {
		t.Fatalf("%d runs left after dropping all", n)
	}
}
