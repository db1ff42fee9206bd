package auth

import (
	"context"
	"sync"
	"time"
)

// loginQueueWait bounds how long a login waits for its turn (gates), and
// for attempts being checked to end, before it is refused with 429.
const loginQueueWait = 5 * time.Second

// gates lets at most a key's limit of login attempts in at once on this
// node per brute-force key (a login, an address); the others wait their
// turn, in order. The limiters count an attempt as a failure until it
// succeeds, so that attempts in flight together stay within the limit: a
// class logging in at once behind its school's one address would get 429
// for every attempt beyond the limit, though none had failed. An attempt
// the limiter refuses while others of its keys are being checked waits
// for one of them to end and asks again (Service.acquireLogin); one
// refused while none is, is locked out by failures (or by attempts on
// other nodes).
type gates struct {
	mu sync.Mutex
	m  map[string]*gate
}

type gate struct {
	slots chan struct{} // one per attempt let in
	refs  int           // attempts holding or waiting for a slot; guarded by gates.mu

	mu       sync.Mutex    // held while an attempt asks the limiters
	checking int           // attempts that hold limiter tickets; guarded by mu
	ended    chan struct{} // closed (and replaced) when one of them ends; guarded by mu
}

// enter waits for one of the n slots of key's gate until expired fires or
// ctx ends. It returns the gate, or nil and ctx's error (nil when expired
// fired). Every enter is followed by one leave.
func (g *gates) enter(ctx context.Context, key string, n int, expired <-chan time.Time) (*gate, error) {
	g.mu.Lock()
	if g.m == nil {
		g.m = make(map[string]*gate)
	}
	gt := g.m[key]
	if gt == nil {
		gt = &gate{slots: make(chan struct{}, n), ended: make(chan struct{})}
		g.m[key] = gt
	}
	gt.refs++
	g.mu.Unlock()
	select {
	case gt.slots <- struct{}{}:
		return gt, nil
	case <-expired:
		return nil, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// leave gives back the slot enter got (held), and forgets the gate once
// nobody holds or waits for one of its slots.
func (g *gates) leave(key string, held bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	gt := g.m[key]
	if held {
		<-gt.slots
	}
	if gt.refs--; gt.refs == 0 {
		delete(g.m, key)
	}
}

// endCheck notes that an attempt that held limiter tickets has released
// them or kept them as a failure, and wakes those waiting for that.
func (gt *gate) endCheck() {
	gt.mu.Lock()
	defer gt.mu.Unlock()
	gt.checking--
	close(gt.ended)
	gt.ended = make(chan struct{})
}
