package storage

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"iter"
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
// (a later generation holds only later seqs). They are kept encoded
// (convRuns): a run costs about 3 bytes of memory instead of the 24 of
// three integers and a slice's spare room, and an install keeps about one
// run per message at low traffic, until the messages expire.
//
// An encoding is never changed where a reader may look: a checkpoint
// appends after its end and anything else (a retried checkpoint's run
// before a later one, a sweep that empties one) encodes a new one. So a
// reader may use the runList it got without the lock.
//
// They are kept in msgruns too, written with the messages, where OpenBolt
// reads them. Checkpoints add theirs in memory after their transaction
// commits and before the messages leave the memtable, so a reader finds
// every message in one of the two.
type msgRuns struct {
	mu sync.RWMutex
	m  map[string]convRuns
}

// msgRun is a range of seqs of one conversation in one generation.
type msgRun struct{ gen, first, last uint64 }

// convRuns is one conversation's runs: each is encoded as its
// generation's difference from the previous run's and its first seq's
// from the previous run's last (both varints, usually 1 byte each), then
// its length (last-first, a uvarint). Every runMarkEvery runs a mark keeps
// where a run starts and the run before it, so that a reader of recent
// messages does not decode a month of runs (after). The last run is kept
// decoded too, for appends.
type convRuns struct {
	enc   []byte
	marks []runMark
	n     int
	tail  msgRun
}

// runMark is where in an encoding a run starts, and the run before it.
type runMark struct {
	off  int
	prev msgRun
}

// runMarkEvery runs get a mark: half a byte per run.
const runMarkEvery = 64

// runList is a conversation's runs as a reader holds them.
type runList struct {
	enc   []byte
	marks []runMark
}

// all yields the runs in order.
func (rl runList) all() iter.Seq[msgRun] { return rl.from(runMark{}) }

// from yields the runs from mark m on.
func (rl runList) from(m runMark) iter.Seq[msgRun] {
	return func(yield func(msgRun) bool) {
		run := m.prev
		for b := rl.enc[m.off:]; len(b) > 0; {
			dg, n1 := binary.Varint(b)
			gap, n2 := binary.Varint(b[n1:])
			ln, n3 := binary.Uvarint(b[n1+n2:])
			b = b[n1+n2+n3:]
			run.gen += uint64(dg)
			run.first = run.last + uint64(gap)
			run.last = run.first + ln
			if !yield(run) {
				return
			}
		}
	}
}

// backward yields the runs from the last to the first, decoding one mark's
// stretch (at most runMarkEvery runs) at a time: a search from the end
// that stops early decodes only the end.
func (rl runList) backward() iter.Seq[msgRun] {
	return func(yield func(msgRun) bool) {
		var stretch []msgRun
		end := len(rl.enc)
		for i := len(rl.marks); i >= 0; i-- {
			var m runMark
			if i > 0 {
				m = rl.marks[i-1]
			}
			stretch = slices.AppendSeq(stretch[:0], runList{enc: rl.enc[:end]}.from(m))
			for j := len(stretch) - 1; j >= 0; j-- {
				if !yield(stretch[j]) {
					return
				}
			}
			end = m.off
		}
	}
}

// push encodes run after the last one.
func (cr *convRuns) push(run msgRun) {
	if cr.n > 0 && cr.n%runMarkEvery == 0 {
		cr.marks = append(cr.marks, runMark{len(cr.enc), cr.tail})
	}
	cr.enc = binary.AppendVarint(cr.enc, int64(run.gen-cr.tail.gen))
	cr.enc = binary.AppendVarint(cr.enc, int64(run.first-cr.tail.last))
	cr.enc = binary.AppendUvarint(cr.enc, run.last-run.first)
	cr.n++
	cr.tail = run
}

// encodeRuns encodes rs afresh.
func encodeRuns(rs []msgRun) convRuns {
	var cr convRuns
	for _, run := range rs {
		cr.push(run)
	}
	return cr
}

func newMsgRuns() *msgRuns { return &msgRuns{m: make(map[string]convRuns)} }

// add records that generation gen holds seqs first..last of conv. A
// checkpoint retried after a failure adds some runs again: those are
// already there.
func (r *msgRuns) add(conv string, gen, first, last uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cr := r.m[conv]
	run := msgRun{gen, first, last}
	if cr.n == 0 || cr.tail.last < first {
		// After every run there (the usual case): appended in place, after
		// what readers hold.
		cr.push(run)
		r.m[conv] = cr
		return
	}
	rs := slices.Collect(runList{cr.enc, cr.marks}.all())
	for _, o := range rs {
		if o.gen == gen && o.first <= first && last <= o.last {
			return
		}
	}
	// Before a later run (a retried checkpoint whose later parts had
	// committed): a new encoding, in order.
	rs = append(rs, run)
	slices.SortFunc(rs, func(a, b msgRun) int { return cmp.Compare(a.first, b.first) })
	r.m[conv] = encodeRuns(rs)
}

// of returns the runs of conv.
func (r *msgRuns) of(conv string) runList {
	r.mu.RLock()
	defer r.mu.RUnlock()
	cr := r.m[conv]
	return runList{cr.enc, cr.marks}
}

// after yields the runs of conv that may hold a seq above seq, from the
// runs there at the call.
func (r *msgRuns) after(conv string, seq uint64) iter.Seq[msgRun] {
	rl := r.of(conv)
	// The last mark with only runs up to seq before it.
	i, _ := slices.BinarySearchFunc(rl.marks, seq, func(m runMark, seq uint64) int {
		if m.prev.last <= seq {
			return -1
		}
		return 1
	})
	var m runMark
	if i > 0 {
		m = rl.marks[i-1]
	}
	return func(yield func(msgRun) bool) {
		for run := range rl.from(m) {
			if run.last > seq && !yield(run) {
				return
			}
		}
	}
}

// drop forgets the runs that a sweep removed the last message of: one new
// encoding per conversation, however many of its runs went.
func (r *msgRuns) drop(emptied []convGen) {
	gens := make(map[string][]uint64)
	for _, cg := range emptied {
		gens[cg.conv] = append(gens[cg.conv], cg.gen)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for conv, gs := range gens {
		slices.Sort(gs)
		cr := r.m[conv]
		rs := slices.DeleteFunc(slices.Collect(runList{cr.enc, cr.marks}.all()), func(run msgRun) bool {
			_, found := slices.BinarySearch(gs, run.gen)
			return found
		})
		if len(rs) == 0 {
			delete(r.m, conv)
			continue
		}
		r.m[conv] = encodeRuns(rs)
	}
}

// count returns the number of runs (tests).
func (r *msgRuns) count() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	n := 0
	for _, cr := range r.m {
		n += cr.n
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
