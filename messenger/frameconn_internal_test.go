package messenger

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"klassenfunk/proto"
)

// clientFrame builds a client frame (RFC 6455, 5.2): first byte b0 (FIN,
// RSV, opcode), masked with key unless key is nil; long lengths take the
// 16- or 64-bit form.
func clientFrame(b0 byte, payload []byte, key []byte) []byte {
	f := []byte{b0, 0}
	switch n := len(payload); {
	case n <= 125:
		f[1] = byte(n)
	case n <= 0xffff:
		f[1] = 126
		f = binary.BigEndian.AppendUint16(f, uint16(n))
	default:
		f[1] = 127
		f = binary.BigEndian.AppendUint64(f, uint64(n))
	}
	if key == nil {
		return append(f, payload...)
	}
	f[1] |= 0x80
	f = append(f, key...)
	for i, b := range payload {
		f = append(f, b^key[i&3])
	}
	return f
}

var testKey = []byte{0x12, 0x34, 0x56, 0x78}

// longForm builds a masked frame whose short payload is announced in the
// 16-bit (len7 126) or 64-bit (127) length form, which RFC 6455 forbids
// for control frames.
func longForm(b0, len7 byte, payload string) []byte {
	f := []byte{b0, 0x80 | len7}
	if len7 == 126 {
		f = binary.BigEndian.AppendUint16(f, uint16(len(payload)))
	} else {
		f = binary.BigEndian.AppendUint64(f, uint64(len(payload)))
	}
	f = append(f, testKey...)
	for i := range len(payload) {
		f = append(f, payload[i]^testKey[i&3])
	}
	return f
}

func TestScanFrame(t *testing.T) {
	text := clientFrame(0x81, []byte(`{"type":"ping"}`), testKey)
	long := clientFrame(0x81, bytes.Repeat([]byte("x"), 300), testKey)
	huge := clientFrame(0x81, nil, testKey)[:2]
	huge[1] = 0x80 | 127
	huge = binary.BigEndian.AppendUint64(huge, proto.MaxFrameSize+1)
	tests := map[string]struct {
		b    []byte
		kind frameKind
		size int
	}{
		"empty":                    {nil, frameIncomplete, 0},
		"one byte":                 {text[:1], frameIncomplete, 0},
		"header, no payload yet":   {text[:6], frameIncomplete, len(text)},
		"16-bit length cut":        {long[:3], frameIncomplete, 0},
		"16-bit length, half":      {long[:100], frameIncomplete, len(long)},
		"text frame":               {text, frameOther, len(text)},
		"text frame and more":      {append(append([]byte{}, text...), text[:3]...), frameOther, len(text)},
		"long text frame":          {long, frameOther, len(long)},
		"ping":                     {clientFrame(0x89, []byte("abc"), testKey), framePing, 2 + 4 + 3},
		"empty pong":               {clientFrame(0x8a, nil, testKey), framePong, 2 + 4},
		"unmasked ping: gorilla's": {clientFrame(0x89, []byte("abc"), nil), frameOther, 2 + 3},
		"ping not final":           {clientFrame(0x09, []byte("abc"), testKey), frameOther, 2 + 4 + 3},
		"ping with a reserved bit": {clientFrame(0xc9, []byte("abc"), testKey), frameOther, 2 + 4 + 3},
		"ping of 126 bytes":        {clientFrame(0x89, make([]byte, 126), testKey), frameOther, 4 + 4 + 126},
		"ping, 16-bit length form": {longForm(0x89, 126, "abcde"), frameOther, 4 + 4 + 5},
		"pong, 64-bit length form": {longForm(0x8a, 127, "abcde"), frameOther, 10 + 4 + 5},
		"close":                    {clientFrame(0x88, []byte{3, 232}, testKey), frameOther, 2 + 4 + 2},
		"too large to buffer":      {huge, frameHuge, 0},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			kind, size := scanFrame(tc.b)
			if kind != tc.kind || size != tc.size {
				t.Fatalf("scanFrame = %d, %d; want %d, %d", kind, size, tc.kind, tc.size)
			}
		})
	}
}

