package httpapi

import (
	"crypto/tls"
	"net/http/httptest"
	"net/netip"
	"testing"
)

func TestOrigin(t *testing.T) {
	proxy := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	tests := map[string]struct {
		remote, host string
		tls          bool
		header       map[string]string
		trusted      []netip.Prefix
		want         string
	}{
		"plain":               {remote: "192.0.2.1:5000", host: "127.0.0.1:8080", want: "http://127.0.0.1:8080"},
		"tls":                 {remote: "192.0.2.1:5000", host: "kf.example", tls: true, want: "https://kf.example"},
		"tls default port":    {remote: "192.0.2.1:5000", host: "kf.example:443", tls: true, want: "https://kf.example"},
		"http default port":   {remote: "192.0.2.1:5000", host: "KF.example:80", want: "http://kf.example"},
		"tls other port":      {remote: "192.0.2.1:5000", host: "kf.example:8443", tls: true, want: "https://kf.example:8443"},
		"ipv6 default port":   {remote: "192.0.2.1:5000", host: "[::1]:80", want: "http://[::1]"},
		"untrusted forwarded": {remote: "192.0.2.1:5000", host: "inner:8080", header: map[string]string{"X-Forwarded-Proto": "https", "X-Forwarded-Host": "kf.example"}, trusted: proxy, want: "http://inner:8080"},
		"trusted forwarded":   {remote: "10.1.2.3:5000", host: "inner:8080", header: map[string]string{"X-Forwarded-Proto": "https", "X-Forwarded-Host": "kf.example"}, trusted: proxy, want: "https://kf.example"},
		"trusted, last wins":  {remote: "10.1.2.3:5000", host: "inner:8080", header: map[string]string{"X-Forwarded-Proto": "https, http"}, trusted: proxy, want: "http://inner:8080"},
		"trusted, no header":  {remote: "10.1.2.3:5000", host: "inner:8080", trusted: proxy, want: "http://inner:8080"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr, r.Host = tc.remote, tc.host
			if tc.tls {
				r.TLS = &tls.ConnectionState{}
			}
			for k, v := range tc.header {
				r.Header.Set(k, v)
			}
			if got := Origin(r, tc.trusted); got != tc.want {
				t.Errorf("Origin = %q, want %q", got, tc.want)
			}
		})
	}
}
