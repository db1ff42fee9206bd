package server_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"klassenfunk/auth"
	"klassenfunk/internal/testenv"
	"klassenfunk/proto"
	"klassenfunk/server"
	"klassenfunk/storage"
)

// Client addresses of the test GeoIP database (testenv.GeoIPNetworks),
// presented with X-Forwarded-For from loopback (a trusted proxy in these
// tests).
const (
	addrDE       = "203.0.113.5"
	addrDE2      = "203.0.113.99"
	addrFR       = "198.51.100.7"
	addrAT       = "2001:db8:1::5"
	addrUS       = "2001:db8:99::7"
	addrUnknown  = "192.0.2.10" // public, in no network of the database
	addrPrivate  = "10.1.2.3"
	addrLoopback = "" // no header: the loopback peer itself
)

func from(addr string) http.Header {
	if addr == "" {
		return nil
	}
	return http.Header{"X-Forwarded-For": {addr}}
}

// geoWorld is a node with the test GeoIP database.
func geoWorld(t *testing.T) *authWorld {
	t.Helper()
	return newAuthWorld(t, testenv.WithGeoIP(testenv.GeoIP(t, nil)))
}

// loginFrom logs login in from addr and returns the response.
func loginFrom(t *testing.T, env *testenv.Env, login, password, addr string) testenv.Response {
	t.Helper()
	return authCall(t, env, "POST", "/api/v1/login", "", authLoginBody(login, password, "phone-"+login, "android", true), from(addr))
}

// tokenFrom logs in from addr and returns the token.
func tokenFrom(t *testing.T, env *testenv.Env, login, device, addr string) string {
	t.Helper()
	r := authCall(t, env, "POST", "/api/v1/login", "", authLoginBody(login, testenv.Password(login), device, "android", true), from(addr))
	authWantStatus(t, r, http.StatusOK)
	var out struct {
		Credential struct{ Token string } `json:"credential"`
	}
	authDecode(t, r, &out)
	return out.Credential.Token
}

func setCountries(t *testing.T, env *testenv.Env, tok, addr string, allowed any) testenv.Response {
	t.Helper()
	return authCall(t, env, "PUT", "/api/v1/me/countries", tok, map[string]any{"allowed": allowed}, from(addr))
}

type countriesResp struct {
	Allowed *[]string `json:"allowed"`
	GeoIP   bool      `json:"geoip"`
}

func getCountries(t *testing.T, env *testenv.Env, tok, addr string) countriesResp {
	t.Helper()
	r := authCall(t, env, "GET", "/api/v1/me/countries", tok, nil, from(addr))
	authWantStatus(t, r, http.StatusOK)
	var out countriesResp
	authDecode(t, r, &out)
	if keys := authKeys(t, r.Body); len(keys) != 2 {
		t.Fatalf("GET /me/countries %s: want exactly allowed and geoip", r.Body)
	}
	return out
}

func noticesOf(t *testing.T, env *testenv.Env, userID string) []storage.Notice {
	t.Helper()
	ns, err := env.Srv.Store().Notices(context.Background(), userID)
	if err != nil {
		t.Fatalf("Notices: %v", err)
	}
	return ns
}

