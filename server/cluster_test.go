package server_test

import (
	"encoding/base64"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"klassenfunk/internal/redistest"
	"klassenfunk/internal/testenv"
	"klassenfunk/proto"
	"klassenfunk/server"
)

// twoNodes starts a Redis and two nodes sharing it, with a teacher (alice)
// and a student (bob) in a direct conversation.
type twoNodes struct {
	redis        *redistest.Server
	n1, n2       *testenv.Env
	school       string
	alice, bob   string
	aTok, bTok   string
	bTrust, conv string
}

func startTwoNodes(t *testing.T, opts ...func(*server.Config)) *twoNodes {
	t.Helper()
	r := redistest.Start(t)
	cluster := func(c *server.Config) {
		c.RedisURL = r.URL()
		for _, o := range opts {
			o(c)
		}
	}
	tn := &twoNodes{redis: r, n1: testenv.New(t, cluster), n2: testenv.New(t, cluster)}
	tn.school = tn.n1.CreateSchool("Gesamtschule Nord")
	tn.alice = tn.n1.CreateUser(tn.school, "alice", "teacher")
	tn.bob = tn.n2.CreateUser(tn.school, "bob", "student")
	tn.aTok, _ = tn.n1.Login("alice", "a-phone", true)
	tn.bTok, tn.bTrust = tn.n2.Login("bob", "b-phone", true)
	var conv struct{ ID string }
	tn.n2.JSON("POST", "/api/v1/conversations", tn.aTok, map[string]string{"kind": "direct", "peer": tn.bob}, http.StatusCreated, &conv)
	tn.conv = conv.ID
	return tn
}

func (tn *twoNodes) sendFrame(ref, clientID string) string {
	return string(proto.AppendSendFrame(nil, ref, &proto.Send{
		Conversation: tn.conv, ClientID: clientID, Ciphertext: []byte("secret " + clientID),
		Keys: map[string][]byte{proto.KeyName(tn.bob, "b-phone"): []byte("k")},
	}))
}

func TestClusterDeliveryAcrossNodes(t *testing.T) {
	tn := startTwoNodes(t)
	a := tn.n1.Dial(tn.aTok)
	b := tn.n2.Dial(tn.bTok)
	a.Send(tn.sendFrame("r1", "c1"))
	sent, _ := a.ReadType(proto.TypeSent)
	f := b.Read()
	if f.Type != proto.TypeMessage || f.Message.ID != sent.ID || len(f.Message.Keys) != 1 {
		t.Fatalf("bob on node 2 got %+v", f)
	}
	// The reverse direction, and the HTTP path on the other node.
	var m proto.Message
	tn.n1.JSON("POST", "/api/v1/conversations/"+tn.conv+"/messages", tn.bTok, map[string]any{
		"client_id": "h1", "ciphertext": base64.StdEncoding.EncodeToString([]byte("x")),
		"keys": map[string]string{proto.KeyName(tn.alice, "a-phone"): "AAAA"},
	}, http.StatusCreated, &m)
	if f := a.Read(); f.Type != proto.TypeMessage || f.Message.ID != m.ID || f.Message.Seq != 2 {
		t.Fatalf("alice on node 1 got %+v", f)
	}
	// Presence is shared: node 1 sees bob's socket on node 2.
	testenv.Eventually(t, 5*time.Second, "node 1 sees bob online", func() bool {
		ok, err := tn.n1.Srv.Msg.Online(t.Context(), tn.bob, "b-phone")
		return err == nil && ok
	})
	b.Conn.Close()
	testenv.Eventually(t, 5*time.Second, "node 1 sees bob offline", func() bool {
		ok, err := tn.n1.Srv.Msg.Online(t.Context(), tn.bob, "b-phone")
		return err == nil && !ok
	})
}

func TestClusterRevocationWithinOneSecond(t *testing.T) {
	tn := startTwoNodes(t)
	b := tn.n2.Dial(tn.bTok)
	start := time.Now()
	tn.n1.JSON("DELETE", "/api/v1/trust/"+tn.bTrust, tn.bTok, nil, http.StatusNoContent, nil)
	if code := b.CloseCode(time.Second); code != int(proto.CloseUnauthorized) {
		t.Fatalf("bob's socket on node 2 closed with %d, want 4401", code)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("revocation took %v on the other node", d)
	}
	if r := tn.n2.Do("GET", "/api/v1/me", tn.bTok, nil); r.Status != http.StatusUnauthorized {
		t.Fatalf("node 2 still accepts the revoked token: %d", r.Status)
	}
}

