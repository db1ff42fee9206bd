package web_test

import (
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"html"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"klassenfunk/auth"
	"klassenfunk/internal/testenv"
	"klassenfunk/server"
	"klassenfunk/web"
)

// wantHeaders are the security headers of every response of the page.
var wantHeaders = map[string]string{
	"Content-Security-Policy":      web.ContentSecurityPolicy,
	"X-Frame-Options":              "DENY",
	"Referrer-Policy":              "no-referrer",
	"X-Content-Type-Options":       "nosniff",
	"Permissions-Policy":           web.PermissionsPolicy,
	"Cross-Origin-Opener-Policy":   "same-origin",
	"Cross-Origin-Resource-Policy": "same-origin",
}

func checkSecurityHeaders(t *testing.T, what string, h http.Header, tls bool) {
	t.Helper()
	for k, v := range wantHeaders {
		if got := h.Get(k); got != v {
			t.Errorf("%s: %s = %q, want %q", what, k, got, v)
		}
	}
	hsts := h.Get("Strict-Transport-Security")
	switch {
	case tls && hsts != web.HSTS:
		t.Errorf("%s over HTTPS: Strict-Transport-Security = %q, want %q", what, hsts, web.HSTS)
	case !tls && hsts != "":
		t.Errorf("%s over plain HTTP: Strict-Transport-Security = %q, want none", what, hsts)
	}
}

func TestContentSecurityPolicy(t *testing.T) {
	csp := web.ContentSecurityPolicy
	for _, bad := range []string{"unsafe-inline", "unsafe-eval", "*", "http:", "https:"} {
		if strings.Contains(csp, bad) {
			t.Errorf("CSP contains %q: %s", bad, csp)
		}
	}
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'", "base-uri 'none'", "form-action 'self'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP lacks %q: %s", want, csp)
		}
	}
}

var (
	assetRef = regexp.MustCompile(`(?:src|href)="(/settings/assets/[^"]+)" integrity="([^"]+)"`)
	external = regexp.MustCompile(`(?i)(?:src|href|action)\s*=\s*"(?:https?:)?//`)
)

func TestPageAndAssets(t *testing.T) {
	e := testenv.New(t)
	r := do(t, e.URL, nil, request{method: "GET", path: "/settings"})
	if r.status != http.StatusOK {
		t.Fatalf("GET /settings: %d", r.status)
	}
	checkSecurityHeaders(t, "page", r.header, false)
	if ct := r.header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("page Content-Type %q", ct)
	}
	if cc := r.header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("page Cache-Control %q, want no-store", cc)
	}
	page := string(r.body)

	// No inline code or style, nothing from elsewhere.
	for name, re := range map[string]*regexp.Regexp{
		"inline script":      regexp.MustCompile(`<script(?:\s[^>]*)?>\s*[^<\s]`),
		"script without src": regexp.MustCompile(`<script(?:(?:\s(?:integrity|defer|type)(?:="[^"]*")?)*)>`),
		"style element":      regexp.MustCompile(`(?i)<style`),
		"style attribute":    regexp.MustCompile(`(?i)\sstyle\s*=`),
		"event handler":      regexp.MustCompile(`(?i)\son[a-z]+\s*=`),
		"javascript: URL":    regexp.MustCompile(`(?i)javascript:`),
		"external resource":  external,
	} {
		if m := re.FindString(page); m != "" {
			t.Errorf("page has %s: %q", name, m)
		}
	}

	refs := assetRef.FindAllStringSubmatch(page, -1)
	if len(refs) != 2 {
		t.Fatalf("page references %d assets with integrity, want 2 (script, style sheet)", len(refs))
	}
	for _, ref := range refs {
		path, integrity := ref[1], html.UnescapeString(ref[2])
		a := do(t, e.URL, nil, request{method: "GET", path: path})
		if a.status != http.StatusOK {
			t.Fatalf("GET %s: %d", path, a.status)
		}
		checkSecurityHeaders(t, path, a.header, false)
		sum := sha512.Sum384(a.body)
		if want := "sha384-" + base64.StdEncoding.EncodeToString(sum[:]); integrity != want {
			t.Errorf("%s: integrity %q, body hashes to %q", path, integrity, want)
		}
		ct := a.header.Get("Content-Type")
		switch {
		case strings.HasSuffix(path, ".js") && !strings.HasPrefix(ct, "text/javascript"),
			strings.HasSuffix(path, ".css") && !strings.HasPrefix(ct, "text/css"):
			t.Errorf("%s: Content-Type %q", path, ct)
		}
		if !strings.Contains(a.header.Get("Cache-Control"), "immutable") {
			t.Errorf("%s: Cache-Control %q, want a long-lived immutable asset", path, a.header.Get("Cache-Control"))
		}
		if m := external.FindString(string(a.body)); m != "" || strings.Contains(string(a.body), "@import") {
			t.Errorf("%s loads something from elsewhere: %q", path, m)
		}
		if strings.HasSuffix(path, ".js") {
			for _, sink := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"} {
				if strings.Contains(string(a.body), sink) {
					t.Errorf("script uses %s", sink)
				}
			}
		}
	}

	for _, path := range []string{"/settings/assets/app.js", "/settings/assets/nope.css", "/settings/assets/..%2fweb.go"} {
		if a := do(t, e.URL, nil, request{method: "GET", path: path}); a.status != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", path, a.status)
		}
	}
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if a := do(t, e.URL, noRedirect, request{method: "GET", path: "/settings/"}); a.status != http.StatusMovedPermanently || a.header.Get("Location") != "/settings" {
		t.Errorf("GET /settings/: %d Location %q, want a redirect to /settings", a.status, a.header.Get("Location"))
	}
}

