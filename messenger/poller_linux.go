//go:build linux

package messenger

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// poller watches the node's sockets on an epoll instance of its own and
// hands a socket that has something to read to a worker goroutine, which
// reads and handles what arrived (conn.serveReadable) until the socket is
// empty. So an idle connection has no goroutine at all: no stack for the
// garbage collector to scan in every cycle, none to keep in memory.
//
// Sockets are watched edge-triggered: an event comes when data arrives.
// One that comes while a worker reads the socket marks it (readAgain), so
// the worker reads once more before it lets go; at most one worker reads a
// socket at a time.
//
// Workers (a pool of their own) are spawned when none is free; a worker
// blocks while its sends wait for the durable write, so there are about
// as many as sends in flight.
type poller struct {
	epfd int
	wake [2]int // a pipe: a byte on it ends wait

	mu     sync.RWMutex
	conns  map[int32]*conn // guarded by mu; by socket descriptor
	closed bool            // guarded by mu; the descriptors are closed

	workers   *workers    // serveReadable
	stopped   atomic.Bool // close has begun
	waiter    sync.WaitGroup
	closeOnce sync.Once
}

var errPollerClosed = errors.New("messenger: poller closed")

const (
	watchEvents = syscall.EPOLLIN | syscall.EPOLLRDHUP | (syscall.EPOLLET & 0xffffffff)
	pollPause   = 200 * time.Microsecond
	idlePolls   = 50 // 10 ms without events
)

func newPoller() (*poller, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	p := &poller{epfd: epfd, conns: make(map[int32]*conn)}
	if err := syscall.Pipe2(p.wake[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		syscall.Close(epfd)
		return nil, err
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(p.wake[0])}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, p.wake[0], &ev); err != nil {
		p.closeFDs()
		return nil, err
	}
	p.workers = newWorkers((*conn).serveReadable)
	p.waiter.Add(1)
	go p.wait()
	return p, nil
}

func (p *poller) closeFDs() {
	syscall.Close(p.epfd)
	syscall.Close(p.wake[0])
	syscall.Close(p.wake[1])
}

// wait runs on its own goroutine until close. While events come it polls
// without blocking, pausing pollPause between polls so that a poll finds
// several; after idlePolls polls in a row that found nothing it blocks in
// epoll_wait. A blocking wait costs a thread's sleep and wake-up (and a
// fight for a P) per event, polling costs a timer: at 15,000 messages/s
// the blocking loop alone took 4 % of the core.
func (p *poller) wait() {
	defer p.waiter.Done()
	events := make([]syscall.EpollEvent, 256)
	ready := make([]*conn, 0, len(events))
	empty := idlePolls
	for {
		timeout := 0
		if empty >= idlePolls {
			timeout = -1
		}
		n, err := syscall.EpollWait(p.epfd, events, timeout)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return // the descriptor is gone: cannot happen before close
		}
		if n == 0 {
			empty++
		} else {
			empty = 0
		}
		ready = ready[:0]
		p.mu.RLock()
		for _, ev := range events[:n] {
			if ev.Fd == int32(p.wake[0]) {
				p.mu.RUnlock()
				return
			}
			// A stale event (a socket closed since, its descriptor reused)
			// at worst wakes a connection that finds nothing to read, and
			// with peerDone costs it one more read per wake.
			if c := p.conns[ev.Fd]; c != nil {
				if ev.Events&(syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) != 0 {
					c.peerDone.Store(true)
				}
				ready = append(ready, c)
			}
		}
		p.mu.RUnlock()
		for _, c := range ready {
			if c.readable() {
				p.dispatch(c)
			}
		}
		if n < len(events) && empty < idlePolls {
			time.Sleep(pollPause)
		}
	}
}

// dispatch gives c, whose reads the caller owns, to a free worker or a
// new one.
func (p *poller) dispatch(c *conn) { p.workers.run(c) }

// register adds c's socket; the caller owns c's reads (readRunning). With
// reads pending in c's buffer (frames that came with the auth frame) a
// worker handles them first; otherwise the socket waits idle.
func (p *poller) register(c *conn) error {
	var cerr error
	err := c.fc.raw.Control(func(s uintptr) {
		fd := int32(s)
		c.fd = fd
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.closed {
			cerr = errPollerClosed
			return
		}
		p.conns[fd] = c
		ev := syscall.EpollEvent{Events: watchEvents, Fd: fd}
		cerr = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, int(s), &ev)
	})
	if err == nil {
		err = cerr
	}
	if err != nil {
		p.forget(c)
		return err
	}
	if c.fc.pending() || c.letGo() {
		p.mu.RLock()
		defer p.mu.RUnlock()
		if p.closed {
			go c.readBlocking()
		} else {
			p.dispatch(c) // under mu: close has not begun
		}
	}
	return nil
}

func (p *poller) stopping() bool { return p.stopped.Load() }

// forget drops c; closing its socket removes it from the epoll set.
func (p *poller) forget(c *conn) {
	p.mu.Lock()
	if p.conns[c.fd] == c {
		delete(p.conns, c.fd)
	}
	p.mu.Unlock()
}

// close stops the poller. The connections it still watches go on with a
// reader goroutine each; workers end once their connection is served.
func (p *poller) close() {
	p.closeOnce.Do(func() {
		p.stopped.Store(true)
		syscall.Write(p.wake[1], []byte{0})
		p.waiter.Wait()
		p.mu.Lock()
		p.closed = true
		p.closeFDs()
		left := make([]*conn, 0, len(p.conns))
		for _, c := range p.conns {
			left = append(left, c)
		}
		p.mu.Unlock()
		p.workers.stop()
		for _, c := range left {
			c.wakeBlocking()
		}
	})
}

// unsentBytes returns how many bytes nc's socket holds that the peer has
// not acknowledged yet (SIOCOUTQ), and whether it could tell.
func unsentBytes(nc net.Conn) (int, bool) {
	if tc, ok := nc.(interface{ NetConn() net.Conn }); ok { // TLS: its TCP connection
		nc = tc.NetConn()
	}
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return 0, false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var n int32
	var errno syscall.Errno
	if err := raw.Control(func(fd uintptr) {
		_, _, errno = syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCOUTQ, uintptr(unsafe.Pointer(&n)))
	}); err != nil || errno != 0 {
		return 0, false
	}
	return int(n), true
}
