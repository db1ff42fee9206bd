package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"klassenfunk/proto"
)

// CursorStore persists the sync cursors of a [Session]: per conversation
// the last seq up to which every message has been seen.
type CursorStore interface {
	// LoadCursors returns the stored cursors (an empty map when there are
	// none).
	LoadCursors() (map[string]uint64, error)
	// SaveCursors replaces the stored cursors. It is called from the
	// session's reader goroutine after the cursors moved.
	SaveCursors(map[string]uint64) error
}

// SessionConfig configures a [Session]. Zero fields take the documented
// defaults.
type SessionConfig struct {
	// BaseURL is the server, e.g. "https://chat.example.org". Required.
	BaseURL string
	// Token is the credential, sent in the Authorization header of the
	// upgrade request. Required.
	Token string
	// Cursors persists the sync cursors. Nil keeps them in memory only.
	Cursors CursorStore
	// OnMessage receives every new message once (per Session) on the
	// session's reader goroutine: messages of one conversation arrive in
	// seq order as the server sends them. It should return quickly. Nil
	// drops messages (cursors still move).
	OnMessage func(*proto.Message)
	// OnEvent reports connection changes and errors that do not stop the
	// session. Nil ignores them.
	OnEvent func(Event)
	// Log receives debug lines. Nil discards them.
	Log *slog.Logger
	// MinBackoff is the first wait before a reconnect. Zero means 250 ms.
	MinBackoff time.Duration
	// MaxBackoff caps the wait between reconnects. Zero means 30 s.
	MaxBackoff time.Duration
	// ReadTimeout is how long the connection may be silent (no frame, no
	// server ping) before it counts as dead. Zero means 75 s (the server
	// pings every 30 s).
	ReadTimeout time.Duration
	// Dialer opens the WebSocket. Nil means a dialer with a 10 s handshake
	// timeout and the environment's proxy settings.
	Dialer *websocket.Dialer
}

// EventKind says what an [Event] reports.
type EventKind int

const (
	// EventConnected: the server sent ready; the sync is under way.
	EventConnected EventKind = iota + 1
	// EventSynced: the sync replay after a (re)connect or a gap is
	// complete.
	EventSynced
	// EventDisconnected: the connection ended (Err says why); the next
	// attempt follows after Retry.
	EventDisconnected
	// EventError: an error that does not end the connection (an error
	// frame without a pending send, a failure to save cursors).
	EventError
)

func (k EventKind) String() string {
	switch k {
	case EventConnected:
		return "connected"
	case EventSynced:
		return "synced"
	case EventDisconnected:
		return "disconnected"
	case EventError:
		return "error"
	}
	return "event(" + strconv.Itoa(int(k)) + ")"
}

// Event is a connection change reported through SessionConfig.OnEvent.
type Event struct {
	Kind EventKind
	// Err is the reason of a disconnect or the error of EventError.
	Err error
	// Retry is the wait before the next connection attempt.
	Retry time.Duration
}

// Sent confirms that the server stored a message sent with
// [Session.Send].
type Sent struct {
	ID     string
	Seq    uint64
	SentAt time.Time
}

// CloseError is a WebSocket close frame from the server.
type CloseError struct {
	Code proto.CloseCode
	Text string
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("server closed the connection: %d %s", int(e.Code), e.Text)
}

// Is makes errors.Is(err, ErrRevoked) hold for 4401, errors.Is(err,
// ErrCountryBlocked) for 4403 and errors.Is(err, ErrReplaced) for 4409.
func (e *CloseError) Is(target error) bool {
	switch target {
	case ErrRevoked:
		return e.Code == proto.CloseUnauthorized
	case ErrCountryBlocked:
		return e.Code == proto.CloseCountryBlocked
	case ErrReplaced:
		return e.Code == proto.CloseReplaced
	}
	return false
}

