package storage_test

import (
	"testing"
	"time"

	"klassenfunk/internal/redistest"
	"klassenfunk/storage"
)

// Of several nodes sharing a Redis outbox, exactly one may send a push.
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
		want             bool
	}{
		"first claim":                {"c1", "m1", "node-a", true},
		"the same owner again":       {"c1", "m1", "node-a", true},
		"another owner":              {"c1", "m1", "node-b", false},
		"another message, same cred": {"c1", "m2", "node-b", true},
		"another cred, same message": {"c2", "m1", "node-b", true},
	}
	for _, name := range []string{"first claim", "the same owner again", "another owner", "another message, same cred", "another cred, same message"} {
		c := claims[name]
		got, err := a.ClaimPush(ctx, c.cred, c.msg, c.owner, until)
		if err != nil || got != c.want {
			t.Fatalf("%s: ClaimPush = %v, %v; want %v", name, got, err, c.want)
		}
	}
	// A claim lapses with the message: its key expires at until.
	ttl, err := client.PTTL(ctx, "{"+prefix+"pc:c1}m1").Result()
	if err != nil || ttl <= 59*time.Minute || ttl > time.Hour {
		t.Fatalf("claim TTL %v (%v), want about an hour", ttl, err)
	}
}