func FuzzScanFrame(f *testing.F) {
	f.Add(clientFrame(0x81, []byte(`{"type":"sync"}`), testKey))
	f.Add(clientFrame(0x89, []byte("p"), testKey))
	f.Add(clientFrame(0x82, make([]byte, 70000), testKey)[:20])
	f.Add(longForm(0x89, 126, "abcde"))
	f.Add(longForm(0x8a, 127, "abcde"))
	f.Fuzz(func(t *testing.T, b []byte) {
		kind, size := scanFrame(b)
		switch kind {
		case frameIncomplete:
			if size != 0 && size <= len(b) {
				t.Fatalf("incomplete, but size %d of %d bytes", size, len(b))
			}
		case framePing, framePong, frameOther:
			if size < 2 || size > len(b) || size > maxBufferedFrame {
				t.Fatalf("whole frame of size %d in %d bytes", size, len(b))
			}
		case frameHuge:
			if len(b) < 4 {
				t.Fatalf("huge frame from %d bytes", len(b))
			}
		}
		if kind == framePing {
			fc := &frameConn{buf: b}
			if p := fc.pingPayload(size); len(p) != int(b[1]&0x7f) {
				t.Fatalf("ping payload of %d bytes, header says %d", len(p), b[1]&0x7f)
			}
		}
	})
}

func TestPingPayloadUnmasked(t *testing.T) {
	fc := &frameConn{buf: append([]byte("xx"), clientFrame(0x89, []byte("hallo"), testKey)...), off: 2}
	kind, size := scanFrame(fc.buf[fc.off:])
	if kind != framePing {
		t.Fatalf("kind %d, want ping", kind)
	}
	if p := fc.pingPayload(size); string(p) != "hallo" {
		t.Fatalf("payload %q, want hallo", p)
	}
	if p := (&frameConn{buf: clientFrame(0x89, nil, testKey)}).pingPayload(6); p == nil || len(p) != 0 {
		t.Fatalf("empty ping payload %v, want empty and not nil (nil is no pong)", p)
	}
}

// TestFrameConnReadsWholeFrames: a reader of frameConn (gorilla) gets the
// bytes of one frame at a time, whatever it asks for, even when frames
// arrive together, split, or larger than the buffer it starts with.
func TestFrameConnReadsWholeFrames(t *testing.T) {
	a := clientFrame(0x81, []byte("erster"), testKey)
	b := clientFrame(0x81, bytes.Repeat([]byte("z"), 3*readBufSize), testKey)
	c := clientFrame(0x8a, nil, testKey)
	client, server := net.Pipe()
	defer client.Close()
	fc := newFrameConn(server, 0)
	defer fc.Close()
	go func() {
		stream := append(append(append([]byte{}, a...), b...), c...)
		client.Write(stream[:len(a)+5]) // a and the start of b's header
		client.Write(stream[len(a)+5 : len(a)+2000])
		client.Write(stream[len(a)+2000:])
	}()
	fc.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for i, want := range [][]byte{a, b, c} {
		var got []byte
		p := make([]byte, 64<<10) // larger than any frame: a read may not cross one
		for len(got) < len(want) {
			n, err := fc.Read(p)
			if err != nil {
				t.Fatalf("frame %d: %v after %d bytes", i, err, len(got))
			}
			got = append(got, p[:n]...)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("frame %d: read %d bytes that differ from the frame (%d bytes)", i, len(got), len(want))
		}
		if fc.off != fc.limit {
			t.Fatalf("frame %d: off %d, limit %d after the frame", i, fc.off, fc.limit)
		}
	}
	if fc.pending() {
		t.Fatal("bytes left after the last frame")
	}
	fc.release()
	if fc.buf != nil {
		t.Fatal("an emptied buffer was kept")
	}
}

