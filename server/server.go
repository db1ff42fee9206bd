// Package server wires one Klassenfunk node together: storage, auth,
// messenger and push behind one HTTP handler. cmd/klassenfunk parses the
// configuration and runs a Server; tests build one the same way.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"klassenfunk/auth"
	"klassenfunk/internal/ctxtime"
	"klassenfunk/internal/httpapi"
	"klassenfunk/messenger"
	"klassenfunk/push"
	"klassenfunk/storage"
	"klassenfunk/web"
)

// Server is one node.
type Server struct {
	cfg     Config
	log     *slog.Logger
	store   storage.Store
	cluster *clusterParts // nil in embedded mode
	Auth    *auth.Service
	Msg     *messenger.Node
	geo     *auth.GeoIP // nil without geoip_db (rights.go)
	Push    *push.Relay // nil when the store keeps no push outbox
	handler http.Handler
	backups *backups // nil: cluster mode, or backups off
	reg     *prometheus.Registry
	metrics *httpMetrics

	// OperatorTokenGenerated is set when this start generated the operator
	// token; the caller prints it once.
	OperatorTokenGenerated string

	loginSweep  sync.Mutex
	loginsSwept time.Time // guarded by loginSweep; the last login sweep that ended well

	closeOnce sync.Once
	drainOnce sync.Once
	draining  chan struct{} // closed by Drain: /readyz turns unready
	stop      chan struct{}
	wg        sync.WaitGroup
}

// New opens the stores and builds the node. It does not listen; serve
// Handler() and call Start for the background jobs.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Server, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	if d := cfg.Messenger.AuthTimeout; d != 0 && (d < 10*time.Second || d > 12*time.Second) {
		log.Warn("messenger.auth_timeout is outside API.md's 10s to 12s: apps may be cut off early or wait long", "auth_timeout", d)
	}
	for _, w := range cfg.Warnings() {
		log.Warn(w)
	}
	proxies, _ := cfg.trustedProxies()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	s := &Server{cfg: cfg, log: log, stop: make(chan struct{}), draining: make(chan struct{})}
	var err error
	if cfg.RedisURL != "" {
		if err = s.openCluster(ctx); err == nil {
			s.checkSharedAttachments(ctx, cfg.attachmentDir())
		}
	} else {
		s.store, err = storage.OpenBolt(filepath.Join(cfg.DataDir, "klassenfunk.db"), &storage.BoltOptions{NoSync: cfg.NoSync, Logger: log})
	}
	if err != nil {
		return nil, err
	}
	store := s.store
	s.reg = prometheus.NewRegistry()
	s.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.metrics = newHTTPMetrics(s.reg)
	if s.backups, err = s.newBackups(); err != nil {
		s.closeStores()
		return nil, err
	}

	if err := s.openGeoIP(); err != nil {
		s.closeStores()
		return nil, err
	}
	s.Auth, err = auth.New(auth.Config{
		Store:               store,
		Log:                 log.With("component", "auth"),
		Argon2:              cfg.Auth.Argon2,
		SessionIdle:         cfg.Auth.SessionIdle,
		TouchInterval:       cfg.Auth.TouchInterval,
		MaxFailuresPerLogin: cfg.Auth.MaxFailuresPerLogin,
		MaxFailuresPerAddr:  cfg.Auth.MaxFailuresPerAddr,
		FailureWindow:       cfg.Auth.FailureWindow,
		LoginRetention:      cfg.Retention.LoginHistory,
		NewLimiter:          s.limiter(),
		OnRevoke:            s.onRevoke,
		OnErase:             s.onErase,
		Locator:             s.locator(),
		OnCountries:         s.onCountries,
		Now:                 cfg.Now,
	})
	if err != nil {
		s.closeStores()
		return nil, err
	}
	s.OperatorTokenGenerated, err = s.Auth.InitOperatorToken(ctx, cfg.OperatorToken)
	if err != nil {
		s.closeStores()
		return nil, err
	}

	s.Msg, err = messenger.New(messenger.Config{
		Store:               store,
		Auth:                s.Auth,
		Broker:              s.broker(),
		Presence:            s.presence(),
		Log:                 log.With("component", "messenger"),
		OnMessage:           s.onMessage,
		Registerer:          s.reg,
		AttachmentDir:       cfg.attachmentDir(),
		MessageRetention:    cfg.Retention.Messages,
		AttachmentRetention: cfg.Retention.Attachments,
		MaxAttachmentBytes:  cfg.Messenger.MaxAttachmentBytes,
		RecheckInterval:     s.Auth.TouchInterval(),
		Gateway: messenger.GatewayConfig{
			SendQueue:    cfg.Messenger.SendQueue,
			SendRate:     cfg.Messenger.SendRate,
			SendBurst:    cfg.Messenger.SendBurst,
			ReadRate:     cfg.Messenger.ReadRate,
			ReadBurst:    cfg.Messenger.ReadBurst,
			PingInterval: cfg.Messenger.PingInterval,
			AuthTimeout:  cfg.Messenger.AuthTimeout,

			MaxSocketsPerDevice: cfg.Messenger.MaxSocketsPerDevice,
			MaxSocketsPerUser:   cfg.Messenger.MaxSocketsPerUser,
			SocketCapsFrom:      cfg.Messenger.SocketCapsFrom,
			SocketsCrowdedFrom:  cfg.Messenger.SocketsCrowdedFrom,
			SendTimeout:         s.sendTimeout(),
		},
		Now:             cfg.Now,
		SchoolSwitchTTL: s.schoolSwitchTTL(),
	})
	if err != nil {
		s.closeStores()
		return nil, err
	}
	if s.cluster != nil {
		s.cluster.broker.Start()
	}

	if err := s.openPush(ctx); err != nil {
		s.Msg.Close()
		s.closeStores()
		return nil, err
	}

	mux := http.NewServeMux()
	authHTTP := auth.NewHTTP(s.Auth, proxies)
	authHTTP.Register(mux)
	s.Msg.Register(mux, authHTTP)
	if s.Push != nil {
		s.Push.Register(mux, authHTTP)
	}
	mux.HandleFunc("POST /api/v1/admin/backup", authHTTP.Operator(s.backupHandler))
	mux.HandleFunc("/api/v1/", httpapi.NotFound)
	settings, err := web.New(web.Config{Auth: authHTTP, TrustedProxies: proxies})
	if err != nil {
		s.Close()
		return nil, err
	}
	settings.Register(mux)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	var h http.Handler = mux
	if d := s.sendTimeout(); d > 0 {
		h = withRedisDeadline(mux, d)
	}
	s.handler = s.withLogging(settings.Secure(httpapi.CleanAPIPaths(h)), proxies)
	return s, nil
}