// Session is a WebSocket session that survives disconnects: Run connects,
// sends sync with the persisted cursors after every (re)connect, delivers
// new messages, and reconnects with capped, jittered exponential backoff.
// It stops for good when the credential is refused (401, 4401), the
// country is blocked (4403) or newer sockets of the device replaced it
// (4409). Send may be called from any goroutine.
//
// Cursors move only over contiguous seqs: a message above a gap is
// delivered at once, but the cursor waits until the gap is filled. A gap
// makes the session ask for a sync; what a completed sync did not fill is
// gone for good (expired), and the cursor moves over it.
type Session struct {
	cfg SessionConfig

	mu       sync.Mutex
	cursors  map[string]uint64              // guarded by mu
	above    map[string]map[uint64]struct{} // guarded by mu; seqs seen above a gap
	seen     idSet                          // guarded by mu
	sends    map[string]*pendingSend        // guarded by mu; by ref
	conn     *wsConn                        // guarded by mu; nil while disconnected
	syncing  bool                           // guarded by mu; a sync is unanswered
	nextRef  uint64                         // guarded by mu
	running  bool                           // guarded by mu
	finished error                          // guarded by mu; why Run returned
	done     chan struct{}                  // closed when Run returns
}

type pendingSend struct {
	conv  string
	frame []byte
	res   chan sendResult // buffered 1
}

type sendResult struct {
	sent Sent
	err  error
}

// NewSession returns a session; it does nothing until Run.
func NewSession(cfg SessionConfig) *Session {
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 250 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = cfg.MinBackoff
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = 75 * time.Second
	}
	if cfg.Dialer == nil {
		cfg.Dialer = &websocket.Dialer{HandshakeTimeout: 10 * time.Second, Proxy: http.ProxyFromEnvironment}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Session{
		cfg:     cfg,
		cursors: make(map[string]uint64),
		above:   make(map[string]map[uint64]struct{}),
		seen:    newIDSet(10000),
		sends:   make(map[string]*pendingSend),
		done:    make(chan struct{}),
	}
}

// Cursors returns a copy of the current cursors.
func (s *Session) Cursors() map[string]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.snapshotLocked()
}

func (s *Session) snapshotLocked() map[string]uint64 {
	c := make(map[string]uint64, len(s.cursors))
	for k, v := range s.cursors {
		c[k] = v
	}
	return c
}

// Run connects and keeps the session up until ctx ends (it returns
// ctx.Err()) or the server refuses the credential (ErrRevoked) or the
// country (ErrCountryBlocked). Run may be called once.
func (s *Session) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.running || s.finished != nil {
		s.mu.Unlock()
		return errors.New("client: Session.Run called twice")
	}
	s.running = true
	s.mu.Unlock()

	err := s.run(ctx)

	s.mu.Lock()
	s.finished = err
	sends := s.sends
	s.sends = map[string]*pendingSend{}
	close(s.done) // under mu: Send checks it under mu
	s.mu.Unlock()
	for _, p := range sends {
		p.res <- sendResult{err: fmt.Errorf("%w: %w", ErrSessionClosed, err)}
	}
	return err
}