func TestCountriesSetClearValidate(t *testing.T) {
	w := geoWorld(t)
	env := w.env
	fifty := []string{}
	for _, c := range strings.Fields("DE AT CH FR IT ES PT NL BE LU DK SE NO FI IS IE GB PL CZ SK HU SI HR BA RS ME MK AL GR BG RO MD UA BY LT LV EE RU TR CY MT SM VA MC AD LI US CA MX BR") {
		fifty = append(fifty, c)
	}
	if len(fifty) != 50 {
		t.Fatalf("fixture has %d codes", len(fifty))
	}
	tests := map[string]struct {
		body     any // sent as JSON (string: as is)
		status   int
		code     string
		want     []string // stored afterwards; nil: no restriction
		wantNone bool     // stored: no restriction (nil)
	}{
		"two countries":           {body: map[string]any{"allowed": []string{"DE", "AT"}}, status: 204, want: []string{"AT", "DE"}},
		"duplicates are removed":  {body: map[string]any{"allowed": []string{"DE", "AT", "DE", "AT"}}, status: 204, want: []string{"AT", "DE"}},
		"fifty":                   {body: map[string]any{"allowed": fifty}, status: 204, want: slices.Sorted(slices.Values(fifty))},
		"fifty with duplicates":   {body: map[string]any{"allowed": append(slices.Clone(fifty), "DE", "AT")}, status: 204, want: slices.Sorted(slices.Values(fifty))},
		"null removes":            {body: `{"allowed": null}`, status: 204, wantNone: true},
		"empty list is nowhere":   {body: map[string]any{"allowed": []string{}}, status: 204, want: []string{}},
		"fifty-one":               {body: map[string]any{"allowed": append(slices.Clone(fifty), "JP")}, status: 400, code: "invalid_request", wantNone: true},
		"lower case":              {body: map[string]any{"allowed": []string{"de"}}, status: 400, code: "invalid_request", wantNone: true},
		"alpha-3":                 {body: map[string]any{"allowed": []string{"DEU"}}, status: 400, code: "invalid_request", wantNone: true},
		"unassigned code":         {body: map[string]any{"allowed": []string{"DE", "XX"}}, status: 400, code: "invalid_request", wantNone: true},
		"empty code":              {body: map[string]any{"allowed": []string{""}}, status: 400, code: "invalid_request", wantNone: true},
		"missing field":           {body: `{}`, status: 400, code: "invalid_request", wantNone: true},
		"string instead of list":  {body: map[string]any{"allowed": "DE"}, status: 400, code: "invalid_request", wantNone: true},
		"numbers":                 {body: map[string]any{"allowed": []int{49}}, status: 400, code: "invalid_request", wantNone: true},
		"malformed JSON":          {body: `{"allowed": [`, status: 400, code: "invalid_request", wantNone: true},
		"no body at all":          {body: "", status: 400, code: "invalid_request", wantNone: true},
		"unknown fields ignored":  {body: `{"allowed": ["FR"], "x": 1}`, status: 204, want: []string{"FR"}},
		"Kosovo (XK) is accepted": {body: map[string]any{"allowed": []string{"XK"}}, status: 204, want: []string{"XK"}},
	}
	i := 0
	for name, tc := range tests {
		i++
		t.Run(name, func(t *testing.T) {
			login := "geo-user-" + authItoa(i)
			id := env.CreateUser(w.schoolA, login, "student")
			tok := tokenFrom(t, env, login, "phone", addrDE)
			r := authCall(t, env, "PUT", "/api/v1/me/countries", tok, tc.body, from(addrDE))
			if tc.code != "" {
				authWantError(t, r, tc.status, tc.code)
			} else {
				authWantStatus(t, r, tc.status)
			}
			u, err := env.Srv.Store().User(context.Background(), id)
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantNone {
				if u.Countries != nil {
					t.Fatalf("stored %q, want no restriction", u.Countries)
				}
				return
			}
			if u.Countries == nil || !slices.Equal(u.Countries, tc.want) {
				t.Fatalf("stored %q (nil %v), want %q", u.Countries, u.Countries == nil, tc.want)
			}
			// What GET shows, from an allowed address (none for "nowhere").
			if len(tc.want) == 0 {
				authWantError(t, authCall(t, env, "GET", "/api/v1/me/countries", tok, nil, from(addrDE)), 403, "country_blocked")
				return
			}
			addr := map[string]string{"DE": addrDE, "FR": addrFR}[tc.want[len(tc.want)-1]]
			if slices.Contains(tc.want, "DE") {
				addr = addrDE
			}
			if addr == "" {
				return // no test address in an allowed country
			}
			got := getCountries(t, env, tok, addr)
			if got.Allowed == nil || !slices.Equal(*got.Allowed, tc.want) || !got.GeoIP {
				t.Fatalf("GET /me/countries = %+v, want %q with geoip", got, tc.want)
			}
		})
	}

	// Set, then clear: GET shows null again, and every address works.
	id := env.CreateUser(w.schoolA, "geo-clear", "student")
	tok := tokenFrom(t, env, "geo-clear", "phone", addrDE)
	if got := getCountries(t, env, tok, addrDE); got.Allowed != nil || !got.GeoIP {
		t.Fatalf("GET /me/countries of a new user = %+v, want null", got)
	}
	authWantStatus(t, setCountries(t, env, tok, addrDE, []string{"DE"}), 204)
	authWantError(t, authCall(t, env, "GET", "/api/v1/me", tok, nil, from(addrFR)), 403, "country_blocked")
	authWantStatus(t, setCountries(t, env, tok, addrDE, nil), 204)
	if got := getCountries(t, env, tok, addrFR); got.Allowed != nil {
		t.Fatalf("GET /me/countries after clearing = %+v, want null", got)
	}
	if u, _ := env.Srv.Store().User(context.Background(), id); u.Countries != nil {
		t.Fatalf("stored %q after clearing", u.Countries)
	}
}

