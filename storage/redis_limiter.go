package storage

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Brute-force counters shared by the nodes of a cluster (auth.Limiter):
//
//	{P b:<name>:<hex SHA-256 of the key>} zset  ticket, score = ms(attempt)
//
// The key (a login, a client address) is hashed so that Redis does not
// hold client addresses in clear. That is pseudonymous, not anonymous (the
// IPv4 space can be enumerated); the set expires one window after its
// newest failure.

// RedisLimiter counts failures per key in a sliding window in Redis: limit
// failures within window lock a key. It satisfies auth.Limiter, with the
// semantics of the in-memory one at millisecond resolution. The caller's
// clock (now) is used, not Redis's, so the nodes' clocks should agree.
type RedisLimiter struct {
	r      *Redis
	name   string
	limit  int
	window time.Duration
}

// Limiter returns the brute-force counter named name (e.g. "login").
func (r *Redis) Limiter(name string, limit int, window time.Duration) *RedisLimiter {
	return &RedisLimiter{r: r, name: name, limit: limit, window: window}
}

func (l *RedisLimiter) key(k string) string {
	sum := sha256.Sum256([]byte(k))
	return "{" + l.r.p + "b:" + l.name + ":" + hex.EncodeToString(sum[:]) + "}"
}

// scriptLimiterAcquire: KEYS[1] the counter; ARGV now (ms), window (ms),
// limit, ticket. Drops failures that left the window; if limit remain,
// returns the ms until the oldest of the last limit leaves it; else adds
// the ticket and returns 0.
var scriptLimiterAcquire = redis.NewScript(`
local now, window, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local n = redis.call('ZCARD', KEYS[1])
if n >= limit then
  local s = redis.call('ZRANGE', KEYS[1], n - limit, n - limit, 'WITHSCORES')
  return tonumber(s[2]) + window - now
end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('PEXPIRE', KEYS[1], window)
return 0
`)

// Acquire returns how long key must wait, or 0 and a ticket after counting
// the attempt as a failure.
func (l *RedisLimiter) Acquire(ctx context.Context, key string, now time.Time) (time.Duration, string, error) {
	if err := l.r.check(ctx); err != nil {
		return 0, "", err
	}
	ms := now.UnixMilli()
	ticket := strconv.FormatInt(ms, 10) + ":" + rand.Text()
	wait, err := scriptLimiterAcquire.Run(ctx, l.r.c, []string{l.key(key)}, ms, l.window.Milliseconds(), l.limit, ticket).Int64()
	if err != nil {
		return 0, "", fmt.Errorf("storage: redis limiter %s: %w", l.name, err)
	}
	if wait > 0 {
		return time.Duration(wait) * time.Millisecond, "", nil
	}
	return 0, ticket, nil
}

// Release takes back the failure counted with ticket.
func (l *RedisLimiter) Release(ctx context.Context, key, ticket string) error {
	if err := l.r.check(ctx); err != nil {
		return err
	}
	if err := l.r.c.ZRem(ctx, l.key(key), ticket).Err(); err != nil {
		return fmt.Errorf("storage: redis limiter %s: %w", l.name, err)
	}
	return nil
}

// Reset forgets every failure of key.
func (l *RedisLimiter) Reset(ctx context.Context, key string) error {
	if err := l.r.check(ctx); err != nil {
		return err
	}
	if err := l.r.c.Del(ctx, l.key(key)).Err(); err != nil {
		return fmt.Errorf("storage: redis limiter %s: %w", l.name, err)
	}
	return nil
}
