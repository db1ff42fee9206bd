package messenger

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"klassenfunk/auth"
	"klassenfunk/proto"
	"klassenfunk/storage"
)

// Store is what the messenger needs from storage.
type Store interface {
	storage.Accounts
	storage.Credentials
	storage.DeviceKeys
	storage.Conversations
	storage.Messages
	storage.Attachments
}

// GatewayConfig configures the WebSocket gateway. Zero fields take the
// documented defaults.
type GatewayConfig struct {
	// SendQueue is the number of frames queued for one connection before
	// it counts as a slow reader and is closed with 4429. Zero means 256.
	SendQueue int
	// SendRate is the sustained rate of sends per device on this node
	// (its sockets' send frames and its POST …/messages together), and
	// SendBurst the burst. Zero means 20/s and 100.
	SendRate  float64
	SendBurst int
	// ReadRate is the sustained rate of history reads per device on this
	// node (its sockets' sync frames, its GET …/messages pages and
	// messages, its attachment uploads and downloads together), and
	// ReadBurst the burst. Zero means 50/s and 500.
	ReadRate  float64
	ReadBurst int
	// PingInterval is the time between server pings. Zero means 30s.
	PingInterval time.Duration
	// AuthTimeout is how long the server waits for the first frame's
	// auth. Zero means 10s (API.md: at least 10, at most 12).
	AuthTimeout time.Duration
	// WriteTimeout bounds every write to a socket (a write may get up to a
	// fifth more: frameConn.SetWriteDeadline). Zero means 10s.
	WriteTimeout time.Duration
	// MaxSocketsPerDevice and MaxSocketsPerUser bound the open sockets of
	// one device and of one user on this node once it holds SocketCapsFrom
	// sockets: a new socket beyond either closes the oldest one (of the
	// device, else of the user) with 4409. Zero means 8 and 32.
	MaxSocketsPerDevice int
	MaxSocketsPerUser   int
	// SocketCapsFrom is the number of open sockets on this node from
	// which the caps apply. Zero means three quarters of the process's
	// open-files limit (socketCapsFrom).
	SocketCapsFrom int
	// SocketsCrowdedFrom is the number of open sockets on this node from
	// which a device keeps only its newest socket (Hub.replaceOldest).
	// Zero means seven eighths of the open-files limit; never below
	// SocketCapsFrom.
	SocketsCrowdedFrom int
	// SendTimeout bounds the store calls of a client's frame (a send's
	// store and publish, the periodic credential check): past it a send
	// gets an error frame (internal) and may be sent again with the same
	// client_id. Zero means none: a local store has no network to hang on,
	// and a deadline per send costs a timer.
	SendTimeout time.Duration
}

// Config configures a Node. Zero fields take the documented defaults.
type Config struct {
	Store  Store         // required
	Auth   *auth.Service // required
	Broker Broker        // nil: an in-process MemoryBroker
	// Presence shares open sockets across nodes; nil: this node's only.
	Presence Presence
	Log      *slog.Logger // nil: slog.Default()
	// Registerer receives the metrics. Nil: a private registry.
	Registerer prometheus.Registerer
	// AttachmentDir holds the attachment blobs. Required for attachments.
	AttachmentDir string
	// MessageRetention is how long messages are kept. Zero means 720h.
	MessageRetention time.Duration
	// AttachmentRetention is how long attachments are kept. Zero means
	// 720h.
	AttachmentRetention time.Duration
	// MaxAttachmentBytes caps one attachment. Zero means 25 MiB.
	MaxAttachmentBytes int64
	// RecheckInterval is how often an open socket re-reads its credential
	// on client activity. Zero means 1 minute.
	RecheckInterval time.Duration
	Gateway         GatewayConfig
	// OnMessage is called after a message is stored and published (the
	// push relay). Must not block.
	OnMessage func(conv *storage.Conversation, m *storage.Message)
	// Now is the clock. Nil means time.Now.
	Now func() time.Time
	// SchoolSwitchTTL is how long the send path uses a school's
	// student_direct switch once read (switching it off takes effect on
	// every node within this time; on, at once). Zero reads it for every
	// send by a student: right for a store that keeps schools in memory.
	SchoolSwitchTTL time.Duration
}

