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
