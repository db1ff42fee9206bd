package messenger

import (
	"context"
	"hash/maphash"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"klassenfunk/proto"
)

const numHubShards = 64

// Hub is the registry of this node's connections, sharded by user. It
// receives broker events and hands them to the right connections without
// blocking.
type Hub struct {
	broker   Broker
	presence Presence // nil in the embedded deployment
	log      *slog.Logger
	metrics  *metrics
	seed     maphash.Seed
	shards   [numHubShards]hubShard

	// The most open sockets of one device and of one user (replaceOldest),
	// once the node holds capsFrom sockets; from crowdedFrom on, one of a
	// device.
	maxPerDevice, maxPerUser, capsFrom, crowdedFrom int
	open                                            atomic.Int64 // registered sockets

	active sync.WaitGroup // one per registered connection
	// draining ends when the drain starts (drain calls startDrain).
	draining   context.Context
	startDrain context.CancelFunc
}

type hubShard struct {
	mu    sync.RWMutex
	users map[string][]*conn // guarded by mu; a user's few sockets (a slice: no map to iterate per delivery)
}

func newHub(b Broker, p Presence, log *slog.Logger, m *metrics) *Hub {
	h := &Hub{broker: b, presence: p, log: log, metrics: m, seed: maphash.MakeSeed()}
	h.draining, h.startDrain = context.WithCancel(context.Background())
	for i := range h.shards {
		h.shards[i].users = make(map[string][]*conn)
	}
	b.SetDeliver(h.deliver)
	return h
}

func (h *Hub) shard(userID string) *hubShard {
	return &h.shards[maphash.String(h.seed, userID)%numHubShards]
}

// add registers c. The user's first connection on this node subscribes
// to the user's events. Subscribing happens under the shard lock so that a
// concurrent last-leave cannot unsubscribe after it.
func (h *Hub) add(c *conn) error {
	s := h.shard(c.userID)
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-h.draining.Done():
		return errDraining
	default:
	}
	conns := s.users[c.userID]
	if open := h.open.Load(); open >= int64(h.capsFrom) {
		h.replaceOldest(conns, c.deviceKey, open >= int64(h.crowdedFrom))
	}
	if len(conns) == 0 {
		if err := h.broker.Subscribe(c.userID); err != nil {
			return err
		}
	}
	s.users[c.userID] = append(conns, c)
	h.active.Add(1)
	h.open.Add(1)
	h.metrics.connections.Inc()
	if h.presence != nil {
		h.presence.Connected(c.userID, c.deviceID)
		c.present.Store(true)
	}
	return nil
}

// replaceOldest makes room for one more socket of device among a user's
// open sockets conns (oldest first): the device's oldest are closed with
// 4409 until it has fewer than maxPerDevice open, then the user's oldest
// until the user has fewer than maxPerUser. A device that reconnects keeps working
// (the newest socket is the one in use; older ones are mostly dead
// connections not yet noticed), and one account cannot take the last of
// a node's file descriptors. It applies only once the node holds
// capsFrom sockets (add): below that, many sockets on one credential
// (a test rig, a load tool) take nothing from anyone.
//
// On a crowded node (crowdedFrom sockets) the device's every other socket
// is closed: after a network blip every device reconnects while the node
// has not yet noticed that the old sockets are dead (that takes a ping
// interval and its answer's wait), and twice the sockets would take the
// node's last file descriptors, which HTTP requests need too. Called with
// the user's shard locked.
func (h *Hub) replaceOldest(conns []*conn, device string, crowded bool) {
	ofDevice, open := 0, 0
	for _, o := range conns {
		if o.closing() {
			continue
		}
		if crowded && o.deviceKey == device {
			o.closeAbruptly(proto.CloseReplaced)
			continue
		}
		open++
		if o.deviceKey == device {
			ofDevice++
		}
	}
	// Oldest first, as many as it takes for the new socket to fit both
	// caps: sockets a device opened while the node was below the
	// threshold count too (one replaced per new one would keep it over).
	for _, o := range conns {
		if ofDevice < h.maxPerDevice {
			break
		}
		if o.deviceKey == device && !o.closing() {
			o.closeWith(proto.CloseReplaced)
			ofDevice--
			open--
		}
	}
	for _, o := range conns {
		if open < h.maxPerUser {
			break
		}
		if !o.closing() {
			o.closeWith(proto.CloseReplaced)
			open--
		}
	}
}