func (s *Session) run(ctx context.Context) error {
	if _, err := wsURL(s.cfg.BaseURL); err != nil {
		return err
	}
	if s.cfg.Cursors != nil {
		c, err := s.cfg.Cursors.LoadCursors()
		if err != nil {
			return fmt.Errorf("load cursors: %w", err)
		}
		s.mu.Lock()
		for k, v := range c {
			s.cursors[k] = v
		}
		s.mu.Unlock()
	}
	attempt := 0
	for {
		healthy, err := s.connect(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, ErrRevoked) || errors.Is(err, ErrCountryBlocked) || errors.Is(err, ErrReplaced) {
			s.event(Event{Kind: EventDisconnected, Err: err})
			return err
		}
		if healthy {
			attempt = 0
		}
		wait := s.backoff(attempt)
		attempt++
		var ae *APIError
		if errors.As(err, &ae) && ae.RetryAfter > wait {
			wait = ae.RetryAfter
		}
		s.cfg.Log.Debug("session: disconnected", "err", err, "retry", wait)
		s.event(Event{Kind: EventDisconnected, Err: err, Retry: wait})
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// backoff returns the wait before reconnect attempt n (0-based): MinBackoff
// doubled n times, capped at MaxBackoff, of which a random half is taken
// off ("equal jitter"), so that clients do not return in lockstep after a
// server restart.
func (s *Session) backoff(n int) time.Duration {
	d := s.cfg.MinBackoff
	for i := 0; i < n && d < s.cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, s.cfg.MaxBackoff)
	half := d / 2
	return half + rand.N(half+1)
}

func (s *Session) event(e Event) {
	if s.cfg.OnEvent != nil {
		s.cfg.OnEvent(e)
	}
}

// wsURL turns the base URL into the WebSocket URL.
func wsURL(base string) (string, error) {
	base = strings.TrimRight(base, "/")
	switch {
	case strings.HasPrefix(base, "http://"):
		return "ws://" + strings.TrimPrefix(base, "http://") + "/api/v1/ws", nil
	case strings.HasPrefix(base, "https://"):
		return "wss://" + strings.TrimPrefix(base, "https://") + "/api/v1/ws", nil
	}
	return "", fmt.Errorf("client: server %q is not an http:// or https:// URL", base)
}

// connect runs one connection until it ends. healthy reports whether it got
// as far as a completed sync (then the backoff starts over).
func (s *Session) connect(ctx context.Context) (healthy bool, err error) {
	u, err := wsURL(s.cfg.BaseURL)
	if err != nil {
		return false, err
	}
	h := http.Header{"Authorization": {"Bearer " + s.cfg.Token}}
	ws, resp, err := s.cfg.Dialer.DialContext(ctx, u, h)
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			ae := readAPIError(resp)
			resp.Body.Close()
			return false, ae
		}
		return false, fmt.Errorf("dial: %w", err)
	}
	ws.SetReadLimit(2 * proto.MaxFrameSize)
	c := &wsConn{ws: ws, wake: make(chan struct{}, 1), done: make(chan struct{})}
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		c.writeLoop()
	}()
	stop := context.AfterFunc(ctx, func() {
		ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		ws.NetConn().Close()
	})
	defer func() {
		stop()
		s.detach(c)
		close(c.done)
		ws.Close()
		<-writerDone
	}()

	readTimeout := s.cfg.ReadTimeout
	ws.SetPingHandler(func(data string) error {
		ws.SetReadDeadline(time.Now().Add(readTimeout))
		err := ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(10*time.Second))
		var ne net.Error
		if errors.Is(err, websocket.ErrCloseSent) || (errors.As(err, &ne) && ne.Timeout()) {
			return nil
		}
		return err
	})

	ws.SetReadDeadline(time.Now().Add(15 * time.Second))
	f, err := readFrame(ws)
	if err != nil {
		return false, err
	}
	if f.Type != proto.TypeReady {
		return false, fmt.Errorf("first frame is %q, not ready", f.Type)
	}
	s.attach(c)
	s.cfg.Log.Debug("session: ready", "user", f.UserID, "device", f.DeviceID)
	s.event(Event{Kind: EventConnected})

	for {
		ws.SetReadDeadline(time.Now().Add(readTimeout))
		f, err := readFrame(ws)
		if err != nil {
			return healthy, err
		}
		switch f.Type {
		case proto.TypeMessage:
			s.onMessage(c, f.Message)
		case proto.TypeSent:
			s.onSent(f)
		case proto.TypeError:
			s.onError(c, f)
		case proto.TypeSynced:
			s.onSynced()
			healthy = true
		}
	}
}

// readFrame reads and decodes one server frame; a close frame becomes a
// *CloseError.
func readFrame(ws *websocket.Conn) (*proto.ServerFrame, error) {
	for {
		mt, data, err := ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return nil, &CloseError{Code: proto.CloseCode(ce.Code), Text: ce.Text}
			}
			return nil, err
		}
		if mt != websocket.TextMessage {
			continue
		}
		f, err := proto.DecodeServerFrame(data)
		if err != nil {
			return nil, err
		}
		if f.Type == proto.TypeMessage && f.Message == nil {
			return nil, errors.New("message frame without message")
		}
		return f, nil
	}
}

// attach makes c the current connection: it asks for a sync with the
// cursors, then repeats every unconfirmed send (the server stores each
// client_id once).
func (s *Session) attach(c *wsConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conn = c
	s.syncing = true
	c.enqueue(proto.AppendSync(nil, s.snapshotLocked()))
	for _, p := range s.sends {
		c.enqueue(p.frame)
	}
}

