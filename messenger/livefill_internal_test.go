package messenger

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"klassenfunk/auth"
	"klassenfunk/proto"
	"klassenfunk/storage"
)

// readUntil reads frames from cli and returns the seqs of the message
// frames, until it has read a message of seq last (last 0: until synced).
func readUntil(t *testing.T, cli *websocket.Conn, last uint64) []uint64 {
	t.Helper()
	end := ""
	if last == 0 {
		end = proto.TypeSynced
	}
	return readSeqs(t, cli, last, end)
}

// readSeqs reads frames from cli and returns the seqs of the message
// frames, until it has read a message of seq last (0: none) or a frame of
// type end; any other frame fails the test.
func readSeqs(t *testing.T, cli *websocket.Conn, last uint64, end string) []uint64 {
	t.Helper()
	cli.SetReadDeadline(time.Now().Add(10 * time.Second))
	var seqs []uint64
	for {
		_, b, err := cli.ReadMessage()
		if err != nil {
			t.Fatalf("read after seqs %v: %v", seqs, err)
		}
		f, err := proto.DecodeServerFrame(b)
		if err != nil {
			t.Fatalf("frame %s: %v", b, err)
		}
		switch {
		case f.Type == proto.TypeMessage:
			seqs = append(seqs, f.Message.Seq)
			if f.Message.Seq == last {
				return seqs
			}
		case f.Type == end:
			return seqs
		default:
			t.Fatalf("frame %s after seqs %v, want a message or %q", b, seqs, end)
		}
	}
}

// liveSocket returns a store whose conversation c1 holds seqs 1..k, sent
// a second apart after the socket opened (at opened), and a fresh socket
// of u1's device d1 on a node over it, with the client's end.
func liveSocket(t *testing.T, k int) (st *catchUpStore, cli *websocket.Conn, c *conn, opened time.Time) {
	t.Helper()
	opened = time.Date(2026, 9, 1, 8, 0, 0, 0, time.UTC)
	st = &catchUpStore{}
	for s := 1; s <= k; s++ {
		st.msgs = append(st.msgs, catchUpMsg(s, opened.Add(time.Duration(s)*time.Second)))
	}
	n := catchUpNode(t, st, opened.Add(time.Hour))
	cli, srv := catchUpPair(t)
	c = &conn{n: n, ws: srv, userID: "u1", deviceID: "d1", deviceKey: "u1/d1", opened: opened.UnixMilli()}
	return st, cli, c, opened
}

func seqRange(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

// A socket that joined a busy conversation long after it opened: the
// first live message brings at most liveFillMax earlier ones, not the
// conversation's history since the socket opened.
func TestLiveFillBounded(t *testing.T) {
	_, cli, c, opened := liveSocket(t, 300)
	c.synced = true

	live := catchUpMsg(301, opened.Add(301*time.Second))
	c.enqueue(outItem{msg: &live})
	if got, want := readUntil(t, cli, 301), seqRange(301-64, 301); !slices.Equal(got, want) { // liveFillMax is 64
		t.Fatalf("got seqs %v, want %v", got, want)
	}
}

// A gap in a conversation the socket has a span for is filled a page at a
// time, every seq in order.
func TestLiveFillPaged(t *testing.T) {
	_, cli, c, opened := liveSocket(t, 3*syncPage)
	c.written = map[string]seqSpan{"c1": {from: 0, to: 5}}

	last := uint64(3 * syncPage)
	live := catchUpMsg(int(last), opened.Add(time.Duration(last)*time.Second))
	c.enqueue(outItem{msg: &live})
	if got, want := readUntil(t, cli, last), seqRange(6, last); !slices.Equal(got, want) {
		t.Fatalf("got %d seqs %v…, want %d from 6 to %d", len(got), got[:min(len(got), 10)], len(want), last)
	}
}

// A sync replays every stored message after its cursor (API.md), also
// what live delivery sent the socket before it; afterwards live messages
// follow on without a repeat.
func TestSyncAfterLive(t *testing.T) {
	opened := time.Date(2026, 9, 1, 8, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name   string
		before int    // messages sent long before the socket opened
		own    int    // the seq of a message this device sent over HTTP (0: none)
		cursor uint64 // the client's sync cursor
		want   []uint64
	}{
		{"cursor inside what live sent", 0, 0, 8, seqRange(9, 12)},
		{"cursor before it", 20, 0, 15, seqRange(16, 32)},
		{"cursor past it", 0, 0, 11, seqRange(12, 12)},
		// The fill leaves out the device's own message, which this socket
		// never got: a sync from before it sends it.
		{"own message after the cursor", 0, 5, 3, seqRange(4, 12)},
		{"own message before the cursor", 0, 5, 6, seqRange(7, 12)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := &catchUpStore{}
			for s := 1; s <= tc.before; s++ {
				st.msgs = append(st.msgs, catchUpMsg(s, opened.Add(-time.Hour)))
			}
			var want []uint64 // what the live message brings
			for s := tc.before + 1; s <= tc.before+12; s++ {
				m := catchUpMsg(s, opened.Add(time.Duration(s)*time.Second))
				if s == tc.own {
					m.SenderUser, m.SenderDevice = "u1", "d1"
				} else if s <= tc.before+10 {
					want = append(want, uint64(s))
				}
				st.msgs = append(st.msgs, m)
			}
			n := catchUpNode(t, st, opened.Add(time.Hour))
			cli, srv := catchUpPair(t)
			c := &conn{n: n, ws: srv, userID: "u1", deviceID: "d1", deviceKey: "u1/d1", opened: opened.UnixMilli()}

			liveSeq := tc.before + 10
			live := catchUpMsg(liveSeq, opened.Add(time.Duration(liveSeq)*time.Second))
			c.enqueue(outItem{msg: &live})
			if got := readUntil(t, cli, uint64(liveSeq)); !slices.Equal(got, want) {
				t.Fatalf("live: got seqs %v, want %v", got, want)
			}
			c.enqueue(outItem{sync: &syncJob{cursors: map[string]uint64{"c1": tc.cursor}}})
			if got := readUntil(t, cli, 0); !slices.Equal(got, tc.want) {
				t.Fatalf("sync from %d: got seqs %v, want %v", tc.cursor, got, tc.want)
			}
			// Afterwards, live messages follow on without a repeat.
			next := catchUpMsg(tc.before+13, opened.Add(time.Hour))
			st.mu.Lock()
			st.msgs = append(st.msgs, next)
			st.mu.Unlock()
			c.enqueue(outItem{msg: &next})
			if got := readUntil(t, cli, next.Seq); !slices.Equal(got, []uint64{next.Seq}) {
				t.Fatalf("next live: got seqs %v, want %d", got, next.Seq)
			}
		})
	}
}

