package storage

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Bolt is the embedded backend: every record in one bbolt file.
//
// Every write commits with fsync before the method returns. The hot small
// writes (AppendMessage, TouchCredential, RecordLoginFailure) go through a
// group commit (groupcommit.go), so concurrent callers share one
// transaction and one fsync without waiting for a timer; the functions they
// pass keep all their effects inside the transaction and reset their
// results on every run, because a function may run more than once.
// Everything else uses Update and View.
//
// # Layout
//
// Top-level buckets; "+" concatenates, \0 is a NUL byte, BE(n) a big-endian
// uint64 and T(t) the 12-byte sortable form of a time (seconds with the sign
// bit flipped, then nanoseconds):
//
//	sys          "version" → schema version
//	meta         key → value (PutMeta)
//	schools      school id → School (JSON)
//	users        user id → User (JSON)
//	logins       lower(login) → user id
//	creds        token hash → Credential (JSON without the hash): CredentialByHash is one Get
//	credids      credential id → token hash
//	usercreds    user id+\0+credential id → nil
//	sessions     credential id → T(ExpiresAt), sessions only
//	loginhist    user id → {failed, events} (JSON)
//	devkeys      user id+\0+device id → public key
//	convs        conversation id → Conversation (JSON, without LastSeq)
//	userconvs    user id+\0+conversation id → nil
//	directs      school+\0+min(a,b)+\0+max(a,b) → conversation id
//	msgdata      BE(log generation)+conversation id+\0+BE(seq) → T(ExpiresAt)+Message
//	             (msgcodec.go): the messages, under the generation of the log file that
//	             brought them, so that each checkpoint appends at the end (msgruns.go)
//	msgctr       conversation id → BE(last seq in this file)
//	msgruns      BE(log generation)+conversation id+\0 → BE(first seq)+BE(last seq): which
//	             generations of msgdata hold a conversation's messages
//	msgs         the messages of files of schema version 2, never written to any more
//	             (reads and the sweep still find them; they expire):
//	               conversation id+\0+BE(seq) → T(ExpiresAt)+Message (msgcodec.go; JSON before it)
//	               conversation id+\1+sender user+\0+uvarint(len(device))+device+client id → message id
//	                 (files written before 2026-11: never read; the sweep deletes them with
//	                 their message)
//	               conversation id+\2 → BE(last seq in this file)
//	msgids       message id → its msgdata key (or its msgs key: isGenKey tells which)
//	msgexp       T(ExpiresAt)+message id → nil
//	attachments  attachment id → Attachment (JSON)
//	attexp       T(ExpiresAt)+attachment id → nil
//
// Messages reach msgdata, msgctr, msgids and msgexp through the message log
// beside the file (bolt_msglog.go): durable in the log first, moved here by
// a checkpoint; reads merge both.
//
// Record IDs (schools, users, credentials, conversations, messages,
// attachments) must be non-empty and must not contain control bytes (NUL
// and \1, \2 separate the parts of keys); writes that break this fail. Device IDs and client IDs may hold any bytes in
// keys; as record fields they go through JSON, so they should be valid UTF-8
// (they arrive as JSON strings anyway).
//
// # Choices the interface leaves open
//
//   - AppendMessage judges whether an earlier message with the same client
//     id has expired against m.SentAt (the caller's "now"). An empty
//     ClientID is never deduplicated. Appending to an unknown conversation
//     is ErrNotFound; attachments m names that do not exist are skipped; a
//     message ID that exists already is ErrConflict.
//   - RecordLoginFailure and RecordLoginSuccess on an unknown user are
//     ErrNotFound.
//   - CreateConversation accepts only ConvGroup, CreateDirect only ConvDirect
//     with exactly two distinct members.
//   - An UpdateX whose fn changes a field it must not change fails without
//     writing.
//   - List results are never nil. A User's Countries keeps the difference
//     between nil (no restriction) and empty (no country allowed).
type Bolt struct {
	db  *bolt.DB
	gc  groupCommit
	log *msgLog // AppendMessage's write-ahead log (bolt_msglog.go)
	// runs: which generations of msgdata hold a conversation's messages
	// (msgruns.go).
	runs *msgRuns
	// Decoded hot records, validated against the stored bytes on every
	// read (decodecache.go): Authenticate reads both on every request.
	credCache *decodeCache[Credential]
	userCache *decodeCache[User]
	convs     *memo[*Conversation] // read on every send (memo.go)
	schools   *memo[School]        // read on every send between students

	logger *slog.Logger

	closeOnce sync.Once
	closeErr  error
}

