package client

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"klassenfunk/internal/testenv"
	"klassenfunk/proto"
	"klassenfunk/server"
)

// listener runs a Session for one device and collects what it reports.
type listener struct {
	t      *testing.T
	sess   *Session
	msgs   chan *proto.Message
	events chan Event
	done   chan error
	cancel context.CancelFunc

	mu    sync.Mutex
	conns []net.Conn
}

func startListener(t *testing.T, url, token string, cursors CursorStore) *listener {
	t.Helper()
	l := &listener{t: t, msgs: make(chan *proto.Message, 100), events: make(chan Event, 100), done: make(chan error, 1)}
	dialer := &websocket.Dialer{
		HandshakeTimeout: 5 * time.Second,
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err == nil {
				l.mu.Lock()
				l.conns = append(l.conns, c)
				l.mu.Unlock()
			}
			return c, err
		},
	}
	l.sess = NewSession(SessionConfig{
		BaseURL:    url,
		Token:      token,
		Cursors:    cursors,
		OnMessage:  func(m *proto.Message) { l.msgs <- m },
		OnEvent:    func(e Event) { l.events <- e },
		MinBackoff: 10 * time.Millisecond,
		MaxBackoff: 50 * time.Millisecond,
		Dialer:     dialer,
	})
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	go func() { l.done <- l.sess.Run(ctx) }()
	t.Cleanup(l.stop)
	return l
}

// stop ends the session and waits for Run to return.
func (l *listener) stop() {
	l.cancel()
	select {
	case <-l.done:
	case <-time.After(5 * time.Second):
		l.t.Error("session did not stop")
	}
	l.done <- nil // later stops return at once
}

// dropConnections cuts the TCP connections under the session.
func (l *listener) dropConnections() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		c.Close()
	}
	l.conns = nil
}

// waitEvent waits for an event of kind k and returns it.
func (l *listener) waitEvent(k EventKind) Event {
	l.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case e := <-l.events:
			if e.Kind == k {
				return e
			}
		case <-deadline:
			l.t.Fatalf("no %s event within 10s", k)
		}
	}
}

// next waits for the next delivered message.
func (l *listener) next() *proto.Message {
	l.t.Helper()
	select {
	case m := <-l.msgs:
		return m
	case <-time.After(10 * time.Second):
		l.t.Fatal("no message within 10s")
		return nil
	}
}

// none checks that nothing more was delivered so far.
func (l *listener) none() {
	l.t.Helper()
	select {
	case m := <-l.msgs:
		l.t.Fatalf("unexpected message seq %d in %s", m.Seq, m.Conversation)
	default:
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, what, cond)
}

func mustText(t *testing.T, c *Chat, m *proto.Message) string {
	t.Helper()
	content, err := c.Open(m)
	if err != nil {
		t.Fatalf("open message seq %d: %v", m.Seq, err)
	}
	return content.Text
}

// pair is alice (a teacher) and bob (a parent) with one device each, in a
// direct conversation.
type pair struct {
	w                *world
	alice, bob       *Chat
	aliceAcc, bobAcc *Account
	bobState         *State
	conv             string
}

func newPair(t *testing.T, opts ...testenv.Option) *pair {
	t.Helper()
	p := &pair{w: newWorld(t, opts...)}
	p.w.user(t, "alice", "teacher", fastHash("alice"))
	bobID := p.w.user(t, "bob", "parent", fastHash("bob"))
	p.alice, p.aliceAcc, _ = p.w.device(t, "alice")
	p.bob, p.bobAcc, p.bobState = p.w.device(t, "bob")
	conv, err := p.alice.API.Direct(context.Background(), bobID)
	if err != nil {
		t.Fatal(err)
	}
	p.conv = conv.ID
	return p
}