// TestFrameConnPassthrough: a frame too large to buffer is read through:
// what was buffered, then the socket.
func TestFrameConnPassthrough(t *testing.T) {
	hdr := []byte{0x81, 0x80 | 127}
	hdr = binary.BigEndian.AppendUint64(hdr, proto.MaxFrameSize+1)
	hdr = append(hdr, testKey...)
	client, server := net.Pipe()
	defer client.Close()
	fc := newFrameConn(server, 0)
	defer fc.Close()
	go func() {
		client.Write(append(append([]byte{}, hdr...), "abc"...))
		client.Write([]byte("defg"))
	}()
	fc.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(io.LimitReader(readerFunc(fc.Read), int64(len(hdr)+7)))
	if err != nil {
		t.Fatal(err)
	}
	if want := string(hdr) + "abcdefg"; string(got) != want || !fc.passthrough {
		t.Fatalf("read %q (passthrough %v), want %q", got, fc.passthrough, want)
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// deadlineConn records the write deadlines given to the socket.
type deadlineConn struct {
	net.Conn
	wdl   time.Time
	calls int
}

func (d *deadlineConn) SetWriteDeadline(t time.Time) error { d.wdl, d.calls = t, d.calls+1; return nil }
func (d *deadlineConn) SetDeadline(t time.Time) error      { return d.SetWriteDeadline(t) }

// TestFrameConnWriteDeadline: whatever deadlines gorilla asks for, the
// socket's is never earlier than asked and at most the slack later, and
// deadlines that move on by less than the slack do not reach the socket.
func TestFrameConnWriteDeadline(t *testing.T) {
	const slack = 2 * time.Second
	sock := &deadlineConn{}
	fc := newFrameConn(sock, slack)
	check := func(step string, asked time.Time) {
		t.Helper()
		if asked.IsZero() != sock.wdl.IsZero() || sock.wdl.Before(asked) || sock.wdl.Sub(asked) > slack {
			t.Fatalf("%s: asked %v, the socket has %v (slack %v)", step, asked, sock.wdl, slack)
		}
	}
	base := time.Unix(1_800_000_000, 0)
	at := func(d time.Duration) time.Time { return base.Add(d) }

	fc.SetWriteDeadline(at(0))
	check("first", at(0))
	// Writes in quick succession: one deadline for all of them.
	for ms := 100; ms <= 2000; ms += 100 {
		fc.SetWriteDeadline(at(time.Duration(ms) * time.Millisecond))
		check("moving on", at(time.Duration(ms)*time.Millisecond))
	}
	if sock.calls != 1 {
		t.Fatalf("%d deadlines reached the socket for writes within the slack, want 1", sock.calls)
	}
	fc.SetWriteDeadline(at(2100 * time.Millisecond))
	check("past the slack", at(2100*time.Millisecond))
	// Earlier by more than the slack (a close frame's short deadline).
	fc.SetWriteDeadline(at(-10 * time.Second))
	check("much earlier", at(-10*time.Second))
	fc.SetWriteDeadline(time.Time{})
	check("none", time.Time{})
	fc.SetWriteDeadline(at(time.Second))
	check("after none", at(time.Second))
	// A deadline set for both directions is the socket's write deadline.
	fc.SetDeadline(at(-time.Hour))
	calls := sock.calls
	fc.SetWriteDeadline(at(time.Second))
	check("after SetDeadline", at(time.Second))
	if sock.calls == calls {
		t.Fatal("SetDeadline's deadline was taken for the one set before")
	}
}

// TestFrameConnTextFrame: a final, masked text frame is unmasked in
// place, whatever its length form and however its payload falls on the
// 8-byte steps of unmask; any other frame is left to gorilla untouched.
func TestFrameConnTextFrame(t *testing.T) {
	for _, n := range []int{0, 1, 3, 7, 8, 9, 15, 16, 17, 125, 126, 127, 1000, 0xffff, 0x10000, 70001} {
		payload := make([]byte, n)
		for i := range payload {
			payload[i] = byte(i*7 + n)
		}
		fc := &frameConn{buf: append([]byte("xyz"), clientFrame(0x81, payload, testKey)...), off: 3}
		kind, size := scanFrame(fc.buf[fc.off:])
		if kind != frameOther {
			t.Fatalf("%d bytes: kind %d", n, kind)
		}
		if p := fc.textFrame(size); p == nil || !bytes.Equal(p, payload) {
			t.Fatalf("%d bytes: payload differs (nil: %v)", n, p == nil)
		}
	}
	tooLarge := clientFrame(0x81, nil, testKey)[:2]
	tooLarge[1] = 0x80 | 127
	tooLarge = binary.BigEndian.AppendUint64(tooLarge, proto.MaxFrameSize+1)
	tooLarge = append(append(tooLarge, testKey...), make([]byte, proto.MaxFrameSize+1)...)
	for name, f := range map[string][]byte{
		"binary":        clientFrame(0x82, []byte("abcdefghij"), testKey),
		"first of many": clientFrame(0x01, []byte("abcdefghij"), testKey),
		"continuation":  clientFrame(0x80, []byte("abcdefghij"), testKey),
		"extension bit": clientFrame(0xc1, []byte("abcdefghij"), testKey),
		"unmasked":      clientFrame(0x81, []byte("abcdefghij"), nil),
		"ping":          clientFrame(0x89, []byte("abcdefghij"), testKey),
		"too large":     tooLarge,
	} {
		fc := &frameConn{buf: bytes.Clone(f)}
		if p := fc.textFrame(len(f)); p != nil {
			t.Fatalf("%s: read as text", name)
		}
		if !bytes.Equal(fc.buf, f) {
			t.Fatalf("%s: the frame was changed", name)
		}
	}
}

// TestFrameConnWriteText: the gateway's own text frames reach a gorilla
// client whole, in every length form, while gorilla writes pings on the
// same socket from another goroutine; after gorilla's close frame no text
// frame follows.
// directSocket upgrades a real TCP connection and returns the server's
// frameConn and gorilla conn on it, and the client's conn; all close when
// the test ends.
func directSocket(t *testing.T) (*frameConn, *websocket.Conn, *websocket.Conn) {
	t.Helper()
	fcs := make(chan *frameConn, 1)
	wss := make(chan *websocket.Conn, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hj := &frameHijacker{ResponseWriter: w}
		ws, err := upgrader.Upgrade(hj, r, nil)
		if err != nil {
			return
		}
		fcs <- hj.fc
		wss <- ws
	}))
	t.Cleanup(srv.Close)
	client, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	fc, ws := <-fcs, <-wss
	t.Cleanup(func() { ws.Close() })
	return fc, ws, client
}