// withRedisDeadline bounds, in cluster mode, how long an API request
// waits for Redis: as a send frame does (messenger.send_timeout), so that
// a Redis that hangs gets the app a 500 `internal` after that time, not
// after the hang. go-redis honours the deadline (ContextTimeoutEnabled).
// Not for the requests whose own work may take longer: the WebSocket,
// attachments (their bodies), the export, and the Argon2 checks of login
// and erasure, which may wait their turn for a hash slot.
func withRedisDeadline(next http.Handler, d time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch p := r.URL.Path; {
		case !strings.HasPrefix(p, "/api/v1/"), p == "/api/v1/ws", p == "/api/v1/login", p == "/api/v1/me/erase",
			p == "/api/v1/me/export", p == "/api/v1/admin/backup", strings.HasPrefix(p, "/api/v1/attachments"):
			next.ServeHTTP(w, r)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), d)
		defer cancel()
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// Handler is the node's HTTP handler.
func (s *Server) Handler() http.Handler { return s.handler }

// Store is the node's record store (admin tasks, tests).
func (s *Server) Store() storage.Store { return s.store }

// Registry is the node's Prometheus registry.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// onRevoke is called by auth after a credential is gone.
func (s *Server) onRevoke(c storage.Credential) {
	s.log.Info("credential revoked", "cred", c.ID, "kind", c.Kind)
	if s.Msg != nil {
		s.Msg.CredentialGone(c)
	}
	if s.Push != nil {
		s.Push.Forget(c.ID)
	}
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.store.Ping(ctx); err != nil {
		http.Error(w, "store unavailable\n", http.StatusServiceUnavailable)
		return
	}
	if s.cluster != nil && !s.cluster.broker.Healthy() {
		http.Error(w, "broker unavailable\n", http.StatusServiceUnavailable)
		return
	}
	select {
	case <-s.draining:
		http.Error(w, "shutting down\n", http.StatusServiceUnavailable)
		return
	default:
	}
	w.Write([]byte("ready\n"))
}

