package storage

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// msgRuns tells, per conversation, which log generations of msgdata hold
// its messages: a checkpoint writes each message under the generation of
// the log file it came through (genKey), so that every checkpoint appends
// at the end of msgdata instead of rewriting a page in each
// conversation's range (BenchmarkCheckpoint: ≈ 40 % less time per
// message). A conversation's messages are then spread over generations;
// the runs say where to seek.
//
// A conversation's runs are in ascending order of generation and seq
// (a later generation holds only later seqs). A run is never changed in
// place: a checkpoint appends runs (where a reader holding the slice does
// not look) and a sweep that empties one replaces the slice. So a reader
// may use the slice it got without the lock.
//
// They are kept in msgruns too, written with the messages, where OpenBolt
// reads them. Checkpoints add theirs in memory after their transaction
// commits and before the messages leave the memtable, so a reader finds
// every message in one of the two.
type msgRuns struct {
	mu sync.RWMutex
	m  map[string][]msgRun
}

// msgRun is a range of seqs of one conversation in one generation.
type msgRun struct{ gen, first, last uint64 }

func newMsgRuns() *msgRuns { return &msgRuns{m: make(map[string][]msgRun)} }

// add records that generation gen holds seqs first..last of conv. A
// checkpoint retried after a failure adds some runs again: those are
// already there.
func (r *msgRuns) add(conv string, gen, first, last uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rs := r.m[conv]
	for i := len(rs) - 1; i >= 0 && rs[i].gen >= gen; i-- {
		if rs[i].gen == gen && rs[i].first <= first && last <= rs[i].last {
			return
		}
	}
	if n := len(rs); n == 0 || rs[n-1].last < first {
		r.m[conv] = append(rs, msgRun{gen, first, last})
		return
	}
	// Before a later run (a retried checkpoint whose later parts had
	// committed): a new slice, in order.
	rs = append(slices.Clone(rs), msgRun{gen, first, last})
	slices.SortFunc(rs, func(a, b msgRun) int { return cmp.Compare(a.first, b.first) })
	r.m[conv] = rs
}

// of returns the runs of conv, not to be modified.
func (r *msgRuns) of(conv string) []msgRun {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.m[conv]
}

// after returns the runs of conv that may hold a seq above seq.
func (r *msgRuns) after(conv string, seq uint64) []msgRun {
	rs := r.of(conv)
	i, _ := slices.BinarySearchFunc(rs, seq, func(run msgRun, seq uint64) int {
		if run.last <= seq {
			return -1
		}
		return 1
	})
	return rs[i:]
}

// drop forgets the runs of conv in generation gen (a sweep removed their
// last message).
func (r *msgRuns) drop(conv string, gen uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rs := slices.DeleteFunc(slices.Clone(r.m[conv]), func(run msgRun) bool { return run.gen == gen })
	if len(rs) == 0 {
		delete(r.m, conv)
		return
	}
	r.m[conv] = rs
}

// count returns the number of runs (tests).
func (r *msgRuns) count() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	n := 0
	for _, rs := range r.m {
		n += len(rs)
	}
	return n
}

// addRuns adds the runs of a committed checkpoint transaction.
func (b *Bolt) addRuns(runs []convRun) {
	for _, r := range runs {
		b.runs.add(r.conv, r.gen, r.first, r.last)
	}
}

// putRuns records runs in msgruns, in the transaction that writes their
// messages: a start reads them there (loadRuns) instead of every key of
// msgdata. A run of the same generation and conversation there already
// (a retried checkpoint, or one in two chunks) is widened.
func putRuns(tx *bolt.Tx, runs []convRun) error {
	bk := tx.Bucket(bktMsgRuns)
	bk.FillPercent = 1 // new generations: appends
	for _, r := range runs {
		k := genPrefix(r.gen, r.conv)
		first, last := r.first, r.last
		if v := bk.Get(k); len(v) == 16 {
			first = min(first, binary.BigEndian.Uint64(v))
			last = max(last, binary.BigEndian.Uint64(v[8:]))
		}
		if err := bk.Put(k, binary.BigEndian.AppendUint64(be64(first), last)); err != nil {
			return err
		}
	}
	return nil
}

// loadRuns fills b.runs from msgruns (OpenBolt) and returns the last
// generation in msgdata.
func (b *Bolt) loadRuns(tx *bolt.Tx) (lastGen uint64, err error) {
	err = tx.Bucket(bktMsgRuns).ForEach(func(k, v []byte) error {
		if len(k) < 8+2 || k[len(k)-1] != 0 || len(v) != 16 {
			return fmt.Errorf("storage: msgruns: malformed entry %x", k)
		}
		gen := binary.BigEndian.Uint64(k)
		b.runs.add(string(k[8:len(k)-1]), gen, binary.BigEndian.Uint64(v), binary.BigEndian.Uint64(v[8:]))
		lastGen = max(lastGen, gen)
		return nil
	})
	return lastGen, err
}

// convGen names the run of one conversation in one generation.
type convGen struct {
	conv string
	gen  uint64
}

// deleteEmptyRuns deletes from msgruns those of cands whose generation
// holds no message of their conversation any more (the sweep removed the
// last) and returns them, for the caller to drop from memory once tx has
// committed.
func deleteEmptyRuns(tx *bolt.Tx, cands map[convGen]bool) ([]convGen, error) {
	var empty []convGen
	c := tx.Bucket(bktMsgData).Cursor()
	runs := tx.Bucket(bktMsgRuns)
	for cg := range cands {
		p := genPrefix(cg.gen, cg.conv)
		if k, _ := c.Seek(p); k != nil && bytes.HasPrefix(k, p) {
			continue
		}
		if err := runs.Delete(p); err != nil {
			return nil, err
		}
		empty = append(empty, cg)
	}
	return empty, nil
}
