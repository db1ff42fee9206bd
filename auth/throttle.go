package auth

import (
	"sync"
	"time"
)

// throttle counts failures per key in a sliding window. It is safe for
// concurrent use.
type throttle struct {
	limit  int
	window time.Duration

	mu       sync.Mutex
	failures map[string][]time.Time // guarded by mu; oldest first
	lastGC   time.Time              // guarded by mu
}

func newThrottle(limit int, window time.Duration) *throttle {
	return &throttle{limit: limit, window: window, failures: make(map[string][]time.Time)}
}

// blocked returns how long key must wait, or 0 when it may try.
func (t *throttle) blocked(key string, now time.Time) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.prune(key, now)
	if len(f) < t.limit {
		return 0
	}
	// The attempt that brings the count back under the limit is allowed
	// when the oldest failure that keeps it over leaves the window.
	return f[len(f)-t.limit].Add(t.window).Sub(now)
}

// fail records one failure of key.
func (t *throttle) fail(key string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.prune(key, now)
	if len(f) >= 4*t.limit { // bounded memory per key
		f = f[1:]
	}
	t.failures[key] = append(f, now)
	if now.Sub(t.lastGC) > t.window {
		t.lastGC = now
		for k := range t.failures {
			t.prune(k, now)
		}
	}
}

// reset forgets key's failures (after a successful login).
func (t *throttle) reset(key string) {
	t.mu.Lock()
	delete(t.failures, key)
	t.mu.Unlock()
}

// prune drops failures outside the window. Called with mu held.
func (t *throttle) prune(key string, now time.Time) []time.Time {
	f := t.failures[key]
	i := 0
	for i < len(f) && now.Sub(f[i]) >= t.window {
		i++
	}
	if i == len(f) {
		delete(t.failures, key)
		return nil
	}
	if i > 0 {
		f = append(f[:0], f[i:]...)
		t.failures[key] = f
	}
	return f
}
