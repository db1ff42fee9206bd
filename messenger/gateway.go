package messenger

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"klassenfunk/auth"
	"klassenfunk/internal/httpapi"
	"klassenfunk/proto"
)

var errDraining = errors.New("messenger: node is draining")

// upgrader keeps per-connection memory small: a 1 KiB read buffer of its
// own (the HTTP server's buffers are not kept), and write buffers that are
// borrowed from a pool only while a frame is being written.
var upgrader = websocket.Upgrader{
	ReadBufferSize:  1024,
	WriteBufferSize: 4096,
	WriteBufferPool: &sync.Pool{},
	// Credentials never come from cookies here, so a cross-site page
	// cannot borrow a user's session: any origin may connect.
	CheckOrigin: func(*http.Request) bool { return true },
	// A request that is no WebSocket upgrade (no key, a wrong version, a
	// plain GET) gets API.md's JSON error body, like every other refusal.
	Error: func(w http.ResponseWriter, _ *http.Request, status int, reason error) {
		code := proto.CodeInvalidRequest
		if status >= 500 {
			code = proto.CodeInternal
		}
		httpapi.WriteError(w, nil, proto.Errorf(code, "not a WebSocket upgrade: %v", reason))
	},
}

// serveWS is GET /api/v1/ws. With an Authorization header the credential
// is checked before the upgrade (401 when bad, 403 country_blocked when the
// account's country restriction refuses the client's address); without one
// the first frame must be {"type":"auth"} within the auth timeout (close
// 4401 or 4403).
func (n *Node) serveWS(w http.ResponseWriter, r *http.Request, h *auth.HTTP) {
	select {
	case <-n.hub.draining.Done():
		httpapi.WriteError(w, nil, &proto.Error{Code: proto.CodeRateLimited, Message: "server is restarting; reconnect", RetryAfter: time.Second})
		return
	default:
	}
	var p auth.Principal
	headerAuth := false
	addr := h.ClientAddr(r)
	if tok := httpapi.Bearer(r); tok != "" {
		var err error
		p, err = h.Principal(r)
		if err != nil {
			httpapi.WriteError(w, n.log, err)
			return
		}
		headerAuth = true
	} else if r.Header.Get("Authorization") != "" {
		httpapi.WriteError(w, nil, proto.Errorf(proto.CodeUnauthorized, "unsupported Authorization scheme"))
		return
	}
	hj := &frameHijacker{ResponseWriter: w, writeSlack: n.cfg.Gateway.WriteTimeout / 5}
	ws, err := upgrader.Upgrade(hj, r, nil)
	if err != nil {
		return // the upgrader has answered
	}
	if !headerAuth {
		var code proto.CloseCode
		p, code = n.firstFrameAuth(ws, hj.fc, addr)
		if code != 0 {
			n.metrics.closes.WithLabelValues(code.String()).Inc()
			ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(int(code), code.String()), time.Now().Add(time.Second))
			lingerClose(hj.fc.Conn, closeGrace, n.cfg.Gateway.WriteTimeout) // the client may have sent more frames: no RST over the close frame
			return
		}
	}
	c := newConn(n, ws, hj.fc, p, addr)
	if err := n.hub.add(c); err != nil {
		code := proto.CloseGoingAway
		if !errors.Is(err, errDraining) {
			n.log.Error("register connection", "err", err)
		}
		ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(int(code), code.String()), time.Now().Add(time.Second))
		lingerClose(hj.fc.Conn, closeGrace, n.cfg.Gateway.WriteTimeout)
		return
	}
	c.enqueue(outItem{frame: proto.AppendReady(nil, c.userID, c.deviceID)})
	c.extend()
	// In readBlocking. A ping is answered through the queue, as the poller
	// does it: by the one writer, and not once a close has begun (frames
	// after that are ignored; gorilla's own handler answered them).
	ws.SetPongHandler(func(string) error { c.extend(); return nil })
	ws.SetCloseHandler(c.closeHandler)
	ws.SetPingHandler(func(data string) error {
		c.enqueuePong(outItem{pong: append([]byte{}, data...)}) // never nil: nil is no pong
		return nil
	})
	// The handler returns: net/http's buffers and this goroutine's grown
	// stack are freed. The connection lives on in the poller, or in a
	// reader goroutine where its reads cannot be polled.
	if n.poller != nil && hj.fc.raw != nil {
		if err := n.poller.register(c); err == nil {
			return
		}
	}
	go c.readBlocking()
}

// frameHijacker hands gorilla the hijacked socket wrapped in a frameConn.
type frameHijacker struct {
	http.ResponseWriter
	writeSlack time.Duration // newFrameConn
	fc         *frameConn
}

func (h *frameHijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	h.fc = newFrameConn(nc, h.writeSlack)
	return h.fc, brw, nil
}

// firstFrameAuth waits for the auth frame. It returns a close code when the
// connection must end.
func (n *Node) firstFrameAuth(ws *websocket.Conn, fc *frameConn, addr netip.Addr) (auth.Principal, proto.CloseCode) {
	ws.SetReadDeadline(time.Now().Add(n.cfg.Gateway.AuthTimeout))
	// A drain closes a socket that is still waiting for its auth frame
	// with 1001 too: it is not in the hub yet, so the drain wakes its read.
	var drained atomic.Bool
	stop := context.AfterFunc(n.hub.draining, func() {
		drained.Store(true)
		ws.SetReadDeadline(time.Now())
	})
	defer stop()
	var buf bytes.Buffer
	mt, r, err := ws.NextReader()
	if err != nil {
		if drained.Load() {
			return auth.Principal{}, proto.CloseGoingAway
		}
		return auth.Principal{}, proto.CloseAuthTimeout
	}
	if fc.passthrough { // announced beyond the limit (readMessage)
		return auth.Principal{}, proto.CloseTooLarge
	}
	if mt != websocket.TextMessage { // API.md's frames are text; later a binary one is an error frame
		return auth.Principal{}, proto.CloseUnauthorized
	}
	if size, err := io.Copy(&buf, io.LimitReader(r, proto.MaxFrameSize+1)); err != nil {
		return auth.Principal{}, proto.CloseAuthTimeout
	} else if size > proto.MaxFrameSize {
		return auth.Principal{}, proto.CloseTooLarge
	}
	data := buf.Bytes()
	f, perr := proto.DecodeClientFrame(data)
	if perr != nil || f.Type != proto.TypeAuth {
		return auth.Principal{}, proto.CloseUnauthorized
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p, err := n.auth.AuthenticateFrom(ctx, f.Token, addr)
	if err != nil {
		return auth.Principal{}, closeCodeOf(err)
	}
	return p, 0
}
