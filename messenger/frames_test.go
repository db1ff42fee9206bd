package messenger_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"klassenfunk/internal/testenv"
	"klassenfunk/messenger"
	"klassenfunk/proto"
)

func TestHeaderAuthRejectedBeforeUpgrade(t *testing.T) {
	c := newChat(t)
	tests := map[string]string{
		"unknown token": "Bearer kf1_" + strings.Repeat("A", 43),
		"garbage":       "Bearer nope",
		"wrong scheme":  "Basic " + c.b1,
		"revoked":       "Bearer " + c.alice2,
	}
	c.env.JSON("POST", "/api/v1/logout", c.alice2, nil, http.StatusNoContent, nil)
	for name, h := range tests {
		t.Run(name, func(t *testing.T) {
			_, resp, err := c.env.DialRaw(http.Header{"Authorization": {h}})
			if err == nil {
				t.Fatal("upgrade succeeded")
			}
			if resp == nil || resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("response %v, want 401", resp)
			}
		})
	}
	// A token in the query string is ignored: no credential, so the
	// socket waits for an auth frame instead of being authenticated.
	ws, _, err := c.env.DialRaw(nil)
	if err != nil {
		t.Fatal(err)
	}
	ws.Send(`{"type":"ping"}`)
	if code := ws.CloseCode(5 * time.Second); code != int(proto.CloseUnauthorized) {
		t.Fatalf("a ping before auth: close %d, want 4401", code)
	}
}

func TestFirstFrameAuth(t *testing.T) {
	c := newChat(t, func(cfg *serverConfig) { cfg.Messenger.AuthTimeout = 300 * time.Millisecond })
	tests := map[string]struct {
		frame  string // "" sends nothing
		binary bool   // as a binary frame
		want   int    // close code; 0 means ready
	}{
		"valid token":     {frame: string(proto.AppendAuth(nil, c.b1)), want: 0},
		"binary frame":    {frame: string(proto.AppendAuth(nil, c.b1)), binary: true, want: int(proto.CloseUnauthorized)},
		"unknown token":   {frame: string(proto.AppendAuth(nil, "kf1_"+strings.Repeat("B", 43))), want: int(proto.CloseUnauthorized)},
		"malformed":       {frame: `{"type":"auth","token":`, want: int(proto.CloseUnauthorized)},
		"other frame":     {frame: `{"type":"sync"}`, want: int(proto.CloseUnauthorized)},
		"nothing in time": {frame: "", want: int(proto.CloseAuthTimeout)},
		"oversized frame": {frame: `{"type":"auth","token":"` + strings.Repeat("x", proto.MaxFrameSize) + `"}`, want: int(proto.CloseTooLarge)},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ws, _, err := c.env.DialRaw(nil)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tc.binary:
				ws.Conn.WriteMessage(websocket.BinaryMessage, []byte(tc.frame))
			case tc.frame != "":
				ws.Send(tc.frame)
			}
			if tc.want == 0 {
				if f := ws.Read(); f.Type != proto.TypeReady || f.UserID != c.bob || f.DeviceID != "b-phone" {
					t.Fatalf("got %+v, want ready for bob's phone", f)
				}
				return
			}
			if code := ws.CloseCode(5 * time.Second); code != tc.want {
				t.Fatalf("close %d, want %d", code, tc.want)
			}
		})
	}
}

