// Package pushtest runs fake push providers for tests: one HTTP/2 TLS
// server in the test process that speaks the FCM HTTP v1 API (with the
// OAuth token exchange of a service account) and the APNs provider API
// (with ES256 provider tokens), so that the real firebase.google.com/go/v4
// and github.com/sideshow/apns2 clients can be pointed at it. It writes the
// credentials the relay needs (service-account JSON, .p8 key, CA file) into
// a temporary directory and records every request it gets.
package pushtest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Kinds of requests.
const (
	KindOAuth = "oauth" // POST /token
	KindFCM   = "fcm"   // POST /v1/projects/{p}/messages:send
	KindAPNs  = "apns"  // POST /3/device/{token}
)

// Fixed identities of the fake accounts.
const (
	ProjectID   = "kf-test-project"
	ClientEmail = "relay@kf-test-project.iam.gserviceaccount.com"
	KeyID       = "ABC123DEFG"
	TeamID      = "TEAM123456"
	AccessToken = "ya29.test-access-token"
)

// Request is one request the server got.
type Request struct {
	Kind   string
	Proto  int // HTTP major version
	Path   string
	Header http.Header
	Body   []byte
	At     time.Time

	// Of FCM and APNs sends:
	Token   string // the device token
	SID     string
	Blob    string
	Attempt int // 1 for the first request for this token, 2 for the next…
	// FCM only: the message as sent.
	FCM *FCMMessage
	// APNs only: the decoded payload.
	APNs map[string]any
}

// FCMMessage is the part of an FCM v1 message the tests look at.
type FCMMessage struct {
	Token        string            `json:"token"`
	Data         map[string]string `json:"data"`
	Notification json.RawMessage   `json:"notification"`
	Android      *struct {
		Priority    string `json:"priority"`
		TTL         string `json:"ttl"`
		CollapseKey string `json:"collapse_key"`
	} `json:"android"`
}

// Reply is a scripted answer. Nil means success.
type Reply struct {
	Status int
	Header http.Header
	Body   string
}

// Server is a fake FCM + APNs provider.
type Server struct {
	URL string // https://127.0.0.1:port

	// Files in a temporary directory.
	CAFile             string // the server's certificate (PEM)
	ServiceAccountFile string // service-account JSON, token_uri = URL/token
	KeyFile            string // APNs .p8 key
	CertFile           string // APNs client certificate and key (PEM), for certificate auth

	srv    *httptest.Server
	rsaPub *rsa.PublicKey
	ecPub  *ecdsa.PublicKey

	mu      sync.Mutex
	reqs    []Request      // guarded by mu
	counts  map[string]int // guarded by mu: requests per device token
	script  func(*Request) *Reply
	oauth   func(*Request) *Reply // guarded by mu: answers token requests (ScriptOAuth)
	discard bool                  // guarded by mu: keep no requests (benchmarks)
	changed chan struct{}

	sends atomic.Int64 // accepted FCM and APNs sends

	verified sync.Map // provider JWT → its claims, checked once (as APNs does)
	client   []byte   // the DER of the client certificate in CertFile
}

var (
	rsaOnce sync.Once
	rsaKey  *rsa.PrivateKey
)

// New starts a server and writes its credential files; both go away with
// the test.
func New(t testing.TB) *Server {
	t.Helper()
	rsaOnce.Do(func() {
		var err error
		if rsaKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
	})
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{rsaPub: &rsaKey.PublicKey, ecPub: &ec.PublicKey, counts: map[string]int{}, changed: make(chan struct{})}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.srv.EnableHTTP2 = true
	s.srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert} // APNs certificate auth
	s.srv.StartTLS()
	t.Cleanup(s.srv.Close)
	s.URL = s.srv.URL

	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	s.CAFile = write("ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.srv.Certificate().Raw}))
	pk8, err := x509.MarshalPKCS8PrivateKey(rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	sa, _ := json.Marshal(map[string]string{
		"type":           "service_account",
		"project_id":     ProjectID,
		"private_key_id": "key-1",
		"private_key":    string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk8})),
		"client_email":   ClientEmail,
		"client_id":      "1234567890",
		"token_uri":      s.URL + "/token",
	})
	s.ServiceAccountFile = write("service-account.json", sa)
	ec8, err := x509.MarshalPKCS8PrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	s.KeyFile = write("AuthKey_"+KeyID+".p8", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ec8}))
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Apple Push Services: de.klassenfunk.app"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if s.client, err = x509.CreateCertificate(rand.Reader, tmpl, tmpl, &rsaKey.PublicKey, rsaKey); err != nil {
		t.Fatal(err)
	}
	s.CertFile = write("apns-cert.pem", append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.client}),
		pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)})...))
	return s
}

