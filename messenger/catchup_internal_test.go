package messenger

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/bits"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"klassenfunk/proto"
	"klassenfunk/storage"
)

// catchUpStore serves one conversation from memory. ConversationsOf fails
// while failConvs > 0 and reports each failure on failed.
type catchUpStore struct {
	storage.Store
	mu        sync.Mutex
	failConvs int
	failMsgs  int // MessagesAfter fails while > 0
	failed    chan struct{}
	msgs      []storage.Message // seqs 1..n
	expired   map[uint64]bool
	reads     int // MessagesAfter calls
}

func (f *catchUpStore) ConversationsOf(context.Context, string) ([]storage.Conversation, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failConvs > 0 {
		f.failConvs--
		f.failed <- struct{}{}
		return nil, errors.New("store down")
	}
	return []storage.Conversation{{ID: "c1", Kind: storage.ConvDirect, LastSeq: uint64(len(f.msgs))}}, nil
}

func (f *catchUpStore) MessagesAfter(_ context.Context, _ string, after uint64, limit int, _ time.Time) ([]storage.Message, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	if f.failMsgs > 0 {
		f.failMsgs--
		return nil, false, errors.New("store down")
	}
	var out []storage.Message
	for _, m := range f.msgs {
		if m.Seq <= after || f.expired[m.Seq] {
			continue
		}
		if len(out) == limit {
			return out, true, nil
		}
		out = append(out, m)
	}
	return out, false, nil
}

func catchUpNode(t *testing.T, st storage.Store, now time.Time) *Node {
	t.Helper()
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{store: st, log: slog.New(slog.NewTextHandler(io.Discard, nil)), metrics: m, now: func() time.Time { return now },
		reads: newSendLimits(1e9, 1<<30), writers: newWorkers((*conn).writeLoop)}
	t.Cleanup(n.writers.stop)
	n.sentAts, _ = st.(storage.SentAtReader)
	n.cfg.Gateway.SendQueue, n.cfg.Gateway.WriteTimeout = 256, 5*time.Second
	return n
}

func catchUpMsg(seq int, at time.Time) storage.Message {
	return storage.Message{ID: fmt.Sprint("m", seq), Conversation: "c1", Seq: uint64(seq),
		SenderUser: "u2", SenderDevice: "d", SentAt: at, ExpiresAt: at.Add(time.Hour)}
}

// catchUpPair returns the client and the server end of a WebSocket.
func catchUpPair(t *testing.T) (cli, srv *websocket.Conn) {
	t.Helper()
	upgraded := make(chan *websocket.Conn, 1)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			t.Error(err)
			return
		}
		upgraded <- c
	}))
	t.Cleanup(hs.Close)
	cli, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(hs.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	srv = <-upgraded
	t.Cleanup(func() { cli.Close(); srv.Close() })
	return cli, srv
}

// readMessageSeq reads a message frame from cli and returns its seq.
func readMessageSeq(t *testing.T, cli *websocket.Conn) uint64 {
	t.Helper()
	_, b, err := cli.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	f, err := proto.DecodeServerFrame(b)
	if err != nil || f.Type != proto.TypeMessage {
		t.Fatalf("frame %s: %v", b, err)
	}
	return f.Message.Seq
}

// A socket that never synced, whose catch-up fails once and is tried again
// after a live message arrived: the messages sent during the broker's gap
// still reach it (the live one must not become the catch-up's start).
func TestCatchUpRetryKeepsTheGap(t *testing.T) {
	opened := time.Date(2026, 9, 1, 8, 0, 0, 0, time.UTC)
	st := &catchUpStore{failConvs: 1, failed: make(chan struct{}, 1)}
	st.msgs = []storage.Message{catchUpMsg(1, opened.Add(-time.Hour))} // before the socket
	for s := 2; s <= 5; s++ {
		st.msgs = append(st.msgs, catchUpMsg(s, opened.Add(time.Duration(s)*time.Minute)))
	}
	n := catchUpNode(t, st, opened.Add(10*time.Minute))

	cli, srv := catchUpPair(t)
	c := &conn{n: n, ws: srv, userID: "u1", deviceID: "d1", deviceKey: "u1/d1", opened: opened.UnixMilli()}

	c.enqueue(outItem{sync: &syncJob{catchUp: true}}) // after a resubscribe: the store fails
	<-st.failed
	c.enqueue(outItem{msg: &st.msgs[4]}) // seq 5, live, before the retry

	got := map[uint64]bool{}
	cli.SetReadDeadline(time.Now().Add(10 * time.Second)) // the retry comes after 1 s
	for len(got) < 4 {
		seq := readMessageSeq(t, cli)
		if seq < 2 {
			t.Fatalf("seq %d was sent before the socket opened", seq)
		}
		got[seq] = true
	}
}