func TestBadFrames(t *testing.T) {
	c := newChat(t)
	tooBig := `{"type":"send","ref":"big","conversation":"` + c.conv + `","client_id":"x","keys":{"a/b":"AAAA"},"ciphertext":"` +
		strings.Repeat("A", (proto.MaxCiphertextSize/3+1)*4) + `"}`
	tests := map[string]struct {
		frame string
		ref   string
		code  proto.Code
	}{
		"malformed JSON":       {frame: `{"type":`, code: proto.CodeInvalidRequest},
		"not an object":        {frame: `[1,2]`, code: proto.CodeInvalidRequest},
		"unknown type":         {frame: `{"type":"dance","ref":"r9"}`, ref: "r9", code: proto.CodeInvalidRequest},
		"missing type":         {frame: `{"ref":"r8"}`, ref: "r8", code: proto.CodeInvalidRequest},
		"send without keys":    {frame: `{"type":"send","ref":"r7","conversation":"` + c.conv + `","client_id":"a","ciphertext":"AAAA"}`, ref: "r7", code: proto.CodeInvalidRequest},
		"bad base64":           {frame: `{"type":"send","ref":"r6","conversation":"` + c.conv + `","client_id":"a","ciphertext":"@@@","keys":{"a/b":"AAAA"}}`, ref: "r6", code: proto.CodeInvalidRequest},
		"ciphertext too big":   {frame: tooBig, ref: "big", code: proto.CodePayloadTooLarge},
		"unknown conversation": {frame: c.sendFrameTo("r5", "nope", "x"), ref: "r5", code: proto.CodeNotFound},
		"auth after auth":      {frame: string(proto.AppendAuth(nil, c.b1)), code: proto.CodeInvalidRequest},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ws := c.env.Dial(c.b1)
			ws.Send(tc.frame)
			f := ws.Read()
			if f.Type != proto.TypeError || f.Code != tc.code || f.Ref != tc.ref || f.ErrMessage == "" {
				t.Fatalf("got %+v, want error %s with ref %q", f, tc.code, tc.ref)
			}
			// The socket stays usable.
			ws.Send(`{"type":"ping"}`)
			if f := ws.Read(); f.Type != proto.TypePong {
				t.Fatalf("after the error: %q, want pong", f.Type)
			}
		})
	}

	t.Run("binary frame", func(t *testing.T) {
		ws := c.env.Dial(c.b1)
		ws.Conn.WriteMessage(websocket.BinaryMessage, []byte(`{"type":"ping"}`))
		if f := ws.Read(); f.Type != proto.TypeError || f.Code != proto.CodeInvalidRequest {
			t.Fatalf("got %+v", f)
		}
	})
	t.Run("three invalid in a row close 4400", func(t *testing.T) {
		ws := c.env.Dial(c.b1)
		// Back to back: the close waits for the error frames.
		for _, f := range []string{`{"type":"ping"}`, `nope`, `{"type":"nope","ref":"r9"}`, `[1,2]`, `{"type":"ping"}`} {
			ws.Send(f)
		}
		frames, code := ws.FramesUntilClose(5 * time.Second)
		if code != int(proto.CloseMalformed) {
			t.Fatalf("close %d, want 4400", code)
		}
		var got []string
		for _, f := range frames {
			got = append(got, f.Type+":"+string(f.Code)+":"+f.Ref)
		}
		// The pong of the first ping, an error for each bad frame, and
		// nothing for the frame after the third.
		if want := "pong::,error:invalid_request:,error:invalid_request:r9,error:invalid_request:"; strings.Join(got, ",") != want {
			t.Fatalf("frames before the close %v, want %s", got, want)
		}
	})
	t.Run("a valid frame resets the count", func(t *testing.T) {
		ws := c.env.Dial(c.b1)
		for _, f := range []string{`nope`, `nope`, `{"type":"ping"}`, `nope`, `nope`, `{"type":"ping"}`} {
			ws.Send(f)
		}
		var types []string
		for len(types) < 6 {
			types = append(types, ws.Read().Type)
		}
		if strings.Join(types, ",") != "error,error,pong,error,error,pong" {
			t.Fatalf("frames %v", types)
		}
	})
	t.Run("frame over 1 MiB closes 4413", func(t *testing.T) {
		ws := c.env.Dial(c.b1)
		ws.Send(`nope`)
		ws.Send(`{"type":"ping","pad":"` + strings.Repeat("x", proto.MaxFrameSize) + `"}`)
		frames, code := ws.FramesUntilClose(5 * time.Second)
		if code != int(proto.CloseTooLarge) {
			t.Fatalf("close %d, want 4413", code)
		}
		if len(frames) != 1 || frames[0].Code != proto.CodeInvalidRequest {
			t.Fatalf("frames before the close %+v, want the error of the frame before", frames)
		}
	})
}