// FCMEndpoint is the base URL to configure (it replaces
// https://fcm.googleapis.com/v1).
func (s *Server) FCMEndpoint() string { return s.URL + "/v1" }

// APNsEndpoint is the host to configure.
func (s *Server) APNsEndpoint() string { return s.URL }

// Script sets the function that answers FCM and APNs sends; a nil reply
// (or a nil function) means success.
func (s *Server) Script(f func(*Request) *Reply) {
	s.mu.Lock()
	s.script = f
	s.mu.Unlock()
}

// ScriptOAuth sets the function that answers OAuth token requests; a nil
// reply (or a nil function) means the real exchange.
func (s *Server) ScriptOAuth(f func(*Request) *Reply) {
	s.mu.Lock()
	s.oauth = f
	s.mu.Unlock()
}

// Discard stops keeping requests (benchmarks); Sends still counts.
func (s *Server) Discard() {
	s.mu.Lock()
	s.discard = true
	s.mu.Unlock()
}

// fast reports whether requests need neither keeping nor scripting
// (benchmarks): then a send is only authenticated and counted.
func (s *Server) fast() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.discard && s.script == nil
}

// Sends is the number of accepted FCM and APNs sends.
func (s *Server) Sends() int64 { return s.sends.Load() }

// Requests returns a copy of every request so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.reqs...)
}

// Pushes returns the FCM and APNs sends so far (accepted or not).
func (s *Server) Pushes() []Request {
	var out []Request
	for _, r := range s.Requests() {
		if r.Kind != KindOAuth {
			out = append(out, r)
		}
	}
	return out
}

// To returns the sends to one device token.
func (s *Server) To(token string) []Request {
	var out []Request
	for _, r := range s.Pushes() {
		if r.Token == token {
			out = append(out, r)
		}
	}
	return out
}

// Wait blocks until cond holds for the requests so far, or fails the test
// after timeout. It wakes on every request, not on a timer.
func (s *Server) Wait(t testing.TB, timeout time.Duration, what string, cond func([]Request) bool) []Request {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		reqs := append([]Request(nil), s.reqs...)
		ch := s.changed
		s.mu.Unlock()
		if cond(reqs) {
			return reqs
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("pushtest: timed out after %v waiting for %s; %d requests", timeout, what, len(reqs))
			return nil
		}
	}
}

// record keeps r (waking Wait) and then asks the script for the answer,
// outside the lock, so that a script may block.
func (s *Server) record(r *Request) *Reply {
	s.mu.Lock()
	if r.Token != "" {
		s.counts[r.Token]++
		r.Attempt = s.counts[r.Token]
	}
	script := s.script
	if !s.discard {
		s.reqs = append(s.reqs, *r)
		close(s.changed)
		s.changed = make(chan struct{})
	}
	s.mu.Unlock()
	if script != nil && r.Kind != KindOAuth {
		return script(r)
	}
	return nil
}

func (s *Server) serve(w http.ResponseWriter, hr *http.Request) {
	if s.fast() && hr.Method == "POST" && s.fastSend(w, hr) {
		return
	}
	body, _ := io.ReadAll(hr.Body)
	r := &Request{Proto: hr.ProtoMajor, Path: hr.URL.Path, Header: hr.Header.Clone(), Body: body, At: time.Now()}
	switch {
	case hr.Method == "POST" && hr.URL.Path == "/token":
		r.Kind = KindOAuth
		s.record(r)
		s.mu.Lock()
		oauth := s.oauth
		s.mu.Unlock()
		if oauth != nil {
			if rep := oauth(r); rep != nil {
				writeJSON(w, rep.Status, rep.Body, rep.Header)
				return
			}
		}
		s.token(w, hr, body)
	case hr.Method == "POST" && hr.URL.Path == "/v1/projects/"+ProjectID+"/messages:send":
		r.Kind = KindFCM
		s.fcm(w, hr, r)
	case hr.Method == "POST" && strings.HasPrefix(hr.URL.Path, "/3/device/"):
		r.Kind = KindAPNs
		s.apns(w, hr, r)
	default:
		http.Error(w, "no such endpoint", http.StatusNotFound)
	}
}

