package messenger_test

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"syscall"
	"testing"
	"time"

	"klassenfunk/internal/testenv"
	"klassenfunk/proto"
)

// chat is a school with a teacher (two devices) and a student in a direct
// conversation, every device with a public key.
type chat struct {
	env                *testenv.Env
	school             string
	alice, bob         string // user ids
	alice1, alice2, b1 string // tokens
	aliceTrust1        string
	bobTrust           string
	conv               string
}

func newChat(t *testing.T, opts ...testenv.Option) *chat { return newChatTB(t, opts...) }

func newChatTB(t testing.TB, opts ...testenv.Option) *chat {
	t.Helper()
	env := testenv.New(t, opts...)
	c := &chat{env: env}
	c.school = env.CreateSchool("Schule am See")
	c.alice = env.CreateUser(c.school, "alice", "teacher")
	c.bob = env.CreateUser(c.school, "bob", "student")
	c.alice1, c.aliceTrust1 = env.Login("alice", "a-phone", true)
	c.alice2, _ = env.Login("alice", "a-tablet", true)
	c.b1, c.bobTrust = env.Login("bob", "b-phone", true)
	for i, tok := range []string{c.alice1, c.alice2, c.b1} {
		key := make([]byte, 32)
		key[0] = byte(i + 1)
		env.JSON("PUT", "/api/v1/keys", tok, map[string]string{"public_key": base64.StdEncoding.EncodeToString(key)}, http.StatusNoContent, nil)
	}
	var conv struct{ ID string }
	env.JSON("POST", "/api/v1/conversations", c.alice1, map[string]string{"kind": "direct", "peer": c.bob}, http.StatusCreated, &conv)
	c.conv = conv.ID
	return c
}

// sendFrame builds a send frame with a wrapped key for every device.
func (c *chat) sendFrame(ref, clientID, text string) string {
	s := &proto.Send{
		Conversation: c.conv,
		ClientID:     clientID,
		Ciphertext:   []byte(text),
		Keys: map[string][]byte{
			c.alice + "/a-phone":  []byte("k-a1-" + clientID),
			c.alice + "/a-tablet": []byte("k-a2-" + clientID),
			c.bob + "/b-phone":    []byte("k-b1-" + clientID),
		},
	}
	return string(proto.AppendSendFrame(nil, ref, s))
}

func (c *chat) post(tok, clientID, text string) *proto.Message {
	var m proto.Message
	c.env.JSON("POST", "/api/v1/conversations/"+c.conv+"/messages", tok, map[string]any{
		"client_id":  clientID,
		"ciphertext": base64.StdEncoding.EncodeToString([]byte(text)),
		"keys": map[string]string{
			c.alice + "/a-phone":  base64.StdEncoding.EncodeToString([]byte("ka1")),
			c.alice + "/a-tablet": base64.StdEncoding.EncodeToString([]byte("ka2")),
			c.bob + "/b-phone":    base64.StdEncoding.EncodeToString([]byte("kb1")),
		},
	}, http.StatusCreated, &m)
	return &m
}

