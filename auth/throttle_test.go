package auth

import (
	"testing"
	"time"
)

func TestThrottle(t *testing.T) {
	const window = 10 * time.Minute
	type op struct {
		kind string        // "fail", "blocked", "reset", "acquire", "release"
		key  string        // "a" unless set
		at   time.Duration // since the start
		want time.Duration // for "blocked"
	}
	fail := func(at time.Duration) op { return op{kind: "fail", at: at} }
	blocked := func(at, want time.Duration) op { return op{kind: "blocked", at: at, want: want} }
	acquire := func(at, want time.Duration) op { return op{kind: "acquire", at: at, want: want} }
	release := func(at time.Duration) op { return op{kind: "release", at: at} }
	tests := map[string]struct {
		limit int
		ops   []op
	}{
		"no failures": {3, []op{blocked(0, 0)}},
		"under the limit": {3, []op{
			fail(0), fail(time.Minute), blocked(time.Minute, 0),
		}},
		"at the limit": {3, []op{
			fail(0), fail(time.Minute), fail(2 * time.Minute),
			blocked(2*time.Minute, 8*time.Minute),
			blocked(9*time.Minute+59*time.Second, time.Second),
			blocked(window, 0), // the first failure left the window
		}},
		"limit one": {1, []op{
			fail(time.Minute), blocked(time.Minute, window), blocked(time.Minute+window, 0),
		}},
		"sliding": {2, []op{
			fail(0), fail(4 * time.Minute), blocked(4*time.Minute, 6*time.Minute),
			blocked(window, 0), fail(window), // now failures at 4m and 10m
			blocked(window, 4*time.Minute),
			blocked(window+4*time.Minute, 0),
		}},
		"over the limit waits for the right failure": {2, []op{
			// Failures recorded while locked (the service does not record
			// them, but the throttle must cope): 0, 1m, 2m, 3m.
			fail(0), fail(time.Minute), fail(2 * time.Minute), fail(3 * time.Minute),
			// Back under the limit when the 2nd-newest (2m) has left.
			blocked(3*time.Minute, 9*time.Minute),
			blocked(window+2*time.Minute, 0),
		}},
		"keys are independent": {2, []op{
			fail(0), fail(0), blocked(0, window),
			{kind: "blocked", key: "b", want: 0},
			{kind: "fail", key: "b"},
			{kind: "blocked", key: "b", want: 0},
			blocked(0, window),
		}},
		"reset": {2, []op{
			fail(0), fail(0), blocked(0, window),
			{kind: "fail", key: "b"}, {kind: "fail", key: "b"},
			{kind: "reset"},
			blocked(0, 0),
			{kind: "blocked", key: "b", want: window},  // not reset
			fail(time.Minute), blocked(time.Minute, 0), // counting starts anew
			fail(time.Minute), blocked(time.Minute, window),
		}},
		"reset of an unknown key": {2, []op{{kind: "reset", key: "zz"}, blocked(0, 0)}},
		"acquire counts the attempt": {2, []op{
			acquire(0, 0), acquire(0, 0), acquire(0, window), blocked(0, window),
		}},
		"acquire while blocked records nothing": {1, []op{
			acquire(0, 0), acquire(time.Minute, 9*time.Minute), acquire(5*time.Minute, 5*time.Minute),
			acquire(window, 0), // would still wait if the refused ones had counted
		}},
		"release takes back one attempt": {2, []op{
			acquire(0, 0), acquire(time.Minute, 0),
			release(time.Minute), blocked(time.Minute, 0),
			acquire(time.Minute, 0), blocked(time.Minute, 9*time.Minute),
		}},
		"release of equal times takes one": {2, []op{
			acquire(0, 0), acquire(0, 0), release(0), blocked(0, 0), release(0), release(0),
			fail(0), fail(0), blocked(0, window),
		}},
		"release of an unknown time": {1, []op{
			acquire(0, 0), release(time.Second), blocked(time.Second, window-time.Second),
			{kind: "release", key: "zz"}, blocked(time.Second, window-time.Second),
		}},
		"old failures at the exact window edge": {1, []op{
			fail(0), blocked(window-time.Nanosecond, time.Nanosecond), blocked(window, 0),
		}},
	}
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			th := newThrottle(tc.limit, window)
			for i, o := range tc.ops {
				key := o.key
				if key == "" {
					key = "a"
				}
				now := start.Add(o.at)
				switch o.kind {
				case "fail":
					th.fail(key, now)
				case "reset":
					th.reset(key)
				case "acquire":
					if got := th.acquire(key, now); got != o.want {
						t.Fatalf("op %d: acquire(%s, +%v) = %v, want %v", i, key, o.at, got, o.want)
					}
				case "release":
					th.release(key, now)
				case "blocked":
					if got := th.blocked(key, now); got != o.want {
						t.Fatalf("op %d: blocked(%s, +%v) = %v, want %v", i, key, o.at, got, o.want)
					}
				default:
					t.Fatalf("op %d: unknown kind %q", i, o.kind)
				}
			}
		})
	}
}

// TestThrottleMemory checks that the failures kept per key are bounded and
// that keys whose failures all left the window are forgotten.
func TestThrottleMemory(t *testing.T) {
	const window = time.Minute
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := map[string]struct {
		limit     int
		fails     int // failures of key "a", one per millisecond
		thenAt    time.Duration
		thenKey   string
		wantKeys  int
		wantA     int
		wantBlock time.Duration
	}{
		"bounded per key": {limit: 3, fails: 1000, thenAt: time.Second, thenKey: "a",
			wantKeys: 1, wantA: 4 * 3, wantBlock: window - 2*time.Millisecond}, // newest: 989ms…1000ms; the 3rd-newest is 998ms
		"stale keys collected": {limit: 3, fails: 5, thenAt: 2 * window, thenKey: "b",
			wantKeys: 1, wantA: 0, wantBlock: 0},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			th := newThrottle(tc.limit, window)
			for i := range tc.fails {
				th.fail("a", start.Add(time.Duration(i)*time.Millisecond))
			}
			th.fail(tc.thenKey, start.Add(tc.thenAt))
			th.mu.Lock()
			keys, a := len(th.failures), len(th.failures["a"])
			th.mu.Unlock()
			if keys != tc.wantKeys || a > tc.wantA || (tc.wantA == 0 && a != 0) {
				t.Fatalf("%d keys, %d failures of a; want %d keys, at most %d of a", keys, a, tc.wantKeys, tc.wantA)
			}
			if got := th.blocked("a", start.Add(tc.thenAt)); got != tc.wantBlock {
				t.Fatalf("blocked(a) = %v, want %v", got, tc.wantBlock)
			}
		})
	}
}