// fastSend answers an authenticated send without keeping anything
// (benchmarks). It reports false for what it leaves to the full path.
func (s *Server) fastSend(w http.ResponseWriter, hr *http.Request) bool {
	switch {
	case hr.URL.Path == "/v1/projects/"+ProjectID+"/messages:send":
		if hr.Header.Get("Authorization") != "Bearer "+AccessToken {
			return false
		}
		io.Copy(io.Discard, hr.Body)
		s.sends.Add(1)
		writeJSON(w, http.StatusOK, `{"name":"projects/`+ProjectID+`/messages/1"}`, nil)
		return true
	case strings.HasPrefix(hr.URL.Path, "/3/device/"):
		jwt := strings.TrimPrefix(hr.Header.Get("Authorization"), "bearer ")
		if _, ok := s.verified.Load(jwt); !ok {
			return false
		}
		io.Copy(io.Discard, hr.Body)
		s.sends.Add(1)
		w.Header().Set("apns-id", "A1B2C3D4-0000-0000-0000-000000000001")
		w.WriteHeader(http.StatusOK)
		return true
	}
	return false
}

// token is the OAuth 2.0 JWT-bearer exchange of a service account.
func (s *Server) token(w http.ResponseWriter, hr *http.Request, body []byte) {
	hr.Body = io.NopCloser(strings.NewReader(string(body)))
	if err := hr.ParseForm(); err != nil || hr.PostForm.Get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
		writeJSON(w, http.StatusBadRequest, `{"error":"unsupported_grant_type"}`, nil)
		return
	}
	claims, err := verifyJWT(hr.PostForm.Get("assertion"), "RS256", func(h, sig []byte) bool {
		return rsa.VerifyPKCS1v15(s.rsaPub, crypto.SHA256, h, sig) == nil
	})
	if err != nil || claims["iss"] != ClientEmail || claims["aud"] != s.URL+"/token" ||
		!strings.Contains(fmt.Sprint(claims["scope"]), "firebase.messaging") {
		writeJSON(w, http.StatusBadRequest, `{"error":"invalid_grant","error_description":"bad assertion"}`, nil)
		return
	}
	writeJSON(w, http.StatusOK, `{"access_token":"`+AccessToken+`","expires_in":3600,"token_type":"Bearer"}`, nil)
}

func (s *Server) fcm(w http.ResponseWriter, hr *http.Request, r *Request) {
	var req struct {
		Message *FCMMessage `json:"message"`
	}
	if hr.Header.Get("Authorization") != "Bearer "+AccessToken {
		s.record(r)
		writeJSON(w, http.StatusUnauthorized, fcmErrorBody(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.", ""), nil)
		return
	}
	if json.Unmarshal(r.Body, &req) != nil || req.Message == nil || req.Message.Token == "" {
		s.record(r)
		writeJSON(w, http.StatusBadRequest, fcmErrorBody(400, "INVALID_ARGUMENT", "bad message", "INVALID_ARGUMENT"), nil)
		return
	}
	r.FCM = req.Message
	r.Token, r.SID, r.Blob = req.Message.Token, req.Message.Data["sid"], req.Message.Data["p"]
	if rep := s.record(r); rep != nil {
		writeJSON(w, rep.Status, rep.Body, rep.Header)
		return
	}
	s.sends.Add(1)
	writeJSON(w, http.StatusOK, fmt.Sprintf(`{"name":"projects/%s/messages/%d"}`, ProjectID, time.Now().UnixNano()), nil)
}

func (s *Server) apns(w http.ResponseWriter, hr *http.Request, r *Request) {
	r.Token = strings.TrimPrefix(hr.URL.Path, "/3/device/")
	jwt := strings.TrimPrefix(strings.TrimPrefix(hr.Header.Get("Authorization"), "bearer "), "Bearer ")
	var claims map[string]any
	var err error
	if jwt == "" && hr.TLS != nil && len(hr.TLS.PeerCertificates) > 0 && bytes.Equal(hr.TLS.PeerCertificates[0].Raw, s.client) {
		claims = map[string]any{"iss": TeamID, "_kid": KeyID} // certificate auth
	} else if c, ok := s.verified.Load(jwt); ok {
		claims = c.(map[string]any)
	} else {
		claims, err = verifyJWT(jwt, "ES256", func(h, sig []byte) bool {
			if len(sig) != 64 {
				return false
			}
			return ecdsa.Verify(s.ecPub, h, new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:]))
		})
		if err == nil {
			s.verified.Store(jwt, claims)
		}
	}
	if err != nil || claims["iss"] != TeamID || claims["_kid"] != KeyID {
		s.record(r)
		writeJSON(w, http.StatusForbidden, `{"reason":"InvalidProviderToken"}`, nil)
		return
	}
	if json.Unmarshal(r.Body, &r.APNs) != nil {
		s.record(r)
		writeJSON(w, http.StatusBadRequest, `{"reason":"PayloadEmpty"}`, nil)
		return
	}
	r.SID, _ = r.APNs["sid"].(string)
	r.Blob, _ = r.APNs["p"].(string)
	if rep := s.record(r); rep != nil {
		writeJSON(w, rep.Status, rep.Body, rep.Header)
		return
	}
	s.sends.Add(1)
	w.Header().Set("apns-id", "A1B2C3D4-0000-0000-0000-000000000001")
	w.WriteHeader(http.StatusOK)
}

