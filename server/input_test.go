package server_test

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"klassenfunk/internal/httpapi"
	"klassenfunk/internal/testenv"
)

// TestJSONBadInput sends the same set of broken bodies to every JSON
// endpoint of accounts and login.
func TestJSONBadInput(t *testing.T) {
	w := newAuthWorld(t)
	env := w.env
	n := 0
	unique := func() int { n++; return n }

	type endpoint struct {
		path      string
		token     string
		valid     func() string // a fresh valid body: a JSON object
		wrongType []string      // valid JSON objects with a field of the wrong type
		ok        int
	}
	hash := testenv.ClientHash(testenv.Password("student-a"))
	endpoints := map[string]endpoint{
		"POST /schools": {
			path: "/api/v1/schools", token: testenv.OperatorToken, ok: 201,
			valid:     func() string { return fmt.Sprintf(`{"name":"Schule %d"}`, unique()) },
			wrongType: []string{`{"name":5}`, `{"name":["a"]}`, `{"name":{"de":"x"}}`},
		},
		"POST /schools/{school}/users": {
			path: "/api/v1/schools/" + w.schoolA + "/users", token: testenv.OperatorToken, ok: 201,
			valid: func() string {
				return fmt.Sprintf(`{"login":"bad-input-%d","display_name":"X","role":"student","client_hash":%q}`, unique(), hash)
			},
			wrongType: []string{
				fmt.Sprintf(`{"login":5,"display_name":"X","role":"student","client_hash":%q}`, hash),
				fmt.Sprintf(`{"login":"wt","display_name":true,"role":"student","client_hash":%q}`, hash),
				`{"login":"wt","display_name":"X","role":"student","client_hash":[1,2,3]}`,
			},
		},
		"POST /login": {
			path: "/api/v1/login", ok: 200,
			valid: func() string {
				return fmt.Sprintf(`{"login":"student-a","client_hash":%q,"device":{"id":"d%d","name":"n","os":"web","personal":false}}`, hash, unique())
			},
			wrongType: []string{
				fmt.Sprintf(`{"login":1,"client_hash":%q,"device":{"id":"d","os":"web","personal":false}}`, hash),
				fmt.Sprintf(`{"login":"student-a","client_hash":%q,"device":"phone"}`, hash),
				fmt.Sprintf(`{"login":"student-a","client_hash":%q,"device":{"id":7,"os":"web","personal":false}}`, hash),
				fmt.Sprintf(`{"login":"student-a","client_hash":%q,"device":{"id":"d","os":"web","personal":"yes"}}`, hash),
				fmt.Sprintf(`{"login":"student-a","client_hash":%q,"device":{"id":"d","os":"web","personal":1}}`, hash),
			},
		},
	}
	// pad returns valid with an unknown string field in front, so that the
	// whole body is size bytes long.
	pad := func(valid string, size int) string {
		head := `{"zz_pad":"`
		tail := `",` + valid[1:]
		return head + strings.Repeat("a", size-len(head)-len(tail)) + tail
	}
	type bad struct {
		body func(e endpoint) string
		want int
		code string
	}
	bads := map[string]bad{
		"malformed":           {func(e endpoint) string { return `{"name":` }, 400, "invalid_request"},
		"not JSON":            {func(e endpoint) string { return `name=x` }, 400, "invalid_request"},
		"single quotes":       {func(e endpoint) string { return `{'name':'x'}` }, 400, "invalid_request"},
		"array":               {func(e endpoint) string { return `[` + e.valid() + `]` }, 400, "invalid_request"},
		"empty array":         {func(e endpoint) string { return `[]` }, 400, "invalid_request"},
		"string":              {func(e endpoint) string { return `"hello"` }, 400, "invalid_request"},
		"number":              {func(e endpoint) string { return `42` }, 400, "invalid_request"},
		"null":                {func(e endpoint) string { return `null` }, 400, "invalid_request"},
		"empty object":        {func(e endpoint) string { return `{}` }, 400, "invalid_request"},
		"empty body":          {func(e endpoint) string { return `` }, 400, "invalid_request"},
		"only whitespace":     {func(e endpoint) string { return " \n\t " }, 400, "invalid_request"},
		"trailing garbage":    {func(e endpoint) string { return e.valid() + ` garbage` }, 400, "invalid_request"},
		"trailing brace":      {func(e endpoint) string { return e.valid() + `}` }, 400, "invalid_request"},
		"two objects":         {func(e endpoint) string { return e.valid() + e.valid() }, 400, "invalid_request"},
		"truncated":           {func(e endpoint) string { v := e.valid(); return v[:len(v)-2] }, 400, "invalid_request"},
		"invalid UTF-8 token": {func(e endpoint) string { return "{\xff}" }, 400, "invalid_request"},
		// encoding/json alone would store U+FFFD for each bad byte.
		"invalid UTF-8 in a value":    {func(e endpoint) string { return strings.Replace(e.valid(), `":"`, "\":\"\xfe", 1) }, 400, "invalid_request"},
		"invalid UTF-8 unknown field": {func(e endpoint) string { return "{\"zz\":\"a\xc3\x28b\"," + e.valid()[1:] }, 400, "invalid_request"},
		"lone surrogate escape":       {func(e endpoint) string { return `{"zz":"x\ud800y",` + e.valid()[1:] }, 400, "invalid_request"},
		"lone low surrogate escape":   {func(e endpoint) string { return `{"zz":"\\\udc00",` + e.valid()[1:] }, 400, "invalid_request"},
		"surrogate pair escape":       {func(e endpoint) string { return `{"zz":"\ud83d\ude00 \\ud800",` + e.valid()[1:] }, 0, ""},
		"over 1 MiB":                  {func(e endpoint) string { return pad(e.valid(), httpapi.MaxBody+1) }, 413, "payload_too_large"},
		"huge string value":           {func(e endpoint) string { return `{"name":"` + strings.Repeat("x", httpapi.MaxBody+64<<10) + `"}` }, 413, "payload_too_large"},
		"unknown fields":              {func(e endpoint) string { return `{"zz_unknown":{"a":[1,{"b":null}]},` + e.valid()[1:] }, 0, ""},
		// Names are case-sensitive: "LOGIN" is an unknown field, so the
		// required first field is missing (encoding/json alone took it).
		"required field in upper case": {func(e endpoint) string {
			v := e.valid()
			end := 2 + strings.IndexByte(v[2:], '"')
			return `{"` + strings.ToUpper(v[2:end]) + v[end:]
		}, 400, "invalid_request"},
		"trailing whitespace": {func(e endpoint) string { return e.valid() + " \r\n\t" }, 0, ""},
		"exactly 1 MiB":       {func(e endpoint) string { return pad(e.valid(), httpapi.MaxBody) }, 0, ""},
		"duplicate key":       {func(e endpoint) string { return `{"zz":1,"zz":2,` + e.valid()[1:] }, 0, ""},
	}
	for ename, e := range endpoints {
		for bname, b := range bads {
			t.Run(ename+"/"+bname, func(t *testing.T) {
				body := b.body(e)
				r := authCall(t, env, "POST", e.path, e.token, body, nil)
				if b.code != "" {
					authWantError(t, r, b.want, b.code)
					return
				}
				authWantStatus(t, r, e.ok)
			})
		}
		for i, body := range e.wrongType {
			t.Run(fmt.Sprintf("%s/wrong type %d", ename, i), func(t *testing.T) {
				authWantError(t, authCall(t, env, "POST", e.path, e.token, body, nil), http.StatusBadRequest, "invalid_request")
			})
		}
	}

	t.Run("unknown endpoint", func(t *testing.T) {
		for _, m := range []string{"GET", "POST", "PUT", "DELETE"} {
			authWantError(t, authCall(t, env, m, "/api/v1/no-such-thing", testenv.OperatorToken, nil, nil), http.StatusNotFound, "not_found")
		}
	})
	// http.ServeMux redirects a path that is not clean, with an HTML body;
	// under /api/v1 the app gets the JSON error instead.
	t.Run("unclean path", func(t *testing.T) {
		for _, p := range []string{"/api/v1//schools", "/api/v1/./schools", "/api/v1/x/../schools", "/api/v1/schools/.", "/api/v1", "/api//v1/schools",
			"/api/v1/../api/v1/schools", "/api/v1/..", "/api/v1/../healthz", "/api/../healthz"} {
			r := authCall(t, env, "POST", p, testenv.OperatorToken, map[string]any{"name": "Umweg"}, nil)
			authWantError(t, r, http.StatusNotFound, "not_found")
			if loc := r.Header.Get("Location"); loc != "" {
				t.Fatalf("%s: redirected to %s", p, loc)
			}
		}
		// Outside the API: a plain 404, no redirect either.
		for _, p := range []string{"/x/../healthz", "//healthz", "/./metrics"} {
			r := authCall(t, env, "GET", p, "", nil, nil)
			if r.Status != http.StatusNotFound || r.Header.Get("Location") != "" {
				t.Fatalf("%s: %d, Location %q", p, r.Status, r.Header.Get("Location"))
			}
		}
	})
}

