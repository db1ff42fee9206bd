package storage

import (
	"errors"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// groupCommit runs small write functions from many goroutines in shared
// transactions, one fsync each. Unlike bbolt's Batch it never waits for
// company: when no commit is running, a call commits at once; calls that
// arrive during a commit join the next one. Under load the batches grow by
// themselves, and a lone writer pays one commit, not a timer.
//
// As with Batch, a function may run more than once (when another function
// of its transaction fails, the others are retried without it), so it must
// keep all its effects inside the transaction and reset its results.
type groupCommit struct {
	db      *bolt.DB
	maxSize int

	mu      sync.Mutex
	pending []*gcCall // guarded by mu
	running bool      // guarded by mu: a committer goroutine runs
}

type gcCall struct {
	fn   func(*bolt.Tx) error
	done chan error
}

func (g *groupCommit) do(fn func(*bolt.Tx) error) error {
	c := &gcCall{fn: fn, done: make(chan error, 1)}
	g.mu.Lock()
	g.pending = append(g.pending, c)
	if !g.running {
		g.running = true
		go g.commitLoop()
	}
	g.mu.Unlock()
	return <-c.done
}

// commitLoop commits what is pending until nothing is.
func (g *groupCommit) commitLoop() {
	for {
		g.mu.Lock()
		calls := g.pending
		if len(calls) > g.maxSize {
			calls, g.pending = calls[:g.maxSize], calls[g.maxSize:]
		} else {
			g.pending = nil
		}
		if len(calls) == 0 {
			g.running = false
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()
		g.commit(calls)
	}
}

// errCallFailed marks which call of a transaction failed.
type errCallFailed struct {
	index int
	err   error
}

func (e *errCallFailed) Error() string { return e.err.Error() }

// commit runs calls in one transaction. A call whose function fails gets
// its error and the rest are committed again without it.
func (g *groupCommit) commit(calls []*gcCall) {
	for len(calls) > 0 {
		err := g.db.Update(func(tx *bolt.Tx) error {
			for i, c := range calls {
				if err := c.fn(tx); err != nil {
					return &errCallFailed{index: i, err: err}
				}
			}
			return nil
		})
		var failed *errCallFailed
		if errors.As(err, &failed) {
			calls[failed.index].done <- failed.err
			calls = append(calls[:failed.index:failed.index], calls[failed.index+1:]...)
			continue
		}
		for _, c := range calls {
			c.done <- err // nil, or a commit failure every call shares
		}
		return
	}
}
