package server_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"klassenfunk/internal/httpapi"
	"klassenfunk/internal/testenv"
	"klassenfunk/server"
	"klassenfunk/storage"
)

// TestAdminStats builds a world of distinctive names, addresses and ids and
// checks the operator statistics: the exact counts, and that nothing of the
// world but numbers appears in the body.
func TestAdminStats(t *testing.T) {
	env := testenv.New(t, func(c *server.Config) { c.TrustedProxies = []string{"127.0.0.1/32"} })
	ctx := context.Background()
	st := env.Srv.Store()

	var secrets []string // everything that must not appear in the body
	keep := func(s ...string) {
		for _, x := range s {
			secrets = append(secrets, x, strings.ToLower(x))
		}
	}
	schoolA := env.CreateSchool("Zebrafink-Gymnasium")
	schoolB := env.CreateSchool("Okapi-Grundschule")
	keep(schoolA, schoolB, "Zebrafink-Gymnasium", "Okapi-Grundschule")
	type person struct{ school, login, role string }
	people := []person{
		{schoolA, "quokka.quasimodo", "admin"},
		{schoolA, "axolotl.aurelia", "teacher"},
		{schoolA, "narwhal.nepomuk", "teacher"},
		{schoolA, "pangolin.pippa", "student"},
		{schoolB, "capybara.cornelius", "student"},
		{schoolB, "tapir.theodora", "parent"},
		{schoolB, "erased.ermine", "student"},
	}
	ids := map[string]string{}
	toks := map[string]string{}
	for i, p := range people {
		id := env.CreateUser(p.school, p.login, p.role)
		ids[p.login] = id
		keep(id, p.login, strings.ToUpper(p.login[:1])+p.login[1:])
		device := "Geraet-" + p.login
		addr := "203.0.113." + authItoa(100+i)
		r := authCall(t, env, "POST", "/api/v1/login", "", authLoginBody(p.login, testenv.Password(p.login), device, "ios", i%3 != 2), http.Header{"X-Forwarded-For": {addr}})
		authWantStatus(t, r, 200)
		var out struct {
			Credential struct{ Token string } `json:"credential"`
			TrustID    string                 `json:"trust_id"`
		}
		authDecode(t, r, &out)
		toks[p.login] = out.Credential.Token
		keep(device, device+" name", addr, httpapi.Anonymize(netip.MustParseAddr(addr)), out.Credential.Token, out.TrustID)
	}
	// Push registrations: one FCM, one APNs.
	for login, provider := range map[string]string{"axolotl.aurelia": "fcm", "narwhal.nepomuk": "apns"} {
		creds, _ := st.CredentialsOf(ctx, ids[login])
		token := "pushtoken-" + login
		keep(token, creds[0].ID, creds[0].ServiceID)
		err := st.UpdateCredential(ctx, creds[0].ID, func(c *storage.Credential) error {
			c.Push = &storage.PushRegistration{Provider: provider, Token: token, Topic: "de.zebrafink.app", Secret: make([]byte, 32)}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// A disabled account.
	if err := st.UpdateUser(ctx, ids["tapir.theodora"], func(u *storage.User) error { u.Disabled = true; return nil }); err != nil {
		t.Fatal(err)
	}
	// A group with messages.
	var g struct{ ID string }
	env.JSON("POST", "/api/v1/conversations", toks["axolotl.aurelia"], map[string]any{
		"kind": "group", "title": "Geheimgruppe Schnabeltier",
		"members": []map[string]any{{"user_id": ids["pangolin.pippa"], "can_write": true}},
	}, http.StatusCreated, &g)
	keep(g.ID, "Geheimgruppe Schnabeltier")
	for i := range 3 {
		var m struct{ ID string }
		env.JSON("POST", "/api/v1/conversations/"+g.ID+"/messages", toks["axolotl.aurelia"], map[string]any{
			"client_id": "c" + authItoa(i), "ciphertext": base64.StdEncoding.EncodeToString([]byte("x")),
			"keys": map[string]string{ids["pangolin.pippa"] + "/Geraet-pangolin.pippa": base64.StdEncoding.EncodeToString([]byte("k"))},
		}, http.StatusCreated, &m)
		keep(m.ID)
	}
	// An erased account.
	authWantStatus(t, authCall(t, env, "POST", "/api/v1/me/erase", toks["erased.ermine"],
		map[string]string{"client_hash": testenv.ClientHash(testenv.Password("erased.ermine"))}, nil), 204)

	// Who may ask.
	for name, tok := range map[string]string{"no token": "", "wrong token": "kfop_wrong"} {
		t.Run(name, func(t *testing.T) {
			authWantError(t, authCall(t, env, "GET", "/api/v1/admin/stats", tok, nil, nil), 401, "unauthorized")
		})
	}
	// A user's valid credential is not refused as invalid.
	authWantError(t, authCall(t, env, "GET", "/api/v1/admin/stats", toks["quokka.quasimodo"], nil, nil), 403, "forbidden")

	r := authCall(t, env, "GET", "/api/v1/admin/stats", testenv.OperatorToken, nil, nil)
	authWantStatus(t, r, 200)
	var got map[string]any
	authDecode(t, r, &got)
	want := map[string]any{
		"schools": 2.0,
		"accounts": map[string]any{
			"by_role":   map[string]any{"admin": 1.0, "teacher": 2.0, "student": 2.0, "parent": 1.0},
			"by_status": map[string]any{"active": 5.0, "disabled": 1.0},
		},
		// Logins 0..5 (the erased account's, 6, is gone): i%3 == 2 is a session.
		"trust_relationships": 4.0,
		"sessions":            2.0,
		"push_registrations":  map[string]any{"fcm": 1.0, "apns": 1.0},
		"messages_stored":     3.0,
		"erased_accounts":     1.0,
	}
	if !reflect.DeepEqual(got, want) {
		gb, _ := json.Marshal(got)
		wb, _ := json.Marshal(want)
		t.Fatalf("stats\n got %s\nwant %s", gb, wb)
	}
	body := string(r.Body)
	for _, s := range secrets {
		if s != "" && strings.Contains(body, s) {
			t.Errorf("the statistics contain %q", s)
		}
	}
	// Only digits, the fixed keys and JSON punctuation.
	stripped := body
	for _, k := range []string{"schools", "accounts", "by_role", "admin", "teacher", "student", "parent", "by_status", "active", "disabled",
		"trust_relationships", "sessions", "push_registrations", "fcm", "apns", "messages_stored", "erased_accounts"} {
		stripped = strings.ReplaceAll(stripped, `"`+k+`"`, "")
	}
	if strings.Trim(stripped, "{}:,0123456789 \n") != "" {
		t.Fatalf("the statistics hold more than counts: %s", stripped)
	}
}
