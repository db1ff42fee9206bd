package messenger

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"klassenfunk/auth"
	"klassenfunk/proto"
	"klassenfunk/storage"
)

// outItem is one entry of a connection's send queue. Exactly one of its
// fields is set.
type outItem struct {
	frame []byte           // a pre-encoded frame (ready, sent, error, pong)
	msg   *storage.Message // a live message; the writer filters the keys
	sync  *syncJob         // a sync request
	ping  bool             // a WebSocket ping
	pong  []byte           // a WebSocket pong with this payload (an answer to the client's ping)
	// release ends the hold of live messages before the first sync
	// (holdLive).
	release bool
	// sentConv/sentSeq accompany a "sent" frame so the writer knows the
	// client has that seq.
	sentConv string
	sentSeq  uint64
}

// syncJob replays stored messages. A client's sync names its cursors and
// ends with "synced"; a catch-up (after the broker lost events) starts
// from what the writer last wrote and ends silently.
type syncJob struct {
	cursors map[string]uint64
	ref     string // the client's, echoed in "synced"
	catchUp bool
	attempt int // of a catch-up: failed attempts before this one
}

// A catch-up that fails (the store is not back yet) is tried again
// catchUpAttempts times, catchUpRetry apart, before the connection is
// closed with 1001 so that the client reconnects and syncs.
const (
	catchUpAttempts = 5
	catchUpRetry    = time.Second
)

// conn is one WebSocket connection.
//
// Goroutines: none while the connection is idle. A poller worker reads
// while the socket has something to read (serveReadable); a writer (one of
// the node's pool) runs only while the queue has something (or a close is
// due). A closing connection, and one whose reads cannot be polled, has a
// reader goroutine for the rest of its life (readBlocking). All fields
// under mu are guarded by it; written is owned by whichever writer runs
// (there is at most one); reads, and the fields owned by the reader, by
// whichever goroutine holds the reads (rstate: there is at most one).
type conn struct {
	n  *Node
	ws *websocket.Conn
	fc *frameConn // what ws reads through
	p  auth.Principal

	rstate   atomic.Int32 // readRunning or readAgain (a goroutine owns the reads), readIdle (the poller waits), readDone
	fd       int32        // the socket's descriptor in the poller
	deadline atomic.Int64 // the read deadline (Unix ns): an idle connection past it is closed

	userID    string // immutable after creation
	deviceID  string
	deviceKey string // "<user>/<device>": the entry of keys this device reads
	credID    string
	addr      netip.Addr  // the client's address (country restriction)
	opened    int64       // when the socket opened (Unix ms, the node's clock): a catch-up's floor
	holdUntil time.Time   // live messages before the first sync wait until then (holdLive)
	present   atomic.Bool // the node's Presence counts this socket (Hub.add; leavePresence)
	peerDone  atomic.Bool // the poller saw the client end its side (or the socket fail): read to the end
	closeSeen atomic.Bool // a close frame went either way: the socket lingers when it closes (closeSocket)
	sockDone  atomic.Bool // the socket is closed, or lingering (closeSocket)

	mu         sync.Mutex
	queue      []outItem       // guarded by mu
	closeCode  proto.CloseCode // guarded by mu; set once, when closing starts
	closeWhy   string          // guarded by mu; the closes metric's reason: closeCode's, or rate_limited
	flush      bool            // guarded by mu; the close waits for the queued frames (closeAfterQueue)
	abrupt     bool            // guarded by mu; the socket closes right after the close frame (closeAbruptly)
	writing    bool            // guarded by mu; a writer goroutine runs
	finished   bool            // guarded by mu; the writer is done for good
	readerDone bool            // guarded by mu; the reader has returned
	pongAt     int             // guarded by mu; 1 + the queue index of the last control pong queued (enqueuePong)
	jsonPongAt int             // guarded by mu; the same for the last JSON pong

	// Owned by the running writer.
	written    map[string]seqSpan // per conversation: what the socket has been sent
	synced     bool               // the client has synced: written covers every conversation
	catchUpDue bool               // a failed catch-up will be tried again (syncFailed)
	held       []*storage.Message // live messages waiting for the first sync (holdLive)
	released   bool               // the hold is over

	// Owned by the reader goroutine.
	framed       bool // the client has sent a frame (after auth)
	invalidInRow int
	limitedInRow int
	bucket       *sendBucket // the device's send bucket (sendLimits)
	lastRecheck  time.Time
}

// Read states of a connection (conn.rstate).
const (
	readRunning int32 = iota // a goroutine owns the reads
	readIdle                 // the poller waits for the socket; the first to swap it to running owns the reads
	readDone                 // the reads have ended
	readAgain                // running, and data came since the owner's last read
)

func newConn(n *Node, ws *websocket.Conn, fc *frameConn, p auth.Principal, addr netip.Addr) *conn {
	c := &conn{
		n:         n,
		ws:        ws,
		fc:        fc,
		p:         p,
		addr:      addr,
		userID:    p.User.ID,
		deviceID:  p.Cred.DeviceID,
		deviceKey: proto.KeyName(p.User.ID, p.Cred.DeviceID),
		credID:    p.Cred.ID,
		opened:    n.now().UnixMilli(),
	}
	if n.syncers.has(c.deviceKey) {
		c.holdUntil = time.Now().Add(holdLive)
	}
	return c
}

