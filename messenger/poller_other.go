//go:build !linux

package messenger

import (
	"errors"
	"net"
)

// poller is Linux only (epoll): elsewhere every connection keeps a reader
// goroutine (conn.readBlocking).
type poller struct{}

func newPoller() (*poller, error) { return nil, errors.New("messenger: no poller on this system") }

func (p *poller) register(*conn) error { return errors.New("messenger: no poller") }
func (p *poller) forget(*conn)         {}
func (p *poller) close()               {}
func (p *poller) stopping() bool       { return false }

// unsentBytes cannot tell here (lingerClose then waits its first period
// only).
func unsentBytes(net.Conn) (int, bool) { return 0, false }
