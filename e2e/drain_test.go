package e2e_test

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDrainDelay: with KLASSENFUNK_DRAIN_DELAY a node told to stop keeps
// its listener open for that long: /readyz is unready, a WebSocket upgrade
// gets 429 with Retry-After: 1 (docs/api.md), other requests are served;
// then the node stops, or at once on a second signal.
func TestDrainDelay(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	tmp := t.TempDir()
	serverBin, _ := buildBinaries(t, ctx, filepath.Join(tmp, "bin"))
	env := append(baseEnv(filepath.Join(tmp, "home")), "KLASSENFUNK_DATA="+filepath.Join(tmp, "data"),
		"KLASSENFUNK_OPERATOR_TOKEN="+operatorToken, "KLASSENFUNK_LISTEN=127.0.0.1:0", "KLASSENFUNK_DRAIN_DELAY=1m")
	srv := startProc(t, ctx, "klassenfunk serve", env, serverBin, "serve")
	base := "http://" + serving(t, srv)

	srv.signal(syscall.SIGTERM)
	srv.waitLine(srv.stderr, 20*time.Second, "the drain's log line", func(l string) bool { return strings.Contains(l, "the listener stays open") })
	get := func(path string, hdr map[string]string) *http.Response {
		t.Helper()
		req, err := http.NewRequest("GET", base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET %s while draining: %v", path, err)
		}
		resp.Body.Close()
		return resp
	}
	if r := get("/readyz", nil); r.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz while draining: %d, want 503", r.StatusCode)
	}
	if r := get("/healthz", nil); r.StatusCode != http.StatusOK {
		t.Errorf("/healthz while draining: %d, want 200", r.StatusCode)
	}
	ws := map[string]string{"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
	if r := get("/api/v1/ws", ws); r.StatusCode != http.StatusTooManyRequests || r.Header.Get("Retry-After") != "1" {
		t.Errorf("WebSocket upgrade while draining: %d, Retry-After %q; want 429 and 1", r.StatusCode, r.Header.Get("Retry-After"))
	}
	// The delay (a minute) is cut short by a second signal.
	if err := srv.stop(20 * time.Second); err != nil {
		t.Errorf("serve exited with %v", err)
	}
	srv.waitLine(srv.stderr, time.Second, "the log line of the second signal", func(l string) bool { return strings.Contains(l, "cut short") })
}