func TestCountriesWithoutGeoIP(t *testing.T) {
	w := newAuthWorld(t)
	env := w.env
	tok, _ := authLogin(t, env, "student-a", "phone", true)
	if got := getCountries(t, env, tok, ""); got.GeoIP || got.Allowed != nil {
		t.Fatalf("GET /me/countries = %+v, want null without geoip", got)
	}
	r := setCountries(t, env, tok, "", []string{"DE"})
	authWantError(t, r, http.StatusConflict, "conflict")
	if !strings.Contains(string(r.Body), "GeoIP") {
		t.Fatalf("409 body %s: want it to name the missing GeoIP database", r.Body)
	}
	authWantError(t, setCountries(t, env, tok, "", []string{}), http.StatusConflict, "conflict")
	authWantStatus(t, setCountries(t, env, tok, "", nil), http.StatusNoContent)
	authWantStatus(t, authCall(t, env, "GET", "/api/v1/me", tok, nil, nil), http.StatusOK)
}

func TestCountryBlockedLogin(t *testing.T) {
	w := geoWorld(t)
	env := w.env
	tok := tokenFrom(t, env, "teacher-a", "laptop", addrDE)
	authWantStatus(t, setCountries(t, env, tok, addrDE, []string{"DE", "AT"}), 204)

	tests := []struct {
		name     string
		addr     string
		password string
		status   int
		code     string
		notice   *storage.Notice // the newest notice afterwards (At not compared)
	}{
		{"Germany", addrDE, "", 200, "", nil},
		{"Germany, other address", addrDE2, "", 200, "", nil},
		{"Austria over IPv6", addrAT, "", 200, "", nil},
		{"France", addrFR, "", 403, "country_blocked", &storage.Notice{Kind: "country_blocked", Country: "FR", IP: "198.51.100.0"}},
		{"France, wrong password: no hint", addrFR, "wrong password", 401, "unauthorized", nil},
		{"United States over IPv6", addrUS, "", 403, "country_blocked", &storage.Notice{Kind: "country_blocked", Country: "US", IP: "2001:db8:99::"}},
		{"not in the database", addrUnknown, "", 403, "country_blocked", &storage.Notice{Kind: "country_blocked", Country: "", IP: "192.0.2.0"}},
		{"private address", addrPrivate, "", 403, "country_blocked", &storage.Notice{Kind: "country_blocked", Country: "", IP: "10.1.2.0"}},
		{"loopback", addrLoopback, "", 403, "country_blocked", &storage.Notice{Kind: "country_blocked", Country: "", IP: "127.0.0.0"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(noticesOf(t, env, w.teacherA))
			pw := tc.password
			if pw == "" {
				pw = testenv.Password("teacher-a")
			}
			r := loginFrom(t, env, "teacher-a", pw, tc.addr)
			if tc.code != "" {
				authWantError(t, r, tc.status, tc.code)
			} else {
				authWantStatus(t, r, tc.status)
			}
			ns := noticesOf(t, env, w.teacherA)
			if tc.notice == nil {
				if len(ns) != before {
					t.Fatalf("notices %d → %d, want no new one", before, len(ns))
				}
				return
			}
			if len(ns) != before+1 {
				t.Fatalf("notices %d → %d, want one more", before, len(ns))
			}
			got := ns[0]
			if !got.At.Equal(env.Clock.Now()) {
				t.Fatalf("notice at %v, want %v", got.At, env.Clock.Now())
			}
			got.At = time.Time{}
			if got != *tc.notice {
				t.Fatalf("notice %+v, want %+v", got, *tc.notice)
			}
		})
	}

	// The user sees the notices (and a refused login left no login event).
	r := authCall(t, env, "GET", "/api/v1/me/notices", tok, nil, from(addrDE))
	authWantStatus(t, r, http.StatusOK)
	var listed []map[string]any
	authDecode(t, r, &listed)
	if len(listed) != 5 || listed[0]["country"] != "" || listed[len(listed)-1]["country"] != "FR" || listed[0]["kind"] != "country_blocked" {
		t.Fatalf("GET /me/notices = %s", r.Body)
	}
	for _, n := range listed {
		if len(n) != 4 || n["at"] == nil || n["ip"] == nil {
			t.Fatalf("notice %v: want exactly at, kind, country, ip", n)
		}
	}
	var logins []map[string]any
	authDecode(t, authCall(t, env, "GET", "/api/v1/me/logins", tok, nil, from(addrDE)), &logins)
	for _, l := range logins {
		if l["ip"] == "198.51.100.0" {
			t.Fatalf("a refused login is in the login history: %v", logins)
		}
	}

	// The same refusal again soon adds no notice; later it does.
	before := len(noticesOf(t, env, w.teacherA))
	authWantError(t, loginFrom(t, env, "teacher-a", testenv.Password("teacher-a"), addrFR), 403, "country_blocked")
	if n := len(noticesOf(t, env, w.teacherA)); n != before {
		t.Fatalf("a repeated refusal added a notice (%d → %d)", before, n)
	}
	env.Clock.Advance(11 * time.Minute)
	authWantError(t, loginFrom(t, env, "teacher-a", testenv.Password("teacher-a"), addrFR), 403, "country_blocked")
	if n := len(noticesOf(t, env, w.teacherA)); n != before+1 {
		t.Fatalf("a refusal after the quiet time: notices %d → %d, want one more", before, n)
	}

	// Other users are not restricted.
	authWantStatus(t, loginFrom(t, env, "teacher2-a", testenv.Password("teacher2-a"), addrFR), 200)
}