// Node is the messenger of one server node.
type Node struct {
	cfg     Config
	store   Store
	auth    *auth.Service
	broker  Broker
	hub     *Hub
	poller  *poller  // nil where sockets cannot be polled: a reader goroutine each
	writers *workers // conn.writeLoop
	log     *slog.Logger
	metrics *metrics
	now     func() time.Time
	pairs   pairMemo // studentPair's answers
	syncers syncers  // devices that sync (holdLive)
	// The send path's caches (sendcache.go); revs is the store when its
	// appends check conversation revisions, else nil.
	revs     storage.RevAppender
	sentAts  storage.SentAtReader // the store when it reads sent_at alone (openedFloor); else nil
	convs    convCache
	switches schoolSwitches
	sends    *sendLimits
	reads    *sendLimits // history reads and attachment transfers (GatewayConfig.ReadRate)

	closeOnce sync.Once
	stop      chan struct{}
	wg        sync.WaitGroup

	sweptBatch func(context.Context) // tests: called after each full batch of messages a sweep deletes
}

// New returns a Node.
func New(cfg Config) (*Node, error) {
	if cfg.Store == nil || cfg.Auth == nil {
		return nil, errors.New("messenger: Config.Store and Config.Auth are required")
	}
	if cfg.Broker == nil {
		cfg.Broker = NewMemoryBroker()
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	if cfg.MessageRetention == 0 {
		cfg.MessageRetention = 720 * time.Hour
	}
	if cfg.AttachmentRetention == 0 {
		cfg.AttachmentRetention = 720 * time.Hour
	}
	if cfg.MaxAttachmentBytes == 0 {
		cfg.MaxAttachmentBytes = 25 << 20
	}
	if cfg.RecheckInterval == 0 {
		cfg.RecheckInterval = time.Minute
	}
	g := &cfg.Gateway
	if g.SendQueue == 0 {
		g.SendQueue = 256
	}
	if g.SendRate == 0 {
		g.SendRate = 20
	}
	if g.SendBurst == 0 {
		g.SendBurst = 100
	}
	if g.ReadRate == 0 {
		g.ReadRate = 50
	}
	if g.ReadBurst == 0 {
		g.ReadBurst = 500
	}
	if g.PingInterval == 0 {
		g.PingInterval = 30 * time.Second
	}
	if g.AuthTimeout == 0 {
		g.AuthTimeout = 10 * time.Second
	}
	if g.WriteTimeout == 0 {
		g.WriteTimeout = 10 * time.Second
	}
	if g.MaxSocketsPerDevice == 0 {
		g.MaxSocketsPerDevice = 8
	}
	if g.MaxSocketsPerUser == 0 {
		g.MaxSocketsPerUser = 32
	}
	if g.SocketCapsFrom == 0 {
		g.SocketCapsFrom = socketCapsFrom()
	}
	if g.SocketsCrowdedFrom == 0 {
		g.SocketsCrowdedFrom = socketsCrowdedFrom()
	}
	g.SocketsCrowdedFrom = max(g.SocketsCrowdedFrom, g.SocketCapsFrom)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.OnMessage == nil {
		cfg.OnMessage = func(*storage.Conversation, *storage.Message) {}
	}
	if cfg.AttachmentDir != "" {
		if err := os.MkdirAll(cfg.AttachmentDir, 0o700); err != nil {
			return nil, fmt.Errorf("attachment dir: %w", err)
		}
		// Leftovers of uploads interrupted by a crash.
		tmps, _ := filepath.Glob(filepath.Join(cfg.AttachmentDir, "*.tmp"))
		for _, t := range tmps {
			os.Remove(t)
		}
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	n := &Node{
		cfg:     cfg,
		store:   cfg.Store,
		auth:    cfg.Auth,
		broker:  cfg.Broker,
		log:     cfg.Log,
		metrics: m,
		now:     cfg.Now,
		sends:   newSendLimits(cfg.Gateway.SendRate, cfg.Gateway.SendBurst),
		reads:   newSendLimits(cfg.Gateway.ReadRate, cfg.Gateway.ReadBurst),
		writers: newWorkers((*conn).writeLoop),
	}
	n.revs, _ = cfg.Store.(storage.RevAppender)
	n.sentAts, _ = cfg.Store.(storage.SentAtReader)
	n.hub = newHub(cfg.Broker, cfg.Presence, cfg.Log, m)
	n.hub.maxPerDevice, n.hub.maxPerUser, n.hub.capsFrom = g.MaxSocketsPerDevice, g.MaxSocketsPerUser, g.SocketCapsFrom
	n.hub.crowdedFrom = g.SocketsCrowdedFrom
	cfg.Log.Info("sockets per device and per user are capped once the node holds socket_caps_from; one per device from sockets_crowded_from",
		"per_device", g.MaxSocketsPerDevice, "per_user", g.MaxSocketsPerUser, "socket_caps_from", g.SocketCapsFrom, "sockets_crowded_from", g.SocketsCrowdedFrom)
	if r, ok := cfg.Broker.(Recoverer); ok {
		r.SetOnRecover(n.hub.catchUp)
		err := cfg.Registerer.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "klassenfunk_broker_subscription_failures_total",
			Help: "Times a part of the broker lost its Redis subscription or failed to subscribe again.",
		}, func() float64 { return float64(r.SubscriptionFailures()) }))
		if err != nil {
			return nil, err
		}
	}
	if p, err := newPoller(); err == nil {
		n.poller = p
	} else {
		cfg.Log.Warn("sockets are read by a goroutine each", "err", err)
	}
	n.stop = make(chan struct{})
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.hub.pingLoop(cfg.Gateway.PingInterval, n.stop)
	}()
	return n, nil
}

