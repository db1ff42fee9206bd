package auth

import (
	"sync"
	"time"
)

// loginQueueWait bounds how long a login refused only because others from
// the same address (or for the same login) are still being checked waits
// for them on this node (Service.Login).
const loginQueueWait = 5 * time.Second

// flights counts the login attempts being checked on this node per
// brute-force key: from their Acquire (under Service.acquireLock, so that
// a refusal sees every attempt on this node that holds a slot) until they
// have released their slot or kept it as a failure. The limiters count an
// attempt as a failure until it succeeds, so that attempts in flight
// together stay within the limit; a class logging in at once behind its
// school's one address would get 429 for attempts beyond the limit that
// are merely concurrent. Such an attempt waits instead until one in
// flight ends, then asks again.
type flights struct {
	mu sync.Mutex
	m  map[string]*flight
}

type flight struct {
	n    int
	done chan struct{} // closed (and replaced) when one of the n ends
}

// start notes an attempt in flight for each key.
func (f *flights) start(keys ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		f.m = make(map[string]*flight)
	}
	for _, k := range keys {
		fl := f.m[k]
		if fl == nil {
			fl = &flight{done: make(chan struct{})}
			f.m[k] = fl
		}
		fl.n++
	}
}

// end notes that an attempt started for keys has ended, and wakes those
// waiting on them.
func (f *flights) end(keys ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, k := range keys {
		fl := f.m[k]
		close(fl.done)
		if fl.n--; fl.n == 0 {
			delete(f.m, k)
		} else {
			fl.done = make(chan struct{})
		}
	}
}

// ended returns a channel closed when an attempt in flight for key ends,
// or nil when none is.
func (f *flights) ended(key string) <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	if fl := f.m[key]; fl != nil {
		return fl.done
	}
	return nil
}