// sendFrameTo is a valid send frame for any conversation id.
func (c *chat) sendFrameTo(ref, conv, clientID string) string {
	s := &proto.Send{Conversation: conv, ClientID: clientID, Ciphertext: []byte("x"),
		Keys: map[string][]byte{proto.KeyName(c.bob, "b-phone"): []byte("k")}}
	return string(proto.AppendSendFrame(nil, ref, s))
}

func TestSendForbiddenWithoutWriteRight(t *testing.T) {
	c := newChat(t)
	var g struct{ ID string }
	c.env.JSON("POST", "/api/v1/conversations", c.alice1, map[string]any{
		"kind": "group", "title": "5b", "members": []map[string]any{{"user_id": c.bob, "can_write": false}},
	}, http.StatusCreated, &g)
	ws := c.env.Dial(c.b1)
	ws.Send(c.sendFrameTo("r1", g.ID, "x"))
	if f := ws.Read(); f.Type != proto.TypeError || f.Code != proto.CodeForbidden || f.Ref != "r1" {
		t.Fatalf("got %+v, want forbidden", f)
	}
}

func TestSendRateLimit(t *testing.T) {
	c := newChat(t, func(cfg *serverConfig) { cfg.Messenger.SendRate = 0.001; cfg.Messenger.SendBurst = 2 })
	ws := c.env.Dial(c.b1)
	for i := 0; i < 3; i++ {
		ws.Send(c.sendFrame("r"+string(rune('0'+i)), "c"+string(rune('0'+i)), "x"))
	}
	var codes []string
	for len(codes) < 3 {
		f := ws.Read()
		if f.Type == proto.TypeError {
			codes = append(codes, string(f.Code))
		} else {
			codes = append(codes, f.Type)
		}
	}
	if strings.Join(codes, ",") != "sent,sent,rate_limited" {
		t.Fatalf("frames %v, want two sent then rate_limited", codes)
	}
	// A client that keeps hammering is disconnected by its 50th limited
	// send in a row, after the error frames of the 49 before it (one of
	// them above).
	for i := 0; i < 60; i++ {
		ws.Send(c.sendFrame(fmt.Sprint("h", i), "y", "z"))
	}
	frames, code := ws.FramesUntilClose(5 * time.Second)
	if code != int(proto.CloseTooSlow) || ws.CloseText != "rate_limited" {
		t.Fatalf("close %d %q, want 4429 rate_limited", code, ws.CloseText)
	}
	// Counted before the close frame is written, apart from slow readers.
	const closes = "klassenfunk_ws_closes_total"
	if got, slow := c.env.MetricWith(closes, "reason", "rate_limited"), c.env.MetricWith(closes, "reason", "too_slow"); got != 1 || slow != 0 {
		t.Fatalf("closes{rate_limited} = %v, closes{too_slow} = %v; want 1 and 0", got, slow)
	}
	for i, f := range frames {
		if f.Type != proto.TypeError || f.Code != proto.CodeRateLimited || f.Ref != fmt.Sprint("h", i) {
			t.Fatalf("frame %d before the close: %+v, want rate_limited for h%d", i, f, i)
		}
	}
	if len(frames) != 48 {
		t.Fatalf("%d error frames before the close, want 48", len(frames))
	}
}

