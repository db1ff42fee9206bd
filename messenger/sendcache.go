package messenger

import (
	"sync"
	"time"

	"klassenfunk/storage"
)

// The send path of a node whose store is Redis would read two records for
// every message before its append: the conversation (members and rights)
// and, for a student, the school's student_direct switch. Each read is a
// round trip, and together they were half of what a send cost the node
// (docs/performance.md). These caches spare them.
//
// A cached conversation is safe because the store's append checks it: the
// node passes the conversation's revision along (storage.RevAppender), and
// the append refuses atomically when the record has changed since. Only
// permissions are taken from the cache, never a refusal: a send that a
// cached copy would refuse is judged again against a fresh read.
//
// The school switch is read at most once per SchoolSwitchTTL per school:
// switching student_direct off takes effect on every node within that time.
// A refusal is again judged against a fresh read, so switching it on takes
// effect at once.

// convCache holds conversations for the send path, bounded by the number
// of conversations and of their members; when full it forgets an
// arbitrary one.
type convCache struct {
	mu      sync.RWMutex
	m       map[string]storage.Conversation
	members int
}

const (
	convCacheSize    = 1 << 14
	convCacheMembers = 1 << 18
)

func (cc *convCache) get(id string) (storage.Conversation, bool) {
	cc.mu.RLock()
	defer cc.mu.RUnlock()
	c, ok := cc.m[id]
	return c, ok
}

// put stores c, which the caller does not change afterwards (its members
// are shared with every later get).
func (cc *convCache) put(c storage.Conversation) {
	if c.Rev == "" || len(c.Members) > convCacheMembers/16 {
		return
	}
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.m == nil {
		cc.m = make(map[string]storage.Conversation)
	}
	cc.dropLocked(c.ID)
	for len(cc.m) > 0 && (len(cc.m) >= convCacheSize || cc.members+len(c.Members) > convCacheMembers) {
		for k := range cc.m {
			cc.dropLocked(k)
			break
		}
	}
	cc.m[c.ID] = c
	cc.members += len(c.Members)
}

func (cc *convCache) drop(id string) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.dropLocked(id)
}

func (cc *convCache) dropLocked(id string) {
	if old, ok := cc.m[id]; ok {
		cc.members -= len(old.Members)
		delete(cc.m, id)
	}
}

// schoolSwitches remembers, per school, whether student_direct is on and
// when that was read.
type schoolSwitches struct {
	mu sync.Mutex
	m  map[string]schoolSwitch
}

type schoolSwitch struct {
	on   bool
	read time.Time
}

// get returns the switch of school when it was read less than ttl before
// now.
func (s *schoolSwitches) get(school string, now time.Time, ttl time.Duration) (on, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sw, ok := s.m[school]
	if !ok || now.Sub(sw.read) >= ttl || now.Before(sw.read) {
		return false, false
	}
	return sw.on, true
}

func (s *schoolSwitches) put(school string, on bool, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = make(map[string]schoolSwitch)
	}
	if len(s.m) >= pairMemoSize {
		clear(s.m)
	}
	s.m[school] = schoolSwitch{on: on, read: now}
}