// TestHSTS: Strict-Transport-Security only over HTTPS: TLS on the
// connection, or X-Forwarded-Proto: https from a trusted proxy (and only
// from one).
func TestHSTS(t *testing.T) {
	e := testenv.New(t)
	ts := httptest.NewTLSServer(e.Srv.Handler())
	defer ts.Close()
	r := do(t, ts.URL, ts.Client(), request{method: "GET", path: "/settings"})
	checkSecurityHeaders(t, "page over TLS", r.header, true)

	r = do(t, e.URL, nil, request{method: "GET", path: "/settings", header: map[string]string{"X-Forwarded-Proto": "https"}})
	checkSecurityHeaders(t, "X-Forwarded-Proto from an untrusted peer", r.header, false)

	p := testenv.New(t, func(c *server.Config) { c.TrustedProxies = []string{"127.0.0.1"} })
	r = do(t, p.URL, nil, request{method: "GET", path: "/settings", header: map[string]string{"X-Forwarded-Proto": "https"}})
	checkSecurityHeaders(t, "X-Forwarded-Proto from a trusted proxy", r.header, true)
}

func TestCookieLogin(t *testing.T) {
	f := newFixture(t)
	body := map[string]string{"login": f.login, "client_hash": clientHash(f.login, password(f.login)), "device_id": "web-abc"}
	login := func(base string, client *http.Client, hdr map[string]string, host string) response {
		return do(t, base, client, request{method: "POST", path: "/settings/login", header: hdr, body: body, host: host})
	}

	r := login(f.e.URL, nil, sameOrigin(f.e.URL), "")
	if r.status != http.StatusOK {
		t.Fatalf("login: %d %s", r.status, r.body)
	}
	checkSecurityHeaders(t, "login", r.header, false)
	c := r.cookie(auth.SessionCookie)
	if c == nil {
		t.Fatalf("no session cookie: %q", r.header.Values("Set-Cookie"))
	}
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.Domain != "" {
		t.Errorf("cookie %q: want HttpOnly, SameSite=Strict, Path=/, no Domain", r.header.Get("Set-Cookie"))
	}
	if !c.Secure {
		t.Errorf("cookie %q on plain HTTP to 127.0.0.1: want Secure (API.md; browsers keep it on loopback)", r.header.Get("Set-Cookie"))
	}
	if strings.Contains(string(r.body), c.Value) || strings.Contains(string(r.body), "kf1_") {
		t.Errorf("the login answer shows the token to the script: %s", r.body)
	}
	if r.header.Get("Cache-Control") != "no-store" {
		t.Errorf("login answer Cache-Control %q", r.header.Get("Cache-Control"))
	}
	session := &http.Cookie{Name: c.Name, Value: c.Value}

	// The cookie authenticates the API; a session lists in no trust list
	// and is current in none.
	var me auth.UserView
	if r := do(t, f.e.URL, nil, request{method: "GET", path: "/api/v1/me", cookie: session}); r.status != http.StatusOK {
		t.Fatalf("GET /me with the cookie: %d %s", r.status, r.body)
	} else if err := json.Unmarshal(r.body, &me); err != nil || me.Login != f.login {
		t.Fatalf("GET /me with the cookie: %s", r.body)
	}
	r = do(t, f.e.URL, nil, request{method: "GET", path: "/api/v1/trust", cookie: session})
	var trusts []auth.TrustInfo
	if err := json.Unmarshal(r.body, &trusts); err != nil || len(trusts) != 2 {
		t.Fatalf("GET /trust with the cookie: %d %s", r.status, r.body)
	}
	for _, tr := range trusts {
		if tr.Current || tr.OS == "web" {
			t.Errorf("trust list shows the web session: %+v", tr)
		}
	}
	// It is a session: no push.
	if r := do(t, f.e.URL, nil, request{method: "PUT", path: "/api/v1/push", cookie: session, header: sameOrigin(f.e.URL),
		body: map[string]string{"provider": "fcm", "token": "x"}}); r.status != http.StatusForbidden && r.status != http.StatusNotFound {
		t.Errorf("PUT /push with the web session: %d %s, want 403", r.status, r.body)
	}
	// The login is in the history as "Browser".
	var logins []struct {
		DeviceName string `json:"device_name"`
	}
	f.e.JSON("GET", "/api/v1/me/logins", f.phone.token, nil, http.StatusOK, &logins)
	if len(logins) == 0 || logins[0].DeviceName != auth.WebDeviceName {
		t.Errorf("newest login %+v, want the browser", logins)
	}

	// Login CSRF: the login itself needs the page's headers.
	for name, hdr := range map[string]map[string]string{
		"no CSRF header":   {"Origin": f.e.URL},
		"foreign origin":   sameOrigin("https://evil.example"),
		"no origin":        {auth.CSRFHeader: "1"},
		"cross-site fetch": {"Origin": f.e.URL, auth.CSRFHeader: "1", "Sec-Fetch-Site": "cross-site"},
	} {
		if r := login(f.e.URL, nil, hdr, ""); r.status != http.StatusForbidden || r.cookie(auth.SessionCookie) != nil {
			t.Errorf("login with %s: %d, want 403 and no cookie", name, r.status)
		}
	}
	// Wrong password: 401, no cookie.
	bad := do(t, f.e.URL, nil, request{method: "POST", path: "/settings/login", header: sameOrigin(f.e.URL),
		body: map[string]string{"login": f.login, "client_hash": clientHash(f.login, "wrong"), "device_id": "web-abc"}})
	if bad.status != http.StatusUnauthorized || bad.cookie(auth.SessionCookie) != nil {
		t.Errorf("wrong password: %d, want 401 and no cookie", bad.status)
	}

	// Secure over TLS and on plain HTTP to any name as well.
	ts := httptest.NewTLSServer(f.e.Srv.Handler())
	defer ts.Close()
	if r := login(ts.URL, ts.Client(), sameOrigin(ts.URL), ""); r.status != http.StatusOK || !r.cookie(auth.SessionCookie).Secure {
		t.Errorf("login over TLS: %d, cookie %q, want Secure", r.status, r.header.Get("Set-Cookie"))
	}
	if r := login(f.e.URL, nil, sameOrigin("http://klassenfunk.example"), "klassenfunk.example"); r.status != http.StatusOK || !r.cookie(auth.SessionCookie).Secure {
		t.Errorf("login on plain HTTP to a public name: %d, cookie %q, want Secure", r.status, r.header.Get("Set-Cookie"))
	}

	// Logout deletes the session and clears the cookie.
	if r := do(t, f.e.URL, nil, request{method: "POST", path: "/settings/logout", cookie: session}); r.status != http.StatusForbidden {
		t.Errorf("logout without the CSRF header: %d, want 403", r.status)
	}
	r = do(t, f.e.URL, nil, request{method: "POST", path: "/settings/logout", cookie: session, header: sameOrigin(f.e.URL)})
	if r.status != http.StatusNoContent {
		t.Fatalf("logout: %d %s", r.status, r.body)
	}
	if c := r.cookie(auth.SessionCookie); c == nil || c.MaxAge >= 0 || c.Value != "" {
		t.Errorf("logout does not clear the cookie: %q", r.header.Get("Set-Cookie"))
	}
	if r := do(t, f.e.URL, nil, request{method: "GET", path: "/api/v1/me", cookie: session}); r.status != http.StatusUnauthorized {
		t.Errorf("GET /me after logout: %d, want 401", r.status)
	}
}