func TestClusterRedisRestartMidStream(t *testing.T) {
	tn := startTwoNodes(t)
	a := tn.n1.Dial(tn.aTok)
	b := tn.n2.Dial(tn.bTok)

	// Alice sends a stream; Redis dies and comes back in the middle.
	var acked []string
	errors := 0
	for i := 0; i < 60; i++ {
		if i == 20 {
			tn.redis.Kill()
		}
		if i == 30 {
			tn.redis.Restart()
			testenv.Eventually(t, 10*time.Second, "nodes ready again", func() bool {
				return tn.n1.Do("GET", "/readyz", "", nil).Status == 200 && tn.n2.Do("GET", "/readyz", "", nil).Status == 200
			})
		}
		a.Send(tn.sendFrame(fmt.Sprint(i), fmt.Sprint("s", i)))
		f := a.Read()
		for f.Type == proto.TypeMessage {
			f = a.Read()
		}
		switch f.Type {
		case proto.TypeSent:
			acked = append(acked, f.ID)
		case proto.TypeError:
			errors++
		default:
			t.Fatalf("frame %q", f.Type)
		}
	}
	if errors == 0 || len(acked) < 40 {
		t.Fatalf("%d acked, %d errors: the outage did not happen as planned", len(acked), errors)
	}

	// Live delivery resumed on the same sockets: a new message arrives.
	a.Send(tn.sendFrame("last", "last"))
	last, _ := a.ReadType(proto.TypeSent)
	seen := map[string]bool{}
	for !seen[last.ID] {
		f := b.Read()
		if f.Type == proto.TypeMessage {
			seen[f.Message.ID] = true
		}
	}
	// Every acknowledged message is there after sync.
	b.SendBytes(proto.AppendSync(nil, nil))
	for f := b.Read(); f.Type != proto.TypeSynced; f = b.Read() {
		if f.Type == proto.TypeMessage {
			seen[f.Message.ID] = true
		}
	}
	for _, id := range acked {
		if !seen[id] {
			t.Fatalf("acknowledged message %s missing after sync", id)
		}
	}
}

// killSubscriptions kills the nodes' Redis subscriptions over and over
// until the returned stop is called, which fails the test when no kill
// went through (the gap it was for did not happen).
func (tn *twoNodes) killSubscriptions(t *testing.T) (stop func()) {
	done, killed := make(chan struct{}), make(chan int)
	go func() {
		n := 0
		defer func() { killed <- n }()
		for {
			select {
			case <-done:
				return
			default:
			}
			if _, err := redistest.Do(tn.redis.Addr(), "CLIENT", "KILL", "TYPE", "pubsub"); err == nil {
				n++
			}
		}
	}()
	return func() {
		t.Helper()
		close(done)
		if n := <-killed; n == 0 {
			t.Fatal("no CLIENT KILL went through: the gap did not happen as planned")
		}
	}
}

// TestClusterCatchUpAfterLostSubscription: a message published while the
// nodes have lost their Redis subscriptions still reaches every socket of
// the receiver once they resubscribe: a socket that has synced is caught
// up from its last seq, and one that never synced from what was sent since
// it opened.
func TestClusterCatchUpAfterLostSubscription(t *testing.T) {
	tn := startTwoNodes(t)
	post := func(clientID string) proto.Message {
		var m proto.Message
		tn.n1.JSON("POST", "/api/v1/conversations/"+tn.conv+"/messages", tn.aTok, map[string]any{
			"client_id": clientID, "ciphertext": base64.StdEncoding.EncodeToString([]byte("x")),
			"keys": map[string]string{proto.KeyName(tn.bob, "b-phone"): "AAAA"},
		}, http.StatusCreated, &m)
		return m
	}
	// History from before the sockets opened, which a catch-up leaves
	// alone.
	for i := range 5 {
		post(fmt.Sprint("old", i))
	}
	tn.n1.Clock.Advance(time.Minute)
	tn.n2.Clock.Advance(time.Minute)
	synced := tn.n2.Dial(tn.bTok)
	synced.SendBytes(proto.AppendSync(nil, nil))
	synced.ReadType(proto.TypeSynced)
	unsynced := tn.n2.Dial(tn.bTok)

	// The subscriptions are killed over and over while alice posts, so
	// that the message is published while node 2 is not subscribed.
	stop := tn.killSubscriptions(t)
	m := post("gap")
	stop()

	if f, _ := synced.ReadType(proto.TypeMessage); f.Message.ID != m.ID {
		t.Fatalf("the synced socket got %s, want %s", f.Message.ID, m.ID)
	}
	if f, _ := unsynced.ReadType(proto.TypeMessage); f.Message.ID != m.ID {
		t.Fatalf("the socket that never synced got %s, want %s", f.Message.ID, m.ID)
	}
}

