package messenger

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// backlogPair returns a connected pair whose server side has as much
// queued for the client (which reads nothing yet) as its socket takes, up
// to ≈ 2 MB, and how much that is.
func backlogPair(t *testing.T) (client, server net.Conn, written int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	client.(*net.TCPConn).SetReadBuffer(64 << 10)
	server = <-accepted
	if server == nil {
		t.Fatal("no connection accepted")
	}
	server.(*net.TCPConn).SetWriteBuffer(4 << 20)
	backlog := bytes.Repeat([]byte("replay frame "), 2<<20/13) // ≈ 2 MB: more than the peer reads in one period
	server.SetWriteDeadline(time.Now().Add(5 * time.Second))
	for written < len(backlog) { // as much as the socket takes without the peer reading
		n, err := server.Write(backlog[written : written+min(64<<10, len(backlog)-written)])
		written += n
		if err != nil {
			break
		}
	}
	if written < 512<<10 {
		t.Fatalf("only %d bytes queued", written)
	}
	return client, server, written
}

// TestLingerCloseSlowReader: a peer that reads a backlog slowly and keeps
// writing meanwhile gets all of it, then the end of the stream, although
// reading it takes many times the linger's first period: lingerClose
// waits on while the queue shrinks. Closing at the first period's end,
// with the peer's bytes unread, sent an RST, which cut the backlog short.
func TestLingerCloseSlowReader(t *testing.T) {
	client, server, written := backlogPair(t)
	lingerClose(server, 100*time.Millisecond, 10*time.Second)

	// The peer: 16 KiB every 5 ms (≈ 3 MB/s) and a ping after each read.
	got := 0
	buf := make([]byte, 16<<10)
	pace := time.NewTicker(5 * time.Millisecond) // a slow reader: what is tested, not a wait for a signal
	defer pace.Stop()
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		n, err := client.Read(buf)
		got += n
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("after %d of %d bytes: %v", got, written, err)
		}
		if _, err := client.Write([]byte("ping")); err != nil {
			t.Fatalf("after %d of %d bytes: write: %v", got, written, err)
		}
		<-pace.C
	}
	if got != written {
		t.Fatalf("the peer read %d bytes, then the end; %d were queued", got, written)
	}
}

// TestLingerCloseStuckReader: a peer that takes nothing in any more is
// not waited for up to the limit: once the queue stops shrinking, the
// socket closes.
func TestLingerCloseStuckReader(t *testing.T) {
	_, server, _ := backlogPair(t)
	lingerClose(server, 100*time.Millisecond, time.Minute)
	poll := time.NewTicker(10 * time.Millisecond)
	defer poll.Stop()
	giveUp := time.After(20 * time.Second)
	for {
		if _, open := unsentBytes(server); !open {
			return // closed
		}
		select {
		case <-poll.C:
		case <-giveUp:
			t.Fatal("the socket still lingers 20 s after the close, with a peer that reads nothing")
		}
	}
}
