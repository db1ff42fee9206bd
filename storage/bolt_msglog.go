package storage

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The message log: a write-ahead log in front of bbolt for AppendMessage.
//
// Why: a message lands in its conversation's part of the msgs B+tree, so
// with many conversations every message dirties its own leaf page,
// and a commit of a small batch writes a page or two per message. The
// B+tree commit was a third of the server's CPU at saturation. Appending
// the batch to a plain file costs one write and one fdatasync; the B+tree
// work is done later, for many messages at once.
//
// How:
//   - AppendMessage checks the conversation, message id and client id
//     against bbolt (one read transaction) and the memtable, allocates the
//     next seq in memory and queues a record. One writer at a time writes
//     every queued record with one write and one fdatasync; only then do
//     the messages become visible to reads and their callers return. So
//     "durable on return" holds as before, and concurrent appends share
//     fsyncs. After a write of several records the writer waits a few
//     milliseconds (BoltOptions.SyncSpacing) so that more share the next;
//     a lone sender never waits.
//   - A checkpoint moves the written messages into bbolt's message buckets
//     and then deletes the log files they came from. It runs every
//     CheckpointInterval, when CheckpointSize messages wait, before the
//     methods that scan the buckets (the sweep, the count) and in Close.
//     In the background it writes in paced slices of conversations
//     (checkpointPaced), so that the senders on the same core do not queue
//     behind one long burst.
//   - OpenBolt replays leftover log files (after a crash) into bbolt before
//     anything else: every put is idempotent, so records bbolt already has
//     are simply written again; a torn record at the end of a file ends
//     that file.
//   - A write that fails is cut back off the file and fails its batch; a
//     failed fdatasync stops the log (Ping reports it).
//   - Reads (Message, MessagesAfter) merge the memtable with bbolt; a
//     conversation's LastSeq comes from the last visible seq kept in
//     memory.
//
// A log file is dbpath+".msglog."+generation; a record is
// LE32(len(payload)) LE32(crc32c(payload)) payload, where payload is
// uvarint(seq) then conversation, message id and client key, each as
// uvarint(len)+bytes, then the msgs value (T(ExpiresAt)+Message, msgcodec.go).

