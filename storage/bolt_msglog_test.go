package storage_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"klassenfunk/storage"
	"klassenfunk/storage/storagetest"
)

// TestBoltEagerCheckpoint runs the conformance suite with a checkpoint
// after every logged message, so that reads meet messages on both sides of
// the message log and while they move.
func TestBoltEagerCheckpoint(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Store {
		return openBolt(t, &storage.BoltOptions{NoSync: true, CheckpointSize: 1, CheckpointInterval: time.Millisecond})
	})
}

var logBase = time.Date(2025, time.March, 3, 8, 0, 0, 0, time.UTC)

// seedConv creates school s1, user u1 and group g1 with u1 as writer.
func seedConv(t *testing.T, b storage.Store) {
	t.Helper()
	ctx := t.Context()
	for _, err := range []error{
		b.CreateSchool(ctx, storage.School{ID: "s1", Name: "Schule", CreatedAt: logBase}),
		b.CreateUser(ctx, storage.User{ID: "u1", School: "s1", Login: "anna", Role: storage.RoleTeacher, CreatedAt: logBase}),
		b.CreateConversation(ctx, storage.Conversation{ID: "g1", School: "s1", Kind: storage.ConvGroup, Creator: "u1", Members: []storage.Member{{UserID: "u1", CanWrite: true}}, CreatedAt: logBase}),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// openSeeded opens a new database file with opt and seeds it with
// seedConv. It returns the file's path for tests that reopen it; closing
// is the test's (some crash the store instead).
func openSeeded(t *testing.T, opt *storage.BoltOptions) (*storage.Bolt, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "klassenfunk.db")
	b, err := storage.OpenBolt(path, opt)
	if err != nil {
		t.Fatal(err)
	}
	seedConv(t, b)
	return b, path
}

// crashReopen crashes b (CrashBolt) and opens its file at path again with
// the defaults: the log is replayed.
func crashReopen(t *testing.T, b *storage.Bolt, path string) *storage.Bolt {
	t.Helper()
	if err := storage.CrashBolt(b); err != nil {
		t.Fatal(err)
	}
	b, err := storage.OpenBolt(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// reopen closes b and opens its file at path again with the defaults.
func reopen(t *testing.T, b *storage.Bolt, path string) *storage.Bolt {
	t.Helper()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := storage.OpenBolt(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func logMsg(i int) storage.Message {
	return storage.Message{
		ID: fmt.Sprintf("m%03d", i), Conversation: "g1", SenderUser: "u1", SenderDevice: "d1",
		ClientID: fmt.Sprintf("c%03d", i), SentAt: logBase, ExpiresAt: logBase.Add(time.Hour),
		Ciphertext: []byte{byte(i)}, Keys: map[string][]byte{"u1/d1": {1, 2, byte(i)}},
	}
}

func logFiles(t *testing.T, dbPath string) []string {
	t.Helper()
	names, err := filepath.Glob(dbPath + ".msglog.*")
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// checkHistory fails unless g1's history is exactly the messages 1..n of
// logMsg.
func checkHistory(t *testing.T, b *storage.Bolt, n int) {
	t.Helper()
	msgs, _, err := b.MessagesAfter(t.Context(), "g1", 0, 100, logBase)
	if err != nil {
		t.Fatal(err)
	}
	checkSeqs(t, msgs, n)
}

// checkSeqs fails unless msgs are exactly the messages 1..n in order.
func checkSeqs(t *testing.T, msgs []storage.Message, n int) {
	t.Helper()
	if len(msgs) != n {
		t.Fatalf("%d messages, want %d", len(msgs), n)
	}
	for i, m := range msgs {
		want := logMsg(i)
		if m.Seq != uint64(i+1) || m.ID != want.ID || !bytes.Equal(m.Ciphertext, want.Ciphertext) || !bytes.Equal(m.Keys["u1/d1"], want.Keys["u1/d1"]) {
			t.Fatalf("message %d = %+v, want seq %d of %+v", i, m, i+1, want)
		}
	}
}

// TestMessageLogCrashReplay: messages acknowledged before a crash are in
// the log only; the next open replays them, a torn record at the end of
// the log is ignored, and the client-id index and seq counter carry on.
func TestMessageLogCrashReplay(t *testing.T) {
	ctx := t.Context()
	b, path := openSeeded(t, nil)
	if err := b.PutAttachment(ctx, storage.Attachment{ID: "a1", Uploader: "u1", Size: 1, CreatedAt: logBase, ExpiresAt: logBase.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	const n = 20
	for i := range n {
		m := logMsg(i)
		if i == 3 {
			m.Attachments = []string{"a1"}
		}
		if _, created, err := b.AppendMessage(ctx, m); err != nil || !created {
			t.Fatalf("append %d: created %v, %v", i, created, err)
		}
	}
	if err := storage.CrashBolt(b); err != nil {
		t.Fatal(err)
	}
	files := logFiles(t, path)
	if len(files) != 1 {
		t.Fatalf("log files after the crash: %v, want one", files)
	}
	// A record torn by the crash: a header promising more than follows.
	f, err := os.OpenFile(files[0], os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte{200, 0, 0, 0, 1, 2, 3, 4, 5}); err != nil {
		t.Fatal(err)
	}
	f.Close()

	b, err = storage.OpenBolt(path, nil)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer func() {
		if err := b.Check(); err != nil {
			t.Error(err)
		}
		b.Close()
	}()
	if now := logFiles(t, path); len(now) != 1 || now[0] == files[0] {
		t.Fatalf("log files after replay: %v, want one new one (the old was %s)", now, files[0])
	}
	msgs, more, err := b.MessagesAfter(ctx, "g1", 0, 100, logBase)
	if err != nil || more {
		t.Fatal(more, err)
	}
	checkSeqs(t, msgs, n)
	c, err := b.Conversation(ctx, "g1")
	if err != nil || c.LastSeq != n {
		t.Fatalf("LastSeq = %d (%v), want %d", c.LastSeq, err, n)
	}
	a, err := b.Attachment(ctx, "a1", logBase)
	if err != nil || !slices.Contains(a.Conversations, "g1") {
		t.Fatalf("attachment after replay: %+v, %v", a, err)
	}
	again, created, err := b.AppendMessage(ctx, storage.Message{ID: "retry", Conversation: "g1", SenderUser: "u1", SenderDevice: "d1", ClientID: logMsg(5).ClientID, SentAt: logBase, ExpiresAt: logBase.Add(time.Hour)})
	if err != nil || created || again.ID != logMsg(5).ID {
		t.Fatalf("retry of a replayed client id: %+v, created %v, %v", again, created, err)
	}
	next, _, err := b.AppendMessage(ctx, logMsg(n))
	if err != nil || next.Seq != n+1 {
		t.Fatalf("append after replay: seq %d, %v; want %d", next.Seq, err, n+1)
	}
	if got, err := b.CountMessages(ctx); err != nil || got != n+1 {
		t.Fatalf("CountMessages = %d, %v; want %d", got, err, n+1)
	}
}

// TestMessageLogReplayTwice: a crash after a checkpoint's commit and
// before its log file was deleted replays messages bbolt has already; none
// doubles.
func TestMessageLogReplayTwice(t *testing.T) {
	ctx := t.Context()
	b, path := openSeeded(t, nil)
	const n = 10
	for i := range n {
		if _, _, err := b.AppendMessage(ctx, logMsg(i)); err != nil {
			t.Fatal(err)
		}
	}
	files := logFiles(t, path)
	if len(files) != 1 {
		t.Fatalf("log files: %v", files)
	}
	saved, err := os.ReadFile(files[0])
	if err != nil || len(saved) == 0 {
		t.Fatalf("log file: %d bytes, %v", len(saved), err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if files := logFiles(t, path); len(files) != 0 {
		t.Fatalf("log files after Close: %v, want none", files)
	}
	if err := os.WriteFile(files[0], saved, 0o600); err != nil {
		t.Fatal(err)
	}

	b, err = storage.OpenBolt(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	checkHistory(t, b, n)
	if got, err := b.CountMessages(ctx); err != nil || got != n {
		t.Fatalf("CountMessages = %d, %v; want %d", got, err, n)
	}
}

// TestMessageLogReadsWhileMoving: readers never see a gap, a duplicate or
// a message out of order while writers append and checkpoints move
// messages into bbolt.
func TestMessageLogReadsWhileMoving(t *testing.T) {
	ctx := t.Context()
	b := openBolt(t, &storage.BoltOptions{NoSync: true, CheckpointSize: 7, CheckpointInterval: time.Millisecond})
	seedConv(t, b)
	const writers, each = 4, 100
	var wg sync.WaitGroup
	done := make(chan struct{})
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				m := logMsg(w*each + i)
				if _, _, err := b.AppendMessage(ctx, m); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	readErr := make(chan error, 2)
	for range 2 {
		go func() {
			var seen uint64
			for {
				select {
				case <-done:
					readErr <- nil
					return
				default:
				}
				after := seen / 2 // overlap what was read before
				msgs, more, err := b.MessagesAfter(ctx, "g1", after, 50, logBase)
				if err != nil {
					readErr <- err
					return
				}
				for i, m := range msgs {
					if m.Seq != after+uint64(i)+1 {
						readErr <- fmt.Errorf("after %d: message %d has seq %d", after, i, m.Seq)
						return
					}
				}
				if more && len(msgs) != 50 {
					readErr <- fmt.Errorf("more with %d messages", len(msgs))
					return
				}
				if len(msgs) > 0 {
					seen = max(seen, msgs[len(msgs)-1].Seq)
				}
				c, err := b.Conversation(ctx, "g1")
				if err != nil {
					readErr <- err
					return
				}
				if c.LastSeq < seen {
					readErr <- fmt.Errorf("LastSeq %d behind a message read before (%d)", c.LastSeq, seen)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(done)
	for range 2 {
		if err := <-readErr; err != nil {
			t.Fatal(err)
		}
	}
	msgs, _, err := b.MessagesAfter(ctx, "g1", 0, writers*each+1, logBase)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != writers*each || msgs[len(msgs)-1].Seq != writers*each {
		t.Fatalf("%d messages, last seq %d; want %d", len(msgs), msgs[len(msgs)-1].Seq, writers*each)
	}
}

// TestMessageLogWriteFailure: a failed log write fails the append, leaves
// no trace of the message, turns Ping unhealthy and refuses later appends;
// what was stored before stays readable.
func TestMessageLogWriteFailure(t *testing.T) {
	ctx := t.Context()
	b := openBolt(t, nil)
	seedConv(t, b)
	if _, _, err := b.AppendMessage(ctx, logMsg(0)); err != nil {
		t.Fatal(err)
	}
	if err := storage.BreakMessageLog(b); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.AppendMessage(ctx, logMsg(1)); err == nil {
		t.Fatal("append with a broken log succeeded")
	}
	if _, err := b.Message(ctx, logMsg(1).ID, logBase); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("the failed message: %v, want ErrNotFound", err)
	}
	if err := b.Ping(ctx); err == nil {
		t.Fatal("Ping healthy with a broken log")
	}
	if _, _, err := b.AppendMessage(ctx, logMsg(2)); err == nil {
		t.Fatal("append after a log failure succeeded")
	}
	msgs, _, err := b.MessagesAfter(ctx, "g1", 0, 10, logBase)
	if err != nil {
		t.Fatal(err)
	}
	checkSeqs(t, msgs, 1)
}

// TestMessageLogWriteFailureUndone: a write that fails half way (a full
// disk) fails that append only: the half record is cut off again, the seq
// is given to the next message, and a crash afterwards replays the log
// cleanly.
func TestMessageLogWriteFailureUndone(t *testing.T) {
	ctx := t.Context()
	b, path := openSeeded(t, nil)
	if _, _, err := b.AppendMessage(ctx, logMsg(0)); err != nil {
		t.Fatal(err)
	}
	storage.FailNextLogWrite(b, syscall.ENOSPC)
	if _, _, err := b.AppendMessage(ctx, logMsg(1)); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("append on a full disk: %v, want ENOSPC", err)
	}
	if _, err := b.Message(ctx, logMsg(1).ID, logBase); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("the failed message: %v, want ErrNotFound", err)
	}
	if err := b.Ping(ctx); err != nil {
		t.Fatalf("Ping after an undone write: %v", err)
	}
	m, _, err := b.AppendMessage(ctx, logMsg(1)) // the client's retry
	if err != nil || m.Seq != 2 {
		t.Fatalf("retry: seq %d, %v; want 2", m.Seq, err)
	}
	b = crashReopen(t, b, path)
	defer b.Close()
	msgs, _, err := b.MessagesAfter(ctx, "g1", 0, 10, logBase)
	if err != nil {
		t.Fatal(err)
	}
	checkSeqs(t, msgs, 2)
}

// TestMessageLogCheckpointCutShort: a paced checkpoint that stops between
// two of its transactions (a crash there) loses nothing: reads keep
// finding the messages, and after a crash the replay writes what was
// missing, so the messages can be found by id and are swept when they
// expire. Cut after some of the msgs bucket, before the indexes, and after
// some of the indexes.
func TestMessageLogCheckpointCutShort(t *testing.T) {
	for _, cut := range []struct {
		at      int
		indexes bool
	}{{1, false}, {0, true}, {1, true}, {19, true}} {
		for _, crash := range []bool{true, false} {
			t.Run(fmt.Sprintf("at=%d,indexes=%v,crash=%v", cut.at, cut.indexes, crash), func(t *testing.T) {
				checkpointCutShort(t, cut.at, cut.indexes, crash)
			})
		}
	}
}

// checkpointCutShort cuts a paced checkpoint short; then the store
// crashes, or (crash false) the next checkpoint writes the same
// generation again, whose runs must not be read twice.
func checkpointCutShort(t *testing.T, at int, indexes, crash bool) {
	ctx := t.Context()
	b, path := openSeeded(t, &storage.BoltOptions{CheckpointInterval: time.Hour})
	convs := []string{"g1", "g2", "g3", "g4"}
	for _, c := range convs[1:] {
		if err := b.CreateConversation(ctx, storage.Conversation{ID: c, School: "s1", Kind: storage.ConvGroup, Creator: "u1", Members: []storage.Member{{UserID: "u1", CanWrite: true}}, CreatedAt: logBase}); err != nil {
			t.Fatal(err)
		}
	}
	const n = 40 // four parts of the msgs bucket (a conversation each), 20 of the indexes
	for i := range n {
		m := logMsg(i)
		m.Conversation = convs[i%len(convs)]
		if _, _, err := b.AppendMessage(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	check := func(b *storage.Bolt) {
		t.Helper()
		for _, c := range convs {
			msgs, _, err := b.MessagesAfter(ctx, c, 0, 100, logBase)
			if err != nil || len(msgs) != n/len(convs) || msgs[len(msgs)-1].Seq != uint64(n/len(convs)) {
				t.Fatalf("%s: %d messages, %v", c, len(msgs), err)
			}
		}
		for i := range n {
			if _, err := b.Message(ctx, logMsg(i).ID, logBase); err != nil {
				t.Fatalf("message %d by id: %v", i, err)
			}
		}
	}
	storage.FailCheckpointStep(b, at, indexes)
	if err := storage.CheckpointPaced(b, time.Millisecond); err == nil {
		t.Fatal("the checkpoint did not fail")
	}
	check(b)
	if !crash {
		if err := storage.CheckpointPaced(b, time.Millisecond); err != nil {
			t.Fatal(err)
		}
		check(b)
		if n := storage.RunCount(b); n != len(convs) {
			t.Fatalf("%d runs after the retry, want %d (one per conversation)", n, len(convs))
		}
		b = reopen(t, b, path)
		defer b.Close()
		check(b)
		return
	}
	b = crashReopen(t, b, path)
	defer b.Close()
	check(b)
	if got, err := b.DeleteExpiredMessages(ctx, logBase.Add(2*time.Hour), 1000); err != nil || got != n {
		t.Fatalf("swept %d, %v; want %d", got, err, n)
	}
}

// TestClientKeyFilter: with the client-key filter built (from a scan at
// open, and from checkpoints after that), a retried client id is found in
// bbolt, and a new one is stored.
func TestClientKeyFilter(t *testing.T) {
	ctx := t.Context()
	b, path := openSeeded(t, nil)
	// Odd messages are stored as JSON (a time zone the binary form does
	// not carry): client ids are read from both forms.
	zone := time.FixedZone("CET", 3600)
	logMsg := func(i int) storage.Message {
		m := logMsg(i)
		if i%2 == 1 {
			m.SentAt, m.ExpiresAt = m.SentAt.In(zone), m.ExpiresAt.In(zone)
		}
		return m
	}
	storage.WaitClientKeyFilter(b) // built on an empty file: checkpoints fill it
	const n = 20
	storeCheckpointed(t, b, n, logMsg)
	retryAll(t, b, n, logMsg)
	b = reopen(t, b, path)
	defer b.Close()
	storage.WaitClientKeyFilter(b) // built from the scan
	retryAll(t, b, n, logMsg)
	if m, created, err := b.AppendMessage(ctx, logMsg(n)); err != nil || !created || m.Seq != n+1 {
		t.Fatalf("a new client id: seq %d, created %v, %v", m.Seq, created, err)
	}
}

// TestMessageLogCloseWithAppends: Close with appends in flight loses none
// that returned success.
func TestMessageLogCloseWithAppends(t *testing.T) {
	ctx := context.Background()
	b, path := openSeeded(t, &storage.BoltOptions{NoSync: true})
	var (
		wg sync.WaitGroup
		mu sync.Mutex
		ok []string
	)
	for w := range 8 {
		wg.Go(func() {
			for i := range 50 {
				m := logMsg(w*50 + i)
				if _, _, err := b.AppendMessage(ctx, m); err == nil {
					mu.Lock()
					ok = append(ok, m.ID)
					mu.Unlock()
				} else if !errors.Is(err, storage.ErrClosed) {
					t.Error(err)
				}
			}
		})
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	b, err := storage.OpenBolt(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, id := range ok {
		if _, err := b.Message(ctx, id, logBase); err != nil {
			t.Fatalf("message %s acknowledged before Close: %v", id, err)
		}
	}
}

// TestMessageLogSyncSpacing: after a log write of several messages, the
// next fsync waits for SyncSpacing, unless 64 messages are waiting; a lone
// sender never waits for it.
func TestMessageLogSyncSpacing(t *testing.T) {
	ctx := context.Background()
	type syncAt struct {
		n  int
		at time.Time
	}
	var (
		mu    sync.Mutex
		syncs []syncAt
	)
	open := func(spacing time.Duration) *storage.Bolt {
		b, err := storage.OpenBolt(filepath.Join(t.TempDir(), "klassenfunk.db"), &storage.BoltOptions{SyncSpacing: spacing})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() }) // also ends a wait for the spacing
		seedConv(t, b)
		mu.Lock()
		syncs = nil
		mu.Unlock()
		return b
	}
	record := func(n int) {
		mu.Lock()
		syncs = append(syncs, syncAt{n, time.Now()})
		mu.Unlock()
	}
	var next atomic.Int64 // message numbers; appendAll runs concurrently
	appendAll := func(b *storage.Bolt, k int) {
		t.Helper()
		var wg sync.WaitGroup
		for range k {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				if _, _, err := b.AppendMessage(ctx, logMsg(i)); err != nil {
					t.Error(err)
				}
			}(int(next.Add(1)))
		}
		wg.Wait()
	}

	t.Run("lone sender", func(t *testing.T) {
		b := open(time.Hour) // any wait would hang here
		for range 20 {
			appendAll(b, 1)
		}
	})

	t.Run("several senders", func(t *testing.T) {
		const spacing = 100 * time.Millisecond
		b := open(spacing)
		storage.OnLogSync(b, record)
		// Concurrent appends until one write holds several of them, then
		// one more: its fsync waits for the spacing.
		for {
			appendAll(b, 8)
			mu.Lock()
			multi := syncs[len(syncs)-1].n > 1
			mu.Unlock()
			if multi {
				break
			}
		}
		appendAll(b, 1)
		mu.Lock()
		defer mu.Unlock()
		last, prev := syncs[len(syncs)-1], syncs[len(syncs)-2]
		if gap := last.at.Sub(prev.at); last.n != 1 || gap < spacing {
			t.Fatalf("a lone append %v after a write of %d; want its own write after at least %v", gap, prev.n, spacing)
		}
	})

	t.Run("enough senders", func(t *testing.T) {
		// After a write of 7, 64 appends waiting end the wait at once,
		// and a write of 64 is not followed by one: with a spacing of an
		// hour, anything else hangs.
		b := open(time.Hour)
		first, release := make(chan struct{}), make(chan struct{})
		calls := 0
		storage.OnLogSync(b, func(n int) {
			record(n)
			if calls++; calls == 1 {
				close(first)
				<-release
			}
		})
		done := make(chan struct{})
		go func() { appendAll(b, 1); close(done) }()
		<-first // the writer holds one record
		go func() {
			storage.WaitLogPending(b, 7)
			close(release)
		}()
		appendAll(b, 7) // one write of 7
		<-done
		appendAll(b, 64) // the wait ends at 64
		appendAll(b, 1)  // no wait after 64
		mu.Lock()
		defer mu.Unlock()
		var sizes []int
		for _, s := range syncs {
			sizes = append(sizes, s.n)
		}
		if !slices.Equal(sizes, []int{1, 7, 64, 1}) {
			t.Fatalf("writes of %v records; want [1 7 64 1]", sizes)
		}
	})
}

// TestLegacyClientEntries: a file from before 2026-11, with a client-id
// entry beside each message, still finds retried client ids (in the
// values), builds its filter, and the sweep removes the entries with
// their messages.
func TestLegacyClientEntries(t *testing.T) {
	ctx := t.Context()
	b, path := openSeeded(t, nil)
	const n = 5
	storeCheckpointed(t, b, n, logMsg)
	for i := range n {
		if err := storage.PutLegacyClientEntry(b, logMsg(i)); err != nil {
			t.Fatal(err)
		}
	}
	b = reopen(t, b, path)
	defer b.Close()
	storage.WaitClientKeyFilter(b)
	retryAll(t, b, n, logMsg)
	if got, err := b.DeleteExpiredMessages(ctx, logBase.Add(2*time.Hour), 1000); err != nil || got != n {
		t.Fatalf("swept %d, %v; want %d", got, err, n)
	}
	for i := range n {
		if found, err := storage.HasLegacyClientEntry(b, logMsg(i)); err != nil || found {
			t.Fatalf("client-id entry of message %d after the sweep: %v, %v", i, found, err)
		}
	}
}

// storeCheckpointed appends messages 0..n-1 of msg and checkpoints them
// into bbolt.
func storeCheckpointed(t *testing.T, b *storage.Bolt, n int, msg func(int) storage.Message) {
	t.Helper()
	for i := range n {
		if _, _, err := b.AppendMessage(t.Context(), msg(i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.CountMessages(t.Context()); err != nil { // a checkpoint
		t.Fatal(err)
	}
}

// retryAll sends messages 0..n-1 of msg again under new message ids and
// fails unless each comes back as the stored message i, seq i+1.
func retryAll(t *testing.T, b *storage.Bolt, n int, msg func(int) storage.Message) {
	t.Helper()
	for i := range n {
		m := msg(i)
		want := m.ID
		m.ID = fmt.Sprintf("retry-%03d", i)
		got, created, err := b.AppendMessage(t.Context(), m)
		if err != nil || created || got.ID != want || got.Seq != uint64(i+1) {
			t.Fatalf("retry of client id %s: %s seq %d, created %v, %v; want %s seq %d", m.ClientID, got.ID, got.Seq, created, err, want, i+1)
		}
	}
}