var _ Store = (*Bolt)(nil)

// BoltOptions configures OpenBolt. The zero value (or nil) is the
// production setting.
type BoltOptions struct {
	// NoSync skips the fsync on commit. Tests and benchmarks only: a crash
	// loses writes that were reported durable.
	NoSync bool
	// MaxBatchSize is the most writes one group-commit transaction holds.
	// Zero means 1000.
	MaxBatchSize int
	// CheckpointInterval is how often the message log is moved into the
	// B+tree (bolt_msglog.go). Zero means 30s.
	CheckpointInterval time.Duration
	// CheckpointSize is how many logged messages start a checkpoint before
	// the interval is over; twice as many make appends wait for it.
	// Zero means 32768 (appends wait at 65536 messages: about 70 MB with
	// 200-byte ciphertexts).
	CheckpointSize int
	// SyncSpacing is the least time from the start of one fsync of the
	// message log to the next after a write of several messages (but fewer
	// than 64), unless 64 are waiting before: appends that arrive meanwhile
	// share the next fsync. A write of one message (a lone sender) is never
	// followed by a wait. Zero means 4ms, negative none. At 15,000 msgs/s
	// it cut the server's CPU from 93% to 84%: each fdatasync costs about
	// 80 µs of CPU, and without a spacing there were 800 a second.
	SyncSpacing time.Duration
	// Logger gets what a start finds in the message log: a replay after a
	// crash, a dropped unfinished write. nil means slog.Default().
	Logger *slog.Logger
	// Clock tells the time. Zero means time.Now. Reserved: every method
	// that depends on the time takes it as an argument (AppendMessage uses
	// m.SentAt), so Bolt does not consult the clock today.
	Clock func() time.Time
}

// Defaults of BoltOptions.
const (
	defaultMaxBatchSize = 1000
	lockTimeout         = time.Second
	decodeCacheSize     = 50000
	// 2: seq counters and client ids moved into msgs. 3: messages
	// checkpointed since are in msgdata under their log generation, the
	// counters in msgctr (a file of version 2 is read as it is: its
	// messages stay in msgs until they expire; it becomes version 3 with
	// the first checkpoint that writes msgdata, markSchema).
	schemaVersion = 3
)

// OpenBolt opens or creates the database file at path (mode 0600). nil opt
// means the defaults. If another process holds the file, OpenBolt fails
// after one second with an error that says so.
func OpenBolt(path string, opt *BoltOptions) (*Bolt, error) {
	var o BoltOptions
	if opt != nil {
		o = *opt
	}
	if o.MaxBatchSize == 0 {
		o.MaxBatchSize = defaultMaxBatchSize
	}
	if o.CheckpointInterval <= 0 {
		o.CheckpointInterval = defaultCheckpointInterval
	}
	if o.CheckpointSize <= 0 {
		o.CheckpointSize = defaultCheckpointSize
	}
	if o.SyncSpacing == 0 {
		o.SyncSpacing = defaultSyncSpacing
	}
	db, err := openBoltFile(path, &bolt.Options{
		Timeout: lockTimeout,
		NoSync:  o.NoSync,
		// As etcd runs it: the freelist is not written on every commit
		// (it is rebuilt by a scan on open), and kept as a hashmap, which
		// allocates in constant time. Commits then write only the pages
		// the transaction changed.
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
		PageSize:       16384,
	})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("storage: open %s: database is locked by another process (waited %v): %w", path, lockTimeout, err)
		}
		return nil, fmt.Errorf("storage: open %s: %w", path, err)
	}
	if err := db.Update(initBuckets); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("storage: open %s: %w", path, err)
	}
	b := &Bolt{
		db:        db,
		gc:        groupCommit{db: db, maxSize: o.MaxBatchSize},
		log:       newMsgLog(path, o),
		runs:      newMsgRuns(),
		credCache: newDecodeCache[Credential](decodeCacheSize),
		userCache: newDecodeCache[User](decodeCacheSize),
		convs:     newMemo[*Conversation](decodeCacheSize),
		schools:   newMemo[School](decodeCacheSize),
		logger:    cmp.Or(o.Logger, slog.Default()),
	}
	if err := b.openLog(); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("storage: open %s: %w", path, err)
	}
	return b, nil
}

