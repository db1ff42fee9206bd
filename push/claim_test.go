package push_test

import (
	"context"
	"testing"
	"time"

	"klassenfunk/internal/redistest"
	"klassenfunk/push"
	"klassenfunk/storage"
)

// sharedClaims is the relay's store of a node in a cluster: everything in
// the rig's bbolt file, except the claims, which go to a real Redis that
// "other nodes" (the test) share.
type sharedClaims struct {
	*storage.Bolt
	claims *storage.Redis
}

func (s sharedClaims) ClaimPush(ctx context.Context, credID, messageID, owner string, until time.Time) (storage.ClaimState, error) {
	return s.claims.ClaimPush(ctx, credID, messageID, owner, until)
}

func (s sharedClaims) FinishPush(ctx context.Context, credID, messageID string, until time.Time) error {
	return s.claims.FinishPush(ctx, credID, messageID, until)
}

// startShared starts the rig's relay with claims in a fresh Redis, which
// it returns. lease is the relay's ClaimLease.
func startShared(t *testing.T, r *rig, lease time.Duration) *storage.Redis {
	t.Helper()
	srv := redistest.Start(t)
	client, err := storage.NewRedisClient(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	claims, err := storage.OpenRedis(t.Context(), client, &storage.RedisOptions{KeyPrefix: "kf:"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { claims.Close(); client.Close() })
	r.tuning.ClaimLease = lease
	cfg := r.config()
	cfg.Store = sharedClaims{r.store, claims}
	rl, err := push.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.relay = rl
	t.Cleanup(rl.Close)
	return claims
}

// A push whose claim another (live) node holds is neither sent nor
// acknowledged here: the claiming node sends it and removes the entry.
func TestPushClaimedElsewhereIsLeftToItsOwner(t *testing.T) {
	r := newRig(t)
	a := r.device("u1", "phone", push.ProviderFCM)
	claims := startShared(t, r, 20*time.Millisecond)
	if st, err := claims.ClaimPush(t.Context(), a, "msg-1", "node-b", time.Now().Add(time.Hour)); err != nil || st != storage.ClaimHeld {
		t.Fatalf("node-b's claim: %v, %v", st, err)
	}
	r.send("conv-1", []string{"u1", "u2"}, "u2", "d2")

	eventually(t, "the claim refused twice (it asks again after its lease)", func() bool {
		return r.outcome(push.ProviderFCM, push.OutcomeClaimedElsewhere) >= 2
	})
	if n := len(r.prov.To(r.tokens[a])); n != 0 {
		t.Fatalf("%d pushes sent for an entry another node claimed", n)
	}
	if n := r.outcome(push.ProviderFCM, push.OutcomeRetried); n != 0 {
		t.Fatalf("retried counted %v times: an attempt that met another node's claim counts once, as claimed_elsewhere", n)
	}
	if p := r.pending(); len(p) != 1 || p[0].CredID != a {
		t.Fatalf("outbox %+v: the other node's entry must stay until it acknowledges", p)
	}
}

// A node that claimed a push and died before sending it: its lease runs
// out, and this node, which holds the same entry, sends the push once and
// marks it done for everybody.
func TestPushOfADeadNodeIsSentWhenItsLeaseRunsOut(t *testing.T) {
	r := newRig(t)
	a := r.device("u1", "phone", push.ProviderFCM)
	claims := startShared(t, r, 20*time.Millisecond)
	if st, err := claims.ClaimPush(t.Context(), a, "msg-1", "dead-node", time.Now().Add(300*time.Millisecond)); err != nil || st != storage.ClaimHeld {
		t.Fatalf("the dead node's claim: %v, %v", st, err)
	}
	m := r.send("conv-1", []string{"u1", "u2"}, "u2", "d2")

	got := r.waitFor(a, 1)
	if p := r.open(a, got[0]); p.M != m.ID {
		t.Fatalf("push for %q, want %q", p.M, m.ID)
	}
	if r.outcome(push.ProviderFCM, push.OutcomeClaimedElsewhere) < 1 {
		t.Fatal("the first attempt did not meet the dead node's claim")
	}
	eventually(t, "the entry acknowledged", func() bool { return len(r.pending()) == 0 })
	// Marked done before the acknowledgement: another node's claim fails.
	if st, err := claims.ClaimPush(t.Context(), a, m.ID, "node-c", time.Now().Add(time.Hour)); err != nil || st != storage.ClaimDone {
		t.Fatalf("after the send, another node's claim: %v, %v; want done", st, err)
	}
	if n := len(r.prov.To(r.tokens[a])); n != 1 {
		t.Fatalf("%d pushes sent, want 1", n)
	}
}

// A push that another node already sent (its claim is done) is dropped
// here without a send and without an acknowledgement.
func TestPushFinishedElsewhereIsDropped(t *testing.T) {
	r := newRig(t)
	a := r.device("u1", "phone", push.ProviderFCM)
	claims := startShared(t, r, 20*time.Millisecond)
	if err := claims.FinishPush(t.Context(), a, "msg-1", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	r.send("conv-1", []string{"u1", "u2"}, "u2", "d2")

	eventually(t, "the push dropped as done elsewhere", func() bool {
		return r.outcome(push.ProviderFCM, push.OutcomeClaimedElsewhere) >= 1
	})
	r.idle()
	if n := len(r.prov.To(r.tokens[a])); n != 0 {
		t.Fatalf("%d pushes sent for an entry another node finished", n)
	}
	if p := r.pending(); len(p) != 0 {
		t.Fatalf("outbox %+v: a finished entry is acknowledged (its node may have died first)", p)
	}
	if n := r.outcome(push.ProviderFCM, push.OutcomeClaimedElsewhere); n != 1 {
		t.Fatalf("claimed_elsewhere %v times, want 1 (a done claim is not asked again)", n)
	}
}

// A push that another node queued in the shared outbox after this relay
// started, and then died holding (its claim's lease ran out), is picked
// up by the relay's rescan and sent once.
func TestPushRescanAdoptsADeadNodesEntry(t *testing.T) {
	r := newRig(t)
	a := r.device("u1", "phone", push.ProviderFCM)
	r.tuning.Rescan = 20 * time.Millisecond
	claims := startShared(t, r, 50*time.Millisecond)
	// The other node queued the push a while ago, claimed it and died
	// before sending.
	now := r.clock.Now()
	e := storage.PushEntry{CredID: a, UserID: "u1", DeviceID: "phone", Provider: push.ProviderFCM,
		Conversation: "conv-1", MessageID: "msg-elsewhere", Seq: 7, ExpiresAt: now.Add(time.Hour), EnqueuedAt: now.Add(-time.Second)}
	if err := r.store.PutPushes(t.Context(), []storage.PushEntry{e}); err != nil {
		t.Fatal(err)
	}
	if st, err := claims.ClaimPush(t.Context(), a, e.MessageID, "node-b", time.Now().Add(50*time.Millisecond)); err != nil || st != storage.ClaimHeld {
		t.Fatalf("node-b's claim: %v, %v", st, err)
	}

	got := r.waitFor(a, 1)
	if p := r.open(a, got[0]); p.M != e.MessageID || p.S != 7 {
		t.Fatalf("push %+v, want the other node's message", p)
	}
	eventually(t, "the entry acknowledged", func() bool { return len(r.pending()) == 0 })
	if n := len(r.prov.To(r.tokens[a])); n != 1 {
		t.Fatalf("%d pushes, want 1", n)
	}
}

// A rescan leaves alone what a live node holds: a young entry (it may be
// in its node's coalesce window) is not adopted, and an adopted one whose
// claim a live node holds is dropped here at once, so that this node's
// own next push to the device does not wait for that claim's lease.
func TestPushRescanLeavesLiveNodesEntries(t *testing.T) {
	r := newRig(t)
	a := r.device("u1", "phone", push.ProviderFCM)
	b := r.device("u3", "tablet", push.ProviderFCM)
	r.tuning.Rescan = 20 * time.Millisecond
	claims := startShared(t, r, time.Hour)
	now := r.clock.Now()
	held := storage.PushEntry{CredID: a, UserID: "u1", DeviceID: "phone", Provider: push.ProviderFCM,
		Conversation: "conv-1", MessageID: "msg-held", Seq: 7, ExpiresAt: now.Add(3 * time.Hour), EnqueuedAt: now.Add(-2 * time.Hour)}
	young := storage.PushEntry{CredID: b, UserID: "u3", DeviceID: "tablet", Provider: push.ProviderFCM,
		Conversation: "conv-1", MessageID: "msg-young", Seq: 8, ExpiresAt: now.Add(3 * time.Hour), EnqueuedAt: now}
	if err := r.store.PutPushes(t.Context(), []storage.PushEntry{held, young}); err != nil {
		t.Fatal(err)
	}
	if st, err := claims.ClaimPush(t.Context(), a, held.MessageID, "node-b", time.Now().Add(time.Hour)); err != nil || st != storage.ClaimHeld {
		t.Fatalf("node-b's claim: %v, %v", st, err)
	}
	eventually(t, "the held entry adopted and refused twice", func() bool {
		return r.outcome(push.ProviderFCM, push.OutcomeClaimedElsewhere) >= 2
	})
	// This node's own message to the device goes out now, not after the
	// other claim's hour.
	own := r.send("conv-1", []string{"u1", "u2"}, "u2", "d2")
	got := r.waitFor(a, 1)
	if p := r.open(a, got[0]); p.M != own.ID {
		t.Fatalf("push %+v, want this node's message %s", p, own.ID)
	}
	if n := len(r.prov.To(r.tokens[b])); n != 0 {
		t.Fatalf("%d pushes for an entry too young to adopt", n)
	}
}
