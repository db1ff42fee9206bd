// Package testenv starts real Klassenfunk nodes for tests: the real server
// (real handlers, real bbolt file in a temporary directory) behind an
// httptest server, with a controllable clock, and small HTTP and WebSocket
// clients that speak API.md.
package testenv

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"klassenfunk/auth"
	"klassenfunk/server"
)

// OperatorToken is the operator token of every test node.
const OperatorToken = "kfop_test-operator-token"

// Clock is a settable clock, safe for concurrent use.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a clock at a fixed point in time.
func NewClock() *Clock { return &Clock{t: time.Date(2026, 9, 1, 8, 0, 0, 0, time.UTC)} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock on.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// Env is one running test node.
type Env struct {
	T     testing.TB
	Srv   *server.Server
	HTTP  *httptest.Server
	URL   string // base URL, no trailing slash
	Clock *Clock
	logs  *lockedBuffer
}

// Logs returns everything the node has logged so far (JSON lines).
func (e *Env) Logs() string {
	e.logs.mu.Lock()
	defer e.logs.mu.Unlock()
	return e.logs.buf.String()
}

// Remote returns an Env for a server that runs elsewhere (a subprocess
// listening at url): only its request and WebSocket helpers work.
func Remote(t testing.TB, url string) *Env { return &Env{T: t, URL: url} }

// Option changes the configuration of a test node.
type Option func(*server.Config)

// New starts a node with fast Argon2 parameters, fsync off unless an
// option turns it on, and a fixed clock. It is closed with the test.
func New(t testing.TB, opts ...Option) *Env {
	t.Helper()
	clock := NewClock()
	cfg := server.Config{
		DataDir:       t.TempDir(),
		OperatorToken: OperatorToken,
		NoSync:        true,
		LogFormat:     "json",
		Now:           clock.Now,
	}
	cfg.Auth.Argon2 = auth.Argon2Params{Memory: 64, Time: 1, Threads: 1}
	for _, o := range opts {
		o(&cfg)
	}
	logs := &lockedBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, err := server.New(context.Background(), cfg, log)
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	hs := httptest.NewServer(srv.Handler())
	e := &Env{T: t, Srv: srv, HTTP: hs, URL: hs.URL, Clock: clock, logs: logs}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Drain(ctx)
		hs.Close()
		if err := srv.Close(); err != nil {
			t.Errorf("server close: %v", err)
		}
	})
	return e
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// Response is a finished HTTP exchange.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// ErrorCode returns the API error code of the body, or "".
func (r Response) ErrorCode() string {
	var e struct {
		Error struct{ Code string } `json:"error"`
	}
	json.Unmarshal(r.Body, &e)
	return e.Error.Code
}

// Do sends a request. body may be nil, a []byte / string (sent as is) or
// anything else (sent as JSON). token "" sends no Authorization header.
func (e *Env) Do(method, path, token string, body any) Response {
	e.T.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.T.Fatalf("marshal: %v", err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, e.URL+path, rd)
	if err != nil {
		e.T.Fatalf("request: %v", err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.T.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.T.Fatalf("read body: %v", err)
	}
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// JSON sends a request, checks the status and decodes the body into out
// (when out is not nil).
func (e *Env) JSON(method, path, token string, body any, wantStatus int, out any) Response {
	e.T.Helper()
	r := e.Do(method, path, token, body)
	if r.Status != wantStatus {
		e.T.Fatalf("%s %s: status %d, want %d; body %s", method, path, r.Status, wantStatus, r.Body)
	}
	if out != nil {
		if err := json.Unmarshal(r.Body, out); err != nil {
			e.T.Fatalf("%s %s: decode %s: %v", method, path, r.Body, err)
		}
	}
	return r
}

// ClientHash is the test stand-in for the client's PBKDF2 (the server
// cannot tell): 32 bytes derived from the password, base64.
func ClientHash(password string) string {
	h := sha256.Sum256([]byte("test/" + password))
	return base64.StdEncoding.EncodeToString(h[:])
}

// Password is the password the helpers give every user.
func Password(login string) string { return "pw-" + login }

// CreateSchool creates a school through the operator API.
func (e *Env) CreateSchool(name string) string {
	e.T.Helper()
	var out struct{ ID string }
	e.JSON("POST", "/api/v1/schools", OperatorToken, map[string]string{"name": name}, http.StatusCreated, &out)
	return out.ID
}

// CreateUser creates a user with password Password(login).
func (e *Env) CreateUser(school, login, role string) string {
	e.T.Helper()
	var out struct{ ID string }
	e.JSON("POST", "/api/v1/schools/"+school+"/users", OperatorToken, map[string]string{
		"login": login, "display_name": strings.ToUpper(login[:1]) + login[1:], "role": role,
		"client_hash": ClientHash(Password(login)),
	}, http.StatusCreated, &out)
	return out.ID
}

// Login logs a device in and returns the token and (for personal devices)
// the trust id.
func (e *Env) Login(login, deviceID string, personal bool) (token, trustID string) {
	e.T.Helper()
	var out struct {
		Credential struct{ Token string }
		TrustID    string `json:"trust_id"`
	}
	e.JSON("POST", "/api/v1/login", "", LoginBody(login, deviceID, personal), http.StatusOK, &out)
	return out.Credential.Token, out.TrustID
}

// LoginBody is a valid login request.
func LoginBody(login, deviceID string, personal bool) map[string]any {
	return map[string]any{
		"login": login, "client_hash": ClientHash(Password(login)),
		"device": map[string]any{"id": deviceID, "name": deviceID + " phone", "os": "android", "personal": personal},
	}
}