// kick starts a writer (on the node's pool) unless one runs or the
// connection is done. Called with mu held.
func (c *conn) kick() {
	if !c.writing && !c.finished {
		c.writing = true
		c.n.writers.run(c)
	}
}

// enqueue adds it to the send queue without blocking. A full queue starts
// closing the connection with 4429: the client recovers through sync.
func (c *conn) enqueue(it outItem) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.enqueueLocked(it)
}

func (c *conn) enqueueLocked(it outItem) {
	if c.closeCode != 0 || c.readerDone || c.finished {
		return
	}
	if len(c.queue) >= c.n.cfg.Gateway.SendQueue {
		c.closeCode, c.closeWhy = proto.CloseTooSlow, proto.CloseTooSlow.String()
		c.queue = nil
		c.n.metrics.slowConsumers.Inc()
	} else {
		c.queue = append(c.queue, it)
	}
	c.kick()
}

// enqueuePong is enqueue for the answer to a ping: a control pong
// (it.pong) or a JSON pong (it.frame). While a pong of its kind is still
// queued, that one answers the new ping too: a control pong takes the
// newest ping's payload (RFC 6455, 5.5.3, lets an endpoint answer only the
// latest of several pings), a JSON pong joins an identical one (the same
// ref) that no other frame follows yet, so that the pongs keep their
// order among the other frames. So a client that sends pings faster than
// the socket carries them gets fewer pongs, not a 4429 for the server's
// own answers.
func (c *conn) enqueuePong(it outItem) {
	c.mu.Lock()
	defer c.mu.Unlock()
	at := &c.jsonPongAt
	if it.pong != nil {
		at = &c.pongAt
	}
	// The index is checked against what it points at: the writer takes
	// the queue without resetting it, and any queued pong of the same
	// kind and content can answer.
	if i := *at - 1; i >= 0 && i < len(c.queue) {
		q := &c.queue[i]
		if it.pong != nil && q.pong != nil {
			q.pong = it.pong
			return
		}
		if it.frame != nil && bytes.Equal(q.frame, it.frame) && onlyControlPongs(c.queue[i+1:]) {
			return
		}
	}
	c.enqueueLocked(it)
	*at = len(c.queue)
}

// send writes it on the calling goroutine (the reader) when no writer
// runs and nothing is queued, and enqueues it otherwise. Most "sent"
// frames go out this way, without starting a writer goroutine for one
// frame.
func (c *conn) send(it outItem) {
	c.mu.Lock()
	if c.writing || c.finished || c.closeCode != 0 || c.readerDone || len(c.queue) > 0 {
		c.mu.Unlock()
		c.enqueue(it)
		return
	}
	c.writing = true // this goroutine is the writer until it hands back
	c.mu.Unlock()
	if err := c.writeOut(&it); err != nil {
		c.writeFailed(err)
		return
	}
	c.mu.Lock()
	c.writing = false
	if len(c.queue) > 0 || c.closeCode != 0 {
		c.kick() // what came meanwhile, or a close
	} else if len(c.written) == 0 {
		c.written = nil
	}
	c.mu.Unlock()
}

// onlyControlPongs reports whether items holds nothing but control pongs
// (enqueuePong keeps them few).
func onlyControlPongs(items []outItem) bool {
	for i := range items {
		if items[i].pong == nil {
			return false
		}
	}
	return true
}

// closeWith starts closing the connection with code at once: what is
// queued is dropped (a revoked device gets nothing more; a slow reader
// recovers through sync). The first code wins.
func (c *conn) closeWith(code proto.CloseCode) { c.startClose(code, false, code.String()) }

// closeAbruptly is closeWith that does not wait for the client's answer
// to the close frame: the socket's descriptor is freed at once. For a
// crowded node (Hub.replaceOldest), where the sockets replaced are mostly
// dead ones that would hold their descriptors for closeGrace.
func (c *conn) closeAbruptly(code proto.CloseCode) {
	c.mu.Lock()
	if c.closeCode == 0 {
		c.abrupt = true
	}
	c.mu.Unlock()
	c.closeWith(code)
}

// closeAfterQueue starts closing the connection with code after the frames
// already queued (the error frames and sent acks of the client's earlier
// frames) are written; queued deliveries and syncs are dropped, the
// client recovers them through sync. For the closes that the client's own
// frames cause: 4400, 4413 and 4429 for sending too fast.
func (c *conn) closeAfterQueue(code proto.CloseCode) { c.startClose(code, true, code.String()) }

// closeRateLimited closes after the queue with 4429 for sending too fast,
// counted apart from slow readers (closes_total{reason="rate_limited"}).
func (c *conn) closeRateLimited() { c.startClose(proto.CloseTooSlow, true, reasonRateLimited) }

// reasonRateLimited is the closes metric's reason for a 4429 after too
// many rate-limited sends.
const reasonRateLimited = "rate_limited"

func (c *conn) startClose(code proto.CloseCode, flush bool, why string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closeCode == 0 {
		c.closeCode, c.flush, c.closeWhy = code, flush, why
		if !flush {
			c.queue = nil
		}
		// From now on the socket gets no live message: the device counts
		// as offline (and gets pushes) at once, not only when the client
		// has answered the close or its grace has passed.
		c.leavePresence()
	} else if !flush {
		c.flush, c.queue = false, nil // a hard close overtakes a flushing one
	}
	c.kick()
}

// leavePresence tells the node's Presence, once, that the socket is gone.
func (c *conn) leavePresence() {
	if c.present.CompareAndSwap(true, false) {
		c.n.hub.presence.Disconnected(c.userID, c.deviceID)
	}
}

