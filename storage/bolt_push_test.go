package storage

import (
	"context"
	"testing"
	"time"
)

func TestBoltPushOutbox(t *testing.T) {
	ctx := context.Background()
	b, err := OpenBolt(t.TempDir()+"/kf.db", &BoltOptions{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// A fresh file has no outbox bucket yet.
	if es, err := b.PendingPushes(ctx); err != nil || len(es) != 0 {
		t.Fatalf("PendingPushes on a new file: %v %v", es, err)
	}
	if err := b.DonePushes(ctx, []PushDone{{CredID: "x"}}); err != nil {
		t.Fatalf("DonePushes on a new file: %v", err)
	}
	at := time.Date(2026, 9, 1, 8, 0, 0, 0, time.UTC)
	e := func(cred, msg string, seq uint64) PushEntry {
		return PushEntry{CredID: cred, UserID: "u-" + cred, DeviceID: "d", Provider: "fcm", Conversation: "c",
			MessageID: msg, Seq: seq, ExpiresAt: at.Add(time.Hour), EnqueuedAt: at}
	}
	if err := b.PutPushes(ctx, []PushEntry{e("a", "m1", 1), e("b", "m1", 1)}); err != nil {
		t.Fatal(err)
	}
	// A newer message replaces the device's entry.
	if err := b.PutPushes(ctx, []PushEntry{e("a", "m2", 2)}); err != nil {
		t.Fatal(err)
	}
	es, err := b.PendingPushes(ctx)
	if err != nil || len(es) != 2 || es[0] != e("a", "m2", 2) || es[1] != e("b", "m1", 1) {
		t.Fatalf("pending %+v %v", es, err)
	}
	// Acknowledging the older message leaves the newer one; an empty
	// message id removes whatever is there.
	if err := b.DonePushes(ctx, []PushDone{{CredID: "a", MessageID: "m1"}, {CredID: "b"}, {CredID: "none", MessageID: "m"}}); err != nil {
		t.Fatal(err)
	}
	es, _ = b.PendingPushes(ctx)
	if len(es) != 1 || es[0].CredID != "a" {
		t.Fatalf("after done: %+v", es)
	}
	if err := b.DonePushes(ctx, []PushDone{{CredID: "a", MessageID: "m2"}}); err != nil {
		t.Fatal(err)
	}
	if es, _ = b.PendingPushes(ctx); len(es) != 0 {
		t.Fatalf("after done: %+v", es)
	}
	if err := b.PutPushes(ctx, []PushEntry{e("bad\x00id", "m", 1)}); err == nil {
		t.Error("a NUL in a credential id is accepted")
	}

	// Registrations by provider.
	for i, p := range []string{"fcm", "apns", "fcm", ""} {
		c := Credential{ID: "c" + string(rune('0'+i)), UserID: "u", Kind: CredTrust}
		c.TokenHash[0] = byte(i + 1)
		if p != "" {
			c.Push = &PushRegistration{Provider: p, Token: "t", Secret: make([]byte, 32)}
		}
		if err := b.PutCredential(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	n, err := b.CountRegistrations(ctx)
	if err != nil || len(n) != 2 || n["fcm"] != 2 || n["apns"] != 1 {
		t.Fatalf("CountRegistrations = %v, %v", n, err)
	}
	if err := b.Check(); err != nil {
		t.Fatal(err)
	}
}