// openBoltFile opens the database file. bbolt maps the file and, with
// NoFreelistSync, reads every page the file's meta page claims; a file
// cut shorter than that (a partial copy, a disk fault) would kill the
// process with SIGBUS inside bbolt. So an existing file's size is checked
// first against its meta page, in a read-only open that reads nothing
// else. A panic of bbolt's open on this goroutine (its scan of the pages
// reports a damaged one) becomes an error too; a page that fails bbolt's
// own assertion inside that scan's goroutine still ends the process with
// bbolt's panic, which names the page.
func openBoltFile(path string, o *bolt.Options) (db *bolt.DB, err error) {
	if fi, err := os.Stat(path); err == nil && fi.Size() > 0 {
		ro, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: o.Timeout})
		if err != nil {
			return nil, err
		}
		var need int64
		_ = ro.View(func(tx *bolt.Tx) error { need = tx.Size(); return nil })
		if err := ro.Close(); err != nil {
			return nil, err
		}
		if fi.Size() < need {
			return nil, fmt.Errorf("the file is %d bytes, but its pages reach to byte %d: it was cut short (a partial copy or a disk fault); restore it from a backup", fi.Size(), need)
		}
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("the file is damaged (%v); restore it from a backup", r)
		}
	}()
	return bolt.Open(path, 0o600, o)
}

// Bucket names.
var (
	bktSys         = []byte("sys")
	bktMeta        = []byte("meta")
	bktSchools     = []byte("schools")
	bktUsers       = []byte("users")
	bktLogins      = []byte("logins")
	bktCreds       = []byte("creds")
	bktCredIDs     = []byte("credids")
	bktUserCreds   = []byte("usercreds")
	bktSessions    = []byte("sessions")
	bktLoginHist   = []byte("loginhist")
	bktDevKeys     = []byte("devkeys")
	bktConvs       = []byte("convs")
	bktUserConvs   = []byte("userconvs")
	bktDirects     = []byte("directs")
	bktMsgs        = []byte("msgs")
	bktMsgIDs      = []byte("msgids")
	bktMsgExp      = []byte("msgexp")
	bktMsgData     = []byte("msgdata") // BE(log generation)+conversation+\0+BE(seq) → message (bolt_msgs.go)
	bktMsgCtr      = []byte("msgctr")  // conversation → BE(last allocated seq)
	bktMsgRuns     = []byte("msgruns") // BE(log generation)+conversation+\0 → BE(first seq)+BE(last seq) (msgruns.go)
	bktAttachments = []byte("attachments")
	bktAttExp      = []byte("attexp")
	bktAttUp       = []byte("attup") // uploader+\0+attachment id → nil

	allBuckets = [][]byte{
		bktSys, bktMeta, bktSchools, bktUsers, bktLogins, bktCreds, bktCredIDs,
		bktUserCreds, bktSessions, bktLoginHist, bktDevKeys, bktConvs,
		bktUserConvs, bktDirects, bktMsgs, bktMsgIDs,
		bktMsgExp, bktAttachments, bktAttExp, bktAttUp, bktMsgData, bktMsgCtr,
		bktMsgRuns,
	}

	keyVersion = []byte("version")
)

