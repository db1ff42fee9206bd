package messenger_test

import (
	"bytes"
	"errors"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"klassenfunk/internal/testenv"
	"klassenfunk/proto"
)

// The gateway reads a socket only when it has something to read (the
// poller) and hands gorilla whole frames. These tests drive what that
// reading must get right: control frames it answers itself, fragments,
// frames that arrive together, and clients that fall silent.

// TestClientPingAnswered: a WebSocket ping from the client is answered
// with a pong carrying its payload, in order with the frames around it.
func TestClientPingAnswered(t *testing.T) {
	c := newChat(t)
	wantPingAnswered(t, c.env.Dial(c.b1), "hallo-123")
}

// wantPingAnswered sends a WebSocket ping with payload and then a ping
// frame, and wants the pong control frame (with the payload) before the
// pong frame.
func wantPingAnswered(t *testing.T, ws *testenv.WS, payload string) {
	t.Helper()
	pongs := make(chan string, 1)
	ws.Conn.SetPongHandler(func(data string) error { pongs <- data; return nil })
	if err := ws.Conn.WriteControl(websocket.PingMessage, []byte(payload), time.Now().Add(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	ws.Send(`{"type":"ping"}`)
	// Reading the pong frame runs the handler of the control frame
	// before it first.
	if f := ws.Read(); f.Type != proto.TypePong {
		t.Fatalf("got %q, want pong", f.Type)
	}
	select {
	case got := <-pongs:
		if got != payload {
			t.Fatalf("pong payload %q, want %q", got, payload)
		}
	default:
		t.Fatal("no pong control frame before the pong frame")
	}
}

// TestNodeCloseHandsSocketsOver: a node that stops with sockets still
// open (Close without Drain) stops its poller and gives each socket a
// reader goroutine, so the sockets are still read and answered.
func TestNodeCloseHandsSocketsOver(t *testing.T) {
	c := newChat(t)
	ws := c.env.Dial(c.b1)
	other := c.env.Dial(c.alice1)
	c.env.Srv.Msg.Close()
	for _, w := range []*testenv.WS{ws, other} {
		w.Send(`{"type":"ping"}`)
		if f := w.Read(); f.Type != proto.TypePong {
			t.Fatalf("got %q after Close, want pong", f.Type)
		}
	}
	wantPingAnswered(t, ws, "noch da")
}

// TestFragmentedMessage: a frame split into WebSocket fragments (a small
// client write buffer) is one message, and the socket goes on working.
func TestFragmentedMessage(t *testing.T) {
	c := newChat(t)
	ws, _, err := c.env.DialWith(http.Header{"Authorization": {"Bearer " + c.b1}}, websocket.Dialer{
		HandshakeTimeout: 5 * time.Second,
		WriteBufferSize:  64, // a send frame goes out in a dozen fragments
	})
	if err != nil {
		t.Fatal(err)
	}
	if f := ws.Read(); f.Type != proto.TypeReady {
		t.Fatalf("got %q, want ready", f.Type)
	}
	for i, ref := range []string{"frag-1", "frag-2"} {
		ws.Send(c.sendFrame(ref, ref, strings.Repeat("fragmentiert ", 20)))
		f, _ := ws.ReadType(proto.TypeSent)
		if f.Ref != ref || f.Seq != uint64(i+1) {
			t.Fatalf("sent %+v, want ref %s seq %d", f, ref, i+1)
		}
	}
}

// heldConn is a client socket whose writes can be held and sent as one,
// so that several frames reach the server in one segment.
type heldConn struct {
	net.Conn
	mu   sync.Mutex
	hold bool
	buf  bytes.Buffer
}

func (h *heldConn) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.hold {
		return h.buf.Write(p)
	}
	return h.Conn.Write(p)
}

// release sends what was held in one write.
func (h *heldConn) release() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.hold = false
	_, err := h.Conn.Write(h.buf.Bytes())
	return err
}

