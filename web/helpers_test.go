package web_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"klassenfunk/auth"
	"klassenfunk/internal/testenv"
)

// The browser derives client_hash with the real PBKDF2 of API.md, so the
// users of these tests are created with it too (testenv's stand-in hash
// would not match what the page sends).

var hashes sync.Map // login+"\x00"+password → base64 client_hash

func clientHash(login, password string) string {
	key := login + "\x00" + password
	if v, ok := hashes.Load(key); ok {
		return v.(string)
	}
	h := base64.StdEncoding.EncodeToString(auth.ClientHash(login, password))
	hashes.Store(key, h)
	return h
}

// password is the password of every user of these tests.
func password(login string) string { return "Kreide&Tafel-" + login }

// fixture is a node with one school and one user with two personal devices.
type fixture struct {
	t      *testing.T
	e      *testenv.Env
	school string
	login  string // the user's login
	userID string
	phone  device // personal, has an open WebSocket in the browser tests
	tablet device // personal
}

type device struct {
	id, name, os   string
	token, trustID string
}

func newFixture(t *testing.T, opts ...testenv.Option) *fixture {
	t.Helper()
	e := testenv.New(t, opts...)
	f := &fixture{t: t, e: e, login: "frau.meyer"}
	f.school = e.CreateSchool("Gymnasium Musterstadt")
	f.userID = f.createUser(f.login, "Frau Meyer", "teacher")
	f.phone = f.loginDevice(f.login, device{id: "pixel-8", name: "Pixel 8", os: "android"})
	f.tablet = f.loginDevice(f.login, device{id: "ipad-7b", name: "iPad", os: "ios"})
	return f
}

// createUser creates a user whose client_hash is the real PBKDF2 of
// password(login).
func (f *fixture) createUser(login, name, role string) string {
	f.t.Helper()
	var out struct{ ID string }
	f.e.JSON("POST", "/api/v1/schools/"+f.school+"/users", testenv.OperatorToken, map[string]string{
		"login": login, "display_name": name, "role": role, "client_hash": clientHash(login, password(login)),
	}, http.StatusCreated, &out)
	return out.ID
}

// loginDevice logs a personal device in through the API.
func (f *fixture) loginDevice(login string, d device) device {
	f.t.Helper()
	var out struct {
		Credential struct{ Token string }
		TrustID    string `json:"trust_id"`
	}
	f.e.JSON("POST", "/api/v1/login", "", map[string]any{
		"login": login, "client_hash": clientHash(login, password(login)),
		"device": map[string]any{"id": d.id, "name": d.name, "os": d.os, "personal": true},
	}, http.StatusOK, &out)
	d.token, d.trustID = out.Credential.Token, out.TrustID
	return d
}

// trusts lists the user's trust relationships as seen with token.
func (f *fixture) trusts(token string) []auth.TrustInfo {
	f.t.Helper()
	var out []auth.TrustInfo
	f.e.JSON("GET", "/api/v1/trust", token, nil, http.StatusOK, &out)
	return out
}

// request is one plain HTTP request of the cookie and CSRF tests.
type request struct {
	method, path string
	body         any // JSON unless a string
	header       map[string]string
	cookie       *http.Cookie
	host         string // overrides the Host header
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) code() string {
	var e struct {
		Error struct{ Code string } `json:"error"`
	}
	json.Unmarshal(r.body, &e)
	return e.Error.Code
}

// cookie returns the Set-Cookie of name, or nil.
func (r response) cookie(name string) *http.Cookie {
	for _, c := range (&http.Response{Header: r.header}).Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func do(t *testing.T, base string, client *http.Client, q request) response {
	t.Helper()
	var rd io.Reader
	switch b := q.body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(q.method, base+q.path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if q.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range q.header {
		req.Header.Set(k, v)
	}
	if q.cookie != nil {
		req.AddCookie(q.cookie)
	}
	if q.host != "" {
		req.Host = q.host
	}
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", q.method, q.path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// sameOrigin are the headers the settings page's script sends.
func sameOrigin(origin string) map[string]string {
	return map[string]string{"Origin": origin, auth.CSRFHeader: "1"}
}

// cookieLogin logs the user in as the page does and returns the session
// cookie.
func (f *fixture) cookieLogin(login string) *http.Cookie {
	f.t.Helper()
	r := do(f.t, f.e.URL, nil, request{
		method: "POST", path: "/settings/login", header: sameOrigin(f.e.URL),
		body: map[string]string{"login": login, "client_hash": clientHash(login, password(login)), "device_id": "web-test"},
	})
	if r.status != http.StatusOK {
		f.t.Fatalf("cookie login: %d %s", r.status, r.body)
	}
	c := r.cookie(auth.SessionCookie)
	if c == nil || c.Value == "" {
		f.t.Fatalf("cookie login set no %s cookie: %v", auth.SessionCookie, r.header.Values("Set-Cookie"))
	}
	return &http.Cookie{Name: c.Name, Value: c.Value}
}
