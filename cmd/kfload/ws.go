//go:build unix

package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"klassenfunk/proto"
)

// runState is shared by all connection goroutines. Counters are atomic;
// rare events go into maps under mu.
type runState struct {
	mStart atomic.Int64 // unix nanos; messages due at or after it are measured
	mEnd   atomic.Int64 // unix nanos; end of the measured window

	stopping atomic.Bool // closes after this are ours and not counted

	sentTotal      atomic.Int64 // send frames written
	respTotal      atomic.Int64 // answers to sends: sent and error frames (with --send-via http: HTTP answers and transport errors)
	ackedTotal     atomic.Int64 // sent frames received
	deliveredTotal atomic.Int64 // unique message frames received by receivers
	decodeErrors   atomic.Int64
	maxLatency     atomic.Int64 // nanoseconds, the largest end-to-end latency since the last progress line
	idleFrames     atomic.Int64 // frames (other than ready) received on idle connections

	mu          sync.Mutex
	closes      map[string]uint64 // by "code reason", connections ended before we stopped
	closedConns map[string]uint64 // by connection kind (sender, receiver, idle)
	writeErrors map[string]uint64
}

func newRunState() *runState {
	return &runState{closes: map[string]uint64{}, closedConns: map[string]uint64{}, writeErrors: map[string]uint64{}}
}

// pairState is one sender→receiver pair. Each group of fields is owned by
// one goroutine while the run lasts and read by main only after that
// goroutine has ended.
type pairState struct {
	idx      int
	conv     string
	snd, rcv *user
	sconn    *websocket.Conn
	rconn    *websocket.Conn

	// Owned by the sender's writer goroutine.
	sent, sentM uint64
	stalls      uint64        // writes that blocked for more than stallThreshold
	stallTime   time.Duration // total time spent in those writes
	maxWrite    time.Duration
	lateSends   uint64 // sends made more than one period after they were due
	skipped     uint64 // sends left out because the sender was more than maxLag behind

	// http is set with --send-via http: the sender POSTs its messages.
	http *httpSender

	// Owned by the sender's reader goroutine (with --send-via http: by
	// the sender's writer goroutine, which gets the answers).
	acked, ackedM uint64
	acks          []ackRec // acked measured messages
	ackIDs        []byte   // their ids, back to back (no pointers for the GC to trace)
	errs          map[proto.Code]uint64
	errsM         uint64 // error frames answering measured sends
	ackHist       *hist

	// Owned by the sender's reader goroutine.
	sndForeign uint64 // unexpected message (or, with --send-via http, sent) frames on the sender's socket

	// Owned by the receiver's reader goroutine.
	seen         map[uint64]struct{} // seqs delivered (all windows); a pair has one conversation
	delivered    uint64              // unique, all windows
	deliveredM   uint64              // unique, sent in the measured window
	deliveredWin uint64              // unique, received inside the measured window
	dups         uint64
	outOfOrder   uint64
	lastSeq      uint64
	keyBad       uint64 // keys not exactly {own key name}
	foreign      uint64 // messages of another conversation or sender
	short        uint64 // ciphertext shorter than the 8-byte timestamp
	hist         *hist
}

// ackRec is one acked message: its seq, where its id is in ackIDs, and
// when the ack arrived. It holds no pointer: 450,000 of them in a 30 s run
// at 15,000/s cost the tool's garbage collector nothing to trace, and the
// tool's own GC pauses do not show up as server latency.
type ackRec struct {
	seq   uint64
	at    int64 // unix nanos
	idOff uint32
	idLen uint32
}

// dialerPool spreads outgoing connections round-robin over source addresses.
type dialerPool struct {
	ds   []*net.Dialer
	next atomic.Uint64
}

func newDialerPool(ips []net.IP) *dialerPool {
	p := &dialerPool{}
	for _, ip := range ips {
		p.ds = append(p.ds, &net.Dialer{Timeout: 30 * time.Second, LocalAddr: &net.TCPAddr{IP: ip}})
	}
	if len(p.ds) == 0 {
		p.ds = append(p.ds, &net.Dialer{Timeout: 30 * time.Second})
	}
	return p
}

func (p *dialerPool) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	d := p.ds[(p.next.Add(1)-1)%uint64(len(p.ds))]
	return d.DialContext(ctx, network, addr)
}