// TestTokenNotInURL checks that credentials in a query string are ignored.
func TestTokenNotInURL(t *testing.T) {
	w := newAuthWorld(t)
	env := w.env
	trust, trustID := authLogin(t, env, "teacher-a", "phone", true)
	session, _ := authLogin(t, env, "teacher-a", "pc", false)
	admin, _ := authLogin(t, env, "admin-a", "adm", true)
	userBody := func(login string) map[string]any {
		return map[string]any{"login": login, "display_name": "U", "role": "student", "client_hash": testenv.ClientHash("x")}
	}

	tests := map[string]struct {
		method, path string
		token        string
		body         any
		okStatus     int // the same request with the token in the header
	}{
		"GET /me trust":              {"GET", "/api/v1/me", trust, nil, 200},
		"GET /me session":            {"GET", "/api/v1/me", session, nil, 200},
		"GET /me/logins":             {"GET", "/api/v1/me/logins", trust, nil, 200},
		"GET /trust":                 {"GET", "/api/v1/trust", session, nil, 200},
		"DELETE /trust/{id}/push":    {"DELETE", "/api/v1/trust/" + trustID + "/push", trust, nil, 204},
		"POST /schools operator":     {"POST", "/api/v1/schools", testenv.OperatorToken, map[string]string{"name": "Via URL"}, 201},
		"GET /schools operator":      {"GET", "/api/v1/schools", testenv.OperatorToken, nil, 200},
		"POST /schools/{s}/users op": {"POST", "/api/v1/schools/" + w.schoolA + "/users", testenv.OperatorToken, userBody("via-url-op"), 201},
		"POST /schools/{s}/users":    {"POST", "/api/v1/schools/" + w.schoolA + "/users", admin, userBody("via-url-admin"), 201},
	}
	params := []string{"token", "access_token", "bearer", "auth", "authorization"}
	for name, tc := range tests {
		for _, p := range params {
			t.Run(name+"/"+p, func(t *testing.T) {
				q := url.Values{p: {tc.token}}.Encode()
				r := authCall(t, env, tc.method, tc.path+"?"+q, "", tc.body, nil)
				authWantError(t, r, http.StatusUnauthorized, "unauthorized")
			})
		}
		t.Run(name+"/header works", func(t *testing.T) {
			authWantStatus(t, authCall(t, env, tc.method, tc.path, tc.token, tc.body, nil), tc.okStatus)
		})
	}
	// The logout must come last: it ends the session.
	for _, p := range params {
		r := authCall(t, env, "POST", "/api/v1/logout?"+p+"="+url.QueryEscape(session), "", nil, nil)
		authWantError(t, r, http.StatusUnauthorized, "unauthorized")
	}
	authWantStatus(t, authCall(t, env, "POST", "/api/v1/logout", session, nil, nil), http.StatusNoContent)
}

