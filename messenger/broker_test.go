package messenger_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"klassenfunk/internal/redistest"
	"klassenfunk/internal/testenv"
	"klassenfunk/messenger"
	"klassenfunk/storage"
)

// recorder collects what a broker delivers.
type recorder struct {
	mu  sync.Mutex
	got map[string][]*messenger.Event
	ch  chan struct{}
}

func newRecorder() *recorder {
	return &recorder{got: map[string][]*messenger.Event{}, ch: make(chan struct{}, 1024)}
}

func (r *recorder) deliver(user string, ev *messenger.Event) {
	r.mu.Lock()
	r.got[user] = append(r.got[user], ev)
	r.mu.Unlock()
	r.ch <- struct{}{}
}

func (r *recorder) count(user string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got[user])
}

// wait waits until user has n events.
func (r *recorder) wait(t *testing.T, user string, n int) []*messenger.Event {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for r.count(user) < n {
		select {
		case <-r.ch:
		case <-deadline:
			t.Fatalf("user %s: %d events, want %d", user, r.count(user), n)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.got[user]
}

// brokerFactory makes one node's broker; nodes made by one factory share
// the same medium.
type brokerFactory func(t *testing.T) messenger.Broker

func runBrokerSuite(t *testing.T, newBroker brokerFactory) {
	t.Run("delivers to subscribed users", func(t *testing.T) {
		b, rec := newBroker(t), newRecorder()
		b.SetDeliver(rec.deliver)
		subscribe(t, b, "u1", "u2")
		msg := &storage.Message{ID: "m1", Conversation: "c1", Seq: 7, Ciphertext: []byte{1, 2, 3},
			Keys: map[string][]byte{"u1/d1": {9}}, SentAt: time.Unix(100, 0).UTC()}
		if err := b.Publish(context.Background(), []string{"u1", "u2"}, &messenger.Event{
			Kind: messenger.EventMessage, Message: msg, ExcludeDevice: "u2/d2"}); err != nil {
			t.Fatal(err)
		}
		for _, u := range []string{"u1", "u2"} {
			ev := rec.wait(t, u, 1)[0]
			if ev.Kind != messenger.EventMessage || ev.Message.ID != "m1" || ev.Message.Seq != 7 ||
				string(ev.Message.Keys["u1/d1"]) != "\x09" || ev.ExcludeDevice != "u2/d2" || !ev.Message.SentAt.Equal(msg.SentAt) {
				t.Fatalf("%s got %+v / %+v", u, ev, ev.Message)
			}
		}
	})
	t.Run("close events", func(t *testing.T) {
		b, rec := newBroker(t), newRecorder()
		b.SetDeliver(rec.deliver)
		subscribe(t, b, "u3")
		b.Publish(context.Background(), []string{"u3"}, &messenger.Event{Kind: messenger.EventClose, CredID: "c9", Code: 4401})
		if ev := rec.wait(t, "u3", 1)[0]; ev.Kind != messenger.EventClose || ev.CredID != "c9" || ev.Code != 4401 {
			t.Fatalf("got %+v", ev)
		}
	})
	t.Run("in order per publisher", func(t *testing.T) {
		b, rec := newBroker(t), newRecorder()
		b.SetDeliver(rec.deliver)
		subscribe(t, b, "u4")
		for i := 1; i <= 50; i++ {
			b.Publish(context.Background(), []string{"u4"}, &messenger.Event{Kind: messenger.EventMessage,
				Message: &storage.Message{ID: fmt.Sprint(i), Seq: uint64(i)}})
		}
		for i, ev := range rec.wait(t, "u4", 50) {
			if ev.Message.Seq != uint64(i+1) {
				t.Fatalf("event %d has seq %d", i, ev.Message.Seq)
			}
		}
	})
}

func subscribe(t *testing.T, b messenger.Broker, users ...string) {
	t.Helper()
	for _, u := range users {
		if err := b.Subscribe(u); err != nil {
			t.Fatal(err)
		}
	}
	if rb, ok := b.(*messenger.RedisBroker); ok {
		waitSubscribed(t, rb, users...)
	}
}

// waitSubscribed publishes probes until each user's channel reaches this
// broker: SSUBSCRIBE is confirmed asynchronously.
func waitSubscribed(t *testing.T, b *messenger.RedisBroker, users ...string) {
	t.Helper()
	testenv.Eventually(t, 5*time.Second, "broker subscribed", func() bool {
		return b.Healthy() && b.SubscribedForTest(users...)
	})
}

func TestMemoryBroker(t *testing.T) {
	runBrokerSuite(t, func(t *testing.T) messenger.Broker { return messenger.NewMemoryBroker() })
}

func newRedisBroker(t *testing.T, c redis.UniversalClient) *messenger.RedisBroker {
	b := messenger.NewRedisBroker(c, fmt.Sprintf("kf%d:", time.Now().UnixNano()), nil)
	return b
}

func startBroker(t *testing.T, b *messenger.RedisBroker) *messenger.RedisBroker {
	b.Start()
	t.Cleanup(b.Close)
	return b
}

func TestRedisBroker(t *testing.T) {
	srv := redistest.Start(t)
	client := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { client.Close() })
	runBrokerSuite(t, func(t *testing.T) messenger.Broker {
		b := newRedisBroker(t, client)
		return lazyStart(t, b)
	})

	t.Run("routes per user between nodes", func(t *testing.T) {
		prefix := fmt.Sprintf("route%d:", time.Now().UnixNano())
		n1, n2 := messenger.NewRedisBroker(client, prefix, nil), messenger.NewRedisBroker(client, prefix, nil)
		r1, r2 := newRecorder(), newRecorder()
		n1.SetDeliver(r1.deliver)
		n2.SetDeliver(r2.deliver)
		startBroker(t, n1)
		startBroker(t, n2)
		subscribe(t, n1, "alice")
		subscribe(t, n2, "bob")
		n1.Publish(context.Background(), []string{"alice", "bob"}, &messenger.Event{Kind: messenger.EventClose, CredID: "x"})
		r1.wait(t, "alice", 1)
		r2.wait(t, "bob", 1)
		// A probe after the first event proves nothing else is in flight.
		n1.Publish(context.Background(), []string{"bob"}, &messenger.Event{Kind: messenger.EventClose, CredID: "probe"})
		r2.wait(t, "bob", 2)
		if r1.count("bob") != 0 || r2.count("alice") != 0 {
			t.Fatalf("node 1 got bob's events (%d) or node 2 alice's (%d)", r1.count("bob"), r2.count("alice"))
		}
		// Both nodes take dave's events. Node 1's own event goes to it
		// at once, not through Redis, and does not come back from Redis:
		// node 2's next event, published after it on the same channel,
		// is node 1's second.
		subscribe(t, n1, "dave")
		subscribe(t, n2, "dave")
		n1.Publish(context.Background(), []string{"dave"}, &messenger.Event{Kind: messenger.EventClose, CredID: "from-1"})
		if r1.count("dave") != 1 {
			t.Fatalf("node 1 has %d events of dave when its Publish returns, want its own 1", r1.count("dave"))
		}
		n2.Publish(context.Background(), []string{"dave"}, &messenger.Event{Kind: messenger.EventClose, CredID: "from-2"})
		r2.wait(t, "dave", 2)
		got := r1.wait(t, "dave", 2)
		if len(got) != 2 || got[0].CredID != "from-1" || got[1].CredID != "from-2" {
			t.Fatalf("node 1 got %d events of dave (%+v, %+v), want from-1 once, then from-2", len(got), got[0], got[1])
		}
		n2.Unsubscribe("bob")
		subscribe(t, n2, "carol")
		n1.Publish(context.Background(), []string{"bob", "carol"}, &messenger.Event{Kind: messenger.EventClose})
		r2.wait(t, "carol", 1)
		if r2.count("bob") != 2 {
			t.Fatalf("bob's events reached node 2 after it unsubscribed")
		}
	})
}

// lazyStart starts the broker after the suite sets the deliver function.
func lazyStart(t *testing.T, b *messenger.RedisBroker) messenger.Broker {
	return &startOnDeliver{RedisBroker: b, t: t}
}

type startOnDeliver struct {
	*messenger.RedisBroker
	t *testing.T
}

func (s *startOnDeliver) SetDeliver(d messenger.DeliverFunc) {
	s.RedisBroker.SetDeliver(d)
	startBroker(s.t, s.RedisBroker)
}

func (s *startOnDeliver) Subscribe(u string) error {
	if err := s.RedisBroker.Subscribe(u); err != nil {
		return err
	}
	waitSubscribed(s.t, s.RedisBroker, u)
	return nil
}

func TestRedisClusterBroker(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	client := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs()})
	t.Cleanup(func() { client.Close() })
	runBrokerSuite(t, func(t *testing.T) messenger.Broker {
		return lazyStart(t, newRedisBroker(t, client))
	})
}

