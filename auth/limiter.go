package auth

import (
	"context"
	"strconv"
	"time"
)

// Limiter counts failed attempts per key (a login, a client address) in a
// sliding window: the brute-force lock. An attempt counts as a failure from
// the start (Acquire), so that attempts in flight together cannot exceed
// the limit; a successful one is taken back (Release) or clears the key
// (Reset).
//
// One node keeps the counts in memory (the default); nodes of a cluster
// share them through Redis (Config.NewLimiter), so that a lock holds on
// every node and N nodes do not allow N times the attempts.
type Limiter interface {
	// Acquire returns how long key must wait (and counts nothing), or 0
	// and a ticket for Release after counting the attempt as a failure.
	Acquire(ctx context.Context, key string, now time.Time) (wait time.Duration, ticket string, err error)
	// Release takes back the failure that Acquire counted with ticket.
	Release(ctx context.Context, key, ticket string) error
	// Reset forgets every failure of key.
	Reset(ctx context.Context, key string) error
}

// NewMemoryLimiter returns a Limiter that keeps its counts in this
// process: limit failures within window lock a key.
func NewMemoryLimiter(limit int, window time.Duration) Limiter {
	return memoryLimiter{newThrottle(limit, window)}
}

// memoryLimiter adapts throttle to Limiter; its ticket is the attempt's
// time in nanoseconds.
type memoryLimiter struct{ t *throttle }

func (m memoryLimiter) Acquire(_ context.Context, key string, now time.Time) (time.Duration, string, error) {
	if wait := m.t.acquire(key, now); wait > 0 {
		return wait, "", nil
	}
	return 0, strconv.FormatInt(now.UnixNano(), 10), nil
}

func (m memoryLimiter) Release(_ context.Context, key, ticket string) error {
	ns, err := strconv.ParseInt(ticket, 10, 64)
	if err != nil {
		return err
	}
	m.t.release(key, time.Unix(0, ns))
	return nil
}

func (m memoryLimiter) Reset(_ context.Context, key string) error {
	m.t.reset(key)
	return nil
}