// TestClusterRevocationDuringLostSubscription: a revocation published
// while a node's subscription is down is lost like a message; the node's
// catch-up after it resubscribes checks its sockets' credentials, so the
// revoked device's socket there still closes with 4401 (it would otherwise
// stay open, and get new messages, until the client sent a frame).
func TestClusterRevocationDuringLostSubscription(t *testing.T) {
	tn := startTwoNodes(t)
	b := tn.n2.Dial(tn.bTok)
	stop := tn.killSubscriptions(t)
	tn.n1.JSON("DELETE", "/api/v1/trust/"+tn.bTrust, tn.bTok, nil, http.StatusNoContent, nil)
	stop()
	if code := b.CloseCode(10 * time.Second); code != int(proto.CloseUnauthorized) {
		t.Fatalf("bob's socket on node 2: close %d, want 4401", code)
	}
}

// TestClusterRevocationRightAfterOutage: once Redis is back from an outage
// long enough to stretch the nodes' waits between attempts to subscribe
// again, a revocation still closes the device's socket on the other node
// within API.md's second: the node must not sleep out a long wait while
// the revocation's event passes it by (the catch-up after it resubscribes
// is what closes the socket then).
func TestClusterRevocationRightAfterOutage(t *testing.T) {
	tn := startTwoNodes(t)
	b := tn.n2.Dial(tn.bTok)
	failures := func() float64 { return tn.n2.Metric("klassenfunk_broker_subscription_failures_total") }
	tn.redis.Kill()
	testenv.Eventually(t, 30*time.Second, "node 2's 16 subscriptions failing over and over", func() bool {
		return failures() >= 16*8 // eight times each: the waits have grown as far as they go
	})
	// Redis comes back just after a failure: the next attempt is a whole
	// wait away.
	f := failures()
	testenv.Eventually(t, 10*time.Second, "another failure", func() bool { return failures() > f })
	tn.redis.Restart()
	var revoked time.Time
	testenv.Eventually(t, 10*time.Second, "the revocation accepted on node 1", func() bool {
		return tn.n1.Do("DELETE", "/api/v1/trust/"+tn.bTrust, tn.bTok, nil).Status == http.StatusNoContent
	})
	revoked = time.Now()
	if code := b.CloseCode(5 * time.Second); code != int(proto.CloseUnauthorized) {
		t.Fatalf("bob's socket on node 2: close %d, want 4401", code)
	}
	if d := time.Since(revoked); d > time.Second {
		t.Fatalf("the socket on node 2 closed %v after the revocation, want within 1s", d)
	}
}

