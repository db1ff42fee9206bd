package httpapi

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// Scheme returns "https" when r arrived over TLS, or when the direct peer
// is a trusted proxy that says so in X-Forwarded-Proto; "http" otherwise.
func Scheme(r *http.Request, trusted []netip.Prefix) string {
	if r.TLS != nil {
		return "https"
	}
	if fromTrusted(r, trusted) {
		// The proxy's own value is the last one.
		p := lastToken(r.Header.Values("X-Forwarded-Proto"))
		if strings.EqualFold(p, "https") {
			return "https"
		}
	}
	return "http"
}

// Host returns the host (with a port unless it is the scheme's default) that
// the client asked for: X-Forwarded-Host from a trusted proxy, the Host
// header otherwise. It is lower case.
func Host(r *http.Request, trusted []netip.Prefix) string {
	host := r.Host
	if fromTrusted(r, trusted) {
		if h := lastToken(r.Header.Values("X-Forwarded-Host")); h != "" {
			host = h
		}
	}
	host = strings.ToLower(host)
	scheme := Scheme(r, trusted)
	if h, port, err := net.SplitHostPort(host); err == nil &&
		(scheme == "https" && port == "443" || scheme == "http" && port == "80") {
		if strings.Contains(h, ":") {
			return "[" + h + "]"
		}
		return h
	}
	return host
}

// Origin returns the serialised origin of the page that r's client sees,
// scheme://host[:port], as a browser sends it in the Origin header of a
// same-origin request.
func Origin(r *http.Request, trusted []netip.Prefix) string {
	return Scheme(r, trusted) + "://" + Host(r, trusted)
}

func fromTrusted(r *http.Request, trusted []netip.Prefix) bool {
	if len(trusted) == 0 {
		return false
	}
	peer := parseHostPort(r.RemoteAddr)
	return peer.IsValid() && inAny(peer, trusted)
}

// lastToken returns the last comma-separated element of the header values.
func lastToken(vals []string) string {
	if len(vals) == 0 {
		return ""
	}
	v := vals[len(vals)-1]
	if i := strings.LastIndexByte(v, ','); i >= 0 {
		v = v[i+1:]
	}
	return strings.TrimSpace(v)
}
