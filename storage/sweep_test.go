package storage_test

import (
	"fmt"
	"testing"
	"time"

	"klassenfunk/storage"
)

// sweepMsg is message i of conversation conv, expiring at exp.
func sweepMsg(conv string, i int, exp time.Time) storage.Message {
	return storage.Message{
		ID: fmt.Sprintf("%s-m%03d", conv, i), Conversation: conv, SenderUser: "u1", SenderDevice: "d1",
		ClientID: fmt.Sprintf("c%03d", i), SentAt: logBase, ExpiresAt: exp,
		Ciphertext: []byte{byte(i)}, Keys: map[string][]byte{"u1/d1": {byte(i)}},
	}
}

// TestSweepMemtableBound: the sweep checkpoints first when a message still
// in the memtable has expired. It reads the memtable only once the sweep's
// time reaches the earliest expiry it saw there, so a message appended
// after that with an earlier expiry must lower that bound.
func TestSweepMemtableBound(t *testing.T) {
	ctx := t.Context()
	b, _ := openSeeded(t, &storage.BoltOptions{NoSync: true, CheckpointSize: 1 << 20, CheckpointInterval: time.Hour})
	defer b.Close()
	if _, _, err := b.AppendMessage(ctx, sweepMsg("g1", 1, logBase.Add(2*time.Hour))); err != nil {
		t.Fatal(err)
	}
	if n, err := b.DeleteExpiredMessages(ctx, logBase.Add(time.Hour), 1000); err != nil || n != 0 {
		t.Fatalf("swept %d, %v before anything expired", n, err)
	}
	if _, _, err := b.AppendMessage(ctx, sweepMsg("g1", 2, logBase.Add(30*time.Minute))); err != nil {
		t.Fatal(err)
	}
	if n, err := b.DeleteExpiredMessages(ctx, logBase.Add(time.Hour), 1000); err != nil || n != 1 {
		t.Fatalf("swept %d, %v; want the expired message from the memtable", n, err)
	}
	msgs, _, err := b.MessagesAfter(ctx, "g1", 0, 10, logBase)
	if err != nil || len(msgs) != 1 || msgs[0].Seq != 1 {
		t.Fatalf("left after the sweep: %+v, %v; want seq 1 only", msgs, err)
	}
}

// TestSweepBetweenCheckpointParts: a sweep does not wait for a paced
// checkpoint to finish; it goes between its transactions. The runs of
// both stay right: every message reads back, and a later sweep empties
// them all.
func TestSweepBetweenCheckpointParts(t *testing.T) {
	ctx := t.Context()
	b, _ := openSeeded(t, &storage.BoltOptions{NoSync: true, CheckpointSize: 1 << 20, CheckpointInterval: time.Hour})
	defer b.Close()
	convs := []string{"g1", "g2", "g3", "g4"}
	for _, c := range convs[1:] {
		if err := b.CreateConversation(ctx, storage.Conversation{ID: c, School: "s1", Kind: storage.ConvGroup, Creator: "u1", Members: []storage.Member{{UserID: "u1", CanWrite: true}}, CreatedAt: logBase}); err != nil {
			t.Fatal(err)
		}
	}
	early, late := logBase.Add(time.Hour), logBase.Add(3*time.Hour)
	const per = 5
	for i := range per { // the old ones, in bbolt
		for _, c := range convs {
			if _, _, err := b.AppendMessage(ctx, sweepMsg(c, i, early)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := storage.CheckpointPaced(b, 0); err != nil {
		t.Fatal(err)
	}
	for i := per; i < 2*per; i++ { // the new ones, moving
		for _, c := range convs {
			if _, _, err := b.AppendMessage(ctx, sweepMsg(c, i, late)); err != nil {
				t.Fatal(err)
			}
		}
	}
	reached, release := storage.HoldCheckpointStep(b, 2)
	ckDone := make(chan error, 1)
	go func() { ckDone <- storage.CheckpointPaced(b, time.Millisecond) }()
	<-reached // two of the four conversations' new messages are in bbolt

	swept := make(chan error, 1)
	go func() {
		n, err := b.DeleteExpiredMessages(ctx, logBase.Add(2*time.Hour), 1000)
		if err == nil && n != per*len(convs) {
			err = fmt.Errorf("swept %d, want %d", n, per*len(convs))
		}
		swept <- err
	}()
	select {
	case err := <-swept:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		close(release)
		t.Fatal("the sweep waited for the paced checkpoint to finish")
	}
	close(release)
	if err := <-ckDone; err != nil {
		t.Fatal(err)
	}

	for _, c := range convs {
		msgs, _, err := b.MessagesAfter(ctx, c, 0, 100, logBase)
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) != per || msgs[0].Seq != per+1 || msgs[per-1].Seq != 2*per {
			t.Fatalf("%s after the sweep: %+v; want seqs %d..%d", c, msgs, per+1, 2*per)
		}
	}
	if n, err := b.DeleteExpiredMessages(ctx, logBase.Add(4*time.Hour), 1000); err != nil || n != per*len(convs) {
		t.Fatalf("second sweep: %d, %v; want %d", n, err, per*len(convs))
	}
	if n := storage.RunCount(b); n != 0 {
		t.Fatalf("%d runs left after every message was swept", n)
	}
	if err := b.Check(); err != nil {
		t.Fatal(err)
	}
}