// closing reports whether the connection is closing: the reader ignores
// further frames.
func (c *conn) closing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeCode != 0 || c.readerDone
}

// writable reports whether the writer may write the queued item it: not
// after the reader has gone or a close that drops the queue, and only
// frames during a close after the queue.
func (c *conn) writable(it *outItem) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.readerDone || c.closeCode != 0 && !c.flush {
		return false
	}
	return c.closeCode == 0 || it.frame != nil
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// writeLoop writes what is queued and returns when the queue is empty.
// It sends the close frame when a close is due, and closes the socket when
// the reader has gone.
func (c *conn) writeLoop() {
	var bp *[]byte
	defer func() {
		if bp != nil {
			bufPool.Put(bp)
		}
	}()
	if c.fc != nil {
		if err := c.fc.flush(time.Now().Add(c.n.cfg.Gateway.WriteTimeout)); err != nil {
			c.writeFailed(err) // what deliver left of a frame
			return
		}
	}
	for {
		c.mu.Lock()
		if c.readerDone || (c.closeCode != 0 && len(c.queue) == 0) {
			code, why, readerDone, abrupt := c.closeCode, c.closeWhy, c.readerDone, c.abrupt
			c.finished, c.writing, c.queue = true, false, nil
			c.mu.Unlock()
			if readerDone {
				c.closeSocket()
			} else {
				c.sendClose(code, why, abrupt)
			}
			return
		}
		items := c.queue
		c.queue = nil
		if len(items) == 0 {
			if len(c.written) == 0 {
				c.written = nil // the next writer starts after this unlock
			}
			c.writing = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		if bp == nil {
			bp = bufPool.Get().(*[]byte)
		}
		if err := c.writeItems(items, bp); err != nil {
			c.writeFailed(err)
			return
		}
	}
}

func (c *conn) writeItems(items []outItem, bp *[]byte) error {
	for i := range items {
		it := &items[i]
		if !c.writable(it) {
			continue // the loop sends the close frame
		}
		var err error
		switch {
		case it.ping:
			err = c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.n.cfg.Gateway.WriteTimeout))
		case it.pong != nil:
			err = c.ws.WriteControl(websocket.PongMessage, it.pong, time.Now().Add(c.n.cfg.Gateway.WriteTimeout))
		case it.frame != nil:
			err = c.writeOut(it)
		case it.msg != nil:
			err = c.writeLive(it.msg, bp)
		case it.sync != nil:
			err = c.runSync(it.sync, bp)
		case it.release:
			err = c.release(bp)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// writeFailed ends the writing after a failed write: the reader fails on
// the closed socket and cleans up. A write that timed out closes at once:
// the client takes nothing in, so lingering would only hold the socket.
func (c *conn) writeFailed(err error) {
	c.mu.Lock()
	c.finished, c.writing = true, false
	code, why := c.closeCode, c.closeWhy
	c.mu.Unlock()
	if code != 0 {
		// The close was decided (a full queue: 4429) but its frame cannot
		// follow the write that failed; the connection ends all the same.
		c.n.metrics.closes.WithLabelValues(why).Inc()
	}
	if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
		c.closeSocketNow()
	} else {
		c.closeSocket() // after the client's close (closeHandler), whose echo refuses the rest: ErrCloseSent
	}
	c.wakeBlocking()
}

// writeOut writes a prepared frame and, for a sent frame, notes the seq it
// reports.
func (c *conn) writeOut(it *outItem) error {
	err := c.writeFrame(it.frame)
	if err == nil && it.sentConv != "" {
		c.noteSent(it.sentConv, it.sentSeq)
	}
	return err
}

func (c *conn) writeFrame(b []byte) error {
	deadline := time.Now().Add(c.n.cfg.Gateway.WriteTimeout)
	if c.fc != nil && c.fc.direct {
		return c.fc.writeText(b, deadline)
	}
	c.ws.SetWriteDeadline(deadline)
	return c.ws.WriteMessage(websocket.TextMessage, b)
}

// writeMessage writes one message frame with only this device's key.
func (c *conn) writeMessage(m *storage.Message, bp *[]byte) error {
	c.encodeMessage(m, bp)
	if err := c.writeFrame(*bp); err != nil {
		return err
	}
	c.n.metrics.delivered.Inc()
	return nil
}

func (c *conn) encodeMessage(m *storage.Message, bp *[]byte) {
	pm := toProto(m)
	*bp = proto.AppendMessage((*bp)[:0], &pm, c.deviceKey)
}

// deliver hands the live message m to the socket. When no writer runs,
// nothing is queued and m is the next seq of its conversation on this
// socket, the calling goroutine becomes the writer for m and writes it at
// once, without waiting for the socket (tryText). In one node that is the
// sender's goroutine right after its durable write, so a delivered
// message needs no writer goroutine's hand-over and wake-up. What the
// socket does not take at once, a writer goroutine finishes (writeLoop
// flushes it first); every other case (a hold before the first sync, a
// fill, a duplicate, a busy socket) goes through the queue (writeLive).
func (c *conn) deliver(m *storage.Message) {
	c.mu.Lock()
	if !c.nextLive(m) {
		c.enqueueLocked(outItem{msg: m})
		c.mu.Unlock()
		return
	}
	c.writing = true // this goroutine is the writer until it hands back
	c.mu.Unlock()
	bp := bufPool.Get().(*[]byte)
	c.encodeMessage(m, bp)
	unsent, err := c.fc.tryText(*bp, time.Now().Add(c.n.cfg.Gateway.WriteTimeout))
	bufPool.Put(bp)
	if err != nil {
		c.writeFailed(err)
		return
	}
	c.n.metrics.delivered.Inc()
	c.written[m.Conversation] = seqSpan{from: c.written[m.Conversation].from, to: m.Seq}
	c.mu.Lock()
	c.writing = false
	if unsent || len(c.queue) > 0 || c.closeCode != 0 || c.readerDone {
		// The rest of m, what came meanwhile, a close, or the socket's
		// end: a reader that ended meanwhile left that to the writer.
		c.kick()
	}
	c.mu.Unlock()
}

// nextLive reports whether deliver may write m itself: no writer runs
// (so, with mu held, the writer's fields can be read), nothing waits, and
// m follows what the socket has been sent of its conversation.
func (c *conn) nextLive(m *storage.Message) bool {
	if c.writing || c.finished || c.closeCode != 0 || c.readerDone || len(c.queue) > 0 ||
		c.fc == nil || !c.fc.direct || (!c.released && !c.synced) {
		return false
	}
	sp, ok := c.written[m.Conversation]
	return ok && m.Seq == sp.to+1
}

// seqSpan is a run of a conversation's seqs, (from, to], that a socket
// has been sent: to is what live delivery goes on from (a message up to it
// is a duplicate). The device's own messages are not sent live (the
// sending socket got "sent"), and one sent through another channel (HTTP,
// another socket) never reached this socket: from is kept at or after the
// last such one, so that a sync resends it.
type seqSpan struct{ from, to uint64 }

// liveFillMax bounds the fill before the first live message of a
// conversation the socket has no span for. The fill is there for messages
// that overtook each other between goroutines or nodes, a handful; a
// socket that is owed more (it has not synced yet, or it joined the
// conversation since) gets them through sync, and history from before a
// join is of no use to it (no key for its device).
const liveFillMax = 64

// holdLive is how long after a socket opened its live messages wait for
// the client's first sync. An app syncs right after "ready"; a live
// message written before that sync would come ahead of the sync's replay,
// and the socket's frames would go back in seq (the replay starts at the
// client's cursor, which the server learns only from the sync). Held
// messages go out after the replay, where they are mostly duplicates and
// dropped. The hold ends early when the client's first frame is not a
// sync; a client that sends nothing gets them when the hold ends. Half a
// second covers the round trip of most mobile networks. Only the sockets
// of a device that has synced before on this node hold (Node.syncers): a
// client that never syncs has no replay to wait for, and gets its live
// messages at once.
const holdLive = 500 * time.Millisecond

// syncers is the set of devices (proto.KeyName) that have sent a sync on
// this node, at most pairMemoSize; when full it starts again. A device
// that is forgotten (or new to the node after a restart, or reconnecting
// to another node of a cluster) has its next socket's live messages not
// held; they may then come ahead of that socket's first replay, which
// resends them (clients deduplicate by id).
type syncers struct {
	mu sync.RWMutex
	m  map[string]struct{}
}

func (s *syncers) has(device string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, ok := s.m[device]
	return ok
}

func (s *syncers) add(device string) {
	if s.has(device) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil || len(s.m) >= pairMemoSize {
		s.m = make(map[string]struct{})
	}
	s.m[device] = struct{}{}
}

// writeLive writes a live message in seq order: duplicates are dropped, and
// a gap before it is filled from the store first. Before the first sync it
// holds the message (holdLive).
func (c *conn) writeLive(m *storage.Message, bp *[]byte) error {
	if !c.released && !c.synced {
		if len(c.held) < c.n.cfg.Gateway.SendQueue && time.Now().Before(c.holdUntil) {
			if c.held == nil {
				time.AfterFunc(time.Until(c.holdUntil), func() { c.enqueue(outItem{release: true}) })
			}
			c.held = append(c.held, m)
			return nil
		}
		if err := c.release(bp); err != nil {
			return err
		}
	}
	if c.written == nil {
		c.written = make(map[string]seqSpan)
	}
	sp, known := c.written[m.Conversation]
	if known && m.Seq <= sp.to {
		return nil
	}
	if !known && c.catchUpDue {
		// Recording m.Seq would make the catch-up start after it, past
		// what the socket missed before it: leave cv to its floor.
		return c.writeMessage(m, bp)
	}
	if !known {
		// No span for cv yet. Concurrent sends are published in any order,
		// and an earlier message that came after this one would be
		// dropped as a duplicate: fill from what was sent while the
		// socket was open instead (clients deduplicate the margin's few),
		// at most liveFillMax messages.
		floor, err := c.openedFloor(context.Background(), &storage.Conversation{ID: m.Conversation, LastSeq: m.Seq - 1})
		if err != nil {
			c.n.log.Warn("gap fill floor", "conv", m.Conversation, "err", err)
			floor = m.Seq - 1
		}
		sp = seqSpan{from: floor, to: floor}
	}
	if m.Seq > sp.to+1 {
		c.n.metrics.gapFills.Inc()
		to, left, err := c.fill(m.Conversation, sp.to, m.Seq, bp)
		if err != nil {
			return err
		}
		sp = seqSpan{from: max(sp.from, left), to: to}
	}
	if err := c.writeMessage(m, bp); err != nil {
		return err
	}
	sp.to = m.Seq
	c.written[m.Conversation] = sp
	return nil
}

// release ends the hold of live messages and writes those held, in the
// order they came.
func (c *conn) release(bp *[]byte) error {
	if c.released {
		return nil
	}
	c.released = true
	held := c.held
	c.held = nil
	for _, m := range held {
		if err := c.writeLive(m, bp); err != nil {
			return err
		}
	}
	return nil
}

// fill writes the stored messages of conv after seq after and before seq
// before, a page at a time, except the device's own (see seqSpan). It
// returns the last seq it covered and the last one it left out: an own
// message, or, when the store fails, everything before before.
func (c *conn) fill(conv string, after, before uint64, bp *[]byte) (to, left uint64, err error) {
	for after+1 < before {
		gap, more, err := c.n.store.MessagesAfter(context.Background(), conv, after, min(syncPage, int(before-after-1)), c.n.now())
		if err != nil {
			c.n.log.Warn("gap fill", "conv", conv, "err", err)
			return after, before - 1, nil
		}
		for i := range gap {
			g := &gap[i]
			if g.Seq >= before {
				return after, left, nil
			}
			if c.own(g) {
				left = g.Seq
			} else if err := c.writeMessage(g, bp); err != nil {
				return after, left, err
			}
			after = g.Seq
		}
		if !more || len(gap) == 0 {
			break
		}
	}
	return after, left, nil
}

// noteSent records that the client has seq through its own send, so the
// next live message of the conversation is not taken for a gap.
func (c *conn) noteSent(conv string, seq uint64) {
	if sp, ok := c.written[conv]; ok && sp.to+1 == seq {
		sp.to = seq
		c.written[conv] = sp
	}
}

// runSync replays every stored message after the client's cursors, then
// writes "synced": also what live delivery has sent the socket already
// (API.md; an app may sync again because it lost frames). The run of seqs
// sent then reaches from the cursor to the replay's last message.
func (c *conn) runSync(job *syncJob, bp *[]byte) error {
	ctx := context.Background()
	if job.catchUp {
		c.catchUpDue = false
		if !c.stillAllowed(ctx) {
			return nil
		}
	}
	convs, err := c.n.store.ConversationsOf(ctx, c.userID)
	if err != nil {
		return c.syncFailed(job, "sync: conversations", err)
	}
	if c.written == nil {
		c.written = make(map[string]seqSpan, len(convs))
	}
	// The client's sync frame paid one read token, for its first
	// syncPage messages; a longer replay pays one per further syncPage,
	// as paging through GET …/messages would (up to 500 a page), once it
	// has been written: the device's next reads wait for it. A catch-up
	// is the node's own doing: free.
	replayed := 0
	defer func() {
		if extra := replayed / syncPage; extra > 0 && !job.catchUp {
			c.n.reads.charge(c.deviceKey, time.Now(), extra)
		}
	}()
	for _, cv := range convs {
		sp, known := c.written[cv.ID]
		after := min(job.cursors[cv.ID], cv.LastSeq)
		switch {
		case job.catchUp && known:
			after = sp.to
		case job.catchUp:
			// The socket has not been sent a message of cv: it may have
			// missed what was sent in cv while it was open, at most
			// liveFillMax messages as live delivery would bring.
			if after, err = c.openedFloor(ctx, &cv); err != nil {
				return c.syncFailed(job, "sync: catch-up floor", err)
			}
		}
		from, own := after, uint64(0)
		for {
			if c.closing() {
				return nil
			}
			msgs, more, err := c.n.store.MessagesAfter(ctx, cv.ID, after, syncPage, c.n.now())
			if err != nil {
				return c.syncFailed(job, "sync: messages", err)
			}
			for i := range msgs {
				// A catch-up stands in for live delivery, which never
				// sends a device its own message (it got "sent"); a sync
				// replays everything.
				if job.catchUp && c.own(&msgs[i]) {
					own = msgs[i].Seq
				} else if err := c.writeMessage(&msgs[i], bp); err != nil {
					return err
				} else {
					replayed++
				}
				after = msgs[i].Seq
			}
			if !more {
				break
			}
		}
		if known && from <= sp.to {
			from = min(sp.from, from)
		}
		c.written[cv.ID] = seqSpan{from: max(from, own), to: max(sp.to, after)}
	}
	if job.catchUp {
		return nil
	}
	c.synced = true
	if err := c.release(bp); err != nil { // mostly duplicates of the replay now
		return err
	}
	return c.writeFrame(proto.AppendSynced(nil, job.ref))
}

const syncPage = 200

// own reports whether m was sent by this connection's device.
func (c *conn) own(m *storage.Message) bool {
	return m.SenderUser == c.userID && m.SenderDevice == c.deviceID
}

// stillAllowed checks the connection's credential (and the account's
// country restriction) before a catch-up: a revocation published while
// the broker's subscription was down is lost like a message, and would
// otherwise leave the socket open until the client's next frame. It closes
// the connection and reports false when the credential is refused; a
// store failure lets the catch-up go on.
func (c *conn) stillAllowed(ctx context.Context) bool {
	if c.n.auth == nil { // the catch-up unit tests run without one
		return true
	}
	return !c.refused(c.n.auth.Check(ctx, c.credID, c.addr), "catch-up: check credential")
}

// refused acts on the result of a credential check: a refusal (401, or
// 403 country_blocked) closes the connection, and refused reports true; a
// failure to check is logged as what, and the connection goes on.
func (c *conn) refused(err error, what string) bool {
	var pe *proto.Error
	switch {
	case err == nil:
		return false
	case errors.As(err, &pe):
		c.closeWith(closeCodeOf(err))
		return true
	default:
		c.n.log.Warn(what, "err", err)
		return false
	}
}

// catchUpMargin widens a catch-up from the socket's opening back in time:
// sent_at comes from the clock of the node that took the send.
const catchUpMargin = 5 * time.Second

// openedFloor returns the seq of cv after which its messages were sent
// while the socket was open (less catchUpMargin), but not below liveFillMax
// before cv.LastSeq: what live delivery and a catch-up may bring again.
// Clients deduplicate by id, so the margin costs at most a few repeated
// messages.
//
// The newest message answers alone when it was sent before: the usual
// case (a conversation quiet while the socket opened), one read. Otherwise
// a binary search over seq, which sent_at follows. After a reconnect storm
// every socket of every member asks at once: a store that can read sent_at
// alone (storage.SentAtReader) does not decode the messages' wrapped keys,
// hundreds in a big group.
func (c *conn) openedFloor(ctx context.Context, cv *storage.Conversation) (uint64, error) {
	since := time.UnixMilli(c.opened).Add(-catchUpMargin)
	lo, hi := cv.LastSeq-min(cv.LastSeq, liveFillMax), cv.LastSeq
	if lo == hi {
		return lo, nil
	}
	// before reports whether the first unexpired message after seq was
	// sent before since, and its seq.
	before := func(seq uint64) (bool, uint64, error) {
		if r := c.n.sentAts; r != nil {
			s, at, found, err := r.FirstSentAfter(ctx, cv.ID, seq, c.n.now())
			return found && at.Before(since), s, err
		}
		msgs, _, err := c.n.store.MessagesAfter(ctx, cv.ID, seq, 1, c.n.now())
		if err != nil || len(msgs) == 0 || !msgs[0].SentAt.Before(since) {
			return false, 0, err
		}
		return true, msgs[0].Seq, nil
	}
	if ok, seq, err := before(hi - 1); err != nil || ok && seq == hi {
		return hi, err
	}
	for lo < hi {
		mid := lo + (hi-lo)/2
		ok, seq, err := before(mid)
		if err != nil {
			return 0, err
		}
		if ok {
			lo = min(seq, hi)
		} else {
			hi = mid
		}
	}
	return lo, nil
}

// syncFailed answers a sync that the store failed: the client's own sync
// gets an internal error frame (it may send sync again); a catch-up, which
// the client did not ask for, is tried again later and, failing that,
// ends the connection with 1001 for the client to reconnect and sync.
func (c *conn) syncFailed(job *syncJob, what string, err error) error {
	c.n.log.Error(what, "err", err, "catch_up", job.catchUp)
	if !job.catchUp {
		return c.writeFrame(proto.AppendError(nil, "", proto.CodeInternal, "sync failed; try again"))
	}
	if job.attempt+1 >= catchUpAttempts {
		c.closeWith(proto.CloseGoingAway)
		return nil
	}
	next := &syncJob{catchUp: true, attempt: job.attempt + 1}
	c.catchUpDue = true
	time.AfterFunc(catchUpRetry*time.Duration(next.attempt), func() { c.enqueue(outItem{sync: next}) })
	return nil
}

// sendClose writes the close frame and gives the client a moment to answer
// it; the reader sees the answer (or the deadline) and ends the connection.
func (c *conn) sendClose(code proto.CloseCode, why string, abrupt bool) {
	c.n.metrics.closes.WithLabelValues(why).Inc()
	deadline := time.Now().Add(c.n.cfg.Gateway.WriteTimeout)
	if abrupt {
		deadline = time.Now().Add(min(time.Second, c.n.cfg.Gateway.WriteTimeout)) // a dead peer's full buffer
	}
	msg := websocket.FormatCloseMessage(int(code), why) // why: the code's name, or rate_limited
	c.closeSeen.Store(true)
	err := c.ws.WriteControl(websocket.CloseMessage, msg, deadline)
	if errors.Is(err, websocket.ErrCloseSent) && !abrupt {
		// The client's close came first and was answered (closeHandler):
		// the handshake is over.
		c.closeSocket()
		c.wakeBlocking()
		return
	}
	if err != nil || abrupt {
		c.closeSocketNow()
		c.wakeBlocking()
		return
	}
	c.ws.SetReadDeadline(time.Now().Add(closeGrace))
	c.wakeBlocking()
}

const closeGrace = 2 * time.Second

// closeSocket closes the socket, once. After a close frame either way it
// lingers (lingerClose): the close frame may still wait in the socket
// behind a replay, and a socket closed with the client's later frames
// unread makes Linux send an RST, which throws away what is queued, the
// close frame with it.
func (c *conn) closeSocket() {
	if c.closeSeen.Load() && c.fc != nil {
		if c.sockDone.CompareAndSwap(false, true) {
			lingerClose(c.fc.Conn, closeGrace, c.n.cfg.Gateway.WriteTimeout)
		}
		return
	}
	c.closeSocketNow()
}

// closeHandler answers the client's close frame, as gorilla's own handler
// does (its code, within a second), once it has marked the connection
// for closeSocket: a writer that the echo stops (ErrCloseSent) may close
// the socket before the reader returns from the frame.
func (c *conn) closeHandler(code int, _ string) error {
	c.closeSeen.Store(true)
	c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, ""), time.Now().Add(time.Second))
	return nil
}

