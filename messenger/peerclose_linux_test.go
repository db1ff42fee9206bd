package messenger_test

import (
	"net"
	"syscall"
	"testing"
	"time"

	"klassenfunk/messenger"
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