// Defaults of the message log (BoltOptions).
const (
	// Every checkpoint adds a run per conversation it holds messages of
	// (msgruns.go): 30 s rather than 5 keeps those few where traffic is
	// low. Under load the size starts them (every ≈ 2 s at 15k msgs/s).
	defaultCheckpointInterval = 30 * time.Second
	defaultCheckpointSize     = 32768
	defaultSyncSpacing        = 4 * time.Millisecond
	checkpointChunk           = 65536 // messages per checkpoint round (the memtable holds at most 2×CheckpointSize)
	forgetPiece               = 1024  // messages that leave the memtable under one hold of its lock
	logRecordHeader           = 8
	logWriteBuf               = 256 << 10 // bytes per write of a batch
	maxLogRecord              = 64 << 20
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// memEntry is one message in the memtable. It keeps the message encoded
// (val) and decodes it for the rare read: tens of thousands of entries
// wait for a checkpoint under load, and every pointer in them is work for
// each garbage-collection cycle, which on one core stalls the senders.
type memEntry struct {
	seq  uint64
	gen  uint64 // the log file's generation: its msgdata key's first part (set by the writer)
	conv string
	id   string
	val  []byte // msgdata value: T(ExpiresAt)+Message without its seq (msgcodec.go)
	ck   []byte // client-id key, nil without a client id
	atts bool   // the message may have attachments (a replayed one: unknown)
	// after is set when an earlier message of the conversation (one with
	// attachments) was not yet visible when this one got its seq.
	after bool

	// Guarded by msgLog.mu.
	durable bool          // visible to reads: in the log, and its attachments linked
	err     error         // the log write failed
	done    chan struct{} // closed once durable or failed; shared by the entries of one log write
}

// message decodes e.
func (e *memEntry) message() (Message, error) {
	var m Message
	if err := decodeMessageValue(e.val[timeKeyLen:], &m); err != nil {
		return m, fmt.Errorf("storage: decode logged message %s: %w", e.id, err)
	}
	m.Seq = e.seq
	return m, nil
}

// memConv is the memtable of one conversation.
type memConv struct {
	entries []*memEntry // ascending contiguous seqs; the durable ones first
	last    uint64      // last allocated seq
	hidden  []uint64    // seqs of written messages with attachments that are not yet linked (visible)
}

type msgLog struct {
	base     string // dbpath+".msglog."
	noSync   bool
	spacing  time.Duration // BoltOptions.SyncSpacing
	interval time.Duration
	size     int

	ckMu    sync.Mutex     // one checkpoint at a time
	wmu     sync.Mutex     // held by the writer while it writes a batch; rotation takes it first
	writers sync.WaitGroup // the writer goroutine, while it runs

	// runsMu orders the changes of the runs (msgRuns): a transaction
	// that writes msgruns and the change in memory after its commit
	// (a checkpoint's transaction, a sweep's). Held for one transaction,
	// so a sweep goes between the parts of a paced checkpoint.
	runsMu sync.Mutex

	mu       sync.Mutex
	f        *os.File
	gen      uint64
	pending  []*memEntry   // queued, not yet written
	pendDone chan struct{} // the done of the pending entries
	waitFor  int           // the writer waits (SyncSpacing) until this many are pending; 0: not waiting
	enough   chan struct{} // receives when waitFor is reached
	writing  bool          // a writer goroutine runs
	order    []*memEntry   // written, oldest first: what the next checkpoint moves
	convs    map[string]*memConv
	ids      map[string]*memEntry
	expLow   [timeKeyLen]byte // no entry of ids expires before it (holdsExpired); zero: unknown
	clients  map[string]*memEntry
	seqs     map[string]uint64 // last visible seq of the conversations seen (seq)
	maxID    string            // no message id in bbolt is greater
	epoch    uint64            // incremented whenever entries leave the memtable
	cks      ckFilter          // which client keys bbolt may hold (ckfilter.go)
	room     chan struct{}     // closed (and replaced) whenever entries leave
	shown    chan struct{}     // closed (and replaced) whenever a memConv's hidden shrinks
	err      error             // sticky: a log write failed
	ckErr    error             // the last checkpoint's failure, nil once one succeeds
	closed   bool
	obsolete []string // log files whose records are all in bbolt

	// Owned by whoever holds wmu.
	buf   []byte                              // the writer's encode buffer
	off   int64                               // the size of the current file
	write func(*os.File, []byte) (int, error) // (*os.File).Write; tests make it fail

	beforeStep func(i, msgParts int) error // tests: fail a paced checkpoint before its transaction i (ckMu)
	onSync     func(n int)                 // tests: called by the writer (wmu held) before the write and fsync of n records

	kick chan struct{} // wakes the checkpointer
	stop chan struct{}
	done chan struct{}
}

func newMsgLog(dbPath string, o BoltOptions) *msgLog {
	return &msgLog{
		base:     dbPath + ".msglog.",
		noSync:   o.NoSync,
		spacing:  o.SyncSpacing,
		interval: o.CheckpointInterval,
		size:     o.CheckpointSize,
		convs:    make(map[string]*memConv),
		ids:      make(map[string]*memEntry),
		clients:  make(map[string]*memEntry),
		seqs:     make(map[string]uint64),
		room:     make(chan struct{}),
		shown:    make(chan struct{}),
		write:    (*os.File).Write,
		kick:     make(chan struct{}, 1),
		enough:   make(chan struct{}, 1),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
}

func (l *msgLog) path(gen uint64) string { return l.base + fmt.Sprintf("%016x", gen) }

// openLog replays the log files left by an earlier run into the database,
// deletes them, starts a new file and the checkpointer.
func (b *Bolt) openLog() error {
	l := b.log
	gens, err := l.files()
	if err != nil {
		return err
	}
	var (
		recs []*memEntry
		size int
	)
	for i, g := range gens {
		path := l.path(g)
		data, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("read message log: %w", err)
		}
		got, end := decodeLog(data)
		if end.why != "" {
			// A crash can cut short only the last write to the newest
			// file, which was never acknowledged: that record is dropped.
			// Anything else is damage that may hide acknowledged
			// messages: a replay without them would lose them and leave
			// gaps in their conversations' seqs.
			if i < len(gens)-1 || intactAfter(data[end.off:]) {
				return &errLogDamaged{path: path, off: end.off, len: len(data), why: end.why}
			}
			b.logger.Warn("message log: dropped an unfinished write at the end (a crash during a write; it was never acknowledged)",
				"file", path, "offset", end.off, "bytes", len(data)-end.off, "reason", end.why)
		}
		for _, e := range got {
			e.gen = g
			recs = append(recs, e)
		}
		size += end.off
	}
	if len(gens) > 0 {
		b.logger.Info("message log: replaying the files of the last run (it did not close cleanly)",
			"files", len(gens), "records", len(recs), "bytes", size)
	}
	for len(recs) > 0 {
		chunk := recs[:min(len(recs), checkpointChunk)]
		if err := b.db.Update(func(tx *bolt.Tx) error { return applyLog(tx, chunk) }); err != nil {
			return fmt.Errorf("replay message log: %w", err)
		}
		recs = recs[len(chunk):]
	}
	var lastGen uint64
	err = b.db.View(func(tx *bolt.Tx) error {
		k, _ := tx.Bucket(bktMsgIDs).Cursor().Last()
		l.maxID = string(k)
		var err error
		lastGen, err = b.loadRuns(tx)
		return err
	})
	if err != nil {
		return err
	}
	for _, g := range gens {
		if err := os.Remove(l.path(g)); err != nil {
			return fmt.Errorf("message log: %w", err)
		}
	}
	if len(gens) > 0 {
		l.gen = gens[len(gens)-1]
	}
	// New generations follow those in msgdata (their log files are
	// gone), so that checkpoints go on appending.
	l.gen = max(l.gen, lastGen) + 1
	if l.f, err = l.create(l.gen); err != nil {
		return err
	}
	go b.checkpointLoop()
	l.mu.Lock()
	b.buildCKFilter()
	l.mu.Unlock()
	return nil
}

// files returns the generations of the log files on disk, ascending.
func (l *msgLog) files() ([]uint64, error) {
	names, err := filepath.Glob(l.base + "*")
	if err != nil {
		return nil, err
	}
	var gens []uint64
	for _, n := range names {
		g, err := strconv.ParseUint(strings.TrimPrefix(n, l.base), 16, 64)
		if err != nil {
			continue // not ours
		}
		gens = append(gens, g)
	}
	slices.Sort(gens)
	return gens, nil
}

func (l *msgLog) create(gen uint64) (*os.File, error) {
	f, err := os.OpenFile(l.path(gen), os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("message log: %w", err)
	}
	if !l.noSync {
		// The new name must survive a crash as well as the records.
		if d, err := os.Open(filepath.Dir(l.path(gen))); err == nil {
			err = d.Sync()
			_ = d.Close()
			if err != nil {
				_ = f.Close()
				return nil, fmt.Errorf("message log: sync directory: %w", err)
			}
		}
	}
	return f, nil
}

// appendRecord appends e's log record to buf.
func appendRecord(buf []byte, e *memEntry) []byte {
	start := len(buf)
	buf = append(buf, make([]byte, logRecordHeader)...)
	buf = binary.AppendUvarint(buf, e.seq)
	buf = appendStr(appendStr(buf, e.conv), e.id)
	buf = binary.AppendUvarint(buf, uint64(len(e.ck)))
	buf = append(buf, e.ck...)
	buf = append(buf, e.val...)
	payload := buf[start+logRecordHeader:]
	binary.LittleEndian.PutUint32(buf[start:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(buf[start+4:], crc32.Checksum(payload, crcTable))
	return buf
}

// decodeLog returns the intact records at the start of one log file and
// where they end (logEnd).
func decodeLog(data []byte) ([]*memEntry, logEnd) {
	var out []*memEntry
	off := 0
	for {
		e, n, why := nextRecord(data[off:])
		if e == nil {
			return out, logEnd{off: off, why: why}
		}
		out = append(out, e)
		off += n
	}
}

// logEnd is where a log file's intact records end.
type logEnd struct {
	off int    // bytes of intact records
	why string // why the record at off is not read; "" at the file's end
}

// nextRecord decodes the record at the start of data and returns its
// size; nil and why it cannot be read when it is not whole and intact.
func nextRecord(data []byte) (e *memEntry, size int, why string) {
	if len(data) == 0 {
		return nil, 0, ""
	}
	payload, sum, why := framedPayload(data)
	if why != "" {
		return nil, 0, why
	}
	if crc32.Checksum(payload, crcTable) != sum {
		return nil, 0, "a record checksum mismatch"
	}
	if e, ok := decodeRecord(payload); ok {
		return e, logRecordHeader + len(payload), ""
	}
	return nil, 0, "a record that does not decode"
}

// framedPayload returns the payload of the record at data's start and the
// checksum stored with it, or why its header and length do not fit data.
func framedPayload(data []byte) (payload []byte, sum uint32, why string) {
	if len(data) < logRecordHeader {
		return nil, 0, "an incomplete record header"
	}
	n := int(binary.LittleEndian.Uint32(data))
	if n > maxLogRecord {
		return nil, 0, "an impossible record length"
	}
	if n > len(data)-logRecordHeader {
		return nil, 0, "a record cut short"
	}
	return data[logRecordHeader : logRecordHeader+n], binary.LittleEndian.Uint32(data[4:]), ""
}

// intactAfter reports whether an intact record starts anywhere in data
// after its first byte: then what ends the records at data's start is
// damage, not a write that a crash cut short (which can only be last).
// It tries every offset, for the rare damaged file only; the cheap tests
// (a length that fits, a payload that decodes) come before the checksum,
// so that random bytes cost little more than a pass over them.
func intactAfter(data []byte) bool {
	for i := 1; i+logRecordHeader <= len(data); i++ {
		payload, sum, why := framedPayload(data[i:])
		if why != "" {
			continue
		}
		if _, ok := decodeRecord(payload); ok && crc32.Checksum(payload, crcTable) == sum {
			return true
		}
	}
	return false
}

// errLogDamaged reports a log file that OpenBolt will not replay.
type errLogDamaged struct {
	path     string
	off, len int
	why      string
}

func (e *errLogDamaged) Error() string {
	return fmt.Sprintf("message log %s is damaged at byte %d of %d (%s), with more of the log after it: "+
		"acknowledged messages may be in what follows, so nothing was replayed or deleted. "+
		"Restore the data directory from a backup, or start without what follows byte %d "+
		"by cutting the file there (truncate -s %d %s; docs/operations.md)",
		e.path, e.off, e.len, e.why, e.off, e.off, e.path)
}

func decodeRecord(p []byte) (*memEntry, bool) {
	d := msgDecoder{b: p}
	seq := d.uvarint()
	conv, id, ck := d.str(), d.str(), d.take(d.uvarint())
	if d.err != nil || len(d.b) < timeKeyLen || !validID(conv) || !validID(id) {
		return nil, false
	}
	e := &memEntry{seq: seq, conv: conv, id: id, val: d.b, atts: true}
	if len(ck) > 0 {
		e.ck = ck
	}
	return e, true
}

// A checkpoint writes in two kinds of transactions: the msgs bucket by
// ranges of conversations (applyMsgs), then the indexes of all its
// messages (applyIndexes). A crash in between leaves the log files, and
// the replay (applyLog) puts everything again: every put is idempotent.
// Until the indexes are written the messages stay in the memtable, where
// reads find them.
//
// Each bucket gets its keys in ascending order: bbolt inserts into a leaf
// node by shifting its tail, and a node grows without splitting until the
// commit, so random inserts into a young bucket (a fresh file, a new
// conversation) would cost quadratic time; ascending inserts append.

// applyLog writes entries (from a log replay) in one transaction. Their
// runs are read from msgruns after the replay (loadRuns).
//
// The log of a binary of schema version 2 may come with part of its
// checkpoint done: those messages are in msgs too. They move: the copy in
// msgs goes, or nothing would point to it any more and the sweep would
// never find it.
func applyLog(tx *bolt.Tx, entries []*memEntry) error {
	msgs := tx.Bucket(bktMsgs)
	for _, e := range entries {
		if k := seqKey(e.conv, e.seq); msgs.Get(k) != nil {
			if err := msgs.Delete(k); err != nil {
				return err
			}
		}
	}
	for _, part := range byConversation(entries, 1) {
		if _, err := applyMsgs(tx, part); err != nil {
			return err
		}
	}
	return applyIndexes(tx, entries)
}

// byConversation returns entries grouped by conversation, the groups in
// key order and each in seq order, cut into at most n parts of about the
// same number of messages (a conversation is never cut).
func byConversation(entries []*memEntry, n int) [][][]*memEntry {
	groups := make(map[string][]*memEntry)
	for _, e := range entries {
		groups[e.conv] = append(groups[e.conv], e)
	}
	var parts [][][]*memEntry
	var cur [][]*memEntry
	size, per := 0, (len(entries)+n-1)/max(n, 1)
	for _, conv := range slices.Sorted(maps.Keys(groups)) {
		es := groups[conv]
		slices.SortStableFunc(es, func(a, b *memEntry) int { return cmp.Compare(a.seq, b.seq) })
		cur = append(cur, es)
		if size += len(es); size >= per {
			parts, cur, size = append(parts, cur), nil, 0
		}
	}
	if len(cur) > 0 {
		parts = append(parts, cur)
	}
	return parts
}

type kv struct{ k, v []byte }

// putSorted puts kvs (sorted by key unless sorted) into bk, yielding now
// and then: a checkpoint is background work beside the senders.
func putSorted(bk *bolt.Bucket, kvs []kv, sorted bool) error {
	if !sorted {
		slices.SortFunc(kvs, func(a, b kv) int { return bytes.Compare(a.k, b.k) })
	}
	for i, p := range kvs {
		if err := bk.Put(p.k, p.v); err != nil {
			return err
		}
		if i%32 == 31 {
			runtime.Gosched()
		}
	}
	return nil
}

// applyMsgs writes the messages of the conversation groups convs (from
// byConversation) into msgdata and their seq counters into msgctr, in key
// order: generation, then conversation (no id holds a byte below \x20, so
// conv+\0... sorts before any longer id), then seq. It returns the runs
// they make (msgRuns), for the caller to add once the transaction has
// committed.
//
// Client ids get no index entry of their own: they are in the message
// values, where findClientID looks when the Bloom filter cannot rule a key
// out. An entry per message put a random insert into every conversation's
// client-id range: 40 % of a checkpoint's CPU.
func applyMsgs(tx *bolt.Tx, convs [][]*memEntry) ([]convRun, error) {
	if err := markSchema(tx); err != nil {
		return nil, err
	}
	data, ctr := tx.Bucket(bktMsgData), tx.Bucket(bktMsgCtr)
	// Keys arrive at the end (a new generation): full pages stay full.
	data.FillPercent = 1
	var kvs, counters []kv
	var runs []convRun
	for _, es := range convs {
		conv := es[0].conv
		for i, e := range es {
			kvs = append(kvs, kv{genKey(e.gen, conv, e.seq), e.val})
			if i == 0 || e.gen != es[i-1].gen {
				runs = append(runs, convRun{conv, msgRun{e.gen, e.seq, e.seq}})
			}
			runs[len(runs)-1].last = e.seq
		}
		if last := es[len(es)-1].seq; lastSeq(tx, conv) < last {
			counters = append(counters, kv{[]byte(conv), be64(last)})
		}
	}
	if err := putRuns(tx, runs); err != nil {
		return nil, err
	}
	// One generation (the usual case) is in order already; entries of a
	// failed checkpoint retried with the next one span two.
	sorted := slices.IsSortedFunc(kvs, func(a, b kv) int { return bytes.Compare(a.k, b.k) })
	if err := putSorted(data, kvs, sorted); err != nil {
		return nil, err
	}
	return runs, putSorted(ctr, counters, true)
}

// convRun is a run of one conversation's messages (applyMsgs).
type convRun struct {
	conv string
	msgRun
}

// applyIndexes writes the msgids and msgexp entries of entries and links
// their attachments, read from the stored value.
func applyIndexes(tx *bolt.Tx, entries []*memEntry) error {
	msgIDs, exp := tx.Bucket(bktMsgIDs), tx.Bucket(bktMsgExp)
	msgIDs.FillPercent, exp.FillPercent = 1, 1 // time-ordered keys: appends
	idx := make([]kv, 0, len(entries))
	exps := make([]kv, 0, len(entries))
	for _, e := range entries {
		id := []byte(e.id)
		idx = append(idx, kv{id, genKey(e.gen, e.conv, e.seq)})
		ek := make([]byte, 0, timeKeyLen+len(id))
		exps = append(exps, kv{append(append(ek, e.val[:timeKeyLen]...), id...), nil})
	}
	if err := putSorted(msgIDs, idx, false); err != nil {
		return err
	}
	if err := putSorted(exp, exps, false); err != nil {
		return err
	}
	for _, e := range entries {
		if !e.atts {
			continue
		}
		m, err := e.message()
		if err != nil {
			return err
		}
		if len(m.Attachments) > 0 {
			if err := linkAttachments(tx, slices.Compact(slices.Sorted(slices.Values(m.Attachments))), e.conv); err != nil {
				return err
			}
		}
	}
	return nil
}

// findClientID returns the newest message in bbolt of m's conversation
// with m's sender and client id, or nil if there is none or it has
// expired at sentAt. It reads the conversation from its end: a retry is
// for a recent message, and a miss (a Bloom false positive, 1 in 1,000
// appends) reads all of it.
func (b *Bolt) findClientID(tx *bolt.Tx, m *Message, sentAt *[timeKeyLen]byte) (*Message, error) {
	f := clientFinder{m: m, client: []byte(m.ClientID), sentAt: sentAt}
	data := tx.Bucket(bktMsgData).Cursor()
	for run := range b.runs.of(m.Conversation).backward() {
		p := genPrefix(run.gen, m.Conversation)
		if found, done, err := f.scanBack(data, p, genKey(run.gen, m.Conversation, run.last)); done || err != nil {
			return found, err
		}
	}
	// A file of schema version 2 holds the older messages in msgs.
	p := prefix(m.Conversation)
	found, _, err := f.scanBack(tx.Bucket(bktMsgs).Cursor(), p, seqKey(m.Conversation, math.MaxUint64))
	return found, err
}

// clientFinder is findClientID's search.
type clientFinder struct {
	m      *Message
	client []byte
	sentAt *[timeKeyLen]byte
}

// scanBack reads the messages under prefix p from key from (or the last
// one before it) backwards. done tells that the search is over: found, or
// found expired (a newer message may take the client id again).
func (f *clientFinder) scanBack(c *bolt.Cursor, p, from []byte) (found *Message, done bool, err error) {
	k, v := c.Seek(from)
	if k == nil {
		k, v = c.Last()
	} else if !bytes.Equal(k, from) {
		k, v = c.Prev()
	}
	for ; k != nil && bytes.HasPrefix(k, p); k, v = c.Prev() {
		if len(k) != len(p)+8 || len(v) < timeKeyLen {
			continue
		}
		body := v[timeKeyLen:]
		if len(body) > 0 && body[0] == binaryMessage && !bytes.Contains(body, f.client) {
			continue // cheaper than reading its fields
		}
		user, device, cid, err := senderFields(body)
		if err != nil {
			return nil, true, fmt.Errorf("storage: message %x: %w", k, err)
		}
		if string(cid) != f.m.ClientID || string(user) != f.m.SenderUser || string(device) != f.m.SenderDevice {
			continue
		}
		if expiredAt(v, f.sentAt) {
			return nil, true, nil
		}
		pm, err := decodeMsg(k, v)
		return &pm, true, err
	}
	return nil, false, nil
}

// boltLookup is what AppendMessage reads from bbolt before it takes the
// memtable lock.
type boltLookup struct {
	convFound bool
	idTaken   bool
	prev      *Message // unexpired message with the same client key
	counter   uint64
}

// read fills r. convKnown skips the check that the conversation exists
// (conversations are never deleted), seqKnown the counter (the log knows
// a newer one), idFresh the message id (greater than any in bbolt: ids
// are time-ordered, so this is the rule).
// ck is nil when the client key cannot be in bbolt.
func (r *boltLookup) read(b *Bolt, tx *bolt.Tx, m *Message, ck []byte, sentAt *[timeKeyLen]byte, convKnown, seqKnown, idFresh bool) error {
	*r = boltLookup{}
	if !convKnown && tx.Bucket(bktConvs).Get([]byte(m.Conversation)) == nil {
		return nil
	}
	r.convFound = true
	msgIDs := tx.Bucket(bktMsgIDs)
	if ck != nil {
		prev, err := b.findClientID(tx, m, sentAt)
		if err != nil {
			return err
		}
		r.prev = prev
	}
	r.idTaken = !idFresh && msgIDs.Get([]byte(m.ID)) != nil
	if !seqKnown {
		r.counter = lastSeq(tx, m.Conversation)
	}
	return nil
}

// appendLogged is AppendMessage after the checks and the encoding: val is
// the msgs value of m, ck its client key or nil.
//
// A message's attachments are linked to its conversation (one group-commit
// transaction) after the log write and before the message becomes visible,
// so that whoever sees the message can fetch them; a checkpoint and a
// replay link them again in case a crash came in between.
func (b *Bolt) appendLogged(ctx context.Context, m Message, val, ck []byte, sentAt *[timeKeyLen]byte, attIDs []string) (Message, bool, error) {
	l := b.log
	for {
		l.mu.Lock()
		for l.err == nil && !l.closed && len(l.ids) >= 2*l.size {
			// The checkpointer is behind: wait for room.
			room := l.room
			l.mu.Unlock()
			l.kickCheckpoint()
			select {
			case <-room:
			case <-ctx.Done():
				return Message{}, false, ctx.Err()
			}
			l.mu.Lock()
		}
		if err := l.usable(); err != nil {
			l.mu.Unlock()
			return Message{}, false, err
		}
		epoch := l.epoch
		_, seqKnown := l.seqs[m.Conversation]
		idFresh := m.ID > l.maxID
		lookCK := ck
		if ck != nil && !l.cks.mayHold(ck) {
			lookCK = nil
		}
		l.mu.Unlock()
		convKnown, _, _ := b.convs.get(m.Conversation)

		var look boltLookup
		if convKnown != nil && seqKnown && idFresh && lookCK == nil {
			look.convFound = true // nothing to ask bbolt
		} else {
			mr := m // the closure's copy: capturing m would put it on the heap for every append
			read := func(tx *bolt.Tx) error {
				return look.read(b, tx, &mr, lookCK, sentAt, convKnown != nil, seqKnown, idFresh)
			}
			if err := mapErr(b.db.View(read)); err != nil {
				return Message{}, false, err
			}
		}
		if !look.convFound {
			return Message{}, false, ErrNotFound
		}

		l.mu.Lock()
		if l.epoch != epoch {
			// A checkpoint moved messages into bbolt after the read: read again.
			l.mu.Unlock()
			continue
		}
		if err := l.usable(); err != nil {
			l.mu.Unlock()
			return Message{}, false, err
		}
		if ck != nil {
			if e := l.clients[string(ck)]; e != nil && !expiredAt(e.val, sentAt) {
				l.mu.Unlock()
				<-e.done
				if e.err != nil {
					return Message{}, false, e.err
				}
				prev, err := e.message()
				return prev, false, err
			}
			if look.prev != nil {
				l.mu.Unlock()
				return *look.prev, false, nil
			}
		}
		if look.idTaken || l.ids[m.ID] != nil {
			l.mu.Unlock()
			return Message{}, false, ErrConflict
		}
		mc := l.convs[m.Conversation]
		if mc == nil {
			mc = &memConv{last: look.counter}
			l.convs[m.Conversation] = mc
		}
		seq := max(mc.last, look.counter, l.seqs[m.Conversation])
		if seq == 1<<64-1 {
			l.mu.Unlock()
			return Message{}, false, fmt.Errorf("storage: conversation %q: seqs exhausted", m.Conversation)
		}
		m.Seq = seq + 1
		e := &memEntry{seq: m.Seq, conv: m.Conversation, id: m.ID, val: val, ck: ck, atts: len(attIDs) > 0, after: len(mc.hidden) > 0}
		if e.atts {
			mc.hidden = append(mc.hidden, e.seq)
		}
		if l.pendDone == nil {
			l.pendDone = make(chan struct{})
		}
		e.done = l.pendDone
		mc.entries = append(mc.entries, e)
		mc.last = m.Seq
		l.ids[m.ID] = e
		if bytes.Compare(val[:timeKeyLen], l.expLow[:]) < 0 {
			copy(l.expLow[:], val[:timeKeyLen])
		}
		if ck != nil {
			l.clients[string(ck)] = e
		}
		l.pending = append(l.pending, e)
		if l.waitFor > 0 && len(l.pending) >= l.waitFor {
			l.waitFor = 0
			l.enough <- struct{}{} // buffered; the writer is the only reader
		}
		if !l.writing {
			l.writing = true
			l.writers.Add(1)
			go l.writeLoop()
		}
		l.mu.Unlock()

		<-e.done
		if e.err != nil {
			return Message{}, false, e.err
		}
		var err error
		if len(attIDs) > 0 {
			conv := m.Conversation
			err = mapErr(b.gc.do(func(tx *bolt.Tx) error { return linkAttachments(tx, attIDs, conv) }))
			l.mu.Lock()
			l.visible(e)
			l.mu.Unlock()
		}
		if err != nil {
			return Message{}, false, err
		}
		if e.after {
			l.inOrder(e)
		}
		return m, true, nil
	}
}

// inOrder waits until no message of e's conversation before e is hidden.
// A message with attachments becomes visible only after a second commit
// (linking them), which the write of a later message can overtake; the
// later one's caller would then publish first, and a socket that fills the
// gap from the store would not find the earlier one there. So a message
// returns (and is published) only once every earlier one can be read. The
// wait is one link commit; messages without an attachment before them in
// the memtable never wait.
func (l *msgLog) inOrder(e *memEntry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for {
		mc := l.convs[e.conv]
		if mc == nil || !slices.ContainsFunc(mc.hidden, func(seq uint64) bool { return seq < e.seq }) {
			return
		}
		shown := l.shown
		l.mu.Unlock()
		<-shown
		l.mu.Lock()
	}
}

// unhide takes e off its conversation's hidden seqs. l.mu is held.
func (l *msgLog) unhide(e *memEntry) {
	mc := l.convs[e.conv]
	if mc == nil {
		return
	}
	if i := slices.Index(mc.hidden, e.seq); i >= 0 {
		mc.hidden = slices.Delete(mc.hidden, i, i+1)
		close(l.shown)
		l.shown = make(chan struct{})
	}
}

// usable reports why appends must fail. l.mu is held.
func (l *msgLog) usable() error {
	switch {
	case l.closed:
		return ErrClosed
	case l.err != nil:
		return l.err
	}
	return nil
}

// writeLoop writes queued records until none are left.
func (l *msgLog) writeLoop() {
	defer l.writers.Done()
	for {
		l.wmu.Lock()
		l.mu.Lock()
		batch, done := l.pending, l.pendDone
		l.pending, l.pendDone = nil, nil
		if len(batch) == 0 {
			l.writing = false
			l.mu.Unlock()
			l.wmu.Unlock()
			return
		}
		f := l.f
		for _, e := range batch {
			e.gen = l.gen
		}
		l.mu.Unlock()

		if l.onSync != nil {
			l.onSync(len(batch))
		}
		start := time.Now()
		err := l.writeSync(f, batch)

		l.mu.Lock()
		var failed []*memEntry
		var behind chan struct{} // the done of the failed entries queued behind batch
		if err != nil {
			// This batch, and what was queued behind it (its seqs follow
			// the failed ones), fail; the seq counters go back.
			failed = append(batch, l.pending...)
			behind = l.pendDone
			l.pending, l.pendDone = nil, nil
			if l.err == nil && !errors.Is(err, errLogWrite) {
				l.err = err // the log is not usable any more
			}
			for _, e := range failed {
				e.err = err
				l.forget(e)
			}
			for _, e := range failed {
				if mc := l.convs[e.conv]; mc != nil {
					mc.last = mc.entries[len(mc.entries)-1].seq
				}
			}
			batch = failed
		} else {
			for _, e := range batch {
				if !e.atts {
					l.visible(e)
				}
			}
			l.order = append(l.order, batch...)
		}
		close(done)
		if behind != nil {
			close(behind)
		}
		full := len(l.order) >= l.size
		l.mu.Unlock()
		l.wmu.Unlock()
		if full {
			l.kickCheckpoint()
		}
		if err == nil && len(batch) > 1 && len(batch) < syncShare && !l.noSync && l.spacing > 0 {
			l.space(l.spacing - time.Since(start))
		}
	}
}

// syncShare is how many records make an fsync cheap enough (about 1 µs
// of CPU each) that the writer does not wait for more.
const syncShare = 64

// space lets more senders queue for the next fsync after a write of
// several records: it waits for wait, or until syncShare records are
// pending. l.writing stays set meanwhile: appends queue, and none starts
// a writer of its own.
func (l *msgLog) space(wait time.Duration) {
	if wait <= 0 {
		return
	}
	l.mu.Lock()
	if len(l.pending) >= syncShare {
		l.mu.Unlock()
		return
	}
	l.waitFor = syncShare
	l.mu.Unlock()
	t := time.NewTimer(wait)
	select {
	case <-t.C:
	case <-l.enough:
	case <-l.stop: // closing
	}
	t.Stop()
	l.mu.Lock()
	l.waitFor = 0
	select {
	case <-l.enough: // sent after the timer fired
	default:
	}
	l.mu.Unlock()
}

// errLogWrite marks a write to the log that failed and was undone: the
// log is still usable (a full disk may have room again).
var errLogWrite = errors.New("storage: message log: write failed")

// writeSync writes the records of batch and syncs the file. The records
// go through one reused buffer of about logWriteBuf bytes, so a large batch
// (the disk was slow) costs a few writes and no new memory.
//
// A failed write is undone (the file is truncated to where the batch
// began) and reported as errLogWrite. A failed undo or fdatasync is
// reported as is: what is on disk is unknown, so the log must not be used
// again (after a failed fdatasync, Linux may have dropped the dirty pages
// and forgotten the error).
func (l *msgLog) writeSync(f *os.File, batch []*memEntry) error {
	start := l.off
	buf := l.buf[:0]
	for i, e := range batch {
		buf = appendRecord(buf, e)
		if len(buf) >= logWriteBuf || i == len(batch)-1 {
			n, err := l.write(f, buf)
			l.off += int64(n)
			if err != nil {
				if terr := f.Truncate(start); terr != nil {
					return fmt.Errorf("storage: message log: write: %w; undo: %w", err, terr)
				}
				l.off = start
				return fmt.Errorf("%w: %w", errLogWrite, err)
			}
			buf = buf[:0]
		}
	}
	if cap(buf) <= 2*logWriteBuf {
		l.buf = buf
	}
	if l.noSync {
		return nil
	}
	if err := datasync(f); err != nil {
		return fmt.Errorf("storage: message log: fdatasync: %w", err)
	}
	return nil
}

// forget removes e from the memtable. l.mu is held.
func (l *msgLog) forget(e *memEntry) {
	if e.atts {
		l.unhide(e)
	}
	if l.ids[e.id] == e {
		delete(l.ids, e.id)
	}
	if e.ck != nil && l.clients[string(e.ck)] == e {
		delete(l.clients, string(e.ck))
	}
	mc := l.convs[e.conv]
	if mc == nil {
		return
	}
	switch i := slices.Index(mc.entries, e); {
	case i == 0: // the usual case: entries leave oldest first
		mc.entries[0] = nil // not kept alive by the array
		mc.entries = mc.entries[1:]
	case i > 0:
		mc.entries = slices.Delete(mc.entries, i, i+1)
	}
	if len(mc.entries) == 0 {
		delete(l.convs, e.conv)
	}
}

func (l *msgLog) kickCheckpoint() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

func (b *Bolt) checkpointLoop() {
	l := b.log
	defer close(l.done)
	t := time.NewTicker(l.interval)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		case <-l.kick:
		}
		// Spread the writes over half the time since the last checkpoint.
		now := time.Now()
		pace := min(now.Sub(last), l.interval) / 2
		last = now
		err := b.checkpointPaced(pace)
		l.mu.Lock()
		l.ckErr = err
		l.mu.Unlock()
	}
}

// checkpointParts is how many transactions a paced checkpoint writes the
// msgs bucket in, and again the indexes: at 15,000 msgs/s a checkpoint
// (32k messages, every ≈ 2 s) is ≈ 0.2 s of CPU, so one transaction is
// ≈ 2 ms. 64 rather than 32: p99 87–93 against 87–107 ms in six
// alternating pairs of load runs, for the same CPU.
const checkpointParts = 64

// checkpoint moves every written message into bbolt and deletes the log
// files that held them.
func (b *Bolt) checkpoint() error { return b.checkpointPaced(0) }

// checkpointPaced is checkpoint with the msgs bucket and then the indexes
// written in checkpointParts transactions each, spread over pace
// (applyChunk): the work (a few hundred milliseconds of CPU at 15k msgs/s)
// comes in slices of a few milliseconds, so that the senders on the same
// core do not queue behind it. Close cuts the pacing short.
func (b *Bolt) checkpointPaced(pace time.Duration) error {
	l := b.log
	l.ckMu.Lock()
	defer l.ckMu.Unlock()

	// Start a new file so that the current one holds only what moves now.
	l.wmu.Lock()
	l.mu.Lock()
	snap := l.order
	if len(snap) > 0 && !l.closed {
		nf, err := l.create(l.gen + 1)
		if err != nil {
			l.mu.Unlock()
			l.wmu.Unlock()
			return err
		}
		_ = l.f.Close() // everything in it is synced; the writer is not in it
		l.obsolete = append(l.obsolete, l.path(l.gen))
		l.f, l.gen, l.off = nf, l.gen+1, 0
	}
	l.order = nil
	l.mu.Unlock()
	l.wmu.Unlock()

	n := 1
	if pace > 0 {
		n = checkpointParts
	}
	gap := time.NewTimer(0)
	defer gap.Stop()
	for len(snap) > 0 {
		chunk := snap[:min(len(snap), checkpointChunk)]
		if err := b.applyChunk(chunk, n, pace); err != nil {
			l.mu.Lock()
			l.order = append(snap, l.order...)
			l.mu.Unlock()
			return mapErr(err)
		}
		// The moved messages leave the memtable in short pieces: every
		// append takes l.mu, and 32k at once held it for tens of
		// milliseconds. Each piece is a new epoch, so that an append that
		// read bbolt before the commit reads again. When paced, with
		// gaps: back to back, the pieces were a burst of tens of
		// milliseconds of CPU, and the tail of the senders' latency had
		// a peak at the end of each checkpoint.
		for i := 0; len(chunk) > 0; i++ {
			if i > 0 && pace > 0 && !l.behind(len(snap)) {
				l.rest(gap, pace/(2*checkpointParts))
			}
			piece := chunk[:min(len(chunk), forgetPiece)]
			chunk = chunk[len(piece):]
			l.mu.Lock()
			for _, e := range piece {
				l.maxID = max(l.maxID, e.id)
				if e.ck != nil {
					l.cks.add(e.ck)
				}
				// e is in bbolt now, readable there even while its append
				// still links attachments (not yet visible). An append
				// that finds no memtable for the conversation takes the
				// next seq from l.seqs without reading bbolt's counter, so
				// it must not be behind what bbolt holds (it was, by such
				// a message, and its seq was given out twice). A visible
				// e raised it already.
				if !e.durable {
					l.seqs[e.conv] = max(l.seqs[e.conv], e.seq)
				}
				l.forget(e)
			}
			if len(chunk) == 0 && l.cks.full() {
				b.buildCKFilter()
			}
			l.epoch++
			close(l.room)
			l.room = make(chan struct{})
			l.mu.Unlock()
			snap = snap[len(piece):]
		}
	}
	for len(l.obsolete) > 0 {
		if err := os.Remove(l.obsolete[0]); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("storage: message log: %w", err)
		}
		l.obsolete = l.obsolete[1:]
	}
	return nil
}

