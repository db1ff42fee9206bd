package messenger_test

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"klassenfunk/messenger"
	"klassenfunk/proto"
)

// TestHalfCloseWithLastFrame: when a client sends a frame and ends its
// side of the connection in the same segment (TCP_CORK holds the frame
// until the FIN), the server ends the connection at once, not after the
// read timeout (70 s here): the poller's one event for both says the peer
// is done. (What was queued for the client then is dropped, as at any
// end of its side without a close frame.)
func TestHalfCloseWithLastFrame(t *testing.T) {
	c := newChat(t)
	for i := range 5 {
		b := c.env.Dial(c.b1)
		tcp := b.Conn.NetConn().(*net.TCPConn)
		raw, err := tcp.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		raw.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_CORK, 1) })
		if _, err := tcp.Write(messenger.MaskedFrame(0x81, `{"type":"ping","ref":"last"}`)); err != nil {
			t.Fatal(err)
		}
		if err := tcp.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		for {
			if _, err := b.TryRead(5 * time.Second); err != nil {
				break
			}
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("round %d: the server held the half-closed socket for %v", i, d)
		}
	}
}

// TestCloseEchoBehindReplay: a client that closes while a replay fills
// the server's socket and then writes a ping (a timer's, say) gets the
// server's close frame after the replay's frames, not a reset. The server
// answers the close behind what it has queued; a socket closed with the
// ping unread made Linux send an RST, which threw away the queue, echo
// and all.
func TestCloseEchoBehindReplay(t *testing.T) {
	c := newChat(t)
	big := string(make([]byte, 48<<10))
	for i := range 80 {
		c.post(c.alice1, fmt.Sprint("big", i), big)
	}
	for round := range 20 {
		d := websocket.Dialer{NetDial: func(network, addr string) (net.Conn, error) {
			nc, err := net.Dial(network, addr)
			if err == nil {
				nc.(*net.TCPConn).SetReadBuffer(128 << 10) // the replay waits in the server's socket
			}
			return nc, err
		}}
		b, _, err := c.env.DialWith(http.Header{"Authorization": {"Bearer " + c.b1}}, d)
		if err != nil {
			t.Fatal(err)
		}
		if f := b.Read(); f.Type != proto.TypeReady {
			t.Fatalf("first frame %q", f.Type)
		}
		tcp := b.Conn.NetConn()
		write := func(frame []byte) {
			if _, err := tcp.Write(frame); err != nil {
				t.Fatal(err)
			}
		}
		write(messenger.MaskedFrame(0x81, `{"type":"sync","cursors":{}}`))
		if f := b.Read(); f.Type != proto.TypeMessage {
			t.Fatalf("round %d: replay starts with %q", round, f.Type)
		}
		write(messenger.MaskedFrame(0x88, "\x03\xe8")) // close, 1000
		frames := 0
		for {
			write(messenger.MaskedFrame(0x89, "tick")) // a ping after the close, in a segment of its own
			_, _, err := b.Conn.ReadMessage()
			if err == nil {
				frames++
				continue
			}
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != websocket.CloseNormalClosure {
				t.Fatalf("round %d: after %d more frames the connection ended with %v, want the close frame 1000\n%s", round, frames, err, c.env.Logs())
			}
			t.Logf("round %d: the close frame after %d more frames", round, frames)
			break
		}
	}
}