// Close stops the node's background work and waits for it (the pinger,
// country re-checks), and stops the poller: sockets still open then get a
// reader goroutine each. Writers still busy end when their queue is
// empty. Safe to call twice. Drain first to close the sockets, and stop
// the broker first so that no event starts new work.
func (n *Node) Close() {
	n.closeOnce.Do(func() {
		close(n.stop)
		n.wg.Wait()
		if n.poller != nil {
			n.poller.close()
		}
		n.writers.stop()
	})
}

// Register adds the messenger's routes to mux.
func (n *Node) Register(mux *http.ServeMux, h *auth.HTTP) {
	mux.HandleFunc("GET /api/v1/ws", func(w http.ResponseWriter, r *http.Request) { n.serveWS(w, r, h) })
	mux.HandleFunc("PUT /api/v1/keys", h.Authed(n.putKey))
	mux.HandleFunc("GET /api/v1/conversations", h.Authed(n.listConversations))
	mux.HandleFunc("POST /api/v1/conversations", h.Authed(n.createConversation))
	mux.HandleFunc("GET /api/v1/conversations/{id}/devices", h.Authed(n.conversationDevices))
	mux.HandleFunc("PUT /api/v1/conversations/{id}/members/{user}", h.Authed(n.putMember))
	mux.HandleFunc("DELETE /api/v1/conversations/{id}/members/{user}", h.Authed(n.deleteMember))
	mux.HandleFunc("POST /api/v1/conversations/{id}/messages", h.Authed(n.postMessage))
	mux.HandleFunc("GET /api/v1/conversations/{id}/messages", h.Authed(n.readLimited(n.listMessages)))
	mux.HandleFunc("GET /api/v1/messages/{id}", h.Authed(n.readLimited(n.getMessage)))
	mux.HandleFunc("POST /api/v1/attachments", h.Authed(n.postAttachment))    // draws on reads by size
	mux.HandleFunc("GET /api/v1/attachments/{id}", h.Authed(n.getAttachment)) // draws on reads by size
}

// CredentialGone closes the sockets of a deleted credential on every node
// and removes the device's public key when no other credential of the user
// holds that device. Wire it to auth's OnRevoke.
func (n *Node) CredentialGone(c storage.Credential) {
	ctx := context.Background()
	if err := n.broker.Publish(ctx, []string{c.UserID}, &Event{Kind: EventClose, CredID: c.ID, Code: proto.CloseUnauthorized}); err != nil {
		n.log.Error("publish revocation", "err", err)
	}
	others, err := n.store.CredentialsOf(ctx, c.UserID)
	if err != nil {
		n.log.Warn("revocation: list credentials", "err", err)
		return
	}
	for _, o := range others {
		if o.DeviceID == c.DeviceID {
			return
		}
	}
	if err := n.store.DeleteDeviceKey(ctx, c.UserID, c.DeviceID); err != nil {
		n.log.Warn("revocation: delete device key", "err", err)
	}
}

// Online reports whether the device has an open socket on any node.
func (n *Node) Online(ctx context.Context, userID, deviceID string) (bool, error) {
	if n.hub.online(userID, deviceID) {
		return true, nil
	}
	if n.cfg.Presence == nil {
		return false, nil
	}
	return n.cfg.Presence.Online(ctx, userID, deviceID)
}

// Drain closes every socket with 1001 and waits for them (or ctx).
func (n *Node) Drain(ctx context.Context) { n.hub.drain(ctx) }

// Connections is the number of open sockets on this node.
func (n *Node) Connections() int { return n.hub.count() }