// rest waits d on t, or less when the log closes: a gap between the
// slices of a paced checkpoint.
func (l *msgLog) rest(t *time.Timer, d time.Duration) {
	t.Reset(d)
	select {
	case <-t.C:
	case <-l.stop: // closing: finish at once
	}
}

// behind reports whether, besides the moving messages, half a
// checkpoint's worth is waiting already: then pacing would soon make
// appends wait for room.
func (l *msgLog) behind(moving int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.ids)-moving >= l.size/2
}

// applyChunk writes chunk: the msgs bucket in n transactions, then the
// indexes in n more, spread over pace. With n == 1, all in one
// transaction.
//
// The senders share the core with this work, so it comes in small slices
// with gaps between them: each part of msgdata is a range of
// conversations of the generation (appended at the end), each part of the
// indexes a run of the log (their keys are time-ordered, so each part
// appends at the end too). A crash between parts loses nothing: the log files
// go only after the last part, and replaying them puts the same keys.
func (b *Bolt) applyChunk(chunk []*memEntry, n int, pace time.Duration) error {
	parts := byConversation(chunk, n)
	if n == 1 {
		var runs []convRun
		b.log.runsMu.Lock()
		defer b.log.runsMu.Unlock()
		err := b.db.Update(func(tx *bolt.Tx) error {
			runs = runs[:0]
			for _, p := range parts {
				rs, err := applyMsgs(tx, p)
				if err != nil {
					return err
				}
				runs = append(runs, rs...)
			}
			return applyIndexes(tx, chunk)
		})
		if err == nil {
			b.addRuns(runs)
		}
		return err
	}
	var idx [][]*memEntry
	for rest, per := chunk, (len(chunk)+n-1)/n; len(rest) > 0; rest = rest[min(len(rest), per):] {
		idx = append(idx, rest[:min(len(rest), per)])
	}
	steps, moving := len(parts)+len(idx), len(chunk)
	gap := time.NewTimer(0)
	defer gap.Stop()
	// step runs transaction i, and applied after its commit.
	step := func(i int, apply func(*bolt.Tx) error, applied func()) error {
		if hook := b.log.beforeStep; hook != nil {
			if err := hook(i, len(parts)); err != nil {
				return err
			}
		}
		b.log.runsMu.Lock()
		err := b.db.Update(apply)
		if err == nil {
			applied()
		}
		b.log.runsMu.Unlock()
		if err != nil {
			return err
		}
		if i < steps-1 && !b.log.behind(moving) {
			b.log.rest(gap, pace/time.Duration(steps))
		}
		return nil
	}
	for i, p := range parts {
		var runs []convRun
		err := step(i, func(tx *bolt.Tx) (err error) {
			runs, err = applyMsgs(tx, p)
			return err
		}, func() { b.addRuns(runs) })
		if err != nil {
			return err
		}
	}
	for i, p := range idx {
		if err := step(len(parts)+i, func(tx *bolt.Tx) error { return applyIndexes(tx, p) }, func() {}); err != nil {
			return err
		}
	}
	return nil
}