// newWSDialer returns the WebSocket dialer. Write buffers are pooled
// (idle connections never hold one); the read buffer is small since every
// frame is read through NextReader into a per-connection buffer anyway.
func newWSDialer(p *dialerPool) *websocket.Dialer {
	return &websocket.Dialer{
		NetDialContext:   p.DialContext,
		HandshakeTimeout: 60 * time.Second,
		ReadBufferSize:   2048,
		WriteBufferSize:  4096,
		WriteBufferPool:  &sync.Pool{},
	}
}

// dialReady opens /api/v1/ws with the token in the Authorization header
// and waits for the ready frame.
func dialReady(ctx context.Context, d *websocket.Dialer, wsURL string, u *user, readyTimeout time.Duration) (*websocket.Conn, error) {
	h := http.Header{"Authorization": {"Bearer " + u.token}}
	c, resp, err := d.DialContext(ctx, wsURL, h)
	if err != nil {
		if resp != nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			return nil, fmt.Errorf("ws dial (user %s): %w: HTTP %d: %s", u.login, err, resp.StatusCode, bytes.TrimSpace(body))
		}
		return nil, fmt.Errorf("ws dial (user %s): %w", u.login, err)
	}
	c.SetReadLimit(proto.MaxFrameSize + 1024)
	c.SetReadDeadline(time.Now().Add(readyTimeout))
	_, data, err := c.ReadMessage()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("ws (user %s): waiting for ready: %s", u.login, describeReadErr(err))
	}
	f, err := proto.DecodeServerFrame(data)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("ws (user %s): first frame %q: %w", u.login, data, err)
	}
	if f.Type != proto.TypeReady || f.UserID != u.id || f.DeviceID != u.device {
		c.Close()
		return nil, fmt.Errorf("ws (user %s): first frame %s, want ready for %s/%s", u.login, data, u.id, u.device)
	}
	return c, nil
}

// describeReadErr classifies why a read ended: "<close code> <reason>" for
// a close frame, "1006 …" for a connection that ended without one.
func describeReadErr(err error) string {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return fmt.Sprintf("%d %s", ce.Code, proto.CloseCode(ce.Code))
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "read timeout"
	}
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "1006 eof without close frame"
	case errors.Is(err, syscall.ECONNRESET):
		return "1006 connection reset"
	case errors.Is(err, net.ErrClosed):
		return "1006 closed locally"
	}
	s := err.Error()
	if len(s) > 80 {
		s = s[:80]
	}
	return "1006 " + s
}

// installPingHandler answers server pings (as gorilla's default does) and
// also moves the read deadline on, so that an idle connection that gets
// only pings does not time out.
func installPingHandler(c *websocket.Conn, readTimeout time.Duration) {
	c.SetPingHandler(func(data string) error {
		c.SetReadDeadline(time.Now().Add(readTimeout))
		err := c.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(5*time.Second))
		if err == nil || errors.Is(err, websocket.ErrCloseSent) {
			return nil
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil
		}
		return err
	})
}

// readLoop reads frames until the connection ends and passes each decoded
// frame to handle. The frame buffer is reused. When the connection ends
// before rs.stopping is set, the reason is counted in rs.closes.
func readLoop(c *websocket.Conn, rs *runState, kind string, readTimeout time.Duration, handle func(f *proto.ServerFrame, now time.Time)) {
	installPingHandler(c, readTimeout)
	var buf bytes.Buffer
	for {
		c.SetReadDeadline(time.Now().Add(readTimeout))
		_, r, err := c.NextReader()
		if err == nil {
			buf.Reset()
			_, err = buf.ReadFrom(r)
		}
		if err != nil {
			if !rs.stopping.Load() {
				rs.mu.Lock()
				rs.closes[describeReadErr(err)]++
				rs.closedConns[kind]++
				rs.mu.Unlock()
			}
			return
		}
		now := time.Now()
		f, err := proto.DecodeServerFrame(buf.Bytes())
		if err != nil {
			rs.decodeErrors.Add(1)
			continue
		}
		handle(f, now)
	}
}

