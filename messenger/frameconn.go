package messenger

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"klassenfunk/proto"
)

// frameConn is the net.Conn that gorilla/websocket reads a socket
// through. It reads the socket into a buffer of its own and lets gorilla
// read only frames it has seen whole, so gorilla never holds bytes past
// the frame it handles. That lets the gateway find out, without a
// goroutine parked in a read, whether a message has arrived: it reads
// what the socket has (readNow), scans the frames (scanFrame), and calls
// gorilla only for a frame that is all there (conn.serveReadable).
//
// When gorilla reads past the frame it was given (a fragmented message, a
// close frame, or a read in the blocking mode of conn.readBlocking), Read
// waits for the next whole frame. A frame too large to buffer
// (maxBufferedFrame) switches the connection to passthrough: gorilla then
// reads the socket directly, the connection stays in blocking mode, and a
// data frame is refused with 4413 before it is read (conn.readMessage).
//
// Reads are owned by one goroutine at a time (conn.rstate). The
// gateway's own frames, all text, go to the socket without gorilla
// (writeText) where the socket allows it (direct); gorilla writes only the
// control frames then (pings, pongs, closes, through Write). wmu
// serialises the two, so that one frame's bytes never mix with another's
// and nothing follows a close frame. gorilla sets the write deadline
// before every write; SetWriteDeadline passes it on only when it moves by
// more than a little (writeSlack).
type frameConn struct {
	net.Conn
	raw    syscall.RawConn // nil: the socket cannot be read without waiting (no poller)
	direct bool            // writeText writes to the socket itself (raw, on a Unix system)

	buf         []byte // read from the socket: buf[off:] not yet handed on
	off         int
	limit       int  // gorilla may read buf[off:limit]: the rest of its frame
	passthrough bool // gorilla reads buf[off:], then the socket

	wmu        sync.Mutex
	unsent     []byte        // guarded by wmu; the rest of a frame tryText wrote in part: it goes out before anything else
	closeSent  bool          // guarded by wmu; a close frame has gone out (direct only)
	wdl        time.Time     // guarded by wmu; the write deadline the socket has
	wdlSet     bool          // guarded by wmu; wdl was set through this frameConn
	writeSlack time.Duration // how much later than asked the socket's write deadline may be
}

// newFrameConn wraps nc. A write deadline asked for may be kept up to
// writeSlack later on the socket: setting a socket's deadline costs a timer
// update in the runtime, and gorilla sets it before every write (2.8 % of
// the server's CPU at 15,000 msgs/s).
func newFrameConn(nc net.Conn, writeSlack time.Duration) *frameConn {
	f := &frameConn{Conn: nc, writeSlack: writeSlack}
	if sc, ok := nc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			f.raw, f.direct = raw, directWrites
		}
	}
	return f
}

// SetWriteDeadline gives the socket the deadline t, or keeps the one it
// has when that is no earlier than t and at most writeSlack later. A new
// one is set writeSlack later than asked, so that the writes of the next
// writeSlack find it good enough.
func (f *frameConn) SetWriteDeadline(t time.Time) error {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	return f.setWriteDeadline(t)
}

// setWriteDeadline is SetWriteDeadline with wmu held.
func (f *frameConn) setWriteDeadline(t time.Time) error {
	if f.wdlSet && !t.IsZero() && !f.wdl.Before(t) && f.wdl.Sub(t) <= f.writeSlack {
		return nil
	}
	if !t.IsZero() {
		t = t.Add(f.writeSlack)
	}
	f.wdl, f.wdlSet = t, false
	if err := f.Conn.SetWriteDeadline(t); err != nil {
		return err
	}
	f.wdlSet = true
	return nil
}

// SetDeadline sets both deadlines; the write deadline exactly.
func (f *frameConn) SetDeadline(t time.Time) error {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	f.wdlSet = false
	return f.Conn.SetDeadline(t)
}

// Write is how gorilla writes: every frame while the gateway's frames do
// not go direct, only control frames (each in one Write) while they do.
func (f *frameConn) Write(p []byte) (int, error) {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	if len(f.unsent) > 0 { // gorilla has set the deadline
		if err := f.writeAll(f.unsent); err != nil {
			return 0, err
		}
		f.unsent = nil
	}
	if f.direct && len(p) > 0 && p[0] == 0x80|websocket.CloseMessage { // the handshake's response starts with 'H'
		f.closeSent = true // set before the write: a close that fails halfway ends the writing too
	}
	return f.Conn.Write(p)
}