func TestRedisBrokerRecoversAfterRestart(t *testing.T) {
	srv := redistest.Start(t)
	client := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1})
	t.Cleanup(func() { client.Close() })
	b := newRedisBroker(t, client)
	rec := newRecorder()
	b.SetDeliver(rec.deliver)
	recovered := make(chan func(string) bool, 16)
	b.SetOnRecover(func(lost func(string) bool) { recovered <- lost })
	startBroker(t, b)
	subscribe(t, b, "u1")

	// Every part of the broker lost its subscription and recovers; each
	// names its own users to catch up, so that every user is caught up
	// once, not once per part.
	srv.Kill()
	srv.Restart()
	var parts []func(string) bool
	for len(parts) < 16 {
		select {
		case lost := <-recovered:
			parts = append(parts, lost)
		case <-time.After(10 * time.Second):
			t.Fatalf("%d recoveries after the Redis restart, want 16", len(parts))
		}
	}
	for i := range 200 {
		user, n := fmt.Sprint("u", i), 0
		for _, lost := range parts {
			if lost(user) {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("%s is caught up by %d recoveries, want 1", user, n)
		}
	}
	waitSubscribed(t, b, "u1")
	if err := b.Publish(context.Background(), []string{"u1"}, &messenger.Event{Kind: messenger.EventClose, CredID: "after"}); err != nil {
		t.Fatal(err)
	}
	if ev := rec.wait(t, "u1", 1)[0]; ev.CredID != "after" {
		t.Fatalf("got %+v", ev)
	}
}

