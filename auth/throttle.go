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
	return t.blockedLocked(key, now)
}

// acquire is blocked and, when key may try, fail in one step: the attempt
// counts as a failure from the start, so that attempts in flight together
// cannot exceed the limit. A successful attempt is taken back with release.
func (t *throttle) acquire(key string, now time.Time) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	if wait := t.blockedLocked(key, now); wait > 0 {
		return wait
	}
	t.failLocked(key, now)
	return 0
}

// release takes back one failure of key recorded at at (by acquire).
func (t *throttle) release(key string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.failures[key]
	for i := len(f) - 1; i >= 0; i-- {
		if f[i].Equal(at) {
			f = append(f[:i], f[i+1:]...)
			break
		}
	}
	if len(f) == 0 {
		delete(t.failures, key)
	} else {
		t.failures[key] = f
	}
}

func (t *throttle) blockedLocked(key string, now time.Time) time.Duration {
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
	t.failLocked(key, now)
}

func (t *throttle) failLocked(key string, now time.Time) {
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
