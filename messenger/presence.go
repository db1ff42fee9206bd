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
// and removes them on disconnect and on Close.
//
// A node that dies without closing (kill -9, power loss) cannot remove its
// entries, and the devices would count as online, and get no push, until
// they lapse. So every node also says once a second that it is alive, in
// one hash of all nodes, and reads the others' from it: an entry of a node
// that has been silent for nodeTTL no longer counts, and its devices get
// pushes again within a few seconds, not TTL. Liveness is kept in Redis's
// clock, so the nodes' clocks need not agree.
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

	livenessMu sync.RWMutex
	deadline   map[string]time.Time // guarded by livenessMu: each node's liveness deadline, on this node's clock
	readAt     time.Time            // guarded by livenessMu: when deadline was read; zero: never
}

// Node liveness (RedisPresence).
const (
	nodeBeat   = time.Second     // how often a node says it is alive and reads the others
	nodeTTL    = 4 * time.Second // a node silent for this long counts as dead
	nodeForget = time.Hour       // a dead node's liveness field is removed after this
)

// scriptBeat marks node ARGV[1] alive for ARGV[2] ms in the hash KEYS[1]
// (node → unix-ms deadline, in Redis's clock) and returns Redis's time
// (unix ms) and the hash.
var scriptBeat = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], now + tonumber(ARGV[2]))
return {now, redis.call('HGETALL', KEYS[1])}
`)

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
	p.wg.Add(2)
	go p.loop()
	go p.beatLoop()
	return p
}

// nodesKey is the hash of every node's liveness deadline.
func (p *RedisPresence) nodesKey() string { return p.prefix + "nodes" }

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
	now := time.Now()
	for f, v := range fields {
		dev, node, ok := strings.Cut(f, "\x00")
		if !ok || dev != deviceID {
			continue
		}
		if until, err := strconv.ParseInt(v, 10, 64); err == nil && until > now.UnixMilli() && p.alive(node, now) {
			return true, nil
		}
	}
	return false, nil
}

// alive reports whether node's entries count: it is this node, or it has
// said it is alive within nodeTTL, or nothing is known against it (a node
// that started after the last read; liveness unread for a while).
func (p *RedisPresence) alive(node string, now time.Time) bool {
	if node == p.node {
		return true
	}
	p.livenessMu.RLock()
	defer p.livenessMu.RUnlock()
	if p.readAt.IsZero() || now.Sub(p.readAt) > nodeTTL {
		return true // unknown: the entry's own time decides
	}
	dl, known := p.deadline[node]
	return !known || now.Before(dl)
}

// beatLoop says every nodeBeat that this node is alive, and reads the
// others' liveness.
func (p *RedisPresence) beatLoop() {
	defer p.wg.Done()
	t := time.NewTicker(nodeBeat)
	defer t.Stop()
	for {
		p.beat()
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
	}
}

// beat marks this node alive and reads every node's liveness deadline,
// converted to this node's clock.
func (p *RedisPresence) beat() {
	ctx, cancel := context.WithTimeout(context.Background(), nodeBeat)
	defer cancel()
	sent := time.Now()
	res, err := scriptBeat.Run(ctx, p.client, []string{p.nodesKey()}, p.node, nodeTTL.Milliseconds()).Slice()
	if err != nil || len(res) != 2 {
		p.log.Debug("presence: liveness", "err", err)
		return
	}
	redisNow, _ := res[0].(int64)
	kv, _ := res[1].([]any)
	// Redis's clock read at about the midpoint of the round trip.
	local := sent.Add(time.Since(sent) / 2)
	deadline := make(map[string]time.Time, len(kv)/2)
	var forget []string
	for i := 0; i+1 < len(kv); i += 2 {
		node, _ := kv[i].(string)
		v, _ := kv[i+1].(string)
		until, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			continue
		}
		if redisNow-until > nodeForget.Milliseconds() {
			forget = append(forget, node)
			continue
		}
		deadline[node] = local.Add(time.Duration(until-redisNow) * time.Millisecond)
	}
	if len(forget) > 0 {
		p.client.HDel(ctx, p.nodesKey(), forget...)
	}
	p.livenessMu.Lock()
	p.deadline, p.readAt = deadline, local
	p.livenessMu.Unlock()
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
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		// Dead from now on (not unknown): should removing an entry above
		// have failed, the entry no longer counts either.
		if err := scriptBeat.Run(ctx, p.client, []string{p.nodesKey()}, p.node, 0).Err(); err != nil {
			p.log.Warn("presence: mark this node gone", "err", err)
		}
	})
}