func TestFrameConnWriteText(t *testing.T) {
	fc, ws, client := directSocket(t)
	if !fc.direct {
		t.Fatal("a TCP socket is not written directly")
	}

	var want [][]byte
	for _, n := range []int{0, 1, 125, 126, 127, 0xffff, 0x10000, 300_000} {
		want = append(want, bytes.Repeat([]byte{byte('a' + n%26)}, n))
	}
	pings := make(chan error, 1)
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				pings <- nil
				return
			default:
			}
			if err := ws.WriteControl(websocket.PingMessage, []byte("p"), time.Now().Add(5*time.Second)); err != nil {
				pings <- err
				return
			}
		}
	}()
	writes := make(chan error, 1)
	go func() {
		for round := 0; round < 20; round++ {
			for _, p := range want {
				if err := fc.writeText(p, time.Now().Add(5*time.Second)); err != nil {
					writes <- err
					return
				}
			}
		}
		writes <- nil
	}()
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	for i := range 20 * len(want) {
		mt, got, err := client.ReadMessage()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if p := want[i%len(want)]; mt != websocket.TextMessage || !bytes.Equal(got, p) {
			t.Fatalf("frame %d: type %d, %d bytes, want text of %d bytes", i, mt, len(got), len(p))
		}
	}
	close(stop)
	if err := <-writes; err != nil {
		t.Fatal(err)
	}
	if err := <-pings; err != nil {
		t.Fatal(err)
	}

	if err := ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4401, "bye"), time.Now().Add(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := fc.writeText([]byte("after"), time.Now().Add(5*time.Second)); err != websocket.ErrCloseSent {
		t.Fatalf("a text frame after the close frame: %v, want ErrCloseSent", err)
	}
	if _, _, err := client.ReadMessage(); !websocket.IsCloseError(err, 4401) {
		t.Fatalf("after the texts: %v, want close 4401", err)
	}
}

// hasUnsent reports whether tryText left part of a frame.
func (f *frameConn) hasUnsent() bool {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	return len(f.unsent) > 0
}

