package httpapi

import (
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"strings"
	"unicode/utf8"
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
// an IPv6 address, the form in which addresses are logged and shown. An
// IPv4-mapped address counts as IPv4. A 6to4 address (2002::/16) carries
// its client's IPv4 address in bits 16–47, inside the 48 bits kept, so the
// last octet of that is zeroed as well.
func Anonymize(a netip.Addr) string {
	a = a.Unmap()
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
		if b[0] == 0x20 && b[1] == 0x02 {
			b[5] = 0
		}
		return netip.AddrFrom16(b).String()
	}
}

// addrInText finds what may be an IP address in a line of text: an IPv6
// address in brackets (as in "[2001:db8::1]:443"), or a dotted IPv4 one.
var addrInText = regexp.MustCompile(`\[[0-9A-Fa-f:.]+(?:%[^\]]*)?\]|\b\d{1,3}(?:\.\d{1,3}){3}\b|\b[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}\b`)

// AnonymizeText anonymizes every IP address in s (Anonymize), for lines
// that others write with a client's address in them: net/http's own error
// log ("http: TLS handshake error from 203.0.113.7:51234: …").
func AnonymizeText(s string) string {
	return addrInText.ReplaceAllStringFunc(s, func(m string) string {
		inner := strings.TrimSuffix(strings.TrimPrefix(m, "["), "]")
		if i := strings.IndexByte(inner, '%'); i >= 0 {
			inner = inner[:i]
		}
		a, err := netip.ParseAddr(inner)
		if err != nil {
			return m
		}
		if strings.HasPrefix(m, "[") {
			return "[" + Anonymize(a) + "]"
		}
		return Anonymize(a)
	})
}

// LogPath is the form in which a request's path is logged, so that a
// token a client pasted into its URL does not reach the logs:
//   - cut at a decoded '?', ';' or '#', or an escaped one (%3F, %3B, %23:
//     what a client escaped into the path is not ours to keep);
//   - from the first segment that may hold a secret on, replaced by
//     "[redacted]": one holding "kf1" or "kfop" in any case (our token
//     prefixes, also split or escaped), or a run of secretRun or more
//     base64url characters (a token's body is 43; our ids are 22);
//   - at most maxLogPath bytes, cut at a character boundary.
//
// The path is any bytes a client sent: it is compared in an ASCII-only
// lower-case copy of the same length, never cut before it is scanned.
func LogPath(p string) string {
	if i := strings.IndexAny(p, "?;#"); i >= 0 {
		p = p[:i]
	}
	low := asciiLower(p)
	for _, esc := range []string{"%3f", "%3b", "%23"} {
		if i := strings.Index(low, esc); i >= 0 {
			p, low = p[:i], low[:i]
		}
	}
	start := 0
	for seg := range strings.SplitSeq(low, "/") {
		if strings.Contains(seg, "kf1") || strings.Contains(seg, "kfop") || hasSecretRun(seg) {
			return cutPath(p[:start], maxLogPath-len(redacted)) + redacted
		}
		start += len(seg) + 1
	}
	return cutPath(p, maxLogPath)
}

const redacted = "[redacted]"

// asciiLower is s with A–Z lowered and every other byte kept, so that
// byte positions in it are positions in s (strings.ToLower may change
// the length: invalid UTF-8, 'İ', the Kelvin sign).
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// cutPath cuts p to at most n bytes, at the start of a character.
func cutPath(p string, n int) string {
	if len(p) <= n {
		return p
	}
	for n > 0 && !utf8.RuneStart(p[n]) {
		n--
	}
	return p[:n]
}

// hasSecretRun reports whether s holds secretRun base64url characters in
// a row.
func hasSecretRun(s string) bool {
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' {
			if n++; n >= secretRun {
				return true
			}
		} else {
			n = 0
		}
	}
	return false
}

const (
	maxLogPath = 256 // bytes of a logged path
	secretRun  = 32  // base64url characters in a row that LogPath takes for a secret
)