// TestCSRF: a cookie-authenticated state change needs the page's Origin and
// the CSRF header; safe methods and bearer tokens need neither.
func TestCSRF(t *testing.T) {
	f := newFixture(t)
	session := f.cookieLogin(f.login)
	origin := f.e.URL
	target := "/api/v1/trust/" + f.tablet.trustID + "/push"

	refused := map[string]request{
		"foreign origin": {header: sameOrigin("https://evil.example")},
		"foreign port":   {header: sameOrigin(strings.Replace(origin, "127.0.0.1:", "127.0.0.1:1", 1))},
		"other scheme":   {header: sameOrigin(strings.Replace(origin, "http:", "https:", 1))},
		"null origin":    {header: sameOrigin("null")},
		"no origin":      {header: map[string]string{auth.CSRFHeader: "1"}},
		"no CSRF header": {header: map[string]string{"Origin": origin}},
		"wrong CSRF":     {header: map[string]string{"Origin": origin, auth.CSRFHeader: "yes"}},
		"cross-site":     {header: map[string]string{"Origin": origin, auth.CSRFHeader: "1", "Sec-Fetch-Site": "cross-site"}},
		"same-site":      {header: map[string]string{"Origin": origin, auth.CSRFHeader: "1", "Sec-Fetch-Site": "same-site"}},
		// What a cross-site HTML form can send.
		"form post": {body: "client_hash=x", header: map[string]string{"Origin": "https://evil.example", "Content-Type": "application/x-www-form-urlencoded"}},
	}
	for name, q := range refused {
		for _, m := range []struct{ method, path string }{
			{"DELETE", target},
			{"DELETE", "/api/v1/trust/" + f.phone.trustID},
			{"POST", "/api/v1/logout"},
			{"PUT", "/api/v1/me/countries"},
			{"POST", "/api/v1/me/erase"},
		} {
			q := q
			q.method, q.path, q.cookie = m.method, m.path, session
			if r := do(t, f.e.URL, nil, q); r.status != http.StatusForbidden || r.code() != "forbidden" {
				t.Errorf("%s: %s %s: %d %s, want 403 forbidden", name, m.method, m.path, r.status, r.body)
			}
		}
	}
	if n := len(f.trusts(f.phone.token)); n != 2 {
		t.Fatalf("refused requests changed something: %d trust relationships", n)
	}
	if r := do(t, f.e.URL, nil, request{method: "GET", path: "/api/v1/me", cookie: session}); r.status != http.StatusOK {
		t.Fatalf("refused requests ended the session: %d", r.status)
	}

	// Safe methods need no CSRF header.
	if r := do(t, f.e.URL, nil, request{method: "GET", path: "/api/v1/trust", cookie: session}); r.status != http.StatusOK {
		t.Errorf("GET /trust with the cookie only: %d", r.status)
	}
	// The page's own request passes.
	if r := do(t, f.e.URL, nil, request{method: "DELETE", path: target, cookie: session, header: sameOrigin(origin)}); r.status != http.StatusNoContent {
		t.Errorf("same-origin DELETE: %d %s", r.status, r.body)
	}
	if r := do(t, f.e.URL, nil, request{method: "DELETE", path: target, cookie: session,
		header: map[string]string{"Origin": origin, auth.CSRFHeader: "1", "Sec-Fetch-Site": "same-origin"}}); r.status != http.StatusNoContent {
		t.Errorf("same-origin DELETE with Sec-Fetch-Site: %d %s", r.status, r.body)
	}
	// Bearer tokens are unaffected: no Origin, no CSRF header.
	if r := f.e.Do("DELETE", target, f.phone.token, nil); r.Status != http.StatusNoContent {
		t.Errorf("bearer DELETE: %d %s", r.Status, r.Body)
	}
	// With an Authorization header the cookie is ignored, also when the
	// header is bad.
	if r := do(t, f.e.URL, nil, request{method: "GET", path: "/api/v1/me", cookie: session,
		header: map[string]string{"Authorization": "Bearer kf1_nonsense"}}); r.status != http.StatusUnauthorized {
		t.Errorf("bad bearer + good cookie: %d, want 401", r.status)
	}
	// A token in the URL stays ignored.
	if r := do(t, f.e.URL, nil, request{method: "GET", path: "/api/v1/me?token=" + f.phone.token}); r.status != http.StatusUnauthorized {
		t.Errorf("token in the URL: %d, want 401", r.status)
	}
	// Two session cookies (one planted by another host of the site, with
	// Domain or another Path): neither is used.
	for _, planted := range []string{"x", session.Value} {
		two := map[string]string{"Cookie": auth.SessionCookie + "=" + planted + "; " + auth.SessionCookie + "=" + session.Value}
		if r := do(t, f.e.URL, nil, request{method: "GET", path: "/api/v1/me", header: two}); r.status != http.StatusUnauthorized {
			t.Errorf("two session cookies (%s): %d, want 401", planted, r.status)
		}
	}
	// The cookie carries the page's session credential only: a device's
	// trust token in it is refused, on reads and on same-origin writes.
	trustCookie := &http.Cookie{Name: auth.SessionCookie, Value: f.phone.token}
	for _, q := range []request{
		{method: "GET", path: "/api/v1/me"},
		{method: "PUT", path: "/api/v1/me/countries", body: map[string]any{"allowed": nil}, header: sameOrigin(origin)},
	} {
		q.cookie = trustCookie
		if r := do(t, f.e.URL, nil, q); r.status != http.StatusUnauthorized || r.code() != "unauthorized" {
			t.Errorf("trust token as the cookie: %s %s: %d %s, want 401", q.method, q.path, r.status, r.body)
		}
	}
	if r := f.e.Do("GET", "/api/v1/me", f.phone.token, nil); r.Status != http.StatusOK {
		t.Errorf("the trust token as a bearer after its refusal as a cookie: %d", r.Status)
	}
}