// closeSocketNow closes the socket at once, once: no close frame went
// out, or the client is not to be waited for (closeAbruptly).
func (c *conn) closeSocketNow() {
	if c.sockDone.CompareAndSwap(false, true) {
		c.ws.Close()
	}
}

// readTimeout is how long a connection may stay silent: two ping
// intervals and a margin (10 s; shorter only for intervals below it, as in
// tests).
func (c *conn) readTimeout() time.Duration {
	iv := c.n.cfg.Gateway.PingInterval
	return 2*iv + min(iv, 10*time.Second)
}

// extend moves the read deadline. It moves only when a quarter of it has
// passed: a timer update per frame cost 1.5% of the CPU at saturation. A
// closing connection keeps the shorter deadline of sendClose. Called by
// the goroutine that owns the reads.
func (c *conn) extend() {
	now := time.Now()
	timeout := c.readTimeout()
	if time.Duration(c.deadline.Load()-now.UnixNano()) < timeout*3/4 && !c.closing() {
		d := now.Add(timeout)
		c.deadline.Store(d.UnixNano())
		c.ws.SetReadDeadline(d)
	}
}

// serveReadable reads what the socket has, handles every whole frame, and
// lets the socket go idle once it is empty. It runs on a poller worker,
// which owns the reads (rstate). The client's pings are answered, its
// pongs dropped and its text frames read here (frameConn.textFrame); any
// other frame is read through gorilla once it is whole.
func (c *conn) serveReadable() {
	for {
		if !c.readAvailable() {
			return
		}
		if c.closing() {
			c.readBlocking()
			return
		}
		c.fc.release()
		if !c.letGo() {
			return
		}
	}
}