// A catch-up stands in for live delivery: it does not send the device its
// own messages (it got "sent" for them), but does send those of the
// user's other devices.
func TestCatchUpSkipsOwnMessages(t *testing.T) {
	opened := time.Date(2026, 9, 1, 8, 0, 0, 0, time.UTC)
	st := &catchUpStore{}
	for s := 1; s <= 6; s++ {
		st.msgs = append(st.msgs, catchUpMsg(s, opened.Add(time.Duration(s)*time.Minute)))
	}
	st.msgs[2].SenderUser, st.msgs[2].SenderDevice = "u1", "d1" // this device
	st.msgs[3].SenderUser, st.msgs[3].SenderDevice = "u1", "d2" // the user's other device
	n := catchUpNode(t, st, opened.Add(10*time.Minute))
	cli, srv := catchUpPair(t)
	c := &conn{n: n, ws: srv, userID: "u1", deviceID: "d1", deviceKey: "u1/d1", opened: opened.UnixMilli()}

	c.enqueue(outItem{sync: &syncJob{catchUp: true}})
	live := catchUpMsg(7, opened.Add(9*time.Minute))
	c.enqueue(outItem{msg: &live}) // after the catch-up's frames
	var got []uint64
	cli.SetReadDeadline(time.Now().Add(10 * time.Second))
	for len(got) == 0 || got[len(got)-1] != 7 {
		got = append(got, readMessageSeq(t, cli))
	}
	if want := []uint64{1, 2, 4, 5, 6, 7}; !slices.Equal(got, want) {
		t.Fatalf("got seqs %v, want %v (not 3, this device's own)", got, want)
	}
}

// openedFloor against a linear scan: random histories with expired holes
// and equal times, longer than liveFillMax, below which it never goes. A
// conversation quiet when the socket opened takes one read; any other at
// most one more than a binary search over liveFillMax seqs, however long
// its history.
func TestOpenedFloor(t *testing.T) {
	t.Run("MessagesAfter", func(t *testing.T) { testOpenedFloor(t, func(st *catchUpStore) storage.Store { return st }) })
	t.Run("SentAtReader", func(t *testing.T) {
		testOpenedFloor(t, func(st *catchUpStore) storage.Store { return sentAtStore{st} })
	})
}

// sentAtStore is a catchUpStore that reads sent_at alone too (each
// FirstSentAfter is one read).
type sentAtStore struct{ *catchUpStore }

var _ storage.SentAtReader = sentAtStore{}

func (s sentAtStore) FirstSentAfter(ctx context.Context, conv string, after uint64, now time.Time) (uint64, time.Time, bool, error) {
	msgs, _, err := s.MessagesAfter(ctx, conv, after, 1, now)
	if err != nil || len(msgs) == 0 {
		return 0, time.Time{}, false, err
	}
	return msgs[0].Seq, msgs[0].SentAt, true, nil
}

func testOpenedFloor(t *testing.T, store func(*catchUpStore) storage.Store) {
	base := time.Date(2026, 9, 1, 8, 0, 0, 0, time.UTC)
	rng := rand.New(rand.NewPCG(1, 2))
	maxReads := 2 + bits.Len(liveFillMax)
	for iter := range 2000 {
		st := &catchUpStore{expired: map[uint64]bool{}}
		k := rng.IntN(3 * liveFillMax)
		at := base
		for s := 1; s <= k; s++ {
			at = at.Add(time.Duration(rng.IntN(5)) * time.Second)
			st.msgs = append(st.msgs, catchUpMsg(s, at))
			if rng.IntN(4) == 0 {
				st.expired[uint64(s)] = true
			}
		}
		opened := base.Add(time.Duration(rng.IntN(3*5*liveFillMax)) * time.Second)
		c := &conn{n: catchUpNode(t, store(st), at), opened: opened.UnixMilli()}
		floor, err := c.openedFloor(context.Background(), &storage.Conversation{ID: "c1", LastSeq: uint64(k)})
		if err != nil {
			t.Fatal(err)
		}
		since := opened.Add(-catchUpMargin)
		bound := uint64(max(k-liveFillMax, 0))
		if floor < bound || floor > uint64(k) {
			t.Fatalf("case %d: floor %d outside [%d, %d]", iter, floor, bound, k)
		}
		for _, m := range st.msgs {
			switch {
			case st.expired[m.Seq]:
			case m.Seq > floor && m.SentAt.Before(since):
				t.Fatalf("case %d: floor %d replays seq %d, sent before the socket opened", iter, floor, m.Seq)
			case m.Seq <= floor && m.Seq > bound && !m.SentAt.Before(since):
				t.Fatalf("case %d: floor %d skips seq %d, sent while the socket was open", iter, floor, m.Seq)
			}
		}
		last := k > 0 && !st.expired[uint64(k)] && st.msgs[k-1].SentAt.Before(since)
		switch {
		case last && st.reads != 1:
			t.Fatalf("case %d: %d reads, want 1: the newest message was sent before the socket opened", iter, st.reads)
		case st.reads > maxReads:
			t.Fatalf("case %d: %d reads, want at most %d", iter, st.reads, maxReads)
		}
	}
}
