package messenger

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Presence shares which devices have an open socket across nodes. The
// node's own sockets are known to its hub; a Presence adds the others'.
type Presence interface {
	// Connected and Disconnected report a socket of this node opening and
	// closing. They must not block.
	Connected(userID, deviceID string)
	Disconnected(userID, deviceID string)
	// Online reports whether the device has a socket on any node.
	Online(ctx context.Context, userID, deviceID string) (bool, error)
}

// RedisPresence keeps presence in Redis: one hash per user (hash-tagged by
// user), one field per device and node, whose value is the unix-ms time
// until which the entry holds. Each node refreshes its entries every TTL/3
// and removes them on disconnect and on Close; a node that dies leaves
// entries that lapse after TTL.
type RedisPresence struct {
	client redis.UniversalClient
	prefix string
	node   string
	ttl    time.Duration
	log    *slog.Logger

	mu    sync.Mutex
	local map[[2]string]int  // guarded by mu: open sockets per (user, device) on this node
	dirty map[[2]string]bool // guarded by mu: true = write, false = delete
	kick  chan struct{}
	stop  chan struct{}
	wg    sync.WaitGroup
	once  sync.Once
}

var _ Presence = (*RedisPresence)(nil)

// NewRedisPresence returns a presence over client for node nodeID. ttl
// zero means 30s. Close removes this node's entries.
func NewRedisPresence(client redis.UniversalClient, prefix, nodeID string, ttl time.Duration, log *slog.Logger) *RedisPresence {
	if prefix == "" {
		prefix = "kf:"
	}
	if ttl == 0 {
		ttl = 30 * time.Second
	}
	if log == nil {
		log = slog.Default()
	}
	p := &RedisPresence{
		client: client, prefix: prefix, node: nodeID, ttl: ttl, log: log,
		local: make(map[[2]string]int), dirty: make(map[[2]string]bool),
		kick: make(chan struct{}, 1), stop: make(chan struct{}),
	}
	p.wg.Add(1)
	go p.loop()
	return p
}

func (p *RedisPresence) key(userID string) string { return p.prefix + "{p:" + userID + "}" }

func (p *RedisPresence) field(deviceID string) string { return deviceID + "\x00" + p.node }

// Connected implements Presence.
func (p *RedisPresence) Connected(userID, deviceID string) {
	k := [2]string{userID, deviceID}
	p.mu.Lock()
	p.local[k]++
	if p.local[k] == 1 {
		p.dirty[k] = true
	}
	p.mu.Unlock()
	p.signal()
}

// Disconnected implements Presence.
func (p *RedisPresence) Disconnected(userID, deviceID string) {
	k := [2]string{userID, deviceID}
	p.mu.Lock()
	if p.local[k]--; p.local[k] <= 0 {
		delete(p.local, k)
		p.dirty[k] = false
	}
	p.mu.Unlock()
	p.signal()
}

func (p *RedisPresence) signal() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Online implements Presence.
func (p *RedisPresence) Online(ctx context.Context, userID, deviceID string) (bool, error) {
	fields, err := p.client.HGetAll(ctx, p.key(userID)).Result()
	if err != nil {
		return false, err
	}
	now := time.Now().UnixMilli()
	for f, v := range fields {
		dev, _, ok := strings.Cut(f, "\x00")
		if !ok || dev != deviceID {
			continue
		}
		if until, err := strconv.ParseInt(v, 10, 64); err == nil && until > now {
			return true, nil
		}
	}
	return false, nil
}

// loop writes changes at once and refreshes every entry every TTL/3.
func (p *RedisPresence) loop() {
	defer p.wg.Done()
	t := time.NewTicker(p.ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-p.kick:
			p.flush(false)
		case <-t.C:
			p.flush(true)
		}
	}
}

// flush writes the dirty entries, or (all) every local entry.
func (p *RedisPresence) flush(all bool) {
	p.mu.Lock()
	changes := p.dirty
	p.dirty = make(map[[2]string]bool)
	if all {
		for k := range p.local {
			changes[k] = true
		}
	}
	p.mu.Unlock()
	if len(changes) == 0 {
		return
	}
	until := strconv.FormatInt(time.Now().Add(p.ttl).UnixMilli(), 10)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := p.client.Pipelined(ctx, func(pl redis.Pipeliner) error {
		for k, present := range changes {
			key := p.key(k[0])
			if present {
				pl.HSet(ctx, key, p.field(k[1]), until)
				pl.PExpire(ctx, key, 2*p.ttl)
			} else {
				pl.HDel(ctx, key, p.field(k[1]))
			}
		}
		return nil
	})
	if err != nil {
		p.log.Warn("presence: write", "err", err)
		p.mu.Lock() // try again next round
		for k, v := range changes {
			if _, newer := p.dirty[k]; !newer {
				p.dirty[k] = v
			}
		}
		p.mu.Unlock()
	}
}

// Close removes this node's entries and stops. Safe to call twice.
func (p *RedisPresence) Close() {
	p.once.Do(func() {
		close(p.stop)
		p.wg.Wait()
		p.mu.Lock()
		for k := range p.local {
			p.dirty[k] = false
		}
		p.local = map[[2]string]int{}
		p.mu.Unlock()
		p.flush(false)
	})
}