// TestClusterHungRedis: while Redis hangs (SIGSTOP), a send frame gets an
// internal error frame once messenger.send_timeout has passed instead of
// waiting as long as the hang, and so does an HTTP request; /readyz
// answers 503 within its own 2 s.
// Once Redis answers again, the send repeated with its client_id is
// stored once.
func TestClusterHungRedis(t *testing.T) {
	const sendTimeout = time.Second
	tn := startTwoNodes(t, func(c *server.Config) { c.Messenger.SendTimeout = sendTimeout })
	a := tn.n1.Dial(tn.aTok)
	tn.redis.Freeze()
	sent := time.Now()
	a.Send(tn.sendFrame("r1", "during-hang")) // its first frame: the credential is checked again too
	if f := a.Read(); f.Type != proto.TypeError || f.Code != proto.CodeInternal || f.Ref != "r1" {
		t.Fatalf("send while Redis hangs: %+v, want an internal error for r1", f)
	}
	// One deadline for the frame: the recheck and the send do not each
	// get their own.
	if d := time.Since(sent); d > sendTimeout*9/5 {
		t.Fatalf("the error came %v after the send, want about the send timeout (%v)", d, sendTimeout)
	}
	hc := &http.Client{Timeout: 4 * time.Second}
	resp, err := hc.Get(tn.n2.HTTP.URL + "/readyz")
	if err != nil {
		t.Fatalf("/readyz while Redis hangs: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz while Redis hangs: %d, want 503", resp.StatusCode)
	}
	// HTTP requests wait no longer than a send frame: the check of the
	// token, and a send (the same message as the frame's: Redis may carry
	// it out once it wakes).
	for _, req := range []struct {
		method, path string
		body         any
	}{
		{"GET", "/api/v1/me", nil},
		{"POST", "/api/v1/conversations/" + tn.conv + "/messages", map[string]any{
			"client_id": "during-hang", "ciphertext": base64.StdEncoding.EncodeToString([]byte("secret during-hang")),
			"keys": map[string]string{proto.KeyName(tn.bob, "b-phone"): base64.StdEncoding.EncodeToString([]byte("k"))},
		}},
	} {
		start := time.Now()
		resp := tn.n1.Do(req.method, req.path, tn.aTok, req.body)
		if d := time.Since(start); resp.Status != http.StatusInternalServerError || resp.ErrorCode() != "internal" || d > sendTimeout*9/5 {
			t.Fatalf("%s %s while Redis hangs: %d %s after %v, want 500 internal after about %v", req.method, req.path, resp.Status, resp.Body, d, sendTimeout)
		}
	}

	tn.redis.Thaw()
	var ack *proto.ServerFrame
	for i := 0; ack == nil; i++ {
		a.Send(tn.sendFrame(fmt.Sprint("again", i), "during-hang"))
		switch f := a.Read(); {
		case f.Type == proto.TypeSent:
			ack = f
		case i == 20:
			t.Fatalf("the repeated send: %+v", f)
		}
	}
	var page struct{ Messages []proto.Message }
	tn.n2.JSON("GET", "/api/v1/conversations/"+tn.conv+"/messages", tn.bTok, nil, http.StatusOK, &page)
	if len(page.Messages) != 1 || page.Messages[0].ID != ack.ID || ack.Seq != 1 {
		t.Fatalf("history %+v after the repeat (sent %s, seq %d), want that one message", page.Messages, ack.ID, ack.Seq)
	}
}

// TestClusterNodeWaitsForRedis: a node that starts while Redis is down
// (the machine is booting) waits for it, and starts once it is up.
func TestClusterNodeWaitsForRedis(t *testing.T) {
	r := redistest.Start(t)
	r.Kill()
	waiting := &signalWriter{want: "waiting for Redis", seen: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		srv, err := server.New(t.Context(), server.Config{RedisURL: r.URL(), DataDir: t.TempDir()},
			slog.New(slog.NewJSONHandler(waiting, nil)))
		if err == nil {
			err = srv.Close()
		}
		started <- err
	}()
	select {
	case <-waiting.seen:
	case err := <-started:
		t.Fatalf("the node did not wait for Redis: %v", err)
	}
	r.Restart()
	if err := <-started; err != nil {
		t.Fatalf("the node did not start once Redis was up: %v", err)
	}
}

// signalWriter closes seen once a write holds want.
type signalWriter struct {
	want string
	seen chan struct{}
	once sync.Once
}

func (w *signalWriter) Write(p []byte) (int, error) {
	if strings.Contains(string(p), w.want) {
		w.once.Do(func() { close(w.seen) })
	}
	return len(p), nil
}

// TestClusterAttachmentDirCheck: a node whose attachments directory is
// not the other nodes' says so when it starts.
func TestClusterAttachmentDirCheck(t *testing.T) {
	r := redistest.Start(t)
	on := func(dir string) testenv.Option {
		return func(c *server.Config) { c.RedisURL, c.DataDir = r.URL(), dir }
	}
	shared := t.TempDir()
	first := testenv.New(t, on(shared))
	second := testenv.New(t, on(shared))
	alone := testenv.New(t, on(t.TempDir()))
	const complaint = "not shared with the other nodes"
	for name, n := range map[string]*testenv.Env{"the first node": first, "a node sharing the directory": second} {
		if strings.Contains(n.Logs(), complaint) {
			t.Errorf("%s complained: %s", name, n.Logs())
		}
	}
	if !strings.Contains(alone.Logs(), complaint) {
		t.Errorf("a node with its own directory did not complain: %s", alone.Logs())
	}
}