func (h *Hub) remove(c *conn) {
	s := h.shard(c.userID)
	s.mu.Lock()
	defer s.mu.Unlock()
	conns := s.users[c.userID]
	i := slices.Index(conns, c)
	if i < 0 {
		return
	}
	conns = slices.Delete(conns, i, i+1)
	s.users[c.userID] = conns
	h.active.Done()
	h.open.Add(-1)
	h.metrics.connections.Dec()
	c.leavePresence()
	if len(conns) == 0 {
		delete(s.users, c.userID)
		if err := h.broker.Unsubscribe(c.userID); err != nil {
			h.log.Warn("broker unsubscribe", "err", err)
		}
	}
}

// deliver is the broker's entry point. It never blocks.
func (h *Hub) deliver(userID string, ev *Event) {
	s := h.shard(userID)
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, c := range s.users[userID] {
		switch ev.Kind {
		case EventMessage:
			if c.deviceKey == ev.ExcludeDevice {
				continue
			}
			if ev.queued {
				c.enqueue(outItem{msg: ev.Message})
			} else {
				c.deliver(ev.Message)
			}
		case EventClose:
			if ev.CredID == "" || ev.CredID == c.credID {
				c.closeWith(ev.Code)
			}
		case EventCountryCheck:
			c.n.wg.Go(c.checkCountry) // a store read and a lookup: not on the broker's goroutine
		}
	}
}

// online reports whether a device of the user has a connection on this
// node (node-local presence).
func (h *Hub) online(userID, deviceID string) bool {
	s := h.shard(userID)
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, c := range s.users[userID] {
		if c.deviceID == deviceID && !c.closing() { // a closing socket gets no live message
			return true
		}
	}
	return false
}

// count returns the number of connections on this node.
func (h *Hub) count() int { return int(h.open.Load()) }

// drain closes every connection with 1001 and waits until they are gone or
// ctx ends. New connections are refused from the start of the drain.
func (h *Hub) drain(ctx context.Context) {
	h.startDrain()
	for i := range h.shards {
		s := &h.shards[i]
		s.mu.RLock()
		for _, conns := range s.users {
			for _, c := range conns {
				c.closeWith(proto.CloseGoingAway)
			}
		}
		s.mu.RUnlock()
	}
	done := make(chan struct{})
	go func() { h.active.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// pingLoop pings every connection once per interval, one shard per tick,
// so that pings (and the writers they start) are spread over the interval,
// and ends the idle connections that have been silent past their read
// deadline.
func (h *Hub) pingLoop(interval time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(interval / numHubShards)
	defer t.Stop()
	for i := 0; ; i = (i + 1) % numHubShards {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		s := &h.shards[i]
		now := time.Now()
		s.mu.RLock()
		for _, conns := range s.users {
			for _, c := range conns {
				c.enqueue(outItem{ping: true})
				c.expireIdle(now)
			}
		}
		s.mu.RUnlock()
	}
}

// catchUp makes the connections of the users for which lost reports true
// replay what they may have missed from the store: the broker lost their
// events (a Redis subscription failed) and cannot say which.
func (h *Hub) catchUp(lost func(userID string) bool) {
	h.metrics.catchUps.Inc()
	for i := range h.shards {
		s := &h.shards[i]
		s.mu.RLock()
		for user, conns := range s.users {
			if !lost(user) {
				continue
			}
			for _, c := range conns {
				c.enqueue(outItem{sync: &syncJob{catchUp: true}})
			}
		}
		s.mu.RUnlock()
	}
}