func TestSessionReconnectsAndSyncsFromPersistedCursors(t *testing.T) {
	p := newPair(t)
	w, alice, bob, bobAcc, bobState := p.w, p.alice, p.bob, p.bobAcc, p.bobState
	ctx := context.Background()
	send := func(text string) *proto.Message {
		t.Helper()
		res, err := alice.Send(ctx, p.conv, text, nil)
		if err != nil {
			t.Fatal(err)
		}
		return res.Message
	}

	l := startListener(t, w.env.URL, bobAcc.Credential.Token, bobState)
	l.waitEvent(EventSynced)

	// Live.
	m1 := send("eins")
	if got := l.next(); got.ID != m1.ID || mustText(t, bob, got) != "eins" {
		t.Fatalf("got seq %d", got.Seq)
	}
	eventually(t, "cursor 1 on disk", func() bool { c, _ := bobState.LoadCursors(); return c[p.conv] == 1 })

	// Cut the connection; what is sent meanwhile arrives after the
	// reconnect, through sync or live, exactly once.
	l.dropConnections()
	l.waitEvent(EventDisconnected)
	m2 := send("zwei")
	if got := l.next(); got.ID != m2.ID || mustText(t, bob, got) != "zwei" {
		t.Fatalf("after reconnect: got seq %d", got.Seq)
	}
	l.waitEvent(EventSynced)
	eventually(t, "cursor 2 on disk", func() bool { c, _ := bobState.LoadCursors(); return c[p.conv] == 2 })
	l.none()

	// A new session (a restarted process) starts from the cursors on disk:
	// nothing old is replayed.
	l.stop()
	l2 := startListener(t, w.env.URL, bobAcc.Credential.Token, bobState)
	l2.waitEvent(EventSynced)
	m3 := send("drei")
	if got := l2.next(); got.ID != m3.ID {
		t.Fatalf("restarted session delivered seq %d first, want the new seq 3", got.Seq)
	}
	eventually(t, "cursor 3", func() bool { return l2.sess.Cursors()[p.conv] == 3 })
}