// TestSendRateLimitPerDevice: the send limit is the device's, on all its
// paths: a second socket, a new socket after a close, POST …/messages and
// a new login of the device all draw on the same bucket; another device
// has its own.
func TestSendRateLimitPerDevice(t *testing.T) {
	c := newChat(t, func(cfg *serverConfig) { cfg.Messenger.SendRate = 0.001; cfg.Messenger.SendBurst = 2 })
	sendResult := func(ws *testenv.WS, ref string) string {
		t.Helper()
		ws.Send(c.sendFrame(ref, ref, "x"))
		f := ws.Read()
		if f.Type == proto.TypeError {
			return string(f.Code)
		}
		return f.Type
	}
	ws1, ws2 := c.env.Dial(c.b1), c.env.Dial(c.b1)
	got := []string{sendResult(ws1, "r1"), sendResult(ws2, "r2"), sendResult(ws1, "r3"), sendResult(ws2, "r4")}
	if strings.Join(got, ",") != "sent,sent,rate_limited,rate_limited" {
		t.Fatalf("two sockets of one device: %v, want the burst of 2 shared", got)
	}
	ws1.Conn.Close()
	ws3 := c.env.Dial(c.b1)
	if r := sendResult(ws3, "r5"); r != string(proto.CodeRateLimited) {
		t.Fatalf("a new socket of the device: %s, want rate_limited (the bucket stays)", r)
	}
	r := c.env.Do("POST", "/api/v1/conversations/"+c.conv+"/messages", c.b1, map[string]any{
		"client_id": "h1", "ciphertext": "eA==", "keys": map[string]string{c.alice + "/a-phone": "eA=="},
	})
	if r.Status != http.StatusTooManyRequests {
		t.Fatalf("POST by the device: %d, want 429", r.Status)
	}
	// Logging in again on the device gives it no new burst.
	tok, _ := c.env.Login("bob", "b-phone", true)
	if r := sendResult(c.env.Dial(tok), "r6"); r != string(proto.CodeRateLimited) {
		t.Fatalf("the device after a new login: %s, want rate_limited", r)
	}
	if r := sendResult(c.env.Dial(c.alice1), "a1"); r != proto.TypeSent {
		t.Fatalf("another device: %s, want sent", r)
	}
}

// TestClosingSocketIsOffline: from the moment the server closes a socket
// it gets no live message, so the device counts as offline (and gets a
// push) at once, even while the server still waits for a silent client's
// close answer.
func TestClosingSocketIsOffline(t *testing.T) {
	c := newChat(t)
	ws := c.env.Dial(c.b1)
	ws.Conn.SetCloseHandler(func(int, string) error { return nil }) // no answer
	if on, err := c.env.Srv.Msg.Online(context.Background(), c.bob, "b-phone"); err != nil || !on {
		t.Fatalf("online before the drain: %v, %v", on, err)
	}
	drained := make(chan struct{})
	go func() {
		c.env.Srv.Drain(context.Background())
		close(drained)
	}()
	if code := ws.CloseCode(5 * time.Second); code != int(proto.CloseGoingAway) {
		t.Fatalf("close %d, want 1001", code)
	}
	if on, err := c.env.Srv.Msg.Online(context.Background(), c.bob, "b-phone"); err != nil || on {
		t.Fatalf("online while closing: %v, %v", on, err)
	}
	<-drained
}

// A socket still waiting for its auth frame is not in the hub; a drain
// closes it with 1001 all the same, long before its auth timeout.
func TestDrainClosesUnauthenticated(t *testing.T) {
	c := newChat(t, func(cfg *serverConfig) { cfg.Messenger.AuthTimeout = time.Minute })
	ws, _, err := c.env.DialRaw(nil)
	if err != nil {
		t.Fatal(err)
	}
	go c.env.Srv.Drain(context.Background())
	if code := ws.CloseCode(10 * time.Second); code != int(proto.CloseGoingAway) {
		t.Fatalf("close %d, want 1001", code)
	}
}

func TestDrainClosesWithGoingAway(t *testing.T) {
	c := newChat(t)
	ws := c.env.Dial(c.b1)
	done := make(chan struct{})
	go func() {
		c.env.Srv.Drain(context.Background())
		close(done)
	}()
	if code := ws.CloseCode(5 * time.Second); code != int(proto.CloseGoingAway) {
		t.Fatalf("close %d, want 1001", code)
	}
	<-done
	if r := c.env.Do("GET", "/readyz", "", nil); r.Status != http.StatusServiceUnavailable {
		t.Fatalf("readyz while draining: %d", r.Status)
	}
	if _, resp, err := c.env.DialRaw(http.Header{"Authorization": {"Bearer " + c.b1}}); err == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("dial while draining: %v", err)
	}
}

// A request to the WebSocket endpoint that is no upgrade gets the API's
// JSON error, not gorilla's plain text.
func TestNotAnUpgrade(t *testing.T) {
	c := newChat(t)
	for name, tok := range map[string]string{"with a token": c.b1, "without": ""} {
		r := c.env.Do("GET", "/api/v1/ws", tok, nil)
		if r.Status != http.StatusBadRequest || r.ErrorCode() != string(proto.CodeInvalidRequest) ||
			!strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
			t.Errorf("%s: %d %q %s", name, r.Status, r.Header.Get("Content-Type"), r.Body)
		}
	}
}

