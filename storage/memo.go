package storage

import "sync"

// memo keeps decoded records that are read far more often than written,
// keyed by id: conversations (a send reads its conversation every time, and
// a read transaction with its B+tree searches was a tenth of the server's
// CPU at saturation) and schools (a send between two students reads its
// school's switch). It is write-through: every write of such a record
// forgets its entry when the transaction commits, and the bbolt file is
// locked to this process. A read that missed stores what it read only if no
// record was written meanwhile (gen), so a slow reader cannot put back what
// a writer just replaced. After close it holds nothing, so reads go to
// bbolt, which reports the store closed.
type memo[V any] struct {
	max int

	mu     sync.RWMutex
	gen    uint64       // incremented by every forget
	m      map[string]V // the values are never changed
	closed bool
}

func newMemo[V any](max int) *memo[V] {
	return &memo[V]{max: max, m: make(map[string]V)}
}

// get returns the memo's value for id, whether it has one, and the
// generation to hand to put after a miss.
func (c *memo[V]) get(id string) (V, bool, uint64) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	v, ok := c.m[id]
	return v, ok, c.gen
}

// put stores v, read at generation gen, unless a write came in between.
// When full, it forgets an arbitrary entry.
func (c *memo[V]) put(id string, v V, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen || c.closed {
		return
	}
	if len(c.m) >= c.max {
		for k := range c.m {
			delete(c.m, k)
			break
		}
	}
	c.m[id] = v
}

func (c *memo[V]) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	delete(c.m, id)
}

func (c *memo[V]) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	clear(c.m)
}
