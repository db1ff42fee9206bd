package httpapi

import (
	"net/netip"
	"strings"
	"testing"
)

func TestAnonymize(t *testing.T) {
	for in, want := range map[string]string{
		"203.0.113.77":                            "203.0.113.0",
		"::ffff:203.0.113.77":                     "203.0.113.0",
		"2001:db8:1234:5678:9abc:def0:1234:5678":  "2001:db8:1234::",
		"::1":                                     "::",
		"2002:cb00:714d:1:2:3:4:5":                "2002:cb00:7100::", // 6to4 of 203.0.113.77
		"fe80::1%eth0":                            "fe80::",
		"2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff": "2002:ffff:ff00::",
	} {
		if got := Anonymize(netip.MustParseAddr(in)); got != want {
			t.Errorf("Anonymize(%s) = %s, want %s", in, got, want)
		}
	}
	if got := Anonymize(netip.Addr{}); got != "" {
		t.Errorf("Anonymize(invalid) = %q", got)
	}
}

func TestLogPath(t *testing.T) {
	tok := "kf1_" + strings.Repeat("x", 43)
	op := "kfop_" + strings.Repeat("y", 43)
	for in, want := range map[string]string{
		"/api/v1/me":                         "/api/v1/me",
		"/api/v1/conversations/abc/messages": "/api/v1/conversations/abc/messages",
		"/api/v1/me?access_token=" + tok:     "/api/v1/me",
		"/api/v1/me;token=" + tok:            "/api/v1/me",
		"/api/v1/me#" + tok:                  "/api/v1/me",
		"/api/v1/trust/" + tok:               "/api/v1/trust/[redacted]",
		"/api/v1/admin/" + op + "/x":         "/api/v1/admin/[redacted]/x",
		"/a/Bearer%20" + tok + "/b":          "/a/[redacted]/b",
		"/" + strings.Repeat("a", 300):       "/" + strings.Repeat("a", maxLogPath-1),
		"/" + strings.Repeat("a", 250) + tok: "/[redacted]",
		"/" + strings.Repeat("a", 253) + tok: "/" + strings.Repeat("a", 253) + "kf", // cut inside the prefix: no token left
	} {
		got := LogPath(in)
		if got != want {
			t.Errorf("LogPath(%.60q…) = %q, want %q", in, got, want)
		}
		if strings.Contains(got, "xxxxxxxx") || strings.Contains(got, "yyyyyyyy") {
			t.Errorf("LogPath(%.60q…) keeps a token: %q", in, got)
		}
	}
}