func TestExchange(t *testing.T) {
	c := newChat(t)
	a1, a2, b := c.env.Dial(c.alice1), c.env.Dial(c.alice2), c.env.Dial(c.b1)

	a1.Send(c.sendFrame("r1", "c1", "hello bob"))
	sent, _ := a1.ReadType(proto.TypeSent)
	if sent.Ref != "r1" || sent.Seq != 1 || sent.ID == "" {
		t.Fatalf("sent = %+v", sent)
	}
	for name, ws := range map[string]*testenv.WS{"bob": b, "alice's tablet": a2} {
		f := ws.Read()
		if f.Type != proto.TypeMessage || f.Message.ID != sent.ID || string(f.Message.Ciphertext) != "hello bob" {
			t.Fatalf("%s got %+v", name, f)
		}
		if len(f.Message.Keys) != 1 {
			t.Fatalf("%s got %d keys, want only its own: %v", name, len(f.Message.Keys), f.Message.Keys)
		}
		if f.Message.Sender.UserID != c.alice || f.Message.Sender.DeviceID != "a-phone" {
			t.Fatalf("%s: sender %+v", name, f.Message.Sender)
		}
	}
	if k := b.Read; k == nil {
		t.Fatal()
	}

	b.Send(c.sendFrame("r2", "c2", "hi alice"))
	if s, _ := b.ReadType(proto.TypeSent); s.Seq != 2 {
		t.Fatalf("bob's sent seq %d, want 2", s.Seq)
	}
	for name, ws := range map[string]*testenv.WS{"alice's phone": a1, "alice's tablet": a2} {
		f := ws.Read()
		if f.Type != proto.TypeMessage || string(f.Message.Ciphertext) != "hi alice" || f.Message.Seq != 2 {
			t.Fatalf("%s got %+v", name, f)
		}
		want := c.alice + "/" + map[string]string{"alice's phone": "a-phone", "alice's tablet": "a-tablet"}[name]
		if _, ok := f.Message.Keys[want]; !ok || len(f.Message.Keys) != 1 {
			t.Fatalf("%s got keys %v, want only %s", name, f.Message.Keys, want)
		}
	}
	// The sender's own device got "sent", never its own message.
	b.Send(`{"type":"ping"}`)
	if f := b.Read(); f.Type != proto.TypePong {
		t.Fatalf("bob: after his own send got %q before pong", f.Type)
	}
}

func TestSyncAfterDisconnect(t *testing.T) {
	c := newChat(t)
	b := c.env.Dial(c.b1)
	first := c.post(c.alice1, "m1", "one")
	if f := b.Read(); f.Message.ID != first.ID {
		t.Fatalf("live: %+v", f)
	}
	b.Conn.Close()

	var missed []string
	for i := 2; i <= 6; i++ {
		missed = append(missed, c.post(c.alice1, fmt.Sprint("m", i), fmt.Sprint("text ", i)).ID)
	}
	b = c.env.Dial(c.b1)
	b.SendBytes(proto.AppendSync(nil, map[string]uint64{c.conv: 1}))
	var got []string
	for {
		f := b.Read()
		if f.Type == proto.TypeSynced {
			break
		}
		if f.Type != proto.TypeMessage {
			t.Fatalf("unexpected %q during sync", f.Type)
		}
		if int(f.Message.Seq) != len(got)+2 {
			t.Fatalf("sync out of order: seq %d at position %d", f.Message.Seq, len(got))
		}
		got = append(got, f.Message.ID)
	}
	if fmt.Sprint(got) != fmt.Sprint(missed) {
		t.Fatalf("sync replayed %v, want %v", got, missed)
	}

	// Without a cursor, sync starts at the oldest stored message.
	b.Send(`{"type":"sync"}`)
	n := 0
	for f := b.Read(); f.Type != proto.TypeSynced; f = b.Read() {
		n++
	}
	if n != 6 {
		t.Fatalf("cursorless sync replayed %d messages, want 6", n)
	}
}

// A sync on a socket that is already live replays from its cursor what
// the socket was sent live before it (API.md: every stored message after
// the cursor): an app may sync again because it could not keep frames.
func TestSyncAgainOnLiveSocket(t *testing.T) {
	c := newChat(t)
	b := c.env.Dial(c.b1)
	syncSeqs := func(cursors map[string]uint64) []uint64 {
		t.Helper()
		b.SendBytes(proto.AppendSync(nil, cursors))
		var seqs []uint64
		for f := b.Read(); f.Type != proto.TypeSynced; f = b.Read() {
			if f.Type != proto.TypeMessage {
				t.Fatalf("unexpected %q during sync", f.Type)
			}
			seqs = append(seqs, f.Message.Seq)
		}
		return seqs
	}
	if got := syncSeqs(nil); len(got) != 0 {
		t.Fatalf("first sync replayed %v, want nothing", got)
	}
	for i := 1; i <= 3; i++ {
		m := c.post(c.alice1, fmt.Sprint("m", i), "live")
		if f := b.Read(); f.Type != proto.TypeMessage || f.Message.ID != m.ID {
			t.Fatalf("live: %+v, want %s", f, m.ID)
		}
	}
	for _, tc := range []struct {
		cursors map[string]uint64
		want    []uint64
	}{
		{map[string]uint64{c.conv: 0}, []uint64{1, 2, 3}},
		{nil, []uint64{1, 2, 3}},
		{map[string]uint64{c.conv: 2}, []uint64{3}},
		{map[string]uint64{c.conv: 3}, nil},
	} {
		if got := syncSeqs(tc.cursors); !slices.Equal(got, tc.want) {
			t.Fatalf("sync %v on a live socket replayed %v, want %v", tc.cursors, got, tc.want)
		}
	}
	// Live delivery goes on after the replays, without a repeat.
	m := c.post(c.alice1, "m4", "live")
	if f := b.Read(); f.Type != proto.TypeMessage || f.Message.Seq != 4 || f.Message.ID != m.ID {
		t.Fatalf("live after the syncs: %+v, want seq 4", f)
	}
}

