package auth

import (
	"context"
	"sync"
	"time"
)

// loginQueueWait bounds how long a login waits for its turn at the gates
// (Service.Login) before it is refused with 429.
const loginQueueWait = 5 * time.Second

// gates lets at most a key's limit of login attempts be checked at once
// on this node per brute-force key (a login, an address); the others wait
// their turn, in order. The limiters count an attempt as a failure until
// it succeeds, so that attempts in flight together stay within the limit:
// without the gates, a class logging in at once behind its school's one
// address would get 429 for every attempt beyond the limit, though none
// had failed. With them, an attempt the limiter refuses is one that
// failures (or attempts on other nodes) have locked out.
type gates struct {
	mu sync.Mutex
	m  map[string]*gate
}

type gate struct {
	slots chan struct{} // one per attempt being checked
	refs  int           // attempts holding or waiting for a slot
}

// enter waits for one of the n slots of key's gate until expired fires or
// ctx ends; it reports whether it got one. Every enter is followed by one
// leave.
func (g *gates) enter(ctx context.Context, key string, n int, expired <-chan time.Time) (bool, error) {
	g.mu.Lock()
	if g.m == nil {
		g.m = make(map[string]*gate)
	}
	gt := g.m[key]
	if gt == nil {
		gt = &gate{slots: make(chan struct{}, n)}
		g.m[key] = gt
	}
	gt.refs++
	g.mu.Unlock()
	select {
	case gt.slots <- struct{}{}:
		return true, nil
	case <-expired:
		return false, nil
	case <-ctx.Done():
		return false, ctx.Err()
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
