package storage_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"klassenfunk/storage"
)

// TestSchemaV2MessagesRead: a file of schema version 2 (its messages in
// msgs) opens as version 3 and keeps serving them: by id, in history
// together with the messages appended after it, to a retry of their
// client ids; the conversation's seqs go on from its counter; a backup of
// both layouts passes the check; the sweep removes both.
func TestSchemaV2MessagesRead(t *testing.T) {
	ctx := t.Context()
	b, path := openSeeded(t, nil)
	const old, added = 5, 3
	putV2(t, b, old)
	b = reopen(t, b, path)
	// Opened and closed without a new message, the file is still one
	// that the binary before can open.
	b = reopen(t, b, path)
	if v, err := storage.SchemaVersion(b); err != nil || v != 2 {
		t.Fatalf("schema version %d, %v after opening a file of version 2 without writing a message; want 2", v, err)
	}
	storage.WaitClientKeyFilter(b)
	retryAll(t, b, old, logMsg)
	for i := old; i < old+added; i++ {
		m, created, err := b.AppendMessage(ctx, logMsg(i))
		if err != nil || !created || m.Seq != uint64(i+1) {
			t.Fatalf("append after the old messages: seq %d, created %v, %v; want seq %d", m.Seq, created, err, i+1)
		}
	}
	check := func(b *storage.Bolt) {
		t.Helper()
		all, more, err := b.MessagesAfter(ctx, "g1", 0, 100, logBase)
		if err != nil || more {
			t.Fatal(err, more)
		}
		checkSeqs(t, all, old+added)
		tail, _, err := b.MessagesAfter(ctx, "g1", old-2, 3, logBase)
		if err != nil || len(tail) != 3 || tail[0].Seq != old-1 || tail[2].Seq != old+1 {
			t.Fatalf("3 after seq %d, across the layouts: %d messages, %v", old-2, len(tail), err)
		}
		if m, err := b.Message(ctx, logMsg(1).ID, logBase); err != nil || m.Seq != 2 {
			t.Fatalf("an old message by id: seq %d, %v", m.Seq, err)
		}
		if c, err := b.Conversation(ctx, "g1"); err != nil || c.LastSeq != old+added {
			t.Fatalf("LastSeq %d, %v; want %d", c.LastSeq, err, old+added)
		}
	}
	check(b)
	b = reopen(t, b, path) // the new messages in msgdata now, their runs read from it
	defer b.Close()
	check(b)
	if v, err := storage.SchemaVersion(b); err != nil || v != 3 {
		t.Fatalf("schema version %d, %v once msgdata holds messages; want 3", v, err)
	}
	data, legacy, err := storage.MsgDataCount(b)
	if err != nil || data != added || legacy != old {
		t.Fatalf("%d messages in msgdata and %d in msgs, %v; want %d and %d", data, legacy, err, added, old)
	}

	backup := filepath.Join(t.TempDir(), "backup.db")
	f, err := os.Create(backup)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Backup(ctx, f); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := storage.CheckDatabaseFile(backup); err != nil {
		t.Fatalf("check of a backup with both layouts: %v", err)
	}

	if got, err := b.DeleteExpiredMessages(ctx, logBase.Add(2*time.Hour), 1000); err != nil || got != old+added {
		t.Fatalf("swept %d, %v; want %d", got, err, old+added)
	}
	if data, legacy, err := storage.MsgDataCount(b); err != nil || data+legacy != 0 {
		t.Fatalf("after the sweep: %d in msgdata, %d in msgs, %v", data, legacy, err)
	}
	if n := storage.RunCount(b); n != 0 {
		t.Fatalf("%d runs kept after the sweep emptied them", n)
	}
	if m, _, err := b.AppendMessage(ctx, logMsg(old+added)); err != nil || m.Seq != old+added+1 {
		t.Fatalf("append after the sweep: seq %d, %v; want %d", m.Seq, err, old+added+1)
	}
}