func TestSlowReaderClosedAndRecovers(t *testing.T) {
	c := newChat(t, func(cfg *serverConfig) { cfg.Messenger.SendQueue = 8 })
	slow, _, err := c.env.DialSlow(http.Header{"Authorization": {"Bearer " + c.b1}})
	if err != nil {
		t.Fatal(err)
	}
	// bob reads nothing while alice posts until the socket buffers and the
	// queue are full and the server gives up on him.
	big := string(make([]byte, 60<<10))
	var ids []string
	for i := 0; c.env.Metric("klassenfunk_ws_slow_consumers_total") == 0; i++ {
		if i == 2000 {
			t.Fatal("no slow-consumer disconnect after 2000 messages")
		}
		ids = append(ids, c.post(c.alice1, fmt.Sprint("big", i), big).ID)
	}
	if code := slow.CloseCode(5 * time.Second); code != int(proto.CloseTooSlow) || slow.CloseText != "too_slow" {
		t.Fatalf("slow reader closed with %d %q, want %d too_slow", code, slow.CloseText, proto.CloseTooSlow)
	}
	t.Logf("disconnected after %d messages", len(ids))
	b := c.env.Dial(c.b1)
	b.Send(`{"type":"sync","cursors":{}}`)
	var got []string
	for f := b.Read(); f.Type != proto.TypeSynced; f = b.Read() {
		got = append(got, f.Message.ID)
	}
	if fmt.Sprint(got) != fmt.Sprint(ids) {
		t.Fatalf("after 4429, sync returned %d messages, want all %d in order", len(got), len(ids))
	}
}

// TestSlowReaderCatchesUp: a reader that falls behind by more than its
// socket holds, but not by the whole queue, gets every message whole and
// in order once it reads again. Live messages are written by the sending
// goroutine while the socket takes them (conn.deliver); the part of a
// frame the full socket did not take goes out first when a writer takes
// over.
func TestSlowReaderCatchesUp(t *testing.T) {
	c := newChat(t, func(cfg *serverConfig) { cfg.Messenger.SendBurst = 1000 })
	slow, _, err := c.env.DialSlow(http.Header{"Authorization": {"Bearer " + c.b1}})
	if err != nil {
		t.Fatal(err)
	}
	slow.Send(`{"type":"sync","cursors":{}}`)
	slow.ReadType(proto.TypeSynced)
	first := c.post(c.alice1, "small", "hello")
	if f := slow.Read(); f.Type != proto.TypeMessage || f.Message.ID != first.ID {
		t.Fatalf("first message: %+v", f)
	}
	// 150 frames of ≈ 80 KiB: far more than the socket's buffers, far
	// fewer than the queue's 256 frames.
	const n = 150
	big := make([]byte, 60<<10)
	var ids []string
	for i := range n {
		big[0] = byte(i)
		ids = append(ids, c.post(c.alice1, fmt.Sprint("big", i), string(big)).ID)
	}
	for i := range n {
		f := slow.Read()
		if f.Type != proto.TypeMessage || f.Message.ID != ids[i] || f.Message.Seq != first.Seq+1+uint64(i) ||
			len(f.Message.Ciphertext) != len(big) || f.Message.Ciphertext[0] != byte(i) {
			t.Fatalf("message %d: %s %s seq %d, want %s seq %d", i, f.Type, f.Message.ID, f.Message.Seq, ids[i], first.Seq+1+uint64(i))
		}
	}
	if got := c.env.Metric("klassenfunk_ws_slow_consumers_total"); got != 0 {
		t.Fatalf("%v slow-consumer closes, want none", got)
	}
}