func TestCountryBlockedNoticesKeepTwenty(t *testing.T) {
	w := geoWorld(t)
	env := w.env
	tok := tokenFrom(t, env, "student-a", "phone", addrDE)
	authWantStatus(t, setCountries(t, env, tok, addrDE, []string{"DE"}), 204)
	for i := range 25 {
		env.Clock.Advance(11 * time.Minute) // past the quiet time of a repeat
		ip := "198.51.100." + authItoa(i+1)
		if i%2 == 1 {
			ip = "2001:db8:99:" + authItoa(i) + "::1"
		}
		authWantError(t, loginFrom(t, env, "student-a", testenv.Password("student-a"), ip), 403, "country_blocked")
	}
	ns := noticesOf(t, env, w.studentA)
	if len(ns) != 20 || !ns[0].At.Equal(env.Clock.Now()) || !ns[0].At.After(ns[19].At) {
		t.Fatalf("%d notices (newest %v, oldest %v), want the newest 20", len(ns), ns[0].At, ns[len(ns)-1].At)
	}
}

func TestCountryBlockedToken(t *testing.T) {
	w := geoWorld(t)
	env := w.env
	tok := tokenFrom(t, env, "teacher-a", "phone", addrDE)
	session := func() string {
		r := authCall(t, env, "POST", "/api/v1/login", "", authLoginBody("teacher-a", testenv.Password("teacher-a"), "pc", "windows", false), from(addrDE))
		authWantStatus(t, r, 200)
		var out struct {
			Credential struct{ Token string } `json:"credential"`
		}
		authDecode(t, r, &out)
		return out.Credential.Token
	}()
	authWantStatus(t, setCountries(t, env, tok, addrDE, []string{"DE"}), 204)

	paths := []struct{ method, path string }{
		{"GET", "/api/v1/me"},
		{"GET", "/api/v1/trust"},
		{"GET", "/api/v1/conversations"},
		{"GET", "/api/v1/me/countries"},
		{"GET", "/api/v1/me/export"},
	}
	tests := map[string]struct {
		token, addr string
		status      int
		code        string
	}{
		"trust from Germany":         {tok, addrDE, 200, ""},
		"session from Germany":       {session, addrDE2, 200, ""},
		"trust from France":          {tok, addrFR, 403, "country_blocked"},
		"session from France":        {session, addrFR, 403, "country_blocked"},
		"trust from the US (IPv6)":   {tok, addrUS, 403, "country_blocked"},
		"trust, not locatable":       {tok, addrUnknown, 403, "country_blocked"},
		"trust from loopback":        {tok, addrLoopback, 403, "country_blocked"},
		"bad token from France: 401": {"kf1_" + strings.Repeat("x", 43), addrFR, 401, "unauthorized"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			for _, p := range paths {
				r := authCall(t, env, p.method, p.path, tc.token, nil, from(tc.addr))
				if tc.code != "" {
					authWantError(t, r, tc.status, tc.code)
				} else {
					authWantStatus(t, r, tc.status)
				}
			}
		})
	}
	// PUT /me/countries itself is refused from elsewhere: a stolen token
	// cannot lift the restriction.
	authWantError(t, setCountries(t, env, tok, addrFR, nil), 403, "country_blocked")
	if u, _ := env.Srv.Store().User(context.Background(), w.teacherA); !slices.Equal(u.Countries, []string{"DE"}) {
		t.Fatalf("restriction %q after a refused change", u.Countries)
	}
	// Refused token uses left notices too.
	if ns := noticesOf(t, env, w.teacherA); len(ns) == 0 || ns[0].Kind != storage.NoticeCountryBlocked {
		t.Fatalf("notices %+v", ns)
	}
}