// senderRead handles frames on a sender's socket.
func (p *pairState) senderRead(rs *runState) func(f *proto.ServerFrame, now time.Time) {
	if p.http != nil {
		// The answers come over HTTP; nothing is expected here.
		return func(f *proto.ServerFrame, now time.Time) {
			if f.Type == proto.TypeMessage || f.Type == proto.TypeSent {
				p.sndForeign++
			}
		}
	}
	return func(f *proto.ServerFrame, now time.Time) {
		switch f.Type {
		case proto.TypeSent:
			measured := len(f.Ref) > 1 && f.Ref[0] == 'm'
			var took time.Duration = -1
			if measured {
				if ts, err := strconv.ParseInt(f.Ref[1:], 36, 64); err == nil {
					took = time.Duration(now.UnixNano() - ts)
				}
			}
			p.ack(rs, f.Seq, f.ID, measured, now, took)
		case proto.TypeError:
			p.answerErr(rs, f.Code, len(f.Ref) > 1 && f.Ref[0] == 'm')
		case proto.TypeMessage:
			p.sndForeign++
		}
	}
}

// ack counts a send's answer: the message was stored as seq with id.
// took is the time from the send to the answer, negative when unknown.
func (p *pairState) ack(rs *runState, seq uint64, id string, measured bool, now time.Time, took time.Duration) {
	p.acked++
	rs.ackedTotal.Add(1)
	rs.respTotal.Add(1)
	if !measured {
		return
	}
	p.ackedM++
	p.acks = append(p.acks, ackRec{seq: seq, at: now.UnixNano(), idOff: uint32(len(p.ackIDs)), idLen: uint32(len(id))})
	p.ackIDs = append(p.ackIDs, id...)
	if took >= 0 {
		if p.ackHist == nil {
			p.ackHist = &hist{}
		}
		p.ackHist.record(took)
	}
}

// answerErr counts a send answered with an error code.
func (p *pairState) answerErr(rs *runState, code proto.Code, measured bool) {
	p.errs[code]++
	rs.respTotal.Add(1)
	if measured {
		p.errsM++
	}
}

// receiverRead handles frames on a receiver's socket.
func (p *pairState) receiverRead(rs *runState) func(f *proto.ServerFrame, now time.Time) {
	p.seen = map[uint64]struct{}{}
	return func(f *proto.ServerFrame, now time.Time) {
		if f.Type != proto.TypeMessage {
			return
		}
		m := f.Message
		if _, dup := p.seen[m.Seq]; dup {
			p.dups++
			return
		}
		p.seen[m.Seq] = struct{}{}
		p.delivered++
		rs.deliveredTotal.Add(1)
		if m.Conversation != p.conv || m.Sender.UserID != p.snd.id || m.Sender.DeviceID != p.snd.device {
			p.foreign++
		}
		if k, ok := m.Keys[p.rcv.keyName]; !ok || len(k) == 0 || len(m.Keys) != 1 {
			p.keyBad++
		}
		if m.Seq <= p.lastSeq {
			p.outOfOrder++
		} else {
			p.lastSeq = m.Seq
		}
		nowNs := now.UnixNano()
		if nowNs >= rs.mStart.Load() && nowNs < rs.mEnd.Load() {
			p.deliveredWin++
		}
		if len(m.Ciphertext) < 8 {
			p.short++
			return
		}
		stamp := binary.LittleEndian.Uint64(m.Ciphertext)
		ts := int64(stamp &^ measuredBit)
		if stamp&measuredBit != 0 {
			p.deliveredM++
			if p.hist == nil {
				p.hist = &hist{}
			}
			p.hist.record(time.Duration(nowNs - ts))
			rs.noteLatency(nowNs - ts)
		}
	}
}