// letGo gives the reads back to the poller: the socket waits idle for its
// next event. It runs on the goroutine that owns the reads, once it has
// read all there was; it returns true when data came meanwhile
// (readAgain) and the caller reads on. A connection that began to close or
// failed to write while the reads were owned, or whose poller stopped,
// gets a reader goroutine: no event would come for it.
func (c *conn) letGo() (again bool) {
	if !c.rstate.CompareAndSwap(readRunning, readIdle) {
		c.rstate.Store(readRunning)
		return true
	}
	if c.needsReader() {
		c.wakeBlocking()
	}
	return false
}

// needsReader reports whether the connection needs a reader goroutine
// rather than the poller (letGo).
func (c *conn) needsReader() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeCode != 0 || c.readerDone || c.finished || c.n.poller.stopping()
}

// readAvailable handles the whole frames in the buffer and reads the
// socket until it is empty. It returns false when it has handed the
// connection on: ended, or read by readBlocking to its end.
func (c *conn) readAvailable() bool {
	fc := c.fc
	drained := false
	for {
		kind, size := scanFrame(fc.buf[fc.off:])
		switch kind {
		case framePong:
			fc.skip(size)
			continue
		case framePing:
			c.enqueuePong(outItem{pong: fc.pingPayload(size)})
			fc.skip(size)
			continue
		case frameOther, frameHuge:
			if kind == frameOther && !c.closing() {
				if p := fc.textFrame(size); p != nil {
					c.extend()
					c.handle(p)
					fc.skip(size)
					if c.closing() {
						c.readBlocking() // for the client's answer to the close
						return false
					}
					continue
				}
			}
			if !c.readMessage() {
				c.readerExit()
				return false
			}
			if c.closing() || fc.passthrough || fc.off != fc.limit {
				c.readBlocking() // gorilla may hold the rest of a frame
				return false
			}
			continue
		}
		if drained && !c.peerDone.Load() {
			// The last read emptied the socket: a new event comes with
			// more. Not after the client's FIN, whose one event may have
			// come with the last data: the next read finds the end.
			return true
		}
		full, err := fc.readNow(size)
		if err == errWouldBlock {
			return true
		}
		if err != nil {
			c.readerExit()
			return false
		}
		drained = !full
		c.extend()
	}
}

