package messenger

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

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
// Reads are owned by one goroutine at a time (conn.rstate); writes go to
// the socket directly. gorilla sets the write deadline before every write;
// SetWriteDeadline passes it on only when it moves by more than a little
// (writeSlack).
type frameConn struct {
	net.Conn
	raw syscall.RawConn // nil: the socket cannot be read without waiting (no poller)

	buf         []byte // read from the socket: buf[off:] not yet handed on
	off         int
	limit       int  // gorilla may read buf[off:limit]: the rest of its frame
	passthrough bool // gorilla reads buf[off:], then the socket

	// Writes are serialised by gorilla (its write lock is held around
	// SetWriteDeadline and the write).
	wdl        time.Time     // the write deadline the socket has
	wdlSet     bool          // wdl was set through this frameConn
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
			f.raw = raw
		}
	}
	return f
}

// SetWriteDeadline gives the socket the deadline t, or keeps the one it
// has when that is no earlier than t and at most writeSlack later. A new
// one is set writeSlack later than asked, so that the writes of the next
// writeSlack find it good enough.
func (f *frameConn) SetWriteDeadline(t time.Time) error {
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
	f.wdlSet = false
	return f.Conn.SetDeadline(t)
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