// sendLoop sends one frame per period until the measured window is over
// (by schedule: a send due inside the window is made even if it is late)
// or ctx ends (interrupt). The first send is at start, which the caller
// spreads evenly over one period. Buffers are reused; per message it
// allocates only the ref and client id strings (and the encoder's key
// list).
func (p *pairState) sendLoop(ctx context.Context, rs *runState, runID string, payload int, period time.Duration, start time.Time) {
	seed := [32]byte{}
	binary.LittleEndian.PutUint64(seed[:], uint64(time.Now().UnixNano()))
	binary.LittleEndian.PutUint64(seed[8:], uint64(p.idx))
	copy(seed[16:], runID)
	src := rand.NewChaCha8(seed)
	rng := rand.New(src)

	ct := make([]byte, payload)
	wkR := make([]byte, 64)
	wkS := make([]byte, 64)
	send := proto.Send{Conversation: p.conv, Keys: map[string][]byte{p.rcv.keyName: nil, p.snd.keyName: nil}}
	prefix := "kfload-" + runID + "-" + strconv.Itoa(p.idx) + "-"
	var frame, ref []byte
	var seq uint64
	mStart, mEnd := rs.mStart.Load(), rs.mEnd.Load()

	sendOne := func(measured bool) bool {
		now := time.Now()
		ns := now.UnixNano()
		stamp := uint64(ns)
		if measured {
			stamp |= measuredBit
		}
		binary.LittleEndian.PutUint64(ct, stamp)
		src.Read(ct[8:])
		n := 32 + rng.IntN(33)
		src.Read(wkR[:n])
		send.Keys[p.rcv.keyName] = wkR[:n]
		n = 32 + rng.IntN(33)
		src.Read(wkS[:n])
		send.Keys[p.snd.keyName] = wkS[:n]
		send.Ciphertext = ct
		seq++
		send.ClientID = prefix + strconv.FormatUint(seq, 10)
		if p.http != nil {
			rs.sentTotal.Add(1)
			p.sent++
			if measured {
				p.sentM++
			}
			return p.http.post(ctx, rs, p, &send, measured, now)
		}
		ref = ref[:0]
		if measured {
			ref = append(ref, 'm')
		} else {
			ref = append(ref, 'w')
		}
		ref = strconv.AppendInt(ref, ns, 36)
		frame = proto.AppendSendFrame(frame[:0], string(ref), &send)
		p.sconn.SetWriteDeadline(now.Add(10 * time.Second))
		if err := p.sconn.WriteMessage(websocket.TextMessage, frame); err != nil {
			if !rs.stopping.Load() {
				rs.mu.Lock()
				rs.writeErrors[shortErr(err)]++
				rs.mu.Unlock()
			}
			return false
		}
		if d := time.Since(now); d > stallThreshold {
			p.stalls++
			p.stallTime += d
			p.maxWrite = max(p.maxWrite, d)
		} else if d > p.maxWrite {
			p.maxWrite = d
		}
		p.sent++
		if measured {
			p.sentM++
		}
		rs.sentTotal.Add(1)
		return true
	}

	// The schedule is fixed: send k is due at start + k·period. A sender
	// that falls behind (a blocked write, a GC pause, a busy CPU) catches
	// up by sending at once, so the achieved rate stays exact; one that is
	// more than maxLag behind skips the missed slots instead of bursting,
	// and counts them.
	maxLag := max(time.Second, 2*period)
	timer := time.NewTimer(time.Until(start))
	defer timer.Stop()
	for k := int64(0); ; k++ {
		due := start.Add(time.Duration(k) * period)
		if due.UnixNano() >= mEnd {
			return
		}
		if d := time.Until(due); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
		} else if ctx.Err() != nil {
			return
		} else if lag := -d; lag > maxLag {
			// Skip to the slot that is due now, but never count slots at
			// or after the end of the window.
			n := min(int64(lag/period), (mEnd-due.UnixNano()+int64(period)-1)/int64(period))
			p.skipped += uint64(n)
			k += n - 1
			continue
		} else if lag > period {
			p.lateSends++
		}
		if !sendOne(due.UnixNano() >= mStart) {
			return
		}
	}
}

// measuredBit is set in the ciphertext's 8-byte timestamp (unix nanos, far
// below 2^63) of a send that was due inside the measured window, so that
// senders and receivers classify each message the same way even when it
// was sent late.
const measuredBit = 1 << 63

// stallThreshold is the write time above which a send counts as blocked
// (by TCP back-pressure from a server that does not read).
const stallThreshold = 10 * time.Millisecond

func shortErr(err error) string {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "write timeout"
	}
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	if len(s) > 80 {
		s = s[:80]
	}
	return s
}

// noteLatency keeps the largest latency for the next progress line.
func (rs *runState) noteLatency(ns int64) {
	for {
		cur := rs.maxLatency.Load()
		if ns <= cur || rs.maxLatency.CompareAndSwap(cur, ns) {
			return
		}
	}
}