// writeText writes b as one final, unmasked text frame (RFC 6455, 5.2),
// header and payload in one write: on a server's own frames gorilla adds
// only its write lock, a pooled buffer and the way through net.Conn, ≈ 1
// µs per frame on this project's machine beside a write's ≈ 8 µs. It
// waits for room in the socket until deadline, and refuses once a close
// frame has gone out (websocket.ErrCloseSent). Only when direct.
func (f *frameConn) writeText(b []byte, deadline time.Time) error {
	_, err := f.text(b, deadline, true)
	return err
}

// tryText is writeText without the wait: it writes what the socket takes
// now and keeps the rest of the frame (unsent) for the next write, or
// for flush, and reports whether it kept any. The deadline only keeps
// the socket's from having passed.
func (f *frameConn) tryText(b []byte, deadline time.Time) (unsent bool, err error) {
	return f.text(b, deadline, false)
}

func (f *frameConn) text(b []byte, deadline time.Time, wait bool) (unsent bool, err error) {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	if f.closeSent {
		return false, websocket.ErrCloseSent
	}
	if err := f.setWriteDeadline(deadline); err != nil {
		return false, err
	}
	if wait && len(f.unsent) > 0 {
		if err := f.writeAll(f.unsent); err != nil {
			return false, err
		}
		f.unsent = nil
	}
	bp := writeBufPool.Get().(*[]byte)
	buf := append(appendTextHeader((*bp)[:0], len(b)), b...)
	switch {
	case wait:
		err = f.writeAll(buf)
	case len(f.unsent) > 0:
		f.unsent = append(f.unsent, buf...) // behind the rest of the last frame
	default:
		var off int
		if off, err = f.writeSome(buf); err == nil && off < len(buf) {
			f.unsent = append(f.unsent, buf[off:]...)
		}
	}
	if cap(buf) <= maxPooledWriteBuf {
		*bp = buf[:0]
		writeBufPool.Put(bp)
	}
	return len(f.unsent) > 0, err
}

// flush writes what tryText left, waiting for the socket until deadline.
func (f *frameConn) flush(deadline time.Time) error {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	if len(f.unsent) == 0 {
		return nil
	}
	if err := f.setWriteDeadline(deadline); err != nil {
		return err
	}
	err := f.writeAll(f.unsent)
	f.unsent = nil
	return err
}

// writeSome writes as much of buf as the socket takes now and returns
// how much that was. With wmu held.
func (f *frameConn) writeSome(buf []byte) (int, error) { return f.writeOut(buf, false) }

// writeAll writes buf to the socket, waiting for room until the write
// deadline. With wmu held.
func (f *frameConn) writeAll(buf []byte) error {
	_, err := f.writeOut(buf, true)
	return err
}

func (f *frameConn) writeOut(buf []byte, wait bool) (int, error) {
	off := 0
	var werr error
	err := f.raw.Write(func(fd uintptr) bool {
		for off < len(buf) {
			n, err := writeFD(fd, buf[off:])
			if err == syscall.EAGAIN {
				return !wait // waiting: until the socket takes more, or the deadline
			}
			if err != nil {
				werr = err
				return true
			}
			off += n
		}
		return true
	})
	if err == nil {
		err = werr
	}
	return off, err
}

// writeBufPool holds the buffers writeText builds frames in; one larger
// than maxPooledWriteBuf (a big message in a sync) is not kept.
var writeBufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

const maxPooledWriteBuf = 64 << 10

// appendTextHeader appends the header of a final, unmasked text frame
// with an n-byte payload (RFC 6455, 5.2: the shortest length form).
func appendTextHeader(b []byte, n int) []byte {
	switch {
	case n <= 125:
		return append(b, 0x81, byte(n))
	case n <= 0xffff:
		return append(b, 0x81, 126, byte(n>>8), byte(n))
	default:
		return binary.BigEndian.AppendUint64(append(b, 0x81, 127), uint64(n))
	}
}

// maxFrameHeader is the longest frame header of RFC 6455 (5.2): 2 bytes,
// an 8-byte length, a 4-byte mask key.
const maxFrameHeader = 14

// maxBufferedFrame is the largest frame that frameConn buffers whole: one
// that may hold a frame of proto.MaxFrameSize. A larger one is too large
// anyway: the reader closes with 4413 once gorilla has read its header.
const maxBufferedFrame = proto.MaxFrameSize + maxFrameHeader

type frameKind uint8

const (
	frameIncomplete frameKind = iota // more bytes are needed
	framePong                        // a whole, well-formed pong: dropped (the socket's use already counts)
	framePing                        // a whole, well-formed ping: answered with a pong
	frameOther                       // a whole frame for gorilla to read
	frameHuge                        // a frame larger than maxBufferedFrame: gorilla reads it through
)

