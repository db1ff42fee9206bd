package storage_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"klassenfunk/storage"
)

// testLimiter checks the brute-force counter's sliding window, release and
// reset against a real Redis, and (with a single-node client) that Redis
// holds the counted key only hashed.
func testLimiter(t *testing.T, r *storage.Redis, client redis.UniversalClient) {
	ctx := context.Background()
	const window = 10 * time.Minute
	const addr = "203.0.113.77"
	l := r.Limiter("addr", 2, window)
	t0 := time.Date(2026, 9, 1, 8, 0, 0, 0, time.UTC)
	acquire := func(l *storage.RedisLimiter, at time.Duration, want time.Duration) string {
		t.Helper()
		wait, ticket, err := l.Acquire(ctx, addr, t0.Add(at))
		if err != nil {
			t.Fatal(err)
		}
		if wait != want || (wait == 0) != (ticket != "") {
			t.Fatalf("at +%v: wait %v ticket %q, want wait %v", at, wait, ticket, want)
		}
		return ticket
	}
	first := acquire(l, 0, 0)
	acquire(l, time.Minute, 0)
	// Locked until the first failure leaves the window.
	acquire(l, 2*time.Minute, 8*time.Minute)
	// A released failure frees its place.
	if err := l.Release(ctx, addr, first); err != nil {
		t.Fatal(err)
	}
	acquire(l, 2*time.Minute, 0)
	acquire(l, 3*time.Minute, 8*time.Minute) // failures at +1 and +2 remain
	acquire(l, 11*time.Minute-time.Millisecond, time.Millisecond)
	acquire(l, 11*time.Minute, 0)           // +1 has left the window
	acquire(l, 11*time.Minute, time.Minute) // +2 and +11 remain
	// Reset forgets everything; another counter is separate.
	if err := l.Reset(ctx, addr); err != nil {
		t.Fatal(err)
	}
	acquire(l, 11*time.Minute, 0)
	acquire(l, 11*time.Minute, 0)
	acquire(r.Limiter("login", 2, window), 11*time.Minute, 0)

	single, ok := client.(*redis.Client)
	if !ok {
		return
	}
	keys, err := single.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	counters := 0
	for _, k := range keys {
		if strings.Contains(k, addr) {
			t.Fatalf("Redis key %q holds the address in clear", k)
		}
		if !strings.Contains(k, "b:addr:") {
			continue
		}
		counters++
		if ttl := single.PTTL(ctx, k).Val(); ttl <= 0 || ttl > window {
			t.Fatalf("counter %q expires in %v, want within the window", k, ttl)
		}
		members := single.ZRange(ctx, k, 0, -1).Val()
		if len(members) != 2 {
			t.Fatalf("counter %q holds %d failures, want 2", k, len(members))
		}
		for _, m := range members {
			if strings.Contains(m, addr) {
				t.Fatalf("counter member %q holds the address", m)
			}
		}
	}
	if counters != 1 {
		t.Fatalf("%d addr counters in Redis, want 1 (keys %q)", counters, keys)
	}
}