// TestTokenFormat checks that tokens carry at least 256 bits: 43 or more
// base64url characters after the prefix, and all different.
func TestTokenFormat(t *testing.T) {
	w := newAuthWorld(t)
	env := w.env
	tokenRE := regexp.MustCompile(`^([a-z0-9]+_)([A-Za-z0-9_-]{43,})$`)
	seen := map[string]bool{}
	tests := map[string]struct {
		login    string
		personal bool
	}{
		"trust":           {"teacher-a", true},
		"session":         {"teacher-a", false},
		"other user":      {"student-a", true},
		"other user sess": {"student-a", false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			for i := range 3 {
				tok, _ := authLogin(t, env, tc.login, fmt.Sprintf("%s-%d", name, i), tc.personal)
				m := tokenRE.FindStringSubmatch(tok)
				if m == nil {
					t.Fatalf("token %q: want prefix_ then ≥ 43 base64url characters", tok)
				}
				// The prefix is fixed; the rest decodes to ≥ 32 bytes.
				if m[1] != "kf1_" {
					t.Fatalf("token prefix %q, want kf1_", m[1])
				}
				raw, err := base64.RawURLEncoding.DecodeString(m[2])
				if err != nil || len(raw) < 32 {
					t.Fatalf("token body %q: %d bytes, %v; want ≥ 32", m[2], len(raw), err)
				}
				if seen[tok] {
					t.Fatalf("token %q issued twice", tok)
				}
				seen[tok] = true
			}
		})
	}
}