func TestRevocationClosesSocket(t *testing.T) {
	c := newChat(t)
	b := c.env.Dial(c.b1)
	a2 := c.env.Dial(c.alice2)
	start := time.Now()
	c.env.JSON("DELETE", "/api/v1/trust/"+c.bobTrust, c.b1, nil, http.StatusNoContent, nil)
	if code := b.CloseCode(time.Second); code != int(proto.CloseUnauthorized) {
		t.Fatalf("revoked socket closed with %d, want 4401", code)
	}
	t.Logf("closed %v after revocation", time.Since(start))
	if r := c.env.Do("GET", "/api/v1/me", c.b1, nil); r.Status != http.StatusUnauthorized {
		t.Fatalf("revoked token: %d", r.Status)
	}
	if _, resp, err := c.env.DialRaw(http.Header{"Authorization": {"Bearer " + c.b1}}); err == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("revoked token dialed: err %v", err)
	}
	// Logout closes the socket of that device too, and only that one.
	a1 := c.env.Dial(c.alice1)
	c.env.JSON("POST", "/api/v1/logout", c.alice2, nil, http.StatusNoContent, nil)
	if code := a2.CloseCode(time.Second); code != int(proto.CloseUnauthorized) {
		t.Fatalf("logged-out socket closed with %d, want 4401", code)
	}
	a1.Send(`{"type":"ping"}`)
	if f := a1.Read(); f.Type != proto.TypePong {
		t.Fatalf("other device's socket: %q", f.Type)
	}
}

// TestRefEchoed: the ref of a sync comes back in its synced, the ref of a
// ping in its pong, so that an app can match them; without a ref the
// frames carry none.
func TestRefEchoed(t *testing.T) {
	c := newChat(t)
	b := c.env.Dial(c.b1)
	c.post(c.alice1, "m1", "before")
	for _, ref := range []string{"s1", ""} {
		b.Send(`{"type":"sync","ref":"` + ref + `","cursors":{}}`)
		f := b.Read()
		for f.Type == proto.TypeMessage {
			f = b.Read()
		}
		if f.Type != proto.TypeSynced || f.Ref != ref {
			t.Fatalf("sync with ref %q: got %q with ref %q", ref, f.Type, f.Ref)
		}
	}
	b.Send(`{"type":"ping","ref":"p7"}`)
	if f := b.Read(); f.Type != proto.TypePong || f.Ref != "p7" {
		t.Fatalf("ping with ref p7: got %q with ref %q", f.Type, f.Ref)
	}
	b.Send(`{"type":"ping"}`)
	b.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, data, err := b.Conn.ReadMessage(); err != nil || string(data) != `{"type":"pong"}` {
		t.Fatalf("ping without ref: %s, %v", data, err)
	}
}

// TestSocketCaps: a device's socket beyond its cap closes the device's
// oldest with 4409, a user's beyond the user's cap the user's oldest; the
// others go on working, and a closed socket no longer counts.
func TestSocketCaps(t *testing.T) {
	c := newChat(t, func(cfg *serverConfig) {
		cfg.Messenger.MaxSocketsPerDevice = 3
		cfg.Messenger.MaxSocketsPerUser = 4
		cfg.Messenger.SocketCapsFrom = 1
	})
	phone := []*testenv.WS{c.env.Dial(c.alice1), c.env.Dial(c.alice1), c.env.Dial(c.alice1)}
	wantAlive(t, phone...)
	phone = append(phone, c.env.Dial(c.alice1)) // the device's fourth
	if code := phone[0].CloseCode(5 * time.Second); code != int(proto.CloseReplaced) {
		t.Fatalf("the phone's oldest socket closed with %d, want 4409", code)
	}
	wantAlive(t, phone[1:]...)
	tablet := c.env.Dial(c.alice2) // alice's fourth open socket: within her cap
	wantAlive(t, append(phone[1:], tablet)...)
	tablet2 := c.env.Dial(c.alice2) // her fifth: her oldest goes
	if code := phone[1].CloseCode(5 * time.Second); code != int(proto.CloseReplaced) {
		t.Fatalf("alice's oldest socket closed with %d, want 4409", code)
	}
	wantAlive(t, phone[2], phone[3], tablet, tablet2)
	// Another user is not touched, and messages reach the sockets left.
	bob := c.env.Dial(c.b1)
	m := c.post(c.b1, "m1", "hallo")
	for _, w := range []*testenv.WS{phone[2], phone[3], tablet, tablet2} {
		if f := w.Read(); f.Type != proto.TypeMessage || f.Message.ID != m.ID {
			t.Fatalf("got %+v, want message %s", f, m.ID)
		}
	}
	wantAlive(t, bob)
}

