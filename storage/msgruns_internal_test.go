package storage

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
)

// runsOf returns the runs of conv as a slice.
func runsOf(r *msgRuns, conv string) []msgRun { return slices.Collect(r.of(conv).all()) }

// TestMsgRuns: runs stay in seq order whatever order they are added in,
// a run added again is kept once, after finds the runs above a seq, and
// drop takes a generation's runs away; what a reader holds does not
// change under it.
func TestMsgRuns(t *testing.T) {
	r := newMsgRuns()
	r.add("c", 1, 1, 5)
	held := r.of("c") // an append must not show in it
	r.add("c", 3, 11, 15)
	r.add("c", 2, 6, 10) // before the last: a retried checkpoint
	r.add("c", 2, 6, 10) // again
	r.add("c", 1, 2, 4)  // inside one already there
	want := []msgRun{{1, 1, 5}, {2, 6, 10}, {3, 11, 15}}
	if got := runsOf(r, "c"); !slices.Equal(got, want) {
		t.Fatalf("runs %v, want %v", got, want)
	}
	if got := slices.Collect(held.all()); !slices.Equal(got, want[:1]) {
		t.Fatalf("a reader's runs changed under it by an append: %v", got)
	}
	for _, c := range []struct {
		seq  uint64
		want []msgRun
	}{{0, want}, {5, want[1:]}, {7, want[1:]}, {10, want[2:]}, {15, nil}} {
		if got := slices.Collect(r.after("c", c.seq)); !slices.Equal(got, c.want) {
			t.Errorf("after %d: %v, want %v", c.seq, got, c.want)
		}
	}
	held = r.of("c")
	r.drop([]convGen{{"c", 2}})
	if got := runsOf(r, "c"); !slices.Equal(got, []msgRun{{1, 1, 5}, {3, 11, 15}}) {
		t.Fatalf("after dropping generation 2: %v", got)
	}
	if got := slices.Collect(held.all()); !slices.Equal(got, want) {
		t.Fatalf("a reader's runs changed under it by a drop: %v", got)
	}
	r.add("c", 4, 16, 16) // appends after a drop
	if got := runsOf(r, "c"); !slices.Equal(got, []msgRun{{1, 1, 5}, {3, 11, 15}, {4, 16, 16}}) {
		t.Fatalf("after an append to a dropped one: %v", got)
	}
	r.drop([]convGen{{"c", 3}, {"other", 1}, {"c", 1}, {"c", 4}}) // several at once, one of a conversation without runs
	if _, ok := r.m["c"]; ok || r.count() != 0 {
		t.Fatalf("%d runs left after dropping all", r.count())
	}
}

// TestMsgRunsModel: random adds (in order, retried, repeated, far apart)
// and drops give the same runs as a plain sorted slice per conversation,
// the encoding's edge values included.
func TestMsgRunsModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	r := newMsgRuns()
	model := map[string][]msgRun{}
	next := map[string]uint64{}
	var gen uint64 = 1
	for i := range 20000 {
		conv := fmt.Sprintf("c%d", rng.IntN(20))
		switch op := rng.IntN(10); {
		case op < 6: // a checkpoint's run
			first := next[conv] + 1 + uint64(rng.IntN(3)) // a gap: messages expired in between
			if rng.IntN(50) == 0 {
				first += 1 << 40 // a gap over many varint bytes
			}
			last := first + uint64(rng.IntN(4))
			if rng.IntN(100) == 0 {
				gen += 1 << 33
			}
			next[conv] = last
			r.add(conv, gen, first, last)
			model[conv] = append(model[conv], msgRun{gen, first, last})
		case op < 7 && len(model[conv]) > 0: // a run added again
			o := model[conv][rng.IntN(len(model[conv]))]
			r.add(conv, o.gen, o.first, o.last)
		case op < 8 && len(model[conv]) > 0: // a sweep emptied some
			var emptied []convGen
			for range 1 + rng.IntN(3) {
				c := fmt.Sprintf("c%d", rng.IntN(20))
				if len(model[c]) > 0 {
					emptied = append(emptied, convGen{c, model[c][rng.IntN(len(model[c]))].gen})
				}
			}
			r.drop(emptied)
			for _, cg := range emptied {
				model[cg.conv] = slices.DeleteFunc(model[cg.conv], func(run msgRun) bool { return run.gen == cg.gen })
			}
		default:
			gen++
		}
		if i%97 == 0 { // a retried checkpoint: a run before the last one
			c := fmt.Sprintf("r%d", i)
			r.add(c, 7, 20, 29)
			r.add(c, 5, 1, 9)
			r.add(c, 6, 10, 19)
			model[c] = []msgRun{{5, 1, 9}, {6, 10, 19}, {7, 20, 29}}
		}
	}
	n := 0
	for conv, want := range model {
		slices.SortFunc(want, func(a, b msgRun) int { return cmp.Compare(a.first, b.first) })
		if got := runsOf(r, conv); !slices.Equal(got, want) {
			i := 0
			for i < min(len(got), len(want)) && got[i] == want[i] {
				i++
			}
			t.Fatalf("%s: %d runs, want %d; they differ from run %d: %v, want %v", conv, len(got), len(want), i, got[i:min(i+3, len(got))], want[i:min(i+3, len(want))])
		}
		back := slices.Collect(r.of(conv).backward())
		slices.Reverse(back)
		if !slices.Equal(back, want) {
			t.Fatalf("%s: backward gives %d runs, not the %d forward ones reversed", conv, len(back), len(want))
		}
		for j, run := range want { // around every mark (runMarkEvery) too
			for _, c := range []struct {
				seq  uint64
				want []msgRun
			}{{run.first - 1, want[j:]}, {run.last - 1, want[j:]}, {run.last, want[j+1:]}} {
				if got := slices.Collect(r.after(conv, c.seq)); !slices.Equal(got, c.want) {
					t.Fatalf("%s: after %d: %d runs from %v, want %d from %v", conv, c.seq, len(got), got[:min(1, len(got))], len(c.want), c.want[:min(1, len(c.want))])
				}
			}
		}
		n += len(want)
	}
	if r.count() != n {
		t.Fatalf("count %d, want %d", r.count(), n)
	}
}

// TestMsgRunsMemory: at low traffic an install keeps about one run per
// message (each checkpoint finds one or two messages of a conversation);
// a run costs a few bytes of memory, not the 24 of three integers.
func TestMsgRunsMemory(t *testing.T) {
	const convs, perConv = 2000, 500
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	r := newMsgRuns()
	for g := range uint64(perConv) {
		for c := range convs {
			seq := g*2 + 1
			r.add(fmt.Sprintf("conversation-%05d", c), 1000+g*3, seq, seq+uint64(c%2))
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	perRun := float64(after.HeapAlloc-before.HeapAlloc) / (convs * perConv)
	runtime.KeepAlive(r)
	t.Logf("%.1f bytes per run", perRun)
	if perRun > 8 {
		t.Errorf("%.1f bytes of memory per run, want ≤ 8", perRun)
	}
}