// TestFrameConnTryText: tryText writes what the socket takes and keeps
// the rest of its frame; whatever is written next (flush, a control frame
// through gorilla, writeText) sends that rest first, so the client reads
// every frame whole and in order.
func TestFrameConnTryText(t *testing.T) {
	fc, ws, client := directSocket(t)

	var (
		sent  [][]byte // every text frame, in the order written
		got   [][]byte // every text frame the client read
		pings []int    // how many text frames came before each ping
	)
	frame := func(size int) []byte {
		return append(fmt.Appendf(nil, "frame %d ", len(sent)), bytes.Repeat([]byte{byte('a' + len(sent)%26)}, size)...)
	}
	deadline := func() time.Time { return time.Now().Add(5 * time.Second) }
	// fill writes with tryText, the client reading nothing, until part
	// of a frame is left; then one more frame, which must queue behind it.
	fill := func() {
		t.Helper()
		for i := 0; !fc.hasUnsent(); i++ {
			if i == 10_000 {
				t.Fatal("the socket took 10,000 frames of 16 KiB without waiting")
			}
			p := frame(16 << 10)
			if _, err := fc.tryText(p, deadline()); err != nil {
				t.Fatal(err)
			}
			sent = append(sent, p)
		}
		// The client takes a few frames, so that the socket has room
		// again: the next frame must still wait for the rest of the
		// part-written one.
		client.SetReadDeadline(deadline())
		for range 8 {
			if _, p, err := client.ReadMessage(); err != nil {
				t.Fatal(err)
			} else {
				got = append(got, p)
			}
		}
		p := frame(10)
		if _, err := fc.tryText(p, deadline()); err != nil {
			t.Fatal(err)
		}
		sent = append(sent, p)
	}
	// Each drain notes what it will write (on another goroutine: the
	// client must read for it to finish) and returns how.
	drains := []func() func() error{
		func() func() error { return func() error { return fc.flush(deadline()) } },
		func() func() error {
			pings = append(pings, len(sent))
			p := frame(5) // after the ping, so that the client's read returns
			sent = append(sent, p)
			return func() error {
				if err := ws.WriteControl(websocket.PingMessage, []byte("p"), deadline()); err != nil {
					return err
				}
				return fc.writeText(p, deadline())
			}
		},
		func() func() error {
			p := frame(100)
			sent = append(sent, p)
			return func() error { return fc.writeText(p, deadline()) }
		},
	}
	var gotPings []int
	client.SetPingHandler(func(string) error { gotPings = append(gotPings, len(got)); return nil })
	for _, drain := range drains {
		fill()
		run := drain()
		done := make(chan error, 1)
		go func() { done <- run() }()
		client.SetReadDeadline(deadline())
		for len(got) < len(sent) {
			mt, p, err := client.ReadMessage()
			if err != nil {
				t.Fatalf("after %d of %d frames: %v", len(got), len(sent), err)
			}
			if mt != websocket.TextMessage {
				t.Fatalf("frame %d: type %d", len(got), mt)
			}
			got = append(got, p)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	for i := range sent {
		if !bytes.Equal(got[i], sent[i]) {
			t.Fatalf("frame %d: %.20q… (%d bytes), want %.20q… (%d bytes)", i, got[i], len(got[i]), sent[i], len(sent[i]))
		}
	}
	if !slices.Equal(gotPings, pings) {
		t.Fatalf("pings came after %v text frames, want after %v", gotPings, pings)
	}
	if fc.hasUnsent() {
		t.Fatal("part of a frame is still unsent")
	}
}

// TestFrameConnTryTextFails: a write to a socket the peer has reset is an
// error of tryText (the caller ends the connection), not a frame kept
// for later.
func TestFrameConnTryTextFails(t *testing.T) {
	fc, _, client := directSocket(t)
	tcp := client.UnderlyingConn().(*net.TCPConn)
	tcp.SetLinger(0) // close sends a reset
	tcp.Close()
	var err error
	for i := 0; i < 1000 && err == nil; i++ {
		_, err = fc.tryText([]byte("after the reset"), time.Now().Add(5*time.Second))
	}
	if err == nil || fc.hasUnsent() {
		t.Fatalf("tryText on a reset socket: %v, unsent %v; want an error and nothing kept", err, fc.hasUnsent())
	}
}
