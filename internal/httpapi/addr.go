package httpapi

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// ClientAddr returns the address of the client that sent r. X-Forwarded-For
// is honoured only when the direct peer is one of the trusted proxies; then
// the right-most address not itself a trusted proxy is the client.
func ClientAddr(r *http.Request, trusted []netip.Prefix) netip.Addr {
	peer := parseHostPort(r.RemoteAddr)
	if !peer.IsValid() || !inAny(peer, trusted) {
		return peer
	}
	xff := r.Header.Values("X-Forwarded-For")
	for i := len(xff) - 1; i >= 0; i-- {
		parts := strings.Split(xff[i], ",")
		for j := len(parts) - 1; j >= 0; j-- {
			a, err := netip.ParseAddr(strings.TrimSpace(parts[j]))
			if err != nil {
				return peer
			}
			a = a.Unmap()
			if !inAny(a, trusted) {
				return a
			}
		}
	}
	return peer
}

func parseHostPort(s string) netip.Addr {
	host, _, err := net.SplitHostPort(s)
	if err != nil {
		host = s
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap()
}

func inAny(a netip.Addr, ps []netip.Prefix) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Anonymize zeroes the last octet of an IPv4 address and the last 80 bits of
// an IPv6 address, the form in which addresses are logged and shown.
func Anonymize(a netip.Addr) string {
	switch {
	case !a.IsValid():
		return ""
	case a.Is4():
		b := a.As4()
		b[3] = 0
		return netip.AddrFrom4(b).String()
	default:
		b := a.As16()
		for i := 6; i < 16; i++ {
			b[i] = 0
		}
		return netip.AddrFrom16(b).String()
	}
}