// TestCSRFBehindProxy: behind a trusted TLS-terminating proxy the page's
// origin is https://<X-Forwarded-Host>; an untrusted peer cannot claim it.
func TestCSRFBehindProxy(t *testing.T) {
	f := newFixture(t, func(c *server.Config) { c.TrustedProxies = []string{"127.0.0.1/32"} })
	const public = "https://klassenfunk.example"
	fwd := map[string]string{"X-Forwarded-Proto": "https", "X-Forwarded-Host": "klassenfunk.example", "X-Forwarded-For": "203.0.113.9"}
	with := func(extra map[string]string) map[string]string {
		m := map[string]string{}
		for k, v := range fwd {
			m[k] = v
		}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	r := do(t, f.e.URL, nil, request{method: "POST", path: "/settings/login", header: with(sameOrigin(public)),
		body: map[string]string{"login": f.login, "client_hash": clientHash(f.login, password(f.login))}})
	if r.status != http.StatusOK {
		t.Fatalf("login through the proxy: %d %s", r.status, r.body)
	}
	c := r.cookie(auth.SessionCookie)
	if c == nil || !c.Secure {
		t.Fatalf("cookie through an HTTPS proxy: %q, want Secure", r.header.Get("Set-Cookie"))
	}
	checkSecurityHeaders(t, "login through an HTTPS proxy", r.header, true)
	session := &http.Cookie{Name: c.Name, Value: c.Value}
	target := "/api/v1/trust/" + f.phone.trustID + "/push"
	if r := do(t, f.e.URL, nil, request{method: "DELETE", path: target, cookie: session, header: with(sameOrigin(f.e.URL))}); r.status != http.StatusForbidden {
		t.Errorf("inner origin through the proxy: %d, want 403", r.status)
	}
	if r := do(t, f.e.URL, nil, request{method: "DELETE", path: target, cookie: session, header: with(sameOrigin(public))}); r.status != http.StatusNoContent {
		t.Errorf("public origin through the proxy: %d %s", r.status, r.body)
	}

	// Without the proxy trust the forwarded headers count for nothing.
	g := newFixture(t)
	r = do(t, g.e.URL, nil, request{method: "POST", path: "/settings/login", header: with(sameOrigin(public)),
		body: map[string]string{"login": g.login, "client_hash": clientHash(g.login, password(g.login))}})
	if r.status != http.StatusForbidden {
		t.Errorf("forwarded origin from an untrusted peer: %d, want 403", r.status)
	}
}

// TestSecurityHeadersEverywhere: the responses the router makes itself
// under /settings (404, 405, the 404 of an unclean path) carry the
// page's security headers too.
func TestSecurityHeadersEverywhere(t *testing.T) {
	f := newFixture(t)
	for _, q := range []struct {
		method, path string
		status       int
	}{
		{"GET", "/settings/login", http.StatusMethodNotAllowed},
		{"GET", "/settings/logout", http.StatusMethodNotAllowed},
		{"POST", "/settings", http.StatusMethodNotAllowed},
		{"OPTIONS", "/settings/login", http.StatusMethodNotAllowed},
		{"GET", "/settings/foo", http.StatusNotFound},
		{"GET", "/settings/assets/", http.StatusNotFound},
		{"GET", "/settings/assets/a/b", http.StatusNotFound},
		{"GET", "/settings//x", 0}, // 0: whatever the router (or the client's cleaning) makes of it
		{"GET", "/settings/./assets/x", 0},
		{"GET", "/./settings", 0},
	} {
		r := do(t, f.e.URL, nil, request{method: q.method, path: q.path})
		if q.status != 0 && r.status != q.status {
			t.Errorf("%s %s: %d, want %d", q.method, q.path, r.status, q.status)
		}
		checkSecurityHeaders(t, q.method+" "+q.path, r.header, false)
	}
}

// TestCookieOnAdminEndpoints: the page's session cookie is a user
// credential on the school and operator endpoints as well: an admin of
// the school may change it with the cookie, another user gets 403 (not
// 401, which the page takes for an ended session), and the operator
// endpoints answer 403 to it as to any user's credential.
func TestCookieOnAdminEndpoints(t *testing.T) {
	f := newFixture(t)
	f.createUser("admin", "Herr Admin", "admin")
	origin := f.e.URL
	teacher, admin := f.cookieLogin(f.login), f.cookieLogin("admin")
	patch := request{method: "PATCH", path: "/api/v1/schools/" + f.school, body: map[string]any{"student_direct": false}, header: sameOrigin(origin)}
	for _, c := range []struct {
		name   string
		q      request
		cookie *http.Cookie
		status int
	}{
		{"admin PATCH school", patch, admin, http.StatusOK},
		{"teacher PATCH school", patch, teacher, http.StatusForbidden},
		{"admin PATCH school cross-site", request{method: "PATCH", path: patch.path, body: patch.body}, admin, http.StatusForbidden},
		{"admin creates a user", request{method: "POST", path: "/api/v1/schools/" + f.school + "/users", header: sameOrigin(origin),
			body: map[string]string{"login": "neu", "display_name": "Neu", "role": "student", "client_hash": clientHash("neu", "pw")}}, admin, http.StatusCreated},
		{"GET /schools", request{method: "GET", path: "/api/v1/schools"}, admin, http.StatusForbidden},
		{"GET /admin/stats", request{method: "GET", path: "/api/v1/admin/stats"}, teacher, http.StatusForbidden},
		{"GET /admin/stats without a credential", request{method: "GET", path: "/api/v1/admin/stats"}, nil, http.StatusUnauthorized},
	} {
		c.q.cookie = c.cookie
		if r := do(t, f.e.URL, nil, c.q); r.status != c.status {
			t.Errorf("%s: %d %s, want %d", c.name, r.status, r.body, c.status)
		}
	}
}