// TestSocketCapsOnlyFromThreshold: while the node holds fewer sockets
// than SocketCapsFrom, a device may hold more than its cap; from there on,
// its next socket closes its oldest until it holds its cap, the new one
// included.
func TestSocketCapsOnlyFromThreshold(t *testing.T) {
	c := newChat(t, func(cfg *serverConfig) {
		cfg.Messenger.MaxSocketsPerDevice = 2
		cfg.Messenger.SocketCapsFrom = 5
	})
	var phone []*testenv.WS
	for range 5 { // the fifth comes while the node holds four
		phone = append(phone, c.env.Dial(c.alice1))
	}
	wantAlive(t, phone...)         // below the threshold
	newest := c.env.Dial(c.alice1) // the node holds five: the caps apply
	for i, w := range phone[:4] {
		if code := w.CloseCode(5 * time.Second); code != int(proto.CloseReplaced) {
			t.Fatalf("the phone's socket %d closed with %d, want 4409", i, code)
		}
	}
	wantAlive(t, phone[4], newest)
}

// TestSocketCapsWhenCrowded: from SocketsCrowdedFrom, a device's new
// socket closes all its others (a network blip: every device
// reconnects before the node notices its old sockets are dead); other
// devices keep theirs.
func TestSocketCapsWhenCrowded(t *testing.T) {
	c := newChat(t, func(cfg *serverConfig) {
		cfg.Messenger.MaxSocketsPerDevice = 4
		cfg.Messenger.SocketCapsFrom = 6
		cfg.Messenger.SocketsCrowdedFrom = 7
	})
	phone := []*testenv.WS{c.env.Dial(c.alice1), c.env.Dial(c.alice1), c.env.Dial(c.alice1)}
	others := []*testenv.WS{c.env.Dial(c.alice2), c.env.Dial(c.b1), c.env.Dial(c.b1)}
	wantAlive(t, append(phone, others...)...) // six: capped, within the device's 4
	phone = append(phone, c.env.Dial(c.alice1))
	wantAlive(t, append(phone, others...)...) // seven: the device's fourth
	for _, w := range phone {                 // dead peers: they never answer a close
		w.Conn.SetCloseHandler(func(int, string) error { return nil })
	}
	newest := c.env.Dial(c.alice1) // crowded: the phone keeps only this one
	for i, w := range phone {
		if code := w.CloseCode(5 * time.Second); code != int(proto.CloseReplaced) {
			t.Fatalf("the phone's socket %d closed with %d, want 4409", i, code)
		}
		// The node does not wait the 2 s grace for an answer to free the
		// descriptor: the connection ends right after the close frame.
		w.Conn.NetConn().SetReadDeadline(time.Now().Add(time.Second))
		if _, err := w.Conn.NetConn().Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("the phone's socket %d after its close frame: %v, want the connection ended", i, err)
		}
	}
	wantAlive(t, append(others, newest)...)
}

// wantAlive pings each socket and wants its pong.
func wantAlive(t *testing.T, ws ...*testenv.WS) {
	t.Helper()
	for _, w := range ws {
		w.Send(`{"type":"ping"}`)
		if f := w.Read(); f.Type != proto.TypePong {
			t.Fatalf("got %q, want pong", f.Type)
		}
	}
}