// wsFrom opens the WebSocket from addr, with the token in the header
// ("" sends none).
func wsFrom(t *testing.T, env *testenv.Env, tok, addr string) (*testenv.WS, *http.Response, error) {
	t.Helper()
	h := from(addr)
	if h == nil {
		h = http.Header{}
	}
	if tok != "" {
		h.Set("Authorization", "Bearer "+tok)
	}
	return env.DialRaw(h)
}

func wantReady(t *testing.T, ws *testenv.WS) {
	t.Helper()
	if f := ws.Read(); f.Type != proto.TypeReady {
		t.Fatalf("first frame %q, want ready", f.Type)
	}
}

func TestCountryBlockedWebSocket(t *testing.T) {
	w := geoWorld(t)
	env := w.env
	tok := tokenFrom(t, env, "teacher-a", "phone", addrDE)
	authWantStatus(t, setCountries(t, env, tok, addrDE, []string{"DE"}), 204)

	t.Run("header auth from France: 403 before the upgrade", func(t *testing.T) {
		_, resp, err := wsFrom(t, env, tok, addrFR)
		if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("dial: err %v, resp %v; want HTTP 403", err, resp)
		}
		var body struct {
			Error struct{ Code string } `json:"error"`
		}
		json.NewDecoder(resp.Body).Decode(&body)
		if body.Error.Code != "country_blocked" {
			t.Fatalf("error code %q, want country_blocked", body.Error.Code)
		}
	})
	t.Run("header auth from Germany", func(t *testing.T) {
		ws, _, err := wsFrom(t, env, tok, addrDE)
		if err != nil {
			t.Fatal(err)
		}
		wantReady(t, ws)
	})
	for name, tc := range map[string]struct {
		addr string
		want int
	}{
		"first frame from France":    {addrFR, int(proto.CloseCountryBlocked)},
		"first frame, not locatable": {addrUnknown, int(proto.CloseCountryBlocked)},
		"first frame, bad token":     {addrDE, int(proto.CloseUnauthorized)},
	} {
		t.Run(name, func(t *testing.T) {
			ws, _, err := wsFrom(t, env, "", tc.addr)
			if err != nil {
				t.Fatal(err)
			}
			token := tok
			if tc.want == int(proto.CloseUnauthorized) {
				token = "kf1_" + strings.Repeat("y", 43)
			}
			ws.Send(`{"type":"auth","token":"` + token + `"}`)
			if code := ws.CloseCode(5 * time.Second); code != tc.want {
				t.Fatalf("close code %d, want %d", code, tc.want)
			}
		})
	}
	t.Run("first frame from Germany", func(t *testing.T) {
		ws, _, err := wsFrom(t, env, "", addrDE)
		if err != nil {
			t.Fatal(err)
		}
		ws.Send(`{"type":"auth","token":"` + tok + `"}`)
		wantReady(t, ws)
	})
}