// scanFrame classifies the frame at the start of b (RFC 6455, 5.2). size
// is the frame's length, also for an incomplete frame once its header is
// there (0 before). Only well-formed client pings and pongs are told
// apart: final, unreserved bits clear, masked, at most 125 bytes in the
// 7-bit length field (a control frame may not use the longer forms, even
// for a short payload). Anything else goes to gorilla, which enforces the
// protocol.
func scanFrame(b []byte) (kind frameKind, size int) {
	if len(b) < 2 {
		return frameIncomplete, 0
	}
	hdr := 2
	n := uint64(b[1] & 0x7f)
	switch n {
	case 126:
		hdr += 2
		if len(b) < hdr {
			return frameIncomplete, 0
		}
		n = uint64(binary.BigEndian.Uint16(b[2:]))
	case 127:
		hdr += 8
		if len(b) < hdr {
			return frameIncomplete, 0
		}
		n = binary.BigEndian.Uint64(b[2:])
	}
	masked := b[1]&0x80 != 0
	if masked {
		hdr += 4
	}
	if n > uint64(maxBufferedFrame-hdr) {
		return frameHuge, 0
	}
	size = hdr + int(n)
	if len(b) < size {
		return frameIncomplete, size
	}
	if b[0]&0xf0 == 0x80 && masked && b[1]&0x7f <= 125 { // the 7-bit length: gorilla refuses a longer form
		switch b[0] & 0x0f {
		case 0x9:
			return framePing, size
		case 0xa:
			return framePong, size
		}
	}
	return frameOther, size
}

// Read hands gorilla the rest of its frame, waiting for the next whole
// frame once it has read that.
func (f *frameConn) Read(p []byte) (int, error) {
	if f.passthrough {
		if f.off < len(f.buf) {
			n := copy(p, f.buf[f.off:])
			f.off += n
			f.limit = f.off
			return n, nil
		}
		return f.Conn.Read(p)
	}
	if f.off == f.limit {
		if err := f.nextFrame(); err != nil {
			return 0, err
		}
		if f.passthrough {
			return f.Read(p)
		}
	}
	n := copy(p, f.buf[f.off:f.limit])
	f.off += n
	return n, nil
}

// nextFrame reads from the socket, waiting, until buf holds the whole
// next frame, and lets gorilla read it.
func (f *frameConn) nextFrame() error {
	for {
		kind, size := scanFrame(f.buf[f.off:])
		switch kind {
		case frameHuge:
			f.passthrough = true
			return nil
		case frameIncomplete:
			if err := f.fill(size); err != nil {
				return err
			}
		default:
			f.limit = f.off + size
			return nil
		}
	}
}

// errWouldBlock: the socket has nothing to read now.
var errWouldBlock = errors.New("messenger: nothing to read")

