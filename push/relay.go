package push

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"klassenfunk/internal/ids"
	"klassenfunk/storage"
)

// Presence tells whether a device has an open WebSocket on any node. The
// server wires the messenger's node-local presence in embedded mode; cluster
// mode plugs in the shared one.
type Presence interface {
	// Online reports whether the device of the user has an open socket.
	Online(ctx context.Context, userID, deviceID string) (bool, error)
}

// PresenceFunc adapts a function to Presence.
type PresenceFunc func(ctx context.Context, userID, deviceID string) (bool, error)

// Online implements Presence.
func (f PresenceFunc) Online(ctx context.Context, userID, deviceID string) (bool, error) {
	return f(ctx, userID, deviceID)
}

var _ Presence = PresenceFunc(nil)

// Store is what the relay needs from storage.
type Store interface {
	// User finds the target of an operator's test push.
	User(ctx context.Context, id string) (storage.User, error)
	// CredentialsOf lists the devices of a member.
	CredentialsOf(ctx context.Context, userID string) ([]storage.Credential, error)
	// Credential re-reads a registration right before a send.
	Credential(ctx context.Context, id string) (storage.Credential, error)
	// UpdateCredential sets or deletes a registration.
	UpdateCredential(ctx context.Context, id string, fn func(*storage.Credential) error) error
	storage.PushOutbox
}

// Tuning holds the relay's knobs. Zero fields take the documented defaults.
type Tuning struct {
	// Workers is the number of concurrent sends per provider (FCM, APNs:
	// each has its own, so that one provider's stall does not hold up the
	// other's pushes). Zero means 64.
	Workers int
	// IntakeQueue is the number of new-message events waiting for the
	// resolver; beyond it events are dropped and counted (the apps still
	// sync). Zero means 16384.
	IntakeQueue int
	// CoalesceWindow is the least time between two pushes to one device:
	// messages within it become one push (the newest). Zero means 3s;
	// negative means no window.
	CoalesceWindow time.Duration
	// CloseGrace is how long Close lets sends in flight finish before it
	// cancels them (a provider that hangs would otherwise hold a shutdown
	// for SendTimeout, past many supervisors' patience). Zero means 5s.
	CloseGrace time.Duration
	// SendTimeout bounds one send, the SDK's own retries included. Zero
	// means 20s.
	SendTimeout time.Duration
	// RetryBase is the first backoff after a throttled or failed send; it
	// doubles per attempt up to RetryMax, with jitter. Zero means 1s and
	// 5m.
	RetryBase time.Duration
	RetryMax  time.Duration
	// ClaimLease is how long a node's claim on a push holds (cluster
	// mode) before another node holding the same entry may send it, should
	// the first have died. Zero means 1m.
	ClaimLease time.Duration
	// Rescan is how often the relay reads the shared outbox again for
	// devices it holds nothing for (cluster mode): the pushes queued by a
	// node that died since, which the claims' leases then let this node
	// send. Zero: the outbox is read only at start (one node).
	Rescan time.Duration
}

func (t *Tuning) defaults() {
	if t.Workers <= 0 {
		t.Workers = 64
	}
	if t.IntakeQueue <= 0 {
		t.IntakeQueue = 16384
	}
	if t.CoalesceWindow == 0 {
		t.CoalesceWindow = 3 * time.Second
	}
	if t.CoalesceWindow < 0 {
		t.CoalesceWindow = 0
	}
	if t.CloseGrace <= 0 {
		t.CloseGrace = 5 * time.Second
	}
	if t.SendTimeout <= 0 {
		t.SendTimeout = 20 * time.Second
	}
	if t.RetryBase <= 0 {
		t.RetryBase = time.Second
	}
	if t.RetryMax <= 0 {
		t.RetryMax = 5 * time.Minute
	}
	if t.RetryMax < t.RetryBase {
		t.RetryMax = t.RetryBase
	}
	if t.ClaimLease <= 0 {
		t.ClaimLease = time.Minute
	}
}

// Config configures a Relay. Zero fields take the documented defaults.
type Config struct {
	Store Store // required
	// Presence is consulted before a push is queued and again before it
	// is sent. Nil: no device is ever online.
	Presence Presence
	Log      *slog.Logger // nil: slog.Default()
	// Registerer receives the metrics. Nil: a private registry.
	Registerer prometheus.Registerer
	FCM        FCMConfig
	APNs       APNsConfig
	// CAFile adds trusted CA certificates (PEM) for every push connection,
	// the OAuth token endpoint included.
	CAFile string
	Tuning Tuning
	// Now is the clock for TTLs (message expiry). Nil means time.Now.
	// Backoffs and the coalesce window run on real time.
	Now func() time.Time
}

