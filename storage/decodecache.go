package storage

import (
	"bytes"
	"slices"
	"sync"
)

// decodeCache remembers the decoded form of hot records (credentials by
// token hash, users by id) together with the stored bytes they came from.
// A read still fetches the record from the store; only when its bytes
// equal the remembered ones is the JSON decode skipped. So the cache can
// never return a stale record: any change to the record changes its
// bytes. It holds at most max entries and forgets an arbitrary one when
// full.
type decodeCache[T any] struct {
	max int

	mu      sync.RWMutex
	entries map[string]*cached[T] // guarded by mu
}

type cached[T any] struct {
	raw []byte
	val T
}

func newDecodeCache[T any](max int) *decodeCache[T] {
	return &decodeCache[T]{max: max, entries: make(map[string]*cached[T])}
}

// get returns the value decoded from raw, decoding (and remembering) it
// only when key's remembered bytes differ. clone copies the shared parts
// of a value, so callers may change what they get.
func (c *decodeCache[T]) get(key, raw []byte, decode func([]byte) (T, error), clone func(T) T) (T, error) {
	c.mu.RLock()
	e := c.entries[string(key)]
	c.mu.RUnlock()
	if e != nil && bytes.Equal(e.raw, raw) {
		return clone(e.val), nil
	}
	v, err := decode(raw)
	if err != nil {
		return v, err
	}
	c.mu.Lock()
	if len(c.entries) >= c.max {
		for k := range c.entries {
			delete(c.entries, k)
			break
		}
	}
	// raw belongs to the transaction: keep a copy.
	c.entries[string(key)] = &cached[T]{raw: bytes.Clone(raw), val: clone(v)}
	c.mu.Unlock()
	return v, nil
}

func cloneCredential(c Credential) Credential {
	if c.Push != nil {
		p := *c.Push
		p.Secret = slices.Clone(p.Secret)
		c.Push = &p
	}
	return c
}

func cloneUser(u User) User {
	if u.Countries != nil {
		u.Countries = slices.Clone(u.Countries)
	}
	return u
}

func cloneConversation(c Conversation) Conversation {
	c.Members = slices.Clone(c.Members)
	return c
}
