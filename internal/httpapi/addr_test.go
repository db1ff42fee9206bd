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
	body := strings.Repeat("x", 43)
	tok := "kf1_" + body
	op := "kfop_" + strings.Repeat("y", 43)
	id := "AAECAwQFBgcICQoLDA0ODw" // an id's 22 characters stay
	long := strings.Repeat("/ab", 100)
	for in, want := range map[string]string{
		"/api/v1/me": "/api/v1/me",
		"/api/v1/conversations/" + id + "/messages": "/api/v1/conversations/" + id + "/messages",
		"/api/v1/me?access_token=" + tok:            "/api/v1/me",
		"/api/v1/me;token=" + tok:                   "/api/v1/me",
		"/api/v1/me#" + tok:                         "/api/v1/me",
		"/api/v1/me%3Faccess_token%3D" + tok:        "/api/v1/me", // escaped twice by the client
		"/api/v1/me%3btoken=" + tok:                 "/api/v1/me",
		"/api/v1/trust/" + tok:                      "/api/v1/trust/[redacted]",
		"/api/v1/admin/" + op + "/x":                "/api/v1/admin/[redacted]",
		"/a/Bearer " + tok + "/b":                   "/a/[redacted]",
		"/api/v1/me/KF1_" + body:                    "/api/v1/me/[redacted]",
		"/api/v1/me/Kfop_" + body:                   "/api/v1/me/[redacted]",
		"/api/v1/me/kf1/_" + body:                   "/api/v1/me/[redacted]",
		"/api/v1/me/kf1%5F" + body:                  "/api/v1/me/[redacted]",
		"/api/v1/me/" + tok[:20] + "/" + tok[20:]:   "/api/v1/me/[redacted]",
		"/api/v1/me/kf1-" + body:                    "/api/v1/me/[redacted]",
		"/api/v1/me/" + body:                        "/api/v1/me/[redacted]", // a bare token body
		long:                                        long[:maxLogPath],
		long[:250] + "/" + tok:                      long[:maxLogPath-len(redacted)] + "[redacted]",
		long[:231] + "/" + body:                     long[:231] + "/[redacted]", // the body crosses byte 256
		// Any bytes: invalid UTF-8, and letters whose lower case has
		// another length, never move the cut.
		"/\xff\xff\xff\xff%3F" + tok:                 "/\xff\xff\xff\xff",
		"/" + strings.Repeat("\xff", 20) + "/" + tok: "/" + strings.Repeat("\xff", 20) + "/[redacted]",
		"/\u212a\u0130/" + tok:                       "/\u212a\u0130/[redacted]",
		"/" + strings.Repeat("\u00e4", 200):          "/" + strings.Repeat("\u00e4", 127), // cut at a character
	} {
		got := LogPath(in)
		if got != want {
			t.Errorf("LogPath(%.70q…) = %q, want %q", in, got, want)
		}
		if strings.Contains(got, "xxxxxxxx") || strings.Contains(got, "yyyyyyyy") {
			t.Errorf("LogPath(%.70q…) keeps a token: %q", in, got)
		}
	}
}

// FuzzLogPath: no input makes LogPath panic, exceed maxLogPath or keep a
// token that was whole in the path.
func FuzzLogPath(f *testing.F) {
	tok := "kf1_" + strings.Repeat("Q", 43)
	for _, seed := range []string{"/api/v1/me", "/\xff\xff%3F", "/\u212a/" + tok, strings.Repeat("/ab", 90) + tok} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, p string) {
		for _, in := range []string{p, p + "/" + tok, tok + p} {
			got := LogPath(in)
			if len(got) > maxLogPath {
				t.Fatalf("LogPath(%q) = %d bytes", in, len(got))
			}
			if strings.Contains(got, tok[4:12]) && !strings.Contains(p, tok[4:12]) {
				t.Fatalf("LogPath(%q) = %q keeps the token", in, got)
			}
		}
	})
}

func TestAnonymizeText(t *testing.T) {
	for in, want := range map[string]string{
		"http: TLS handshake error from 203.0.113.7:51234: tls: client offered only unsupported versions": "http: TLS handshake error from 203.0.113.0:51234: tls: client offered only unsupported versions",
		"http: TLS handshake error from [2001:db8:1234:5678::9]:443: EOF":                                 "http: TLS handshake error from [2001:db8:1234::]:443: EOF",
		"http2: server: error reading preface from client [fe80::1%eth0]:5: EOF":                          "http2: server: error reading preface from client [fe80::]:5: EOF",
		"no address at 12:34:56 or in v1.2.3":                                                             "no address at 12:34:56 or in v1.2.3",
		"two: 198.51.100.23 and 2001:db8::77":                                                             "two: 198.51.100.0 and 2001:db8::",
	} {
		if got := AnonymizeText(in); got != want {
			t.Errorf("AnonymizeText(%q)\n = %q\nwant %q", in, got, want)
		}
	}
}