func dialHeld(t *testing.T, c *chat, h http.Header) (*heldConn, *websocket.Conn) {
	t.Helper()
	var held *heldConn
	ws, _, err := c.env.DialWith(h, websocket.Dialer{
		HandshakeTimeout: 5 * time.Second,
		NetDial: func(network, addr string) (net.Conn, error) {
			nc, err := net.Dial(network, addr)
			if err != nil {
				return nil, err
			}
			held = &heldConn{Conn: nc}
			return held, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	held.mu.Lock()
	held.hold = true
	held.mu.Unlock()
	return held, ws.Conn
}

// TestFramesTogether: frames that arrive in one segment are all handled:
// after the auth frame (read before the connection is registered), and
// control frames between messages.
func TestFramesTogether(t *testing.T) {
	c := newChat(t)
	t.Run("after the auth frame", func(t *testing.T) {
		held, ws := dialHeld(t, c, nil)
		for _, f := range []string{string(proto.AppendAuth(nil, c.b1)), c.sendFrame("s1", "tog-1", "eins"), c.sendFrame("s2", "tog-2", "zwei")} {
			if err := ws.WriteMessage(websocket.TextMessage, []byte(f)); err != nil {
				t.Fatal(err)
			}
		}
		if err := held.release(); err != nil {
			t.Fatal(err)
		}
		want := []string{proto.TypeReady + ":", proto.TypeSent + ":s1", proto.TypeSent + ":s2"}
		for _, w := range want {
			if got := readTypeRef(t, ws); got != w {
				t.Fatalf("got %s, want %s", got, w)
			}
		}
	})
	t.Run("pings and pongs between messages", func(t *testing.T) {
		held, ws := dialHeld(t, c, http.Header{"Authorization": {"Bearer " + c.alice1}})
		pongs := make(chan string, 2)
		ws.SetPongHandler(func(data string) error { pongs <- data; return nil })
		deadline := time.Now().Add(5 * time.Second)
		steps := []func() error{
			func() error { return ws.WriteControl(websocket.PingMessage, []byte("p1"), deadline) },
			func() error { return ws.WriteControl(websocket.PongMessage, []byte("unasked"), deadline) },
			func() error {
				return ws.WriteMessage(websocket.TextMessage, []byte(c.sendFrame("s3", "tog-3", "drei")))
			},
			func() error { return ws.WriteControl(websocket.PingMessage, nil, deadline) },
			func() error { return ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"ping"}`)) },
		}
		for _, step := range steps {
			if err := step(); err != nil {
				t.Fatal(err)
			}
		}
		if err := held.release(); err != nil {
			t.Fatal(err)
		}
		for _, w := range []string{proto.TypeReady + ":", proto.TypeSent + ":s3", proto.TypePong + ":"} {
			if got := readTypeRef(t, ws); got != w {
				t.Fatalf("got %s, want %s", got, w)
			}
		}
		// The pongs came before the pong frame, so they are in the channel:
		// one for each ping, or (when the first was still queued as the
		// second came, RFC 6455 5.5.3) one for the newest only.
		var got []string
		for len(got) < 2 {
			select {
			case p := <-pongs:
				got = append(got, p)
				continue
			default:
			}
			break
		}
		if !slices.Equal(got, []string{"p1", ""}) && !slices.Equal(got, []string{""}) {
			t.Fatalf("pong control frames before the pong frame: %q, want [\"p1\" \"\"] or [\"\"]", got)
		}
	})
}

func readTypeRef(t *testing.T, ws *websocket.Conn) string {
	t.Helper()
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, data, err := ws.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	f, err := proto.DecodeServerFrame(data)
	if err != nil {
		t.Fatal(err)
	}
	return f.Type + ":" + f.Ref
}

// TestSilentClientClosed: a client that answers no ping is disconnected
// once its read deadline (two ping intervals and a margin) has passed,
// though nothing waits in a read for it; one that answers stays.
func TestSilentClientClosed(t *testing.T) {
	const interval = 100 * time.Millisecond // read deadline 300 ms
	c := newChat(t, func(cfg *serverConfig) { cfg.Messenger.PingInterval = interval })

	silent := c.env.Dial(c.b1)
	silent.Conn.SetPingHandler(func(string) error { return nil }) // no pong
	silent.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, _, err := silent.Conn.ReadMessage()
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("the silent client was still connected after 5 s")
		}
		break
	}

	// Ten pings (a second) answered with pongs and nothing else: still
	// connected.
	alive := c.env.Dial(c.alice1)
	pings := make(chan struct{}, 16)
	alive.Conn.SetPingHandler(func(data string) error {
		pings <- struct{}{}
		return alive.Conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	})
	go func() {
		for {
			if _, _, err := alive.Conn.ReadMessage(); err != nil {
				close(pings)
				return
			}
		}
	}()
	for i := 0; i < 10; i++ {
		if _, ok := <-pings; !ok {
			t.Fatalf("the client that answers pings was disconnected after %d pings", i)
		}
	}
}

// TestLongFormControlFrame: a ping or pong whose short payload is
// announced in a longer length form (RFC 6455 forbids it for control
// frames) closes that socket with 1002, as gorilla does, and nothing else.
func TestLongFormControlFrame(t *testing.T) {
	c := newChat(t)
	for _, frame := range [][]byte{
		{0x89, 0x80 | 126, 0, 5, 1, 2, 3, 4, 'a', 'b', 'c', 'd', 'e'},
		{0x8a, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0, 5, 1, 2, 3, 4, 'a', 'b', 'c', 'd', 'e'},
	} {
		ws := c.env.Dial(c.b1)
		if _, err := ws.Conn.NetConn().Write(frame); err != nil {
			t.Fatal(err)
		}
		if code := ws.CloseCode(5 * time.Second); code != websocket.CloseProtocolError {
			t.Fatalf("frame % x: close %d, want 1002", frame[:2], code)
		}
	}
	ws := c.env.Dial(c.alice1) // the server lives on
	ws.Send(`{"type":"ping"}`)
	if f := ws.Read(); f.Type != proto.TypePong {
		t.Fatalf("got %q, want pong", f.Type)
	}
}

// TestHugeFrameAnnounced: a frame whose header announces more than the
// frame limit is refused with 4413 at once, without waiting for a
// megabyte to arrive.
func TestHugeFrameAnnounced(t *testing.T) {
	c := newChat(t)
	frame := []byte{0x81, 0x80 | 127, 0x40, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 'x', 'y', 'z'} // 2^62 bytes
	for _, authed := range []bool{true, false} {                                            // after auth, and as the auth frame
		var ws *testenv.WS
		if authed {
			ws = c.env.Dial(c.b1)
		} else {
			var err error
			if ws, _, err = c.env.DialRaw(nil); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := ws.Conn.NetConn().Write(frame); err != nil {
			t.Fatal(err)
		}
		if code := ws.CloseCode(5 * time.Second); code != int(proto.CloseTooLarge) {
			t.Fatalf("authenticated %v: close %d, want 4413", authed, code)
		}
	}
}