// TestSessionFillsGapFromOwnDevice: messages that this device sent through
// another channel (POST, another process) are not delivered live to it;
// the gap they leave is noticed at the next message and filled by a sync.
func TestSessionFillsGapFromOwnDevice(t *testing.T) {
	p := newPair(t)
	w, alice, aliceAcc, bob := p.w, p.alice, p.aliceAcc, p.bob
	ctx := context.Background()
	l := startListener(t, w.env.URL, aliceAcc.Credential.Token, nil)
	l.waitEvent(EventSynced)

	if _, err := alice.Send(ctx, p.conv, "von mir", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Send(ctx, p.conv, "von bob", nil); err != nil {
		t.Fatal(err)
	}
	got := map[uint64]string{}
	for len(got) < 2 {
		m := l.next()
		got[m.Seq] = mustText(t, alice, m)
	}
	if got[1] != "von mir" || got[2] != "von bob" {
		t.Fatalf("got %v", got)
	}
	eventually(t, "contiguous cursor 2", func() bool { return l.sess.Cursors()[p.conv] == 2 })
	l.none()
}

func TestSessionSend(t *testing.T) {
	p := newPair(t)
	w, alice, aliceAcc, bob, bobAcc := p.w, p.alice, p.aliceAcc, p.bob, p.bobAcc
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	la := startListener(t, w.env.URL, aliceAcc.Credential.Token, nil)
	lb := startListener(t, w.env.URL, bobAcc.Credential.Token, nil)
	la.waitEvent(EventSynced)
	lb.waitEvent(EventSynced)

	snd, _, err := alice.Prepare(ctx, p.conv, &Content{Text: "über den Socket"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sent, err := la.sess.Send(ctx, snd)
	if err != nil {
		t.Fatal(err)
	}
	if sent.Seq != 1 || sent.ID == "" {
		t.Fatalf("sent %+v", sent)
	}
	if m := lb.next(); m.ID != sent.ID || mustText(t, bob, m) != "über den Socket" {
		t.Fatalf("bob got %s", m.ID)
	}
	if c := la.sess.Cursors()[p.conv]; c != 1 {
		t.Fatalf("sender's cursor %d after sent, want 1", c)
	}

	// The same client_id again is the same message.
	again, err := la.sess.Send(ctx, snd)
	if err != nil || again.ID != sent.ID {
		t.Fatalf("repeat: %+v %v", again, err)
	}
	// A refused send is an *APIError.
	bad := *snd
	bad.Conversation = "nope"
	bad.ClientID = NewClientID()
	var ae *APIError
	if _, err := la.sess.Send(ctx, &bad); !errors.As(err, &ae) || ae.Code != proto.CodeNotFound {
		t.Fatalf("send to unknown conversation: %v", err)
	}
	la.none()
}

func TestSessionSendWhileDisconnected(t *testing.T) {
	p := newPair(t)
	w, alice, aliceAcc := p.w, p.alice, p.aliceAcc
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The session has not connected yet when Send is called: the send
	// waits and goes out after the connection's sync.
	snd, _, err := alice.Prepare(ctx, p.conv, &Content{Text: "später"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	l := &listener{}
	l.sess = NewSession(SessionConfig{BaseURL: w.env.URL, Token: aliceAcc.Credential.Token})
	res := make(chan error, 1)
	go func() { _, err := l.sess.Send(ctx, snd); res <- err }()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- l.sess.Run(runCtx) }()
	if err := <-res; err != nil {
		t.Fatal(err)
	}
	stop()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run returned %v", err)
	}
	if _, err := l.sess.Send(ctx, snd); !errors.Is(err, ErrSessionClosed) {
		t.Fatalf("send after Run: %v", err)
	}
}

// TestSessionStopsWhenReplaced: eight newer sockets of the device (the
// server's default cap, here applied from the first socket on) close the
// session's with 4409, and the session stops rather than reconnect and
// close one of them in turn.
func TestSessionStopsWhenReplaced(t *testing.T) {
	w := newWorld(t, func(cfg *server.Config) { cfg.Messenger.SocketCapsFrom = 1 })
	w.user(t, "bob", "parent", fastHash("bob"))
	_, bobAcc, _ := w.device(t, "bob")
	l := startListener(t, w.env.URL, bobAcc.Credential.Token, nil)
	l.waitEvent(EventSynced)
	for range 8 {
		w.env.Dial(bobAcc.Credential.Token)
	}
	select {
	case err := <-l.done:
		var ce *CloseError
		if !errors.Is(err, ErrReplaced) || !errors.As(err, &ce) || ce.Code != proto.CloseReplaced {
			t.Fatalf("Run returned %v, want ErrReplaced (4409)", err)
		}
		l.done <- err
	case <-time.After(10 * time.Second):
		t.Fatal("session still running after eight newer sockets of its device")
	}
}

func TestSessionStopsWhenRevoked(t *testing.T) {
	w := newWorld(t)
	w.user(t, "bob", "parent", fastHash("bob"))
	bob, bobAcc, _ := w.device(t, "bob")
	l := startListener(t, w.env.URL, bobAcc.Credential.Token, nil)
	l.waitEvent(EventSynced)
	if err := bob.API.RevokeTrust(context.Background(), bobAcc.TrustID); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-l.done:
		if !errors.Is(err, ErrRevoked) {
			t.Fatalf("Run returned %v, want ErrRevoked", err)
		}
		var ce *CloseError
		if !errors.As(err, &ce) || ce.Code != proto.CloseUnauthorized {
			t.Fatalf("Run returned %v, want close code 4401", err)
		}
		l.done <- err
	case <-time.After(10 * time.Second):
		t.Fatal("session still running after revocation")
	}

	// A session with a revoked token stops at the handshake (HTTP 401).
	l2 := startListener(t, w.env.URL, bobAcc.Credential.Token, nil)
	select {
	case err := <-l2.done:
		var ae *APIError
		if !errors.Is(err, ErrRevoked) || !errors.As(err, &ae) || ae.Status != 401 {
			t.Fatalf("Run returned %v, want HTTP 401", err)
		}
		l2.done <- err
	case <-time.After(10 * time.Second):
		t.Fatal("session with a revoked token keeps retrying")
	}
}

// TestCursorAdvance checks the cursor rules without a server.
func TestCursorAdvance(t *testing.T) {
	s := NewSession(SessionConfig{BaseURL: "http://x", Token: "t"})
	note := func(seq uint64) bool {
		fresh, _ := s.noteLocked("c", seq)
		return fresh
	}
	for _, seq := range []uint64{1, 2, 4, 5} {
		if !note(seq) {
			t.Fatalf("seq %d not fresh", seq)
		}
	}
	if c := s.cursors["c"]; c != 2 {
		t.Fatalf("cursor %d above a gap, want 2", c)
	}
	if note(4) || note(2) {
		t.Fatal("duplicate seq taken as fresh")
	}
	note(3)
	if c := s.cursors["c"]; c != 5 || len(s.above) != 0 {
		t.Fatalf("cursor %d after the gap filled, want 5 (above %v)", c, s.above)
	}
	// A gap that a completed sync did not fill is gone (expired).
	note(8)
	note(9)
	s.onSynced()
	if c := s.cursors["c"]; c != 9 {
		t.Fatalf("cursor %d after synced, want 9", c)
	}
	// Other conversations are independent.
	s.noteLocked("d", 1)
	if s.cursors["d"] != 1 || s.cursors["c"] != 9 {
		t.Fatalf("cursors %v", s.cursors)
	}
}

func TestBackoffCappedWithJitter(t *testing.T) {
	s := NewSession(SessionConfig{BaseURL: "http://x", Token: "t", MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second})
	for n := 0; n < 40; n++ {
		full := min(100*time.Millisecond<<min(n, 20), time.Second)
		for range 20 {
			d := s.backoff(n)
			if d < full/2 || d > full {
				t.Fatalf("attempt %d: wait %v outside [%v, %v]", n, d, full/2, full)
			}
		}
	}
	seen := map[time.Duration]bool{}
	for range 50 {
		seen[s.backoff(3)] = true
	}
	if len(seen) < 10 {
		t.Fatalf("only %d distinct waits: no jitter", len(seen))
	}
}

// TestDeliverOncePerID: a message delivered again (a replay after a
// reconnect, or live and through sync) reaches OnMessage once.
func TestDeliverOncePerID(t *testing.T) {
	var got []string
	s := NewSession(SessionConfig{BaseURL: "http://x", Token: "t", OnMessage: func(m *proto.Message) { got = append(got, m.ID) }})
	c := &wsConn{wake: make(chan struct{}, 1)}
	for _, m := range []*proto.Message{
		{ID: "a", Conversation: "c", Seq: 1},
		{ID: "b", Conversation: "c", Seq: 2},
		{ID: "a", Conversation: "c", Seq: 1},
		{ID: "b", Conversation: "c", Seq: 2},
		{ID: "x", Conversation: "c", Seq: 2}, // another id at a seq already seen
		{ID: "d", Conversation: "c", Seq: 4}, // above a gap: delivered, and a sync is asked for
	} {
		s.onMessage(c, m)
	}
	if want := "a b d"; strings.Join(got, " ") != want {
		t.Fatalf("delivered %v, want %s", got, want)
	}
	if len(c.queue) != 1 || !strings.Contains(string(c.queue[0]), `"type":"sync"`) || !strings.Contains(string(c.queue[0]), `"c":2`) {
		t.Fatalf("queued %q, want one sync from cursor 2", c.queue)
	}
	// While that sync runs, another gap does not ask again.
	s.onMessage(c, &proto.Message{ID: "f", Conversation: "c", Seq: 6})
	if len(c.queue) != 1 {
		t.Fatalf("second sync queued while one is pending: %q", c.queue)
	}
}

// TestSessionSyncsAgainAfterRefusal: a sync the server refuses (the
// device's read bucket is empty: here one history page took its only
// token) is asked for again after syncRetry, and what was missed arrives.
func TestSessionSyncsAgainAfterRefusal(t *testing.T) {
	p := newPair(t, func(c *server.Config) { c.Messenger.ReadRate, c.Messenger.ReadBurst = 0.7, 1 })
	w, alice, bob, bobAcc, bobState := p.w, p.alice, p.bob, p.bobAcc, p.bobState
	ctx := context.Background()
	res, err := alice.Send(ctx, p.conv, "verpasst", nil)
	if err != nil {
		t.Fatal(err)
	}
	w.env.JSON("GET", "/api/v1/conversations/"+p.conv+"/messages", bobAcc.Credential.Token, nil, http.StatusOK, nil)

	l := startListener(t, w.env.URL, bobAcc.Credential.Token, bobState)
	var ae *APIError
	if e := l.waitEvent(EventError); !errors.As(e.Err, &ae) || ae.Code != proto.CodeRateLimited {
		t.Fatalf("error event %+v, want the refused sync", e)
	}
	if got := l.next(); got.ID != res.Message.ID || mustText(t, bob, got) != "verpasst" {
		t.Fatalf("got seq %d, want the missed message", got.Seq)
	}
	l.waitEvent(EventSynced)
}