// TestSchemaVersionTooNew: a file of a later schema is refused, not read
// without the data this version does not know, and fails the check a
// restore makes before it puts a backup in place.
func TestSchemaVersionTooNew(t *testing.T) {
	b, path := openSeeded(t, nil)
	if err := storage.SetSchemaVersion(b, 4); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if b, err := storage.OpenBolt(path, nil); err == nil || !strings.Contains(err.Error(), "schema version") {
		if err == nil {
			b.Close()
		}
		t.Fatalf("open of a file of schema version 4: %v", err)
	}
	if err := storage.CheckDatabaseFile(path); !errors.Is(err, storage.ErrNotDatabase) || !strings.Contains(err.Error(), "schema version") {
		t.Fatalf("check of a file of schema version 4: %v", err)
	}
}

// TestReplayMovesV2Checkpoint: the log of a binary of schema version 2
// that crashed in the middle of a checkpoint comes with some of its
// messages in msgs already. The replay moves them into msgdata, so that
// the sweep finds and removes every copy.
func TestReplayMovesV2Checkpoint(t *testing.T) {
	ctx := t.Context()
	b, path := openSeeded(t, &storage.BoltOptions{CheckpointInterval: time.Hour})
	const n = 6
	for i := range n {
		if _, _, err := b.AppendMessage(ctx, logMsg(i)); err != nil {
			t.Fatal(err)
		}
	}
	putV2(t, b, n/2) // the part of the checkpoint done before the crash
	b = crashReopen(t, b, path)
	defer b.Close()
	checkHistory(t, b, n)
	if data, legacy, err := storage.MsgDataCount(b); err != nil || data != n || legacy != 0 {
		t.Fatalf("after the replay: %d in msgdata, %d in msgs, %v; want %d and 0", data, legacy, err, n)
	}
	if got, err := b.DeleteExpiredMessages(ctx, logBase.Add(2*time.Hour), 1000); err != nil || got != n {
		t.Fatalf("swept %d, %v; want %d", got, err, n)
	}
	if data, legacy, err := storage.MsgDataCount(b); err != nil || data+legacy != 0 {
		t.Fatalf("after the sweep: %d in msgdata, %d in msgs, %v", data, legacy, err)
	}
}

// TestCheckpointsAppend: after a restart (its log files gone), checkpoints
// write under later generations than those in the file, so that they go
// on appending at the end of msgdata: a message of a conversation that
// sorts first comes last.
func TestCheckpointsAppend(t *testing.T) {
	ctx := t.Context()
	b, path := openSeeded(t, nil)
	if err := b.CreateConversation(ctx, storage.Conversation{ID: "g2", School: "s1", Kind: storage.ConvGroup, Creator: "u1", Members: []storage.Member{{UserID: "u1", CanWrite: true}}, CreatedAt: logBase}); err != nil {
		t.Fatal(err)
	}
	g2 := func(i int) storage.Message { m := logMsg(i); m.ID, m.Conversation = "g2-"+m.ID, "g2"; return m }
	storeCheckpointed(t, b, 3, g2)
	b = reopen(t, b, path)
	defer b.Close()
	storeCheckpointed(t, b, 1, logMsg)
	if conv, seq, err := storage.LastMsgData(b); err != nil || conv != "g1" || seq != 1 {
		t.Fatalf("last key of msgdata: %s seq %d, %v; want g1 seq 1", conv, seq, err)
	}
}

