package messenger

import (
	"context"
	"errors"
	"hash/fnv"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"klassenfunk/internal/ids"
)

// RedisBroker carries events between nodes through Redis sharded pub/sub
// (SSUBSCRIBE/SPUBLISH), which works on a single Redis (7+) and on Redis
// Cluster alike.
//
// Routing is per user: the channel of user U is "<prefix>{g<N>}:u:<U>", so
// a node receives only the events of users connected to it. N = hash(U)
// mod redisGroups is a hash tag: a group's channels share one slot, and
// each group has one subscriber connection (go-redis binds a sharded
// subscription to the master of its first channel's slot, so channels of
// one connection must share a slot in a cluster).
//
// Events travel in a compact binary form (eventcodec.go). A node hands
// its own events to its own sockets directly, in Publish, and skips them
// when Redis brings them back: every event starts with the id of the
// node that published it, so the subscriber tells them apart before
// decoding. (The sender's node is
// subscribed to the sender's channel, for the sender's other devices;
// decoding each of its own messages again only to find the sending
// device cost a tenth of that node's time.)
//
// Each group's subscriber runs forever: when its connection fails it
// waits (backoff with jitter, capped), subscribes again to every channel
// the node needs, and then asks the hub to catch every connection up from
// the store, because events published while the node was cut off are lost
// for it. Clients lose nothing either way: the store is the truth.
type RedisBroker struct {
	client  redis.UniversalClient
	prefix  string
	origin  string // how a payload from this node starts (eventOrigin of a random id)
	log     *slog.Logger
	deliver DeliverFunc // set once before Start
	// OnRecover is called after a group's subscription was restored
	// following a failure (the node's hub catches up the sockets of the
	// group's users).
	onRecover func(lost func(userID string) bool)

	groups   [redisGroups]*redisGroup
	failures atomic.Uint64 // lost or failed subscriptions of any group
	stop     chan struct{}
	wg       sync.WaitGroup
	once     sync.Once
}

const redisGroups = 16

type redisGroup struct {
	b      *RedisBroker
	index  int
	anchor string

	mu       sync.Mutex
	channels map[string]struct{} // guarded by mu: what this node needs
	ps       *redis.PubSub       // guarded by mu: nil while reconnecting
	healthy  bool                // guarded by mu
}

var _ Broker = (*RedisBroker)(nil)

// NewRedisBroker returns a broker over client. Channel names start with
// prefix ("kf:" when empty). Call Start after the hub has set the deliver
// function (messenger.New does both).
func NewRedisBroker(client redis.UniversalClient, prefix string, log *slog.Logger) *RedisBroker {
	if prefix == "" {
		prefix = "kf:"
	}
	if log == nil {
		log = slog.Default()
	}
	b := &RedisBroker{client: client, prefix: prefix, log: log, stop: make(chan struct{}),
		origin: string(eventOrigin(ids.Random(12)))}
	for i := range b.groups {
		b.groups[i] = &redisGroup{
			b: b, index: i,
			anchor:   prefix + "{g" + strconv.Itoa(i) + "}:anchor",
			channels: make(map[string]struct{}),
		}
	}
	return b
}

func (b *RedisBroker) channel(userID string) (string, *redisGroup) {
	h := fnv.New32a()
	h.Write([]byte(userID))
	g := b.groups[h.Sum32()%redisGroups]
	return b.prefix + "{g" + strconv.Itoa(g.index) + "}:u:" + userID, g
}

// SetDeliver implements Broker.
func (b *RedisBroker) SetDeliver(d DeliverFunc) { b.deliver = d }

// SetOnRecover implements Recoverer.
func (b *RedisBroker) SetOnRecover(f func(lost func(userID string) bool)) { b.onRecover = f }

// SubscriptionFailures implements Recoverer.
func (b *RedisBroker) SubscriptionFailures() uint64 { return b.failures.Load() }