// readable notes that the socket has something to read. It reports
// whether the caller now owns the reads (the connection was idle); a
// goroutine that owns them is told to read once more (readAgain).
func (c *conn) readable() bool {
	for {
		switch c.rstate.Load() {
		case readIdle:
			if c.rstate.CompareAndSwap(readIdle, readRunning) {
				return true
			}
		case readRunning:
			if c.rstate.CompareAndSwap(readRunning, readAgain) {
				return false
			}
		default: // readAgain, readDone
			return false
		}
	}
}

// wakeBlocking gives an idle connection a reader goroutine: to wait for
// the client's answer to a close, to end after a failed write, or to end
// once its read deadline has passed.
func (c *conn) wakeBlocking() {
	if c.rstate.CompareAndSwap(readIdle, readRunning) {
		go c.readBlocking()
	}
}

// expireIdle ends an idle connection whose read deadline has passed (its
// client answered no ping): no read is waiting for the deadline to fire.
func (c *conn) expireIdle(now time.Time) {
	if now.UnixNano() > c.deadline.Load() {
		c.wakeBlocking()
	}
}

// readBlocking reads on the calling goroutine until the connection ends,
// and cleans up. Gorilla answers pings and passes pongs to the handler
// set in serveWS.
func (c *conn) readBlocking() {
	defer c.readerExit()
	for c.readMessage() {
	}
}