// TestSweepDropsEmptyRuns: the runs of generations whose messages the
// sweep removed go, those with messages left stay and are read.
func TestSweepDropsEmptyRuns(t *testing.T) {
	ctx := t.Context()
	b, path := openSeeded(t, nil)
	const n = 4
	for round := range 3 {
		for i := range n {
			m := logMsg(round*n + i)
			m.ExpiresAt = logBase.Add(time.Duration(round+1) * time.Hour)
			if _, _, err := b.AppendMessage(ctx, m); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := b.CountMessages(ctx); err != nil { // a checkpoint: one generation a round
			t.Fatal(err)
		}
	}
	if got := storage.RunCount(b); got != 3 {
		t.Fatalf("%d runs for three checkpoints of one conversation", got)
	}
	if got, err := b.DeleteExpiredMessages(ctx, logBase.Add(150*time.Minute), 1000); err != nil || got != 2*n {
		t.Fatalf("swept %d, %v; want %d", got, err, 2*n)
	}
	if got := storage.RunCount(b); got != 1 {
		t.Fatalf("%d runs after two of three were emptied", got)
	}
	check := func(b *storage.Bolt) {
		t.Helper()
		msgs, _, err := b.MessagesAfter(ctx, "g1", 0, 100, logBase.Add(150*time.Minute))
		if err != nil || len(msgs) != n || msgs[0].Seq != 2*n+1 {
			t.Fatalf("after the sweep: %d messages, %v; want seqs %d..%d", len(msgs), err, 2*n+1, 3*n)
		}
		for i, m := range msgs {
			if want := logMsg(2*n + i).ID; m.ID != want {
				t.Fatalf("message %d: %s, want %s", i, m.ID, want)
			}
		}
	}
	check(b)
	b = reopen(t, b, path) // the runs as msgruns keeps them
	defer b.Close()
	if got := storage.RunCount(b); got != 1 {
		t.Fatalf("%d runs after a restart, want the 1 left", got)
	}
	check(b)
}

// putV2 stores messages 0..n-1 of logMsg as a file of schema version 2
// holds them, and marks the file as one.
func putV2(t *testing.T, b *storage.Bolt, n int) {
	t.Helper()
	for i := range n {
		m := logMsg(i)
		m.Seq = uint64(i + 1)
		if err := storage.PutV2Message(b, m); err != nil {
			t.Fatal(err)
		}
	}
	if err := storage.SetSchemaVersion(b, 2); err != nil {
		t.Fatal(err)
	}
}

// TestManyRunsRead: a conversation with a message in each of 300
// checkpoints (300 runs, past several of msgRuns' marks) reads any page
// from any seq, finds the messages of client-id retries, after a restart
// (the runs from msgruns) and after a sweep that emptied the first 100
// runs.
func TestManyRunsRead(t *testing.T) {
	ctx := t.Context()
	b, path := openSeeded(t, &storage.BoltOptions{NoSync: true})
	const n, swept = 300, 100
	for i := range n {
		m := logMsg(i)
		if i < swept {
			m.ExpiresAt = logBase.Add(30 * time.Minute)
		}
		if _, _, err := b.AppendMessage(ctx, m); err != nil {
			t.Fatal(err)
		}
		if _, err := b.CountMessages(ctx); err != nil { // a checkpoint: a generation per message
			t.Fatal(err)
		}
	}
	check := func(b *storage.Bolt, from int, now time.Time) {
		t.Helper()
		for _, after := range []int{0, 1, 62, 63, 64, 65, 99, 100, 127, 128, 129, 200, 255, 256, 299} {
			msgs, _, err := b.MessagesAfter(ctx, "g1", uint64(after), 50, now)
			if err != nil {
				t.Fatal(err)
			}
			first := max(after, from)
			if want := min(50, n-first); len(msgs) != want {
				t.Fatalf("after %d: %d messages, want %d", after, len(msgs), want)
			}
			for j, m := range msgs {
				if m.Seq != uint64(first+j+1) || m.ID != logMsg(first+j).ID {
					t.Fatalf("after %d: message %d is seq %d %s, want seq %d", after, j, m.Seq, m.ID, first+j+1)
				}
			}
		}
	}
	check(b, 0, logBase)
	if got := storage.RunCount(b); got != n {
		t.Fatalf("%d runs, want %d", got, n)
	}
	b = reopen(t, b, path)
	defer func() { b.Close() }()
	check(b, 0, logBase)
	for _, i := range []int{298, 200, 130, 10} { // retries found in runs across the marks, from the end
		m, created, err := b.AppendMessage(ctx, logMsg(i))
		if err != nil || created || m.Seq != uint64(i+1) || m.ID != logMsg(i).ID {
			t.Fatalf("retry of message %d: seq %d %s, created %v, %v; want the original, seq %d", i, m.Seq, m.ID, created, err, i+1)
		}
	}
	later := logBase.Add(45 * time.Minute)
	if got, err := b.DeleteExpiredMessages(ctx, later, 1000); err != nil || got != swept {
		t.Fatalf("swept %d, %v; want %d", got, err, swept)
	}
	if got := storage.RunCount(b); got != n-swept {
		t.Fatalf("%d runs after the sweep, want %d", got, n-swept)
	}
	check(b, swept, later)
}