// TestFrameLengths: frames in every length form of RFC 6455 are read
// whole, and their answers written whole.
func TestFrameLengths(t *testing.T) {
	c := newChat(t)
	b := c.env.Dial(c.b1)
	for _, n := range []int{30, 125, 126, 127, 0xffff, 0x10000, 300_000} {
		ref := fmt.Sprintf("p%d", n)
		body := `"type":"ping","ref":"` + ref + `"}`
		b.Send("{" + strings.Repeat(" ", n-1-len(body)) + body)
		if f := b.Read(); f.Type != proto.TypePong || f.Ref != ref {
			t.Fatalf("a ping of %d bytes: got %q with ref %q", n, f.Type, f.Ref)
		}
	}
}

// TestNoPongOnceClosing: pings that follow the frame that makes the
// server close (here the third invalid one: 4400) are not answered, as
// no frame after a close has begun is; the close frame ends the stream.
func TestNoPongOnceClosing(t *testing.T) {
	c := newChat(t)
	for i := range 5 {
		b := c.env.Dial(c.b1)
		var burst []byte
		for range 3 {
			burst = append(burst, messenger.MaskedFrame(0x81, `{"type":"nonsense"}`)...)
		}
		for range 20 {
			burst = append(burst, messenger.MaskedFrame(0x89, "late")...)
		}
		pongs := 0
		b.Conn.SetPongHandler(func(string) error { pongs++; return nil })
		if _, err := b.Conn.NetConn().Write(burst); err != nil {
			t.Fatal(err)
		}
		frames, code := b.FramesUntilClose(5 * time.Second)
		if code != int(proto.CloseMalformed) || len(frames) != 3 {
			t.Fatalf("round %d: %d frames, close %d; want 3 error frames, then 4400", i, len(frames), code)
		}
		if pongs != 0 {
			t.Fatalf("round %d: %d pongs after the close began", i, pongs)
		}
	}
}

// TestPingFloodAnswered: a client that sends far more pings at once than
// its send queue holds (here 8), of both kinds, is answered, not closed
// as a slow reader for the server's own pongs: while a pong is queued it
// answers the pings after it too, a control pong with the newest ping's
// payload.
func TestPingFloodAnswered(t *testing.T) {
	c := newChat(t, func(cfg *serverConfig) { cfg.Messenger.SendQueue = 8 })
	b := c.env.Dial(c.b1)
	var last string
	pongs := 0
	b.Conn.SetPongHandler(func(data string) error { pongs++; last = data; return nil })
	var burst []byte
	const n = 600
	for i := range n {
		burst = append(burst, messenger.MaskedFrame(0x89, fmt.Sprintf("p%d", i))...)
		burst = append(burst, messenger.MaskedFrame(0x81, `{"type":"ping"}`)...)
	}
	burst = append(burst, messenger.MaskedFrame(0x81, `{"type":"ping","ref":"last"}`)...)
	if _, err := b.Conn.NetConn().Write(burst); err != nil {
		t.Fatal(err)
	}
	frames := 0
	for {
		f := b.Read() // fails the test on a close
		if f.Type != proto.TypePong {
			t.Fatalf("got %q, want only pongs", f.Type)
		}
		frames++
		if f.Ref == "last" {
			break
		}
	}
	if pongs == 0 || pongs > n || frames > n+1 {
		t.Fatalf("%d control pongs and %d pong frames for %d pings of each kind", pongs, frames, n)
	}
	// The last control pong answers the last ping; it may come after
	// the pong frame "last", so a frame round trip makes sure it is in.
	b.Send(`{"type":"ping","ref":"after"}`)
	if f := b.Read(); f.Ref != "after" {
		t.Fatalf("got %q with ref %q, want the pong of the next ping", f.Type, f.Ref)
	}
	if last != fmt.Sprintf("p%d", n-1) {
		t.Fatalf("the last control pong carries %q, want p%d", last, n-1)
	}
}