// readMessage reads the next message through gorilla and handles it. It
// returns false when the connection has ended.
func (c *conn) readMessage() bool {
	mt, r, err := c.ws.NextReader()
	if err != nil {
		return false
	}
	if c.closing() {
		return true // wait for the client's close answer
	}
	if c.fc.passthrough {
		// Its frame announced more than frameConn buffers, so more than
		// the limit: 4413 at once, not after a megabyte has come. The
		// close's grace bounds what is read after it.
		c.closeAfterQueue(proto.CloseTooLarge)
		return true
	}
	c.extend()
	buf := framePool.Get().(*bytes.Buffer)
	buf.Reset()
	n, err := io.Copy(buf, io.LimitReader(r, proto.MaxFrameSize+1))
	switch {
	case err != nil:
		framePool.Put(buf)
		return false
	case n > proto.MaxFrameSize:
		c.closeAfterQueue(proto.CloseTooLarge)
	case mt != websocket.TextMessage:
		c.reject("", proto.Errorf(proto.CodeInvalidRequest, "frames must be text frames with one JSON object"))
	default:
		c.handle(buf.Bytes())
	}
	if buf.Cap() <= 64<<10 { // do not pool a large frame's buffer
		framePool.Put(buf)
	}
	return true
}

var framePool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// readerExit unregisters the connection and closes the socket, or leaves
// that to a writer still running.
func (c *conn) readerExit() {
	c.rstate.Store(readDone)
	if c.n.poller != nil {
		c.n.poller.forget(c)
	}
	c.n.hub.remove(c)
	c.mu.Lock()
	c.readerDone = true
	writing := c.writing
	c.finished = c.finished || !writing
	c.mu.Unlock()
	if !writing {
		c.closeSocket()
	}
}