// fill reads once from the socket, waiting for data, into room for a
// frame of size bytes (0: unknown yet).
func (f *frameConn) fill(size int) error {
	f.makeRoom(size)
	n, err := f.Conn.Read(f.buf[len(f.buf):cap(f.buf)])
	f.buf = f.buf[:len(f.buf)+n]
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// readNow reads what the socket has without waiting, into room for a frame
// of size bytes. It returns errWouldBlock when there is nothing, and
// whether the read filled the room (more may be waiting).
func (f *frameConn) readNow(size int) (full bool, err error) {
	f.makeRoom(size)
	room := f.buf[len(f.buf):cap(f.buf)]
	var n int
	var rerr error
	err = f.raw.Read(func(fd uintptr) bool {
		n, rerr = readFD(fd, room)
		return true
	})
	switch {
	case err != nil:
		return false, err
	case rerr == syscall.EAGAIN:
		return false, errWouldBlock
	case rerr != nil:
		return false, rerr
	case n == 0:
		return false, io.EOF
	}
	f.buf = f.buf[:len(f.buf)+n]
	return n == len(room), nil
}

// readBufSize is the buffer a connection borrows while it reads.
const readBufSize = 4096

var readBufPool = sync.Pool{New: func() any { b := make([]byte, 0, readBufSize); return &b }}

// makeRoom makes buf able to take more bytes, and a whole frame of size
// bytes from off.
func (f *frameConn) makeRoom(size int) {
	if f.buf == nil {
		f.buf = (*readBufPool.Get().(*[]byte))[:0]
	}
	if f.off > 0 && (f.off == len(f.buf) || len(f.buf) == cap(f.buf) || f.off+size > cap(f.buf)) {
		n := copy(f.buf, f.buf[f.off:])
		f.buf, f.limit, f.off = f.buf[:n], f.limit-f.off, 0
	}
	if len(f.buf) == cap(f.buf) || size > cap(f.buf) {
		nb := make([]byte, len(f.buf), max(size, 2*cap(f.buf)))
		copy(nb, f.buf)
		old := f.buf
		f.buf = nb
		if cap(old) == readBufSize {
			old = old[:0]
			readBufPool.Put(&old)
		}
	}
}

// skip drops the size bytes of a frame at off that the gateway handled
// itself.
func (f *frameConn) skip(size int) {
	f.off += size
	f.limit = f.off
}

// pingPayload returns the unmasked payload of the ping of size bytes at
// off, a new slice (never nil) that the writer sends back in the pong.
func (f *frameConn) pingPayload(size int) []byte {
	b := f.buf[f.off : f.off+size]
	n := int(b[1] & 0x7f) // a ping holds at most 125 bytes
	key := b[size-n-4 : size-n]
	p := make([]byte, n)
	for i := range p {
		p[i] = b[size-n+i] ^ key[i&3]
	}
	return p
}

// textFrame returns the payload of the whole frame of size bytes at off,
// unmasked in place, when it is a final, masked text frame of at most
// proto.MaxFrameSize bytes: one message that the gateway reads without
// gorilla (conn.readAvailable), saving its reader's bookkeeping and a
// copy. Anything else gets nil and is left as it was, for gorilla.
func (f *frameConn) textFrame(size int) []byte {
	b := f.buf[f.off : f.off+size]
	if b[0] != 0x81 || b[1]&0x80 == 0 { // FIN, no extension bits, text; masked
		return nil
	}
	hdr := 2
	switch b[1] & 0x7f {
	case 126:
		hdr = 4
	case 127:
		hdr = 10
	}
	key, p := b[hdr:hdr+4], b[hdr+4:]
	if len(p) > proto.MaxFrameSize {
		return nil
	}
	unmask(key, p)
	return p
}

// unmask applies the 4-byte masking key to p (RFC 6455, 5.3), 8 bytes at
// a time.
func unmask(key, p []byte) {
	k := uint64(binary.LittleEndian.Uint32(key))
	k |= k << 32
	i := 0
	for ; i+8 <= len(p); i += 8 {
		binary.LittleEndian.PutUint64(p[i:], binary.LittleEndian.Uint64(p[i:])^k)
	}
	for ; i < len(p); i++ {
		p[i] ^= key[i&3]
	}
}

// pending reports whether buf holds bytes not yet handed on.
func (f *frameConn) pending() bool { return f.off < len(f.buf) }

// release returns an emptied buffer to the pool: an idle connection holds
// none.
func (f *frameConn) release() {
	if f.buf == nil || f.off < len(f.buf) {
		return
	}
	if cap(f.buf) == readBufSize {
		b := f.buf[:0]
		readBufPool.Put(&b)
	}
	f.buf, f.off, f.limit = nil, 0, 0
}

// lingerClose closes nc gracefully: it ends the sending side (a FIN after
// what is still queued), reads and drops what the peer still sends until
// it ends its side too, and then closes. So what was queued (a close frame
// behind a replay) reaches a peer that keeps writing, a ping timer's
// frames after its close frame: a close with unread data in the socket is
// an RST in Linux, which discards the queue. It waits d, and then d more
// at a time as long as the peer still takes in what is queued (a slow
// reader behind a backlog), up to limit in all. Without a sending side to
// end, it closes at once. It returns at once: the rest runs on a goroutine
// of its own (a TLS connection's CloseWrite writes an alert, which may
// wait).
func lingerClose(nc net.Conn, d, limit time.Duration) {
	cw, ok := nc.(interface{ CloseWrite() error })
	if !ok {
		nc.Close()
		return
	}
	go func() {
		defer nc.Close()
		if cw.CloseWrite() != nil {
			return
		}
		end := time.Now().Add(limit)
		last, _ := unsentBytes(nc)
		var buf [512]byte
		for {
			step := time.Now().Add(d)
			if step.After(end) {
				step = end
			}
			if nc.SetReadDeadline(step) != nil {
				return
			}
			var err error
			for err == nil {
				_, err = nc.Read(buf[:])
			}
			if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
				return // the peer's end, or a broken socket
			}
			n, ok := unsentBytes(nc)
			if !ok || n == 0 || n >= last || !time.Now().Before(end) {
				return
			}
			last = n
		}
	}()
}