func writeJSON(w http.ResponseWriter, status int, body string, h http.Header) {
	for k, vs := range h {
		w.Header()[k] = vs
	}
	if body != "" {
		w.Header().Set("Content-Type", "application/json")
	}
	w.WriteHeader(status)
	io.WriteString(w, body)
}

// verifyJWT checks a compact JWS with alg and returns its claims; the
// header's kid is returned as the claim "_kid".
func verifyJWT(tok, alg string, verify func(hash, sig []byte) bool) (map[string]any, error) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("not a JWT")
	}
	var hdr struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
	}
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil || json.Unmarshal(hb, &hdr) != nil || hdr.Alg != alg {
		return nil, fmt.Errorf("bad JWT header")
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return nil, err
	}
	h := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if !verify(h[:], sig) {
		return nil, fmt.Errorf("bad JWT signature")
	}
	cb, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, err
	}
	claims := map[string]any{}
	if err := json.Unmarshal(cb, &claims); err != nil {
		return nil, err
	}
	claims["_kid"] = hdr.Kid
	return claims, nil
}

func fcmErrorBody(code int, status, msg, fcmCode string) string {
	details := ""
	if fcmCode != "" {
		details = `,"details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"` + fcmCode + `"}]`
	}
	return fmt.Sprintf(`{"error":{"code":%d,"message":%q,"status":%q%s}}`, code, msg, status, details)
}

// FCMUnregistered is FCM's answer for a token that is no longer valid.
func FCMUnregistered() *Reply {
	return &Reply{Status: 404, Body: fcmErrorBody(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")}
}

// FCMInvalidToken is FCM's answer for a malformed token.
func FCMInvalidToken() *Reply {
	return &Reply{Status: 400, Body: `{"error":{"code":400,"message":"The registration token is not a valid FCM registration token","status":"INVALID_ARGUMENT","details":[` +
		`{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"INVALID_ARGUMENT"},` +
		`{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"field":"message.token","description":"Invalid registration token"}]}]}}`}
}

// FCMError is an FCM error answer; retryAfter "" sends no Retry-After.
func FCMError(status int, code, retryAfter string) *Reply {
	r := &Reply{Status: status, Body: fcmErrorBody(status, code, "error "+code, code)}
	if retryAfter != "" {
		r.Header = http.Header{"Retry-After": {retryAfter}}
	}
	return r
}

// APNsError is an APNs error answer; retryAfter "" sends no Retry-After.
func APNsError(status int, reason, retryAfter string) *Reply {
	r := &Reply{Status: status, Body: `{"reason":"` + reason + `"}`}
	if status == http.StatusGone {
		r.Body = `{"reason":"` + reason + `","timestamp":1700000000000}`
	}
	if retryAfter != "" {
		r.Header = http.Header{"Retry-After": {retryAfter}}
	}
	return r
}