func initBuckets(tx *bolt.Tx) error {
	noUploads := tx.Bucket(bktAttUp) == nil // a file from before the uploader index
	for _, name := range allBuckets {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	if noUploads {
		if err := indexUploads(tx); err != nil {
			return err
		}
	}
	sys := tx.Bucket(bktSys)
	if v := sys.Get(keyVersion); v != nil {
		return checkSchema(v)
	}
	return sys.Put(keyVersion, be64(schemaVersion))
}

// checkSchema reports whether v (sys/version) is a schema this binary
// reads: this one, or the one before it.
func checkSchema(v []byte) error {
	if len(v) != 8 || binary.BigEndian.Uint64(v) < schemaVersion-1 || binary.BigEndian.Uint64(v) > schemaVersion {
		return fmt.Errorf("unsupported schema version %x (want %d or %d)", v, schemaVersion-1, schemaVersion)
	}
	return nil
}

// markSchema records that the file now holds what only this schema
// reads. A file of the version before keeps its number until then, so
// that the binary before can still open it: an offline backup or a start
// that wrote no message leaves it as it was.
func markSchema(tx *bolt.Tx) error {
	sys := tx.Bucket(bktSys)
	if v := sys.Get(keyVersion); len(v) == 8 && binary.BigEndian.Uint64(v) == schemaVersion {
		return nil
	}
	return sys.Put(keyVersion, be64(schemaVersion))
}

// Ping reports whether the database is open and readable and the message
// log is healthy.
func (b *Bolt) Ping(ctx context.Context) error {
	if err := b.view(ctx, func(*bolt.Tx) error { return nil }); err != nil {
		return err
	}
	return b.log.logErr()
}

// Close moves the message log into the database and closes the file. Safe
// to call twice; later calls return the first call's result. Methods called
// after Close return ErrClosed.
func (b *Bolt) Close() error {
	b.closeOnce.Do(func() {
		b.convs.close()
		b.schools.close()
		b.closeErr = errors.Join(b.closeLog(), b.db.Close())
	})
	return b.closeErr
}

// Check runs bbolt's consistency check over the whole file and returns every
// problem it finds, joined. For tests. bbolt's check reads the freelist
// without its lock, so Check holds off checkpoints and sweeps and must
// not run concurrently with other writes.
func (b *Bolt) Check() error {
	b.log.ckMu.Lock()
	defer b.log.ckMu.Unlock()
	b.log.runsMu.Lock()
	defer b.log.runsMu.Unlock()
	return mapErr(b.db.View(func(tx *bolt.Tx) error {
		var errs []error
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	}))
}

func (b *Bolt) view(ctx context.Context, fn func(*bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return mapErr(b.db.View(fn))
}

func (b *Bolt) update(ctx context.Context, fn func(*bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return mapErr(b.db.Update(fn))
}

// batch runs fn in a shared transaction. fn may run more than once and must
// reset whatever it reports to its caller at its start. It should return an
// error only for failures of the database itself: an error rolls back the
// whole batch and makes bbolt re-run fn alone.
func (b *Bolt) batch(ctx context.Context, fn func(*bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return mapErr(b.gc.do(fn))
}

func mapErr(err error) error {
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

// checkID rejects IDs that would break the key layout.
func checkID(what, id string) error {
	if !validID(id) {
		return fmt.Errorf("storage: invalid %s id %q: empty or contains a control byte", what, id)
	}
	return nil
}

func validID(id string) bool {
	if id == "" {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x20 { // separators of the key layout (\0, \1, \2) and other controls
			return false
		}
	}
	return true
}

// Key helpers. bbolt needs keys and values to stay untouched until the
// transaction ends, so each helper returns a fresh slice.

func be64(n uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], n)
	return k[:]
}

// pair returns a+\0+b.
func pair(a, b string) []byte {
	k := make([]byte, 0, len(a)+1+len(b))
	k = append(k, a...)
	k = append(k, 0)
	return append(k, b...)
}

// prefix returns a+\0.
func prefix(a string) []byte {
	k := make([]byte, 0, len(a)+1)
	k = append(k, a...)
	return append(k, 0)
}

// timeKeyLen is the length of the sortable time encoding.
const timeKeyLen = 12

// timeKey encodes t so that bytes.Compare orders like t.Compare. It covers
// every time.Time, the zero time included.
func timeKey(t time.Time) [timeKeyLen]byte {
	var k [timeKeyLen]byte
	binary.BigEndian.PutUint64(k[:8], uint64(t.Unix())^(1<<63))
	binary.BigEndian.PutUint32(k[8:], uint32(t.Nanosecond()))
	return k
}

// maxTimeKey is above every timeKey.
var maxTimeKey = func() (k [timeKeyLen]byte) {
	for i := range k {
		k[i] = 0xff
	}
	return k
}()

// expiredAt reports whether an encoded expiry is not after now.
func expiredAt(exp []byte, now *[timeKeyLen]byte) bool {
	return bytes.Compare(exp[:timeKeyLen], now[:]) <= 0
}

// expKey returns T(t)+id, the key of the expiry indexes.
func expKey(t time.Time, id string) []byte {
	tk := timeKey(t)
	k := make([]byte, 0, timeKeyLen+len(id))
	k = append(k, tk[:]...)
	return append(k, id...)
}

// counterKey returns the msgs key of a conversation's last allocated seq.
func counterKey(conv string) []byte {
	k := make([]byte, 0, len(conv)+1)
	k = append(k, conv...)
	return append(k, 2)
}

// genKey returns BE(gen)+conv+\0+BE(seq), the msgdata key of a message
// that came through log generation gen. Generations start at 1, so a
// genKey starts with a zero byte, and a seqKey (an id) never does: the
// msgids values tell the two layouts apart by it (isGenKey).
func genKey(gen uint64, conv string, seq uint64) []byte {
	k := make([]byte, 0, 8+len(conv)+9)
	k = binary.BigEndian.AppendUint64(k, gen)
	k = append(k, conv...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint64(k, seq)
}

// genPrefix returns BE(gen)+conv+\0: the msgdata keys of conv's messages
// of generation gen start with it.
func genPrefix(gen uint64, conv string) []byte {
	k := make([]byte, 0, 8+len(conv)+1)
	k = binary.BigEndian.AppendUint64(k, gen)
	k = append(k, conv...)
	return append(k, 0)
}

// parseGenKey splits a msgdata key; ok is false for anything else.
func parseGenKey(k []byte) (gen uint64, conv []byte, seq uint64, ok bool) {
	if len(k) < 8+1+1+8 || k[len(k)-9] != 0 {
		return 0, nil, 0, false
	}
	conv = k[8 : len(k)-9]
	if bytes.IndexByte(conv, 0) >= 0 {
		return 0, nil, 0, false
	}
	return binary.BigEndian.Uint64(k), conv, binary.BigEndian.Uint64(k[len(k)-8:]), true
}

// isGenKey reports whether a msgids value is a msgdata key (else it is a
// msgs key of the layout before it).
func isGenKey(loc []byte) bool { return len(loc) > 0 && loc[0] == 0 }

// seqKey returns conv+\0+BE(seq).
func seqKey(conv string, seq uint64) []byte {
	k := make([]byte, 0, len(conv)+9)
	k = append(k, conv...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint64(k, seq)
}

// clientKey returns the client key of a message: what makes two appends
// the same message (the memtable's and the Bloom filter's key, and the
// msgs key of the client-id entries of older files). The device id is
// length-prefixed, so device and client ids may hold any bytes.
func clientKey(conv, user, device, client string) []byte {
	k := make([]byte, 0, len(conv)+len(user)+len(device)+len(client)+2+binary.MaxVarintLen64)
	k = append(k, conv...)
	k = append(k, 1)
	k = append(k, user...)
	k = append(k, 0)
	k = binary.AppendUvarint(k, uint64(len(device)))
	k = append(k, device...)
	return append(k, client...)
}

// scanPrefix calls fn for every key of bk that starts with p, in order.
func scanPrefix(bk *bolt.Bucket, p []byte, fn func(k, v []byte) error) error {
	c := bk.Cursor()
	for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
		if err := fn(k, v); err != nil {
			return err
		}
	}
	return nil
}

// collectExpired returns copies of up to max keys of an expiry index whose
// time is not after now.
func collectExpired(bk *bolt.Bucket, now time.Time, max int) [][]byte {
	if max <= 0 {
		return nil
	}
	nowKey := timeKey(now)
	var keys [][]byte
	c := bk.Cursor()
	for k, _ := c.First(); k != nil && len(keys) < max; k, _ = c.Next() {
		if len(k) < timeKeyLen || !expiredAt(k, &nowKey) {
			break
		}
		keys = append(keys, bytes.Clone(k))
	}
	return keys
}