// TestLogsHoldNoSecrets runs a flow with every kind of secret and then
// searches the node's log for them.
func TestLogsHoldNoSecrets(t *testing.T) {
	env := testenv.New(t)
	school := env.CreateSchool("S")
	hashes := map[string]string{
		"alice": testenv.ClientHash("alice-password"),
		"bob":   testenv.ClientHash("bob-password"),
	}
	for login, h := range hashes {
		r := authCall(t, env, "POST", "/api/v1/schools/"+school+"/users", testenv.OperatorToken,
			map[string]any{"login": login, "display_name": login, "role": "teacher", "client_hash": h}, nil)
		authWantStatus(t, r, http.StatusCreated)
	}
	wrongHash := testenv.ClientHash("not-the-password")
	secrets := map[string]string{"operator token": testenv.OperatorToken, "wrong client_hash": wrongHash}
	for login, h := range hashes {
		secrets[login+" client_hash"] = h
		raw, _ := base64.StdEncoding.DecodeString(h)
		secrets[login+" client_hash hex"] = fmt.Sprintf("%x", raw)
		secrets[login+" client_hash url"] = url.QueryEscape(h)
	}
	login := func(login, hash string, personal bool, dev string) (string, string) {
		r := authCall(t, env, "POST", "/api/v1/login", "", map[string]any{
			"login": login, "client_hash": hash, "device": map[string]any{"id": dev, "os": "web", "personal": personal},
		}, nil)
		authWantStatus(t, r, http.StatusOK)
		var out struct {
			Credential struct{ Token string }
			TrustID    string `json:"trust_id"`
		}
		authDecode(t, r, &out)
		return out.Credential.Token, out.TrustID
	}
	aTrust, aTrustID := login("alice", hashes["alice"], true, "phone")
	aSession, _ := login("alice", hashes["alice"], false, "pc")
	aOther, _ := login("alice", hashes["alice"], true, "tablet")
	bTrust, _ := login("bob", hashes["bob"], true, "phone")
	secrets["alice trust"] = aTrust
	secrets["alice session"] = aSession
	secrets["alice other"] = aOther
	secrets["bob trust"] = bTrust

	authWantStatus(t, authCall(t, env, "POST", "/api/v1/login", "", map[string]any{
		"login": "alice", "client_hash": wrongHash, "device": map[string]any{"id": "x", "os": "web", "personal": false},
	}, nil), http.StatusUnauthorized)
	authWantStatus(t, authCall(t, env, "GET", "/api/v1/me?token="+aTrust, "", nil, nil), http.StatusUnauthorized)
	authWantStatus(t, authCall(t, env, "GET", "/api/v1/me?access_token="+aSession+"&client_hash="+url.QueryEscape(hashes["bob"]), "", nil, nil), http.StatusUnauthorized)
	authWantStatus(t, authCall(t, env, "GET", "/api/v1/me", aTrust, nil, nil), http.StatusOK)
	authWantStatus(t, authCall(t, env, "GET", "/api/v1/me", "kf1_"+aTrust[4:10]+strings.Repeat("A", 37), nil, nil), http.StatusUnauthorized)
	authWantStatus(t, authCall(t, env, "DELETE", "/api/v1/trust/"+aTrustID, bTrust, nil, nil), http.StatusNotFound)
	authWantStatus(t, authCall(t, env, "POST", "/api/v1/logout", aSession, nil, nil), http.StatusNoContent)
	authWantStatus(t, authCall(t, env, "DELETE", "/api/v1/trust/"+aTrustID, aOther, nil, nil), http.StatusNoContent)
	authWantStatus(t, authCall(t, env, "GET", "/api/v1/me", aTrust, nil, nil), http.StatusUnauthorized)
	// Tokens a careless client put into the path (escaped, so that they
	// are no query string) reach no log line either.
	for _, p := range []string{"/api/v1/me%3Faccess_token=" + aTrust, "/api/v1/me;token=" + aSession, "/api/v1/me/" + aOther, "/api/v1/trust/" + bTrust,
		"/api/v1/me" + strings.Repeat("/ab", 72) + "/" + aTrust[4:], "/%FF%FF%FF%FF%253F" + aSession} {
		if r := authCall(t, env, "GET", p, "", nil, nil); r.Status < 400 {
			t.Fatalf("GET %s: %d", p, r.Status)
		}
	}

	// Closing the HTTP server waits for the handlers, so the log is
	// complete (and no longer written to) afterwards.
	env.HTTP.Close()
	logs := env.Logs()
	if !strings.Contains(logs, `"path":"/api/v1/me"`) || !strings.Contains(logs, "credential revoked") {
		t.Fatalf("the log does not show the flow; the test would prove nothing:\n%s", logs)
	}
	for name, s := range secrets {
		t.Run(name, func(t *testing.T) {
			// Not even a part of it: 16 characters in a row.
			for i := 0; i+16 <= len(s); i++ {
				if strings.Contains(logs, s[i:i+16]) {
					t.Fatalf("the log contains a part of the %s %q: %q", name, s, s[i:i+16])
				}
			}
		})
	}
	t.Run("addresses anonymised", func(t *testing.T) {
		if strings.Contains(logs, "127.0.0.1") || !strings.Contains(logs, `"ip":"127.0.0.0"`) {
			t.Fatalf("the log holds a full client address or none:\n%s", logs)
		}
	})
	t.Run("no query strings", func(t *testing.T) {
		if strings.Contains(logs, "token=") || strings.Contains(logs, "?") {
			t.Fatalf("the log holds a query string:\n%s", logs)
		}
	})
}