// Relay turns new messages into content-free pushes. See the package
// documentation for the path of a push.
type Relay struct {
	id       string // this process's claims on shared outbox entries
	cfg      Config
	store    Store
	presence Presence
	log      *slog.Logger
	now      func() time.Time
	m        *metrics
	senders  map[string]sender // enabled providers only

	intake  chan notice              // Notify → resolver
	added   chan added               // resolver → scheduler, after the durable write
	adopt   chan []storage.PushEntry // rescan → scheduler: the outbox as read now
	forget  chan string              // Forget → scheduler
	lanes   map[string]*lane         // per provider: scheduler → its workers
	results chan *job                // workers → scheduler
	acks    ackQueue                 // scheduler → acker

	// unresolved counts events from Notify until the scheduler knows their
	// pushes (the intake-depth gauge).
	unresolved atomic.Int64

	closed    atomic.Bool
	closeOnce sync.Once
	stop      chan struct{} // closed by Close
	// sends is the parent context of every send; cancelSends ends the
	// ones still in flight CloseGrace after Close.
	sends       context.Context
	cancelSends context.CancelFunc
	resolved    chan struct{} // closed when the resolver has exited
	scheduled   chan struct{} // closed when the scheduler has exited
	workers     sync.WaitGroup
	rescans     sync.WaitGroup // the rescan goroutine, when Tuning.Rescan is set
	acked       chan struct{}  // closed when the acker has flushed and exited

	logSometimes sync.Map // provider+outcome → *rate.Sometimes
}

// notice is a new message as the resolver needs it.
type notice struct {
	conv         string
	members      []string
	msgID        string
	seq          uint64
	expiresAt    time.Time
	senderUser   string
	senderDevice string
}