// reject answers a frame with an error frame; three invalid_request frames
// in a row close the connection with 4400.
func (c *conn) reject(ref string, e *proto.Error) {
	if e.Code == proto.CodeInvalidRequest {
		c.invalidInRow++
		if c.invalidInRow >= 3 {
			c.enqueue(outItem{frame: proto.AppendError(nil, ref, e.Code, e.Message)})
			c.closeAfterQueue(proto.CloseMalformed)
			return
		}
	} else {
		c.invalidInRow = 0
	}
	c.enqueue(outItem{frame: proto.AppendError(nil, ref, e.Code, e.Message)})
}

func (c *conn) handle(data []byte) {
	f, perr := proto.DecodeClientFrame(data)
	if perr != nil {
		c.reject(f.Ref, perr)
		return
	}
	// One deadline for all the store calls of the frame (cluster mode):
	// the credential recheck and the send share it.
	ctx, cancel := c.n.frameContext()
	defer cancel()
	if !c.recheck(ctx) {
		return
	}
	if !c.framed {
		c.framed = true
		if f.Type != proto.TypeSync { // the client goes live without a sync
			c.enqueue(outItem{release: true})
		}
	}
	switch f.Type {
	case proto.TypeSend:
		if _, ok := c.n.sends.allow(c.deviceKey, time.Now(), &c.bucket); !ok {
			c.limitedInRow++
			if c.limitedInRow >= maxLimitedInRow {
				c.closeRateLimited()
				return
			}
			c.reject(f.Ref, proto.Errorf(proto.CodeRateLimited, "sending too fast; slow down"))
			return
		}
		c.limitedInRow = 0
		m, _, err := c.n.Send(ctx, c.p, f.Send)
		if err != nil {
			c.reject(f.Ref, asProtoError(c.n, err))
			return
		}
		c.invalidInRow = 0
		c.send(outItem{
			frame:    proto.AppendSent(make([]byte, 0, sentFrameSize+len(f.Ref)+len(m.ID)), f.Ref, m.ID, m.Seq, m.SentAt),
			sentConv: m.Conversation, sentSeq: m.Seq,
		})
	case proto.TypeSync:
		// A sync replays history: it draws on the device's read bucket,
		// as its HTTP reads do (readLimited).
		if _, ok := c.n.reads.allow(c.deviceKey, time.Now(), nil); !ok {
			c.reject(f.Ref, proto.Errorf(proto.CodeRateLimited, "syncing too fast; slow down"))
			return
		}
		c.invalidInRow = 0
		c.n.syncers.add(c.deviceKey)
		c.enqueue(outItem{sync: &syncJob{cursors: f.Cursors, ref: f.Ref}})
	case proto.TypePing:
		c.invalidInRow = 0
		c.enqueuePong(outItem{frame: proto.AppendPong(nil, f.Ref)})
	default: // auth after auth
		c.reject(f.Ref, proto.Errorf(proto.CodeInvalidRequest, "unexpected %q frame", f.Type))
	}
}

// sentFrameSize holds a sent frame without its ref and id (102 bytes with
// a 20-digit seq): one allocation instead of the five of growing from nil.
// A ref that needs escapes still grows it.
const sentFrameSize = 104

// maxLimitedInRow rate-limited sends in a row close the connection with
// 4429.
const maxLimitedInRow = 50

// recheck confirms, at most once per touch interval, that the credential
// still exists and the account's country restriction allows the client's
// address (and keeps a session alive while its socket is used).
func (c *conn) recheck(ctx context.Context) bool {
	now := c.n.now()
	if now.Sub(c.lastRecheck) < c.n.cfg.RecheckInterval {
		return true
	}
	c.lastRecheck = now
	return !c.refused(c.n.auth.Recheck(ctx, &c.p, c.addr), "recheck credential")
}