// A gap the store failed to fill stays out of the run: a sync from before
// it sends what the socket missed.
func TestSyncAfterFailedFill(t *testing.T) {
	st, cli, c, opened := liveSocket(t, 10)
	st.failMsgs = 1
	c.written = map[string]seqSpan{"c1": {from: 0, to: 2}}

	live := catchUpMsg(10, opened.Add(10*time.Second))
	c.enqueue(outItem{msg: &live})
	if got := readUntil(t, cli, 10); !slices.Equal(got, []uint64{10}) {
		t.Fatalf("live with the store down: got seqs %v, want only 10", got)
	}
	c.enqueue(outItem{sync: &syncJob{cursors: map[string]uint64{"c1": 2}}})
	if got, want := readUntil(t, cli, 0), seqRange(3, 10); !slices.Equal(got, want) {
		t.Fatalf("sync from 2: got seqs %v, want %v", got, want)
	}
}

// A catch-up (the broker lost events) of a conversation the socket has no
// run for, such as one joined after its sync, brings at most liveFillMax
// messages, as live delivery would.
func TestCatchUpBounded(t *testing.T) {
	_, cli, c, _ := liveSocket(t, 600)
	c.synced = true

	c.enqueue(outItem{sync: &syncJob{catchUp: true}})
	if got, want := readUntil(t, cli, 600), seqRange(600-64+1, 600); !slices.Equal(got, want) { // liveFillMax is 64
		t.Fatalf("got %d seqs from %d, want %d from %d", len(got), got[0], len(want), want[0])
	}
}

// Live messages that reach a fresh socket before the client's first frame
// wait for it (holdLive): after a sync they are duplicates of its replay,
// and the socket's frames never go back in seq; after any other first
// frame, or when the hold ends, they go out as live.
func TestHoldLive(t *testing.T) {
	for _, tc := range []struct {
		name  string
		hold  time.Duration // from now
		first string        // the client's first frame after the live message ("": none)
		want  []uint64      // message seqs before the first other frame
		other string
	}{
		{"sync first", time.Hour, `{"type":"sync","cursors":{"c1":5}}`, seqRange(6, 12), proto.TypeSynced},
		{"ping first", time.Hour, `{"type":"ping"}`, seqRange(1, 10), proto.TypePong},
		{"hold over", -time.Second, `{"type":"ping"}`, seqRange(1, 10), proto.TypePong},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, cli, c, opened := liveSocket(t, 12)
			c.n.cfg.RecheckInterval, c.lastRecheck = time.Hour, c.n.now()
			c.holdUntil = time.Now().Add(tc.hold)

			live := catchUpMsg(10, opened.Add(10*time.Second))
			c.enqueue(outItem{msg: &live})
			c.handle([]byte(tc.first))
			if got := readSeqs(t, cli, 0, tc.other); !slices.Equal(got, tc.want) {
				t.Fatalf("got seqs %v, want %v", got, tc.want)
			}
		})
	}
}

// Only the sockets of a device that has synced on this node before hold
// live messages: a client that never syncs gets them at once.
func TestHoldOnlyForSyncers(t *testing.T) {
	_, cli, c, _ := liveSocket(t, 0)
	c.credID = "cr1"
	c.n.cfg.RecheckInterval, c.lastRecheck = time.Hour, c.n.now()
	p := auth.Principal{User: storage.User{ID: "u1"}, Cred: storage.Credential{ID: "cr1", DeviceID: "d1"}}
	if nc := newConn(c.n, nil, nil, p, netip.Addr{}); !nc.holdUntil.IsZero() {
		t.Fatal("a socket of a device that never synced holds live messages")
	}
	c.handle([]byte(`{"type":"sync"}`))
	readSeqs(t, cli, 0, proto.TypeSynced)
	if nc := newConn(c.n, nil, nil, p, netip.Addr{}); nc.holdUntil.IsZero() {
		t.Fatal("a new socket of a device that synced does not hold")
	}
	p.Cred.ID = "cr2" // the device logged in again
	if nc := newConn(c.n, nil, nil, p, netip.Addr{}); nc.holdUntil.IsZero() {
		t.Fatal("a new login of a device that synced does not hold")
	}
	p.Cred.DeviceID = "d2" // another device of the user
	if nc := newConn(c.n, nil, nil, p, netip.Addr{}); !nc.holdUntil.IsZero() {
		t.Fatal("another device of the user holds")
	}
}