func (s *Session) detach(c *wsConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == c {
		s.conn = nil
		s.syncing = false
	}
}

// noteLocked records that seq of conv has been seen and moves the cursor
// over contiguous seqs. It reports whether the seq is new and whether the
// cursor moved.
func (s *Session) noteLocked(conv string, seq uint64) (fresh, moved bool) {
	cur := s.cursors[conv]
	if seq <= cur {
		return false, false
	}
	a := s.above[conv]
	if _, ok := a[seq]; ok {
		return false, false
	}
	if seq != cur+1 {
		if a == nil {
			a = make(map[uint64]struct{})
			s.above[conv] = a
		}
		a[seq] = struct{}{}
		return true, false
	}
	cur = seq
	for {
		if _, ok := a[cur+1]; !ok {
			break
		}
		delete(a, cur+1)
		cur++
	}
	if len(a) == 0 {
		delete(s.above, conv)
	}
	s.cursors[conv] = cur
	return true, true
}

func (s *Session) onMessage(c *wsConn, m *proto.Message) {
	s.mu.Lock()
	deliver, moved := false, false
	if !s.seen.has(m.ID) {
		s.seen.add(m.ID)
		deliver, moved = s.noteLocked(m.Conversation, m.Seq)
	}
	var syncFrame []byte
	if _, gap := s.above[m.Conversation]; gap && !s.syncing {
		s.syncing = true
		syncFrame = proto.AppendSync(nil, s.snapshotLocked())
	}
	var snap map[string]uint64
	if moved {
		snap = s.snapshotLocked()
	}
	s.mu.Unlock()

	if deliver && s.cfg.OnMessage != nil {
		s.cfg.OnMessage(m)
	}
	if snap != nil {
		s.save(snap)
	}
	if syncFrame != nil {
		s.cfg.Log.Debug("session: gap, syncing", "conv", m.Conversation, "seq", m.Seq)
		c.enqueue(syncFrame)
	}
}

func (s *Session) onSent(f *proto.ServerFrame) {
	s.mu.Lock()
	p, ok := s.sends[f.Ref]
	var snap map[string]uint64
	if ok {
		delete(s.sends, f.Ref)
		if !s.seen.has(f.ID) {
			s.seen.add(f.ID)
			if _, moved := s.noteLocked(p.conv, f.Seq); moved {
				snap = s.snapshotLocked()
			}
		}
	}
	s.mu.Unlock()
	if !ok {
		return // a repeated send confirmed twice
	}
	p.res <- sendResult{sent: Sent{ID: f.ID, Seq: f.Seq, SentAt: f.SentAt}}
	if snap != nil {
		s.save(snap)
	}
}

func (s *Session) onError(c *wsConn, f *proto.ServerFrame) {
	ae := &APIError{Status: f.Code.HTTPStatus(), Code: f.Code, Message: f.ErrMessage}
	s.mu.Lock()
	p, ok := s.sends[f.Ref]
	if ok && f.Ref != "" {
		delete(s.sends, f.Ref)
	}
	if !ok && (f.Code == proto.CodeInternal || f.Code == proto.CodeRateLimited) {
		s.syncing = false // the server gives up a failed or refused sync with an error frame
		time.AfterFunc(syncRetry, func() { s.resync(c) })
	}
	s.mu.Unlock()
	if ok && f.Ref != "" {
		p.res <- sendResult{err: ae}
		return
	}
	s.event(Event{Kind: EventError, Err: ae})
}

// syncRetry is how long a session waits before it asks again for a sync
// that the server failed or refused (the device's read bucket: a long
// replay just before, or history paged meanwhile).
const syncRetry = 2 * time.Second

// resync asks for a sync on c again, unless c is no longer the connection
// or a sync is under way.
func (s *Session) resync(c *wsConn) {
	s.mu.Lock()
	if s.conn != c || s.syncing {
		s.mu.Unlock()
		return
	}
	s.syncing = true
	frame := proto.AppendSync(nil, s.snapshotLocked())
	s.mu.Unlock()
	s.cfg.Log.Debug("session: sync again after a refused one")
	c.enqueue(frame)
}