// Start runs the subscribers until Close.
func (b *RedisBroker) Start() {
	for _, g := range b.groups {
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			g.run()
		}()
	}
}

// Close stops the subscribers. Safe to call twice.
func (b *RedisBroker) Close() {
	b.once.Do(func() {
		close(b.stop)
		for _, g := range b.groups {
			g.mu.Lock()
			if g.ps != nil {
				g.ps.Close()
			}
			g.mu.Unlock()
		}
		b.wg.Wait()
	})
}

// Healthy reports whether every subscriber is connected (readiness).
func (b *RedisBroker) Healthy() bool {
	for _, g := range b.groups {
		g.mu.Lock()
		ok := g.healthy
		g.mu.Unlock()
		if !ok {
			return false
		}
	}
	return true
}

// Publish implements Broker: the event goes at once to the users this
// node is subscribed to, and is encoded once and published to every
// user's channel in one pipeline, for the other nodes.
func (b *RedisBroker) Publish(ctx context.Context, userIDs []string, ev *Event) error {
	for _, u := range userIDs {
		if b.deliver != nil && b.subscribed(u) {
			b.deliver(u, ev)
		}
	}
	size := len(b.origin) + 64
	if ev.Message != nil {
		size += len(ev.Message.Ciphertext) + 128*(1+len(ev.Message.Keys))
	}
	payload, err := appendEvent(make([]byte, 0, size), []byte(b.origin), ev)
	if err != nil {
		return err
	}
	_, err = b.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, u := range userIDs {
			ch, _ := b.channel(u)
			p.SPublish(ctx, ch, payload)
		}
		return nil
	})
	return err
}

// subscribed reports whether this node takes userID's events.
func (b *RedisBroker) subscribed(userID string) bool {
	ch, g := b.channel(userID)
	g.mu.Lock()
	defer g.mu.Unlock()
	_, ok := g.channels[ch]
	return ok
}

// Subscribe implements Broker. It records the channel and subscribes when
// the group is connected; a reconnecting group subscribes to it then.
func (b *RedisBroker) Subscribe(userID string) error {
	ch, g := b.channel(userID)
	g.mu.Lock()
	g.channels[ch] = struct{}{}
	ps := g.ps
	g.mu.Unlock()
	if ps != nil {
		if err := ps.SSubscribe(context.Background(), ch); err != nil {
			b.log.Warn("redis broker: subscribe", "err", err) // the loop resubscribes
		}
	}
	return nil
}

// Unsubscribe implements Broker.
func (b *RedisBroker) Unsubscribe(userID string) error {
	ch, g := b.channel(userID)
	g.mu.Lock()
	delete(g.channels, ch)
	ps := g.ps
	g.mu.Unlock()
	if ps != nil {
		if err := ps.SUnsubscribe(context.Background(), ch); err != nil {
			b.log.Debug("redis broker: unsubscribe", "err", err)
		}
	}
	return nil
}

// run keeps the group subscribed until the broker stops.
func (g *redisGroup) run() {
	b := g.b
	backoff := 50 * time.Millisecond
	failed := false
	var warned time.Time // the last warning of a lost subscription
	for {
		select {
		case <-b.stop:
			return
		default:
		}
		subscribed, err := g.session(failed)
		select {
		case <-b.stop:
			return
		default:
		}
		failed = true
		b.failures.Add(1)
		if subscribed {
			// It was whole again: the next loss starts the waits afresh
			// (a revocation must not wait out a backoff grown by losses
			// long past).
			backoff = 50 * time.Millisecond
		}
		// While Redis is away every group fails every few hundred
		// milliseconds: warn once per half minute, the rest at debug.
		lvl := slog.LevelDebug
		if time.Since(warned) >= 30*time.Second {
			lvl, warned = slog.LevelWarn, time.Now()
		}
		b.log.Log(context.Background(), lvl, "redis broker: subscription lost; resubscribing", "group", g.index, "err", err, "in", backoff)
		select {
		case <-b.stop:
			return
		case <-time.After(jitter(backoff)):
		}
		backoff = min(backoff*2, maxResubscribeWait)
	}
}

