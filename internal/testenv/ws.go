package testenv

import (
	"errors"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"klassenfunk/proto"
)

// WS is a test WebSocket client.
type WS struct {
	t interface {
		Helper()
		Fatalf(string, ...any)
	}
	Conn *websocket.Conn

	// CloseText is the text of the server's close frame, once
	// FramesUntilClose or CloseCode has seen it.
	CloseText string
}

// Dial opens /api/v1/ws with the token in the Authorization header and
// waits for "ready".
func (e *Env) Dial(token string) *WS {
	e.T.Helper()
	w, resp, err := e.DialRaw(http.Header{"Authorization": {"Bearer " + token}})
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		e.T.Fatalf("dial: %v (HTTP %d)", err, status)
	}
	if f := w.Read(); f.Type != proto.TypeReady {
		e.T.Fatalf("first frame %q, want ready", f.Type)
	}
	return w
}

// DialRaw opens /api/v1/ws with the given headers and nothing else.
func (e *Env) DialRaw(h http.Header) (*WS, *http.Response, error) {
	return e.dial(h, websocket.Dialer{HandshakeTimeout: 5 * time.Second})
}

// DialSlow is DialRaw with a tiny socket receive buffer, for slow-reader
// tests.
func (e *Env) DialSlow(h http.Header) (*WS, *http.Response, error) {
	return e.dial(h, websocket.Dialer{
		HandshakeTimeout: 5 * time.Second,
		NetDial: func(network, addr string) (net.Conn, error) {
			c, err := net.Dial(network, addr)
			if err == nil {
				c.(*net.TCPConn).SetReadBuffer(128 << 10)
			}
			return c, err
		},
	})
}

// DialWith is DialRaw with a dialer of the test's own (its buffer sizes,
// its NetDial).
func (e *Env) DialWith(h http.Header, d websocket.Dialer) (*WS, *http.Response, error) {
	return e.dial(h, d)
}

func (e *Env) dial(h http.Header, d websocket.Dialer) (*WS, *http.Response, error) {
	url := "ws" + strings.TrimPrefix(e.URL, "http") + "/api/v1/ws"
	c, resp, err := d.Dial(url, h)
	if err != nil {
		return nil, resp, err
	}
	ws := &WS{t: e.T, Conn: c}
	e.T.Cleanup(func() { c.Close() })
	return ws, resp, nil
}

// Send writes a raw text frame.
func (w *WS) Send(frame string) {
	w.t.Helper()
	w.Conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := w.Conn.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
		w.t.Fatalf("ws write: %v", err)
	}
}

// SendJSON writes a frame made by one of proto's client appenders.
func (w *WS) SendBytes(b []byte) {
	w.t.Helper()
	w.Send(string(b))
}

// Read reads the next frame within 5 seconds.
func (w *WS) Read() *proto.ServerFrame {
	w.t.Helper()
	f, err := w.TryRead(5 * time.Second)
	if err != nil {
		w.t.Fatalf("ws read: %v", err)
	}
	return f
}

// TryRead reads the next frame within d.
func (w *WS) TryRead(d time.Duration) (*proto.ServerFrame, error) {
	w.Conn.SetReadDeadline(time.Now().Add(d))
	_, data, err := w.Conn.ReadMessage()
	if err != nil {
		return nil, err
	}
	return proto.DecodeServerFrame(data)
}

// ReadType reads frames until one of type typ arrives and returns it.
// Frames of other types are returned in skipped.
func (w *WS) ReadType(typ string) (f *proto.ServerFrame, skipped []*proto.ServerFrame) {
	w.t.Helper()
	for {
		f := w.Read()
		if f.Type == typ {
			return f, skipped
		}
		skipped = append(skipped, f)
	}
}

// CloseCode reads until the server closes the connection and returns the
// close code (0 when it ended without a close frame).
func (w *WS) CloseCode(within time.Duration) int {
	w.t.Helper()
	_, code := w.FramesUntilClose(within)
	return code
}

// FramesUntilClose reads until the server closes the connection and
// returns the frames before the close and the close code (0 when it ended
// without a close frame).
func (w *WS) FramesUntilClose(within time.Duration) ([]*proto.ServerFrame, int) {
	w.t.Helper()
	deadline := time.Now().Add(within)
	var frames []*proto.ServerFrame
	for {
		w.Conn.SetReadDeadline(deadline)
		_, data, err := w.Conn.ReadMessage()
		if err == nil {
			f, err := proto.DecodeServerFrame(data)
			if err != nil {
				w.t.Fatalf("ws read: %v", err)
			}
			frames = append(frames, f)
			continue
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			w.CloseText = ce.Text
			return frames, ce.Code
		}
		if ne, ok := err.(interface{ Timeout() bool }); ok && ne.Timeout() {
			w.t.Fatalf("no close within %v", within)
		}
		return frames, 0
	}
}