// onSynced ends a sync. The server has replayed every stored message after
// the cursors, so a seq that is still missing below one seen is gone
// (expired): the cursor moves over it.
func (s *Session) onSynced() {
	s.mu.Lock()
	s.syncing = false
	moved := len(s.above) > 0
	for conv, a := range s.above {
		top := s.cursors[conv]
		for seq := range a {
			top = max(top, seq)
		}
		s.cursors[conv] = top
		delete(s.above, conv)
	}
	var snap map[string]uint64
	if moved {
		snap = s.snapshotLocked()
	}
	s.mu.Unlock()
	if snap != nil {
		s.save(snap)
	}
	s.event(Event{Kind: EventSynced})
}

func (s *Session) save(c map[string]uint64) {
	if s.cfg.Cursors == nil {
		return
	}
	if err := s.cfg.Cursors.SaveCursors(c); err != nil {
		s.event(Event{Kind: EventError, Err: fmt.Errorf("save cursors: %w", err)})
	}
}

// Send sends a message over the session and waits until the server has
// stored it ("sent") or refused it (an *APIError). While disconnected the
// send waits for the next connection; a send whose connection drops before
// the confirmation is repeated after the reconnect with the same client_id,
// which the server stores only once. s.Conversation and s.ClientID are
// required.
func (s *Session) Send(ctx context.Context, snd *proto.Send) (Sent, error) {
	if snd == nil || snd.Conversation == "" || snd.ClientID == "" {
		return Sent{}, errors.New("client: Send needs a conversation and a client_id")
	}
	if err := snd.Validate(true); err != nil {
		return Sent{}, err
	}
	s.mu.Lock()
	select {
	case <-s.done:
		err := s.finished
		s.mu.Unlock()
		return Sent{}, fmt.Errorf("%w: %w", ErrSessionClosed, err)
	default:
	}
	s.nextRef++
	ref := "s" + strconv.FormatUint(s.nextRef, 10)
	p := &pendingSend{conv: snd.Conversation, frame: proto.AppendSendFrame(nil, ref, snd), res: make(chan sendResult, 1)}
	s.sends[ref] = p
	if s.conn != nil {
		s.conn.enqueue(p.frame)
	}
	s.mu.Unlock()

	select {
	case r := <-p.res:
		return r.sent, r.err
	case <-ctx.Done():
		s.mu.Lock()
		delete(s.sends, ref)
		s.mu.Unlock()
		return Sent{}, ctx.Err()
	}
}

// wsConn is one WebSocket connection. The session's reader goroutine owns
// reads; writeLoop is the only writer of data frames (control frames may
// be written from anywhere, as gorilla/websocket allows).
type wsConn struct {
	ws    *websocket.Conn
	mu    sync.Mutex
	queue [][]byte      // guarded by mu
	wake  chan struct{} // capacity 1
	done  chan struct{} // closed when the connection ends
}

// enqueue queues a frame without blocking.
func (c *wsConn) enqueue(frame []byte) {
	c.mu.Lock()
	c.queue = append(c.queue, frame)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *wsConn) writeLoop() {
	for {
		select {
		case <-c.done:
			return
		case <-c.wake:
		}
		c.mu.Lock()
		q := c.queue
		c.queue = nil
		c.mu.Unlock()
		for _, f := range q {
			c.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if err := c.ws.WriteMessage(websocket.TextMessage, f); err != nil {
				c.ws.NetConn().Close() // the reader fails and the session reconnects
				return
			}
		}
	}
}

// idSet remembers the last n message ids.
type idSet struct {
	m    map[string]struct{}
	ring []string
	next int
}

func newIDSet(n int) idSet {
	return idSet{m: make(map[string]struct{}, n), ring: make([]string, n)}
}

func (s *idSet) has(id string) bool { _, ok := s.m[id]; return ok }

func (s *idSet) add(id string) {
	if old := s.ring[s.next]; old != "" {
		delete(s.m, old)
	}
	s.ring[s.next] = id
	s.next = (s.next + 1) % len(s.ring)
	s.m[id] = struct{}{}
}