// backoffLog records the waits the Redis broker logs before resubscribing.
type backoffLog struct {
	mu    sync.Mutex
	waits []time.Duration
}

func (h *backoffLog) Enabled(context.Context, slog.Level) bool { return true }
func (h *backoffLog) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *backoffLog) WithGroup(string) slog.Handler            { return h }
func (h *backoffLog) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "in" && strings.Contains(r.Message, "resubscribing") {
			h.mu.Lock()
			h.waits = append(h.waits, a.Value.Duration())
			h.mu.Unlock()
		}
		return true
	})
	return nil
}

// TestRedisBrokerBackoffResets: each loss of the subscription, after the
// broker was whole again, is retried after the shortest wait. The wait
// used to keep the doubling of all earlier losses (up to 5 s), which held
// back revocations far past API.md's second.
func TestRedisBrokerBackoffResets(t *testing.T) {
	srv := redistest.Start(t)
	client := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { client.Close() })
	log := &backoffLog{}
	b := messenger.NewRedisBroker(client, fmt.Sprintf("kf%d:", time.Now().UnixNano()), slog.New(log))
	b.SetDeliver(newRecorder().deliver)
	recovered := make(chan struct{}, 64)
	b.SetOnRecover(func(func(string) bool) { recovered <- struct{}{} })
	startBroker(t, b)
	subscribe(t, b, "u1")
	waitSubscribed(t, b, "u1")
	for kill := range 6 {
		if err := client.Do(context.Background(), "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
			t.Fatal(err)
		}
		for range 16 { // every part recovers
			select {
			case <-recovered:
			case <-time.After(10 * time.Second):
				t.Fatalf("kill %d: no recovery", kill)
			}
		}
		waitSubscribed(t, b, "u1")
	}
	log.mu.Lock()
	defer log.mu.Unlock()
	if len(log.waits) < 6*16 {
		t.Fatalf("%d resubscriptions logged, want at least %d", len(log.waits), 6*16)
	}
	for i, w := range log.waits {
		if w != 50*time.Millisecond {
			t.Fatalf("resubscription %d waited %v, want 50ms (waits %v)", i, w, log.waits)
		}
	}
}