// TestCountryRestrictionClosesOpenSockets: setting a restriction checks
// the user's open sockets at once; a socket whose address it refuses
// closes with 4403, the others stay. A restriction changed behind the
// server's back is caught by the recheck on the socket's next frame.
func TestCountryRestrictionClosesOpenSockets(t *testing.T) {
	w := geoWorld(t)
	env := w.env
	tok := tokenFrom(t, env, "teacher-a", "phone", addrDE)
	open := func(addr string) *testenv.WS {
		t.Helper()
		ws, _, err := wsFrom(t, env, tok, addr)
		if err != nil {
			t.Fatal(err)
		}
		wantReady(t, ws)
		return ws
	}
	wsDE, wsFR, wsUS := open(addrDE), open(addrFR), open(addrUS)
	otherUser := tokenFrom(t, env, "teacher2-a", "phone", addrFR)
	wsOther, _, err := wsFrom(t, env, otherUser, addrFR)
	if err != nil {
		t.Fatal(err)
	}
	wantReady(t, wsOther)

	authWantStatus(t, setCountries(t, env, tok, addrDE, []string{"DE", "US"}), 204)
	if code := wsFR.CloseCode(5 * time.Second); code != int(proto.CloseCountryBlocked) {
		t.Fatalf("socket from France: close code %d, want 4403", code)
	}
	for name, ws := range map[string]*testenv.WS{"Germany": wsDE, "US": wsUS, "another user in France": wsOther} {
		ws.Send(`{"type":"ping"}`)
		if f, _ := ws.ReadType(proto.TypePong); f == nil {
			t.Fatalf("socket from %s: no pong", name)
		}
	}

	// Behind the server's back: only Germany now. The US socket is
	// refused on its next frame after the recheck interval.
	err = env.Srv.Store().UpdateUser(context.Background(), w.teacherA, func(u *storage.User) error {
		u.Countries = []string{"DE"}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	env.Clock.Advance(2 * time.Minute)
	wsUS.Send(`{"type":"ping"}`)
	if code := wsUS.CloseCode(5 * time.Second); code != int(proto.CloseCountryBlocked) {
		t.Fatalf("socket from the US after the recheck: close code %d, want 4403", code)
	}
	wsDE.Send(`{"type":"ping"}`)
	if f, _ := wsDE.ReadType(proto.TypePong); f == nil {
		t.Fatal("socket from Germany: no pong")
	}
}

func TestGeoIPLocator(t *testing.T) {
	g, err := auth.OpenGeoIP(testenv.GeoIP(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	tests := map[string]struct {
		addr string
		want string // "" not locatable
	}{
		"IPv4":                {"203.0.113.200", "DE"},
		"IPv4-mapped IPv6":    {"::ffff:203.0.113.200", "DE"},
		"IPv4 France":         {"198.51.100.1", "FR"},
		"IPv6":                {"2001:db8:1:ffff::1", "AT"},
		"IPv6 outside":        {"2001:db8:2::1", ""},
		"IPv4 outside":        {"192.0.2.1", ""},
		"IPv4 next to a /24":  {"203.0.114.1", ""},
		"unspecified address": {"0.0.0.0", ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, ok := g.Country(netip.MustParseAddr(tc.addr))
			if got != tc.want || ok != (tc.want != "") {
				t.Fatalf("Country(%s) = %q, %v; want %q", tc.addr, got, ok, tc.want)
			}
		})
	}
	if _, err := auth.OpenGeoIP(t.TempDir() + "/missing.mmdb"); err == nil {
		t.Fatal("OpenGeoIP of a missing file: no error")
	}
}

func TestValidCountry(t *testing.T) {
	n := 0
	for a := 'A'; a <= 'Z'; a++ {
		for b := 'A'; b <= 'Z'; b++ {
			if auth.ValidCountry(string([]rune{a, b})) {
				n++
			}
		}
	}
	if n != 250 { // 249 assigned codes and XK
		t.Fatalf("%d valid codes, want 250", n)
	}
	for _, bad := range []string{"", "D", "de", "De", "DEU", "XX", "EU", "ÄÖ"} {
		if auth.ValidCountry(bad) {
			t.Errorf("ValidCountry(%q) = true", bad)
		}
	}
}

func TestGeoIPConfig(t *testing.T) {
	// A configured database that cannot be opened stops the start.
	cfg := server.Config{
		DataDir: t.TempDir(), GeoIPDB: filepath.Join(t.TempDir(), "missing.mmdb"),
		NoSync: true, OperatorToken: testenv.OperatorToken,
	}
	srv, err := server.New(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err == nil {
		srv.Close()
		t.Fatal("server.New with a missing GeoIP file: no error")
	}
	if !strings.Contains(err.Error(), "GeoIP") {
		t.Fatalf("server.New with a missing GeoIP file: %v, want an error naming GeoIP", err)
	}
}