// closeLog stops appends and the checkpointer, moves everything into bbolt
// and removes the log files. The database stays open.
func (b *Bolt) closeLog() error {
	l := b.log
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	close(l.room) // wake appenders waiting for room: they see closed
	l.room = make(chan struct{})
	l.mu.Unlock()
	close(l.stop)
	<-l.done
	l.cks.building.Wait()
	l.writers.Wait() // no new writer starts: nothing is queued once closed
	err := b.checkpoint()
	l.mu.Lock()
	f := l.f
	l.mu.Unlock()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		if rerr := os.Remove(l.path(l.gen)); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			err = rerr
		}
	}
	return err
}

// holdsExpired reports whether a message in the memtable has expired at
// now.
//
// It reads the memtable only when now has reached expLow, the lower bound
// of its expiry times, and then raises the bound: a sweep that deletes in
// batches asks before each one, and with a retention of days the bound is
// days ahead, so the memtable (and its lock, which every send takes) is
// not read at all.
func (l *msgLog) holdsExpired(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	nowKey := timeKey(now)
	if bytes.Compare(nowKey[:], l.expLow[:]) < 0 {
		return false
	}
	low := maxTimeKey
	for _, e := range l.ids {
		if expiredAt(e.val, &nowKey) {
			return true
		}
		if bytes.Compare(e.val[:timeKeyLen], low[:]) < 0 {
			copy(low[:], e.val[:timeKeyLen])
		}
	}
	l.expLow = low
	return false
}

