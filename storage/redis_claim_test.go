package storage_test

import (
	"testing"
	"time"

	"klassenfunk/internal/redistest"
	"klassenfunk/storage"
)

// Of several nodes sharing a Redis outbox, one at a time may send a push;
// its claim is a lease that it renews, and FinishPush ends it for all.
func TestRedisClaimPush(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	client := newClient(t, srv.Addr())
	prefix := newPrefix()
	a := openRedis(t, client, &storage.RedisOptions{KeyPrefix: prefix})
	ctx := t.Context()
	until := time.Now().Add(time.Hour)
	claims := map[string]struct {
		cred, msg, owner string
		want             storage.ClaimState
	}{
		"first claim":                {"c1", "m1", "node-a", storage.ClaimHeld},
		"the same owner again":       {"c1", "m1", "node-a", storage.ClaimHeld},
		"another owner":              {"c1", "m1", "node-b", storage.ClaimTaken},
		"another message, same cred": {"c1", "m2", "node-b", storage.ClaimHeld},
		"another cred, same message": {"c2", "m1", "node-b", storage.ClaimHeld},
	}
	for _, name := range []string{"first claim", "the same owner again", "another owner", "another message, same cred", "another cred, same message"} {
		c := claims[name]
		got, err := a.ClaimPush(ctx, c.cred, c.msg, c.owner, until)
		if err != nil || got != c.want {
			t.Fatalf("%s: ClaimPush = %v, %v; want %v", name, got, err, c.want)
		}
	}
	// A claim lapses at until.
	ttl := func(key string) time.Duration {
		t.Helper()
		d, err := client.PTTL(ctx, "{"+prefix+"pc:"+key).Result()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	if d := ttl("c1}m1"); d <= 59*time.Minute || d > time.Hour {
		t.Fatalf("claim TTL %v, want about an hour", d)
	}
	// The owner renews its lease; another owner's attempt does not.
	later := time.Now().Add(2 * time.Hour)
	if st, err := a.ClaimPush(ctx, "c1", "m1", "node-b", later); err != nil || st != storage.ClaimTaken {
		t.Fatalf("other owner: %v, %v", st, err)
	}
	if d := ttl("c1}m1"); d > time.Hour {
		t.Fatalf("another owner's attempt moved the lease to %v", d)
	}
	if st, err := a.ClaimPush(ctx, "c1", "m1", "node-a", later); err != nil || st != storage.ClaimHeld {
		t.Fatalf("renewal: %v, %v", st, err)
	}
	if d := ttl("c1}m1"); d <= 119*time.Minute {
		t.Fatalf("renewed lease TTL %v, want about two hours", d)
	}
	// A lease that ran out (its owner died) goes to the next node.
	if _, err := client.Del(ctx, "{"+prefix+"pc:c2}m1").Result(); err != nil {
		t.Fatal(err)
	}
	if st, err := a.ClaimPush(ctx, "c2", "m1", "node-c", until); err != nil || st != storage.ClaimHeld {
		t.Fatalf("after the lease: %v, %v", st, err)
	}
	// Once finished, nobody claims it, not even its owner.
	if err := a.FinishPush(ctx, "c1", "m1", until); err != nil {
		t.Fatal(err)
	}
	for _, owner := range []string{"node-a", "node-b"} {
		if st, err := a.ClaimPush(ctx, "c1", "m1", owner, until); err != nil || st != storage.ClaimDone {
			t.Fatalf("%s after FinishPush: %v, %v", owner, st, err)
		}
	}
	if d := ttl("c1}m1"); d <= 59*time.Minute || d > time.Hour {
		t.Fatalf("finished claim TTL %v, want about an hour", d)
	}
}