// maxResubscribeWait caps the wait between attempts to subscribe again. It
// is short because a revocation published while a node is not subscribed
// reaches that node's sockets only through the catch-up after it
// resubscribes, and API.md gives a revocation one second on every node:
// once Redis is back, a node must not sleep out a backoff grown during the
// outage. While Redis is away, each of the 16 groups tries about three
// times a second.
const maxResubscribeWait = 400 * time.Millisecond

// session subscribes the group afresh and reads messages until the
// connection fails. subscribed reports whether it got as far as being
// subscribed to every channel.
func (g *redisGroup) session(recovering bool) (subscribed bool, err error) {
	b := g.b
	ctx := context.Background()
	ps := b.client.SSubscribe(ctx, g.anchor) // binds the connection to the group's slot
	if _, err := ps.Receive(ctx); err != nil {
		ps.Close()
		return false, err
	}
	g.mu.Lock()
	if g.stopping() {
		// Close ran while this subscription was being made: it closed
		// the previous one, if any, and cannot see this one.
		g.mu.Unlock()
		ps.Close()
		return false, nil
	}
	chans := make([]string, 0, len(g.channels))
	for ch := range g.channels {
		chans = append(chans, ch)
	}
	g.ps = ps
	g.mu.Unlock()
	for len(chans) > 0 {
		n := min(len(chans), 500)
		if err := ps.SSubscribe(ctx, chans[:n]...); err != nil {
			g.drop(ps)
			return false, err
		}
		chans = chans[n:]
	}
	g.mu.Lock()
	g.healthy = true
	g.mu.Unlock()
	if recovering && b.onRecover != nil {
		b.onRecover(func(userID string) bool { _, ug := b.channel(userID); return ug == g })
	}
	for {
		msg, err := ps.ReceiveTimeout(ctx, 15*time.Second)
		if err != nil {
			var ne interface{ Timeout() bool }
			if errors.As(err, &ne) && ne.Timeout() {
				if perr := ps.Ping(ctx); perr == nil && !g.stopping() {
					continue
				}
			}
			g.drop(ps)
			return true, err
		}
		m, ok := msg.(*redis.Message)
		if !ok {
			continue // subscription confirmations, pongs
		}
		i := strings.LastIndex(m.Channel, "}:u:")
		if i < 0 || strings.HasPrefix(m.Payload, b.origin) {
			continue // not a user's channel, or this node's own event (Publish delivered it)
		}
		ev := Event{queued: true}
		if err := decodeEvent([]byte(m.Payload), &ev); err != nil {
			b.log.Error("redis broker: undecodable event", "err", err)
			continue
		}
		b.deliver(m.Channel[i+len("}:u:"):], &ev)
	}
}

// stopping reports whether the broker is closing.
func (g *redisGroup) stopping() bool {
	select {
	case <-g.b.stop:
		return true
	default:
		return false
	}
}

func (g *redisGroup) drop(ps *redis.PubSub) {
	g.mu.Lock()
	if g.ps == ps {
		g.ps = nil
	}
	g.healthy = false
	g.mu.Unlock()
	ps.Close()
}

// jitter spreads d over [d/2, d).
func jitter(d time.Duration) time.Duration {
	return d/2 + time.Duration(time.Now().UnixNano()%int64(d/2+1))
}

// SubscribedForTest reports whether Redis has confirmed this node's
// subscription to each user's channel (PUBSUB SHARDNUMSUB counts it).
func (b *RedisBroker) SubscribedForTest(userIDs ...string) bool {
	ctx := context.Background()
	for _, u := range userIDs {
		ch, _ := b.channel(u)
		n, err := b.client.PubSubShardNumSub(ctx, ch).Result()
		if err != nil || n[ch] < 1 {
			return false
		}
	}
	return true
}