// memMessage returns the durable memtable copy of message id.
func (l *msgLog) memMessage(id string) (Message, bool, error) {
	l.mu.Lock()
	e := l.ids[id]
	durable := e != nil && e.durable
	l.mu.Unlock()
	if !durable {
		return Message{}, false, nil
	}
	m, err := e.message()
	return m, err == nil, err
}

// memAfter returns up to limit durable memtable entries of conv with seq
// > after (their seq and val never change: decode them unlocked), and the lowest seq the memtable holds for conv (0: none), below
// which bbolt has every message.
func (l *msgLog) memAfter(conv string, after uint64, limit int, now time.Time) ([]*memEntry, uint64) {
	nowKey := timeKey(now)
	l.mu.Lock()
	defer l.mu.Unlock()
	mc := l.convs[conv]
	if mc == nil || len(mc.entries) == 0 {
		return nil, 0
	}
	var out []*memEntry
	for _, e := range mc.entries {
		if !e.durable || len(out) >= limit {
			break
		}
		if e.seq > after && !expiredAt(e.val, &nowKey) {
			out = append(out, e)
		}
	}
	return out, mc.entries[0].seq
}

// seq returns the last visible seq of conv, if the log knows it: every
// conversation with a message visible since the start, and those learnt.
func (l *msgLog) seq(conv string) (uint64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s, ok := l.seqs[conv]
	return s, ok
}

// seqOf is seq, 0 when unknown: for raising a counter read from bbolt,
// which is never ahead of it.
func (l *msgLog) seqOf(conv string) uint64 {
	s, _ := l.seq(conv)
	return s
}

// learnSeq records counter, conv's counter read from bbolt, and returns
// the last visible seq. The counter can be behind a message that became
// visible after it was read, never ahead.
func (l *msgLog) learnSeq(conv string, counter uint64) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s, ok := l.seqs[conv]; ok && s >= counter {
		return s
	}
	l.seqs[conv] = counter
	return counter
}

// visible makes e visible to reads. l.mu is held.
func (l *msgLog) visible(e *memEntry) {
	e.durable = true
	if e.atts {
		l.unhide(e)
	}
	if l.seqs[e.conv] < e.seq {
		l.seqs[e.conv] = e.seq
	}
}

// logErr is the last checkpoint's or log write's failure, for Ping.
func (l *msgLog) logErr() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return l.err
	}
	if l.ckErr != nil {
		return fmt.Errorf("storage: message log checkpoint: %w", l.ckErr)
	}
	return nil
}