// New builds a relay, loads the outbox and starts its goroutines. A
// provider whose credentials are not configured is off; New fails when
// configured credentials cannot be loaded.
func New(ctx context.Context, cfg Config) (*Relay, error) {
	if cfg.Store == nil {
		return nil, errors.New("push: Config.Store is required")
	}
	if cfg.Presence == nil {
		cfg.Presence = PresenceFunc(func(context.Context, string, string) (bool, error) { return false, nil })
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.Tuning.defaults()
	r := &Relay{
		id:        ids.New(),
		cfg:       cfg,
		store:     cfg.Store,
		presence:  cfg.Presence,
		log:       cfg.Log,
		now:       cfg.Now,
		senders:   map[string]sender{},
		intake:    make(chan notice, cfg.Tuning.IntakeQueue),
		added:     make(chan added),
		adopt:     make(chan []storage.PushEntry),
		forget:    make(chan string, 1024),
		lanes:     map[string]*lane{},
		results:   make(chan *job, 2*cfg.Tuning.Workers),
		stop:      make(chan struct{}),
		resolved:  make(chan struct{}),
		scheduled: make(chan struct{}),
		acked:     make(chan struct{}),
	}
	r.acks.signal = make(chan struct{}, 1)
	r.sends, r.cancelSends = context.WithCancel(context.Background())
	m, err := newMetrics(cfg.Registerer, func() float64 { return float64(r.unresolved.Load()) })
	if err != nil {
		return nil, err
	}
	r.m = m

	var tc *tls.Config
	if cfg.FCM.CredentialsFile != "" || cfg.APNs.enabled() {
		if tc, err = tlsConfig(cfg.CAFile); err != nil {
			return nil, err
		}
	}
	if cfg.FCM.CredentialsFile != "" {
		s, err := newFCM(ctx, cfg.FCM, tc)
		if err != nil {
			return nil, err
		}
		r.senders[ProviderFCM] = s
	}
	if cfg.APNs.enabled() {
		s, err := newAPNs(cfg.APNs, tc)
		if err != nil {
			r.closeSenders()
			return nil, err
		}
		r.senders[ProviderAPNs] = s
	}
	for _, p := range []string{ProviderFCM, ProviderAPNs} {
		if s := r.senders[p]; s != nil {
			r.log.Info("push provider on", append([]any{"provider", p}, s.describe()...)...)
		} else {
			r.log.Info("push provider off: no credentials configured", "provider", p)
		}
	}

	pending, err := cfg.Store.PendingPushes(ctx)
	if err != nil {
		r.closeSenders()
		return nil, fmt.Errorf("push: load outbox: %w", err)
	}
	if len(pending) > 0 {
		r.log.Info("push outbox loaded", "pending", len(pending))
	}
	// Workers for the providers that are on. With none, one worker drains
	// what an earlier run left in the outbox (counted provider_off).
	var on []string
	for _, p := range []string{ProviderFCM, ProviderAPNs} {
		if r.senders[p] != nil {
			on = append(on, p)
		}
	}
	workers := cfg.Tuning.Workers
	if len(on) == 0 {
		on, workers = []string{ProviderFCM}, 1
	}
	for _, p := range on {
		l := &lane{work: make(chan *job, workers)}
		r.lanes[p] = l
		r.workers.Add(workers)
		for range workers {
			go r.worker(l.work)
		}
	}
	go r.resolve()
	go r.schedule(pending)
	if cfg.Tuning.Rescan > 0 {
		r.rescans.Add(1)
		go r.rescan(cfg.Tuning.Rescan)
	}
	go r.ackLoop()
	return r, nil
}

// laneOf returns the scheduler lane of a provider; a provider that is off
// (its pushes end as provider_off) shares another's.
func (r *Relay) laneOf(provider string) *lane {
	for _, p := range []string{provider, ProviderFCM, ProviderAPNs} {
		if l := r.lanes[p]; l != nil {
			return l
		}
	}
	panic("push: a relay without lanes")
}

// Enabled reports whether the provider ("fcm", "apns") is configured.
func (r *Relay) Enabled(provider string) bool { return r.senders[provider] != nil }

// Notify queues pushes for a stored message. It is called on the send path
// (messenger's OnMessage) and never blocks: when the intake queue is full
// the event is dropped and counted.
func (r *Relay) Notify(conv *storage.Conversation, m *storage.Message) {
	if len(r.senders) == 0 || r.closed.Load() {
		return
	}
	members := make([]string, len(conv.Members))
	for i, mb := range conv.Members {
		members[i] = mb.UserID
	}
	n := notice{
		conv: m.Conversation, members: members, msgID: m.ID, seq: m.Seq, expiresAt: m.ExpiresAt,
		senderUser: m.SenderUser, senderDevice: m.SenderDevice,
	}
	r.unresolved.Add(1)
	select {
	case r.intake <- n:
	default:
		r.unresolved.Add(-1)
		r.m.intakeDropped.Inc()
	}
}

// Forget drops every pending push of a credential (revocation, a deleted
// registration) and cancels one being sent. It never blocks. The re-check
// before every send catches what Forget might miss.
func (r *Relay) Forget(credID string) {
	if r.closed.Load() {
		return
	}
	select {
	case r.forget <- credID:
	default:
		go func() {
			select {
			case r.forget <- credID:
			case <-r.scheduled:
			}
		}()
	}
}

// Close stops the relay: events still in the intake are written to the
// outbox, sends in flight finish (for up to Tuning.CloseGrace; then they
// are cancelled) and their results are recorded; pending pushes, the cancelled
// ones included, stay in the outbox for the next start. Safe to call
// twice.
func (r *Relay) Close() {
	r.closeOnce.Do(func() {
		r.closed.Store(true)
		close(r.stop)
		grace := time.AfterFunc(r.cfg.Tuning.CloseGrace, r.cancelSends)
		defer func() {
			grace.Stop()
			r.cancelSends()
		}()
		r.rescans.Wait()
		<-r.resolved
		<-r.scheduled
		r.workers.Wait()
		<-r.acked
		r.closeSenders()
	})
}

func (r *Relay) closeSenders() {
	for _, s := range r.senders {
		s.close()
	}
}

// sometimes rate-limits a log line per key.
func (r *Relay) sometimes(key string, f func()) {
	v, _ := r.logSometimes.LoadOrStore(key, &rate.Sometimes{First: 3, Interval: 10 * time.Second})
	v.(*rate.Sometimes).Do(f)
}

// backoff is the delay before attempt n (n ≥ 1) with equal jitter: half of
// base·2^(n-1) (capped at RetryMax) plus a random part of the other half.
func (r *Relay) backoff(n int) time.Duration {
	d := r.cfg.Tuning.RetryBase
	for i := 1; i < n && d < r.cfg.Tuning.RetryMax; i++ {
		d *= 2
	}
	d = min(d, r.cfg.Tuning.RetryMax)
	return d/2 + rand.N(d/2+1)
}