// sessionSweepMax is the longest a session's socket stays open past the
// session's idle deadline: sessions are swept at least this often, however
// long the retention sweep interval.
const sessionSweepMax = 5 * time.Second

// Start runs the background jobs (retention sweeper, backups) until Close.
func (s *Server) Start() {
	if s.backups != nil {
		s.wg.Go(func() { s.backups.run(s.stop) })
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		// Close ends a sweep under way (it rests between batches, and
		// one after a long stop has much to delete); the next start
		// goes on with what is left.
		ctx, cancel := ctxtime.Until(s.stop)
		defer cancel()
		t := time.NewTicker(s.cfg.Retention.SweepInterval)
		defer t.Stop()
		sessions := time.NewTicker(min(s.cfg.Retention.SweepInterval, sessionSweepMax))
		defer sessions.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-t.C:
				s.Sweep(ctx)
			case <-sessions.C:
				s.sweepSessions(ctx)
			}
		}
	}()
}

// Sweep runs one round of retention deletes.
func (s *Server) Sweep(ctx context.Context) {
	s.sweepSessions(ctx)
	if err := s.Msg.Sweep(ctx); err != nil && ctx.Err() == nil {
		s.log.Error("sweep", "err", err)
	}
	s.sweepLogins(ctx)
}

// loginSweepEvery: login history is kept for days and its read paths
// leave out what is past retention, so its sweep, which visits every
// user, runs at most this often.
const loginSweepEvery = time.Hour

// sweepLogins removes the logins past retention from every user's
// history, at most once per loginSweepEvery (by the server's clock).
func (s *Server) sweepLogins(ctx context.Context) {
	s.loginSweep.Lock()
	defer s.loginSweep.Unlock()
	now := s.cfg.Now()
	if last := s.loginsSwept; !last.IsZero() && now.Sub(last) < loginSweepEvery {
		return
	}
	n, err := s.Auth.SweepLogins(ctx)
	if n > 0 {
		s.Msg.CountDeleted("logins", n)
		s.log.Info("logins past retention deleted", "count", n)
	}
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error("sweep logins", "err", err)
		}
		return // again at the next sweep
	}
	s.loginsSwept = now
}

// sweepSessions deletes the sessions idle past their deadline, which
// closes their sockets (4401).
func (s *Server) sweepSessions(ctx context.Context) {
	if n, err := s.Auth.SweepSessions(ctx); err != nil {
		if ctx.Err() == nil {
			s.log.Error("sweep sessions", "err", err)
		}
	} else if n > 0 {
		s.Msg.CountDeleted("sessions", n)
		s.log.Info("expired sessions deleted", "count", n)
	}
}

// Close stops the background jobs and closes the stores. Safe to call
// twice.
func (s *Server) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.stop)
		s.wg.Wait()
		// The broker first: no event from another node may start work
		// after the messenger has waited for its own.
		if s.cluster != nil {
			s.cluster.broker.Close()
		}
		s.Msg.Close()
		if s.Push != nil {
			s.Push.Close()
		}
		err = s.closeStores()
		s.closeGeoIP()
	})
	if errors.Is(err, storage.ErrClosed) {
		err = nil
	}
	return err
}

// Empty reports whether no school exists yet (first start).
func (s *Server) Empty(ctx context.Context) (bool, error) {
	schools, err := s.store.Schools(ctx)
	return len(schools) == 0, err
}

// Mode is "embedded" or "cluster".
func (s *Server) Mode() string {
	if s.cfg.RedisURL != "" {
		return "cluster"
	}
	return "embedded"
}

// Drain closes every WebSocket with 1001 (going away) and marks the node
// unready, before the HTTP server shuts down.
func (s *Server) Drain(ctx context.Context) {
	s.drainOnce.Do(func() { close(s.draining) })
	s.Msg.Drain(ctx)
}
