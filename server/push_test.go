package server_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"klassenfunk/internal/testenv"
	"klassenfunk/push"
	"klassenfunk/push/pushtest"
	"klassenfunk/server"
)

// pushOpts points a test node's push relay at prov (fcm and/or apns).
func pushOpts(prov *pushtest.Server, providers ...string) testenv.Option {
	return func(c *server.Config) {
		c.Push.CAFile = prov.CAFile
		for _, p := range providers {
			switch p {
			case "fcm":
				c.Push.FCMCredentials, c.Push.FCMEndpoint = prov.ServiceAccountFile, prov.FCMEndpoint()
			case "apns":
				c.Push.APNSKeyFile, c.Push.APNSKeyID, c.Push.APNSTeamID = prov.KeyFile, pushtest.KeyID, pushtest.TeamID
				c.Push.APNSEndpoint = prov.APNsEndpoint()
			}
		}
		c.Push.Tuning = push.Tuning{
			Workers: 8, CoalesceWindow: -1, SendTimeout: 3 * time.Second,
			RetryBase: 50 * time.Millisecond, RetryMax: 200 * time.Millisecond,
		}
	}
}

// pushDevice is a logged-in personal device with a push registration.
type pushDevice struct {
	user, device     string
	token, trustID   string
	provider, devTok string
	serviceID        string
	secret           []byte
}

// pushRegister logs a personal device in and registers it for push.
func pushRegister(t *testing.T, env *testenv.Env, login, userID, device, provider string) *pushDevice {
	t.Helper()
	d := &pushDevice{user: userID, device: device, provider: provider}
	d.token, d.trustID = env.Login(login, device, true)
	body := map[string]any{"provider": provider}
	if provider == "apns" {
		h := sha256.Sum256([]byte(login + "/" + device))
		d.devTok = hex.EncodeToString(h[:])
		body["topic"] = "de.klassenfunk.app"
	} else {
		d.devTok = "fcm-" + login + "-" + device + ":APA91b" + strings.Repeat("x", 40)
	}
	body["token"] = d.devTok
	var out struct {
		ServiceID  string `json:"service_id"`
		PushSecret string `json:"push_secret"`
	}
	env.JSON("PUT", "/api/v1/push", d.token, body, http.StatusOK, &out)
	d.serviceID = out.ServiceID
	var err error
	if d.secret, err = base64.StdEncoding.Strict().DecodeString(out.PushSecret); err != nil || len(d.secret) != 32 {
		t.Fatalf("push_secret %q: %v", out.PushSecret, err)
	}
	return d
}

// open decrypts a captured push for d.
func (d *pushDevice) open(t *testing.T, q pushtest.Request) (push.Payload, string) {
	t.Helper()
	if q.SID != d.serviceID {
		t.Fatalf("push for %s carries sid %q, want %q", d.device, q.SID, d.serviceID)
	}
	p, plain, err := push.Open(d.secret, q.SID, q.Blob)
	if err != nil {
		t.Fatalf("blob for %s does not open: %v", d.device, err)
	}
	return p, string(plain)
}

// pushGroup creates a group conversation as tok.
func pushGroup(t *testing.T, env *testenv.Env, tok, title string, members ...string) string {
	t.Helper()
	ms := []map[string]any{}
	for _, m := range members {
		ms = append(ms, map[string]any{"user_id": m, "can_write": true})
	}
	var out struct{ ID string }
	env.JSON("POST", "/api/v1/conversations", tok, map[string]any{"kind": "group", "title": title, "members": ms}, http.StatusCreated, &out)
	return out.ID
}

type pushMsg struct {
	ID  string `json:"id"`
	Seq uint64 `json:"seq"`
}

// pushSend posts a message with ciphertext text.
func pushSend(t *testing.T, env *testenv.Env, tok, conv, text string, keyName string) pushMsg {
	t.Helper()
	var m pushMsg
	env.JSON("POST", "/api/v1/conversations/"+conv+"/messages", tok, map[string]any{
		"client_id":  fmt.Sprintf("c-%d", time.Now().UnixNano()),
		"ciphertext": base64.StdEncoding.EncodeToString([]byte(text)),
		"keys":       map[string]string{keyName: base64.StdEncoding.EncodeToString([]byte("wrapped"))},
	}, http.StatusCreated, &m)
	return m
}

// pushIdle waits until the relay holds no pending push.
func pushIdle(t *testing.T, env *testenv.Env) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, "push relay idle", func() bool {
		// In the order work flows, one gather each.
		return env.Metric("klassenfunk_push_intake_depth") == 0 && env.Metric("klassenfunk_push_queue_depth") == 0 &&
			env.Metric("klassenfunk_push_in_flight") == 0
	})
}

func waitPushes(t *testing.T, prov *pushtest.Server, n int, tokens ...string) {
	t.Helper()
	prov.Wait(t, 10*time.Second, fmt.Sprintf("%d pushes to each of %d devices", n, len(tokens)), func(reqs []pushtest.Request) bool {
		for _, tok := range tokens {
			c := 0
			for _, q := range reqs {
				if q.Token == tok {
					c++
				}
			}
			if c < n {
				return false
			}
		}
		return true
	})
}

func TestPushRegistration(t *testing.T) {
	prov := pushtest.New(t)
	env := testenv.New(t, pushOpts(prov, "fcm", "apns"))
	school := env.CreateSchool("Push-Schule")
	env.CreateUser(school, "anna", "student")
	trust, trustID := env.Login("anna", "phone", true)
	session, _ := env.Login("anna", "kiosk", false)

	fcm := map[string]any{"provider": "fcm", "token": "fcm-token:APA91b-abc_def"}
	tests := map[string]struct {
		method, token string
		body          any
		want          int
		wantCode      string
	}{
		"session put":          {"PUT", session, fcm, 403, "forbidden"},
		"session delete":       {"DELETE", session, nil, 403, "forbidden"},
		"no credential":        {"PUT", "", fcm, 401, "unauthorized"},
		"unknown provider":     {"PUT", trust, map[string]any{"provider": "gcm", "token": "x"}, 400, "invalid_request"},
		"no provider":          {"PUT", trust, map[string]any{"token": "x"}, 400, "invalid_request"},
		"empty token":          {"PUT", trust, map[string]any{"provider": "fcm", "token": ""}, 400, "invalid_request"},
		"token too long":       {"PUT", trust, map[string]any{"provider": "fcm", "token": strings.Repeat("a", push.MaxTokenLen+1)}, 400, "invalid_request"},
		"token with slash":     {"PUT", trust, map[string]any{"provider": "fcm", "token": "a/b"}, 400, "invalid_request"},
		"apns without topic":   {"PUT", trust, map[string]any{"provider": "apns", "token": "abcdef"}, 400, "invalid_request"},
		"apns token not hex":   {"PUT", trust, map[string]any{"provider": "apns", "token": "xyz", "topic": "de.app"}, 400, "invalid_request"},
		"apns token too long":  {"PUT", trust, map[string]any{"provider": "apns", "token": strings.Repeat("a", 202), "topic": "de.app"}, 400, "invalid_request"},
		"apns topic bad chars": {"PUT", trust, map[string]any{"provider": "apns", "token": "abcdef", "topic": "de app/x"}, 400, "invalid_request"},
		"token not a string":   {"PUT", trust, map[string]any{"provider": "fcm", "token": 7}, 400, "invalid_request"},
		"malformed json":       {"PUT", trust, "{", 400, "invalid_request"},
		"delete without one":   {"DELETE", trust, nil, 204, ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := authCall(t, env, tc.method, "/api/v1/push", tc.token, tc.body, nil)
			if tc.wantCode != "" {
				authWantError(t, r, tc.want, tc.wantCode)
				return
			}
			authWantStatus(t, r, tc.want)
		})
	}

	pushFlag := func() bool {
		t.Helper()
		for _, e := range authTrusts(t, env, trust) {
			if e.ID == trustID {
				return e.Push
			}
		}
		t.Fatal("trust relationship missing")
		return false
	}
	var first, second, apns map[string]string
	env.JSON("PUT", "/api/v1/push", trust, fcm, http.StatusOK, &first)
	if len(first) != 2 || first["service_id"] == "" || !pushFlag() {
		t.Fatalf("PUT /push = %v", first)
	}
	if b, err := base64.StdEncoding.Strict().DecodeString(first["push_secret"]); err != nil || len(b) != 32 {
		t.Fatalf("push_secret %q is not 32 bytes of base64", first["push_secret"])
	}
	env.JSON("PUT", "/api/v1/push", trust, fcm, http.StatusOK, &second)
	if second["service_id"] != first["service_id"] || second["push_secret"] == first["push_secret"] {
		t.Errorf("second PUT: service_id must stay (%s → %s), push_secret must change", first["service_id"], second["service_id"])
	}
	env.JSON("PUT", "/api/v1/push", trust, map[string]any{"provider": "apns", "token": strings.Repeat("0f", 32), "topic": "de.klassenfunk.app", "sandbox": true}, http.StatusOK, &apns)
	c, err := env.Srv.Store().Credential(context.Background(), trustID)
	if err != nil || c.Push == nil || c.Push.Provider != "apns" || !c.Push.Sandbox || c.Push.Topic != "de.klassenfunk.app" ||
		base64.StdEncoding.EncodeToString(c.Push.Secret) != apns["push_secret"] || c.ServiceID != first["service_id"] {
		t.Fatalf("stored registration %+v, %v", c.Push, err)
	}
	env.JSON("DELETE", "/api/v1/push", trust, nil, http.StatusNoContent, nil)
	if pushFlag() {
		t.Error("registration still there after DELETE /push")
	}

	// A provider without credentials refuses registrations.
	prov2 := pushtest.New(t)
	env2 := testenv.New(t, pushOpts(prov2, "fcm"))
	s2 := env2.CreateSchool("Nur FCM")
	env2.CreateUser(s2, "ben", "student")
	tok2, _ := env2.Login("ben", "iphone", true)
	r := authCall(t, env2, "PUT", "/api/v1/push", tok2, map[string]any{"provider": "apns", "token": "abcdef", "topic": "de.app"}, nil)
	authWantError(t, r, 400, "invalid_request")
	if !strings.Contains(string(r.Body), "not configured") {
		t.Errorf("message does not say apns is not configured: %s", r.Body)
	}
	if !strings.Contains(env2.Logs(), "push provider off") || !strings.Contains(env2.Logs(), "push provider on") {
		t.Errorf("provider switches not logged at start")
	}
}

// The whole path: who gets a push, what the blob says, and that nothing of
// the message reaches Google or Apple.
func TestPushContentFree(t *testing.T) {
	prov := pushtest.New(t)
	env := testenv.New(t, pushOpts(prov, "fcm", "apns"))
	school := env.CreateSchool("Gymnasium Push")
	const senderLogin = "lehrkraft-sendet-qx"
	const title = "Klasse 7b Geheimgruppe"
	const text = "Geheime Nachricht über die Mathearbeit"
	sender := env.CreateUser(school, senderLogin, "teacher")
	alice := env.CreateUser(school, "alice-p", "student")
	bob := env.CreateUser(school, "bob-p", "student")
	carl := env.CreateUser(school, "carl-p", "student")
	dora := env.CreateUser(school, "dora-p", "student")

	sendingDev := pushRegister(t, env, senderLogin, sender, "t-phone", "fcm")
	otherDev := pushRegister(t, env, senderLogin, sender, "t-tablet", "apns")
	aDev := pushRegister(t, env, "alice-p", alice, "a-phone", "fcm")
	bDev := pushRegister(t, env, "bob-p", bob, "b-iphone", "apns")
	cDev := pushRegister(t, env, "carl-p", carl, "c-phone", "fcm")
	env.Login("dora-p", "kiosk", false) // a session: never push
	ws := env.Dial(cDev.token)          // carl is online
	defer ws.Conn.Close()

	conv := pushGroup(t, env, sendingDev.token, title, alice, bob, carl, dora)
	m := pushSend(t, env, sendingDev.token, conv, text, alice+"/a-phone")

	waitPushes(t, prov, 1, otherDev.devTok, aDev.devTok, bDev.devTok)
	pushIdle(t, env)
	for _, d := range []*pushDevice{sendingDev, cDev} {
		if n := len(prov.To(d.devTok)); n != 0 {
			t.Errorf("%s got %d pushes (sending device / online)", d.device, n)
		}
	}
	if n := len(prov.Pushes()); n != 3 {
		t.Errorf("%d pushes, want 3", n)
	}
	if got := env.Metric("klassenfunk_push_total"); got < 4 { // 3 sent + 1 skipped_online
		t.Errorf("klassenfunk_push_total = %v", got)
	}
	want := fmt.Sprintf(`{"t":"message","c":%q,"m":%q,"s":%d}`, conv, m.ID, m.Seq)
	for _, d := range []*pushDevice{otherDev, aDev, bDev} {
		for _, q := range prov.To(d.devTok) {
			if _, plain := d.open(t, q); plain != want {
				t.Errorf("%s: plaintext %s, want %s", d.device, plain, want)
			}
			if q.Proto != 2 {
				t.Errorf("%s: HTTP/%d", d.device, q.Proto)
			}
		}
	}

	// Nothing of the message in any request to the providers, the OAuth
	// exchange included.
	forbidden := map[string]string{
		"ciphertext":        text,
		"ciphertext base64": base64.StdEncoding.EncodeToString([]byte(text)),
		"sender id":         sender,
		"sender login":      senderLogin,
		"conversation id":   conv,
		"title":             title,
		"message id":        m.ID,
	}
	for _, q := range prov.Requests() {
		var hdr strings.Builder
		for k, vs := range q.Header {
			hdr.WriteString(k + ": " + strings.Join(vs, ",") + "\n")
		}
		for what, s := range forbidden {
			if strings.Contains(string(q.Body), s) || strings.Contains(hdr.String(), s) || strings.Contains(q.Path, s) {
				t.Errorf("%s request %s holds the %s", q.Kind, q.Path, what)
			}
		}
	}
	// The logs hold neither tokens nor secrets nor blobs.
	logs := env.Logs()
	for _, d := range []*pushDevice{sendingDev, otherDev, aDev, bDev, cDev} {
		if strings.Contains(logs, d.devTok) || strings.Contains(logs, base64.StdEncoding.EncodeToString(d.secret)) {
			t.Errorf("logs hold the token or secret of %s", d.device)
		}
	}
	for _, q := range prov.Pushes() {
		if strings.Contains(logs, q.Blob) {
			t.Error("logs hold a blob")
		}
	}
	// /metrics shows the counters by provider and outcome.
	r := env.Do("GET", "/metrics", "", nil)
	for _, s := range []string{`klassenfunk_push_total{outcome="sent",provider="fcm"} 1`, `klassenfunk_push_total{outcome="sent",provider="apns"} 2`,
		`klassenfunk_push_total{outcome="skipped_online",provider="fcm"} 1`, "klassenfunk_push_queue_depth 0", "klassenfunk_push_send_duration_seconds_bucket"} {
		if !strings.Contains(string(r.Body), s) {
			t.Errorf("/metrics lacks %s", s)
		}
	}
}

// Revocation, logout and DELETE /trust/{id}/push all stop pushes.
func TestPushRevocation(t *testing.T) {
	prov := pushtest.New(t)
	env := testenv.New(t, pushOpts(prov, "fcm", "apns"))
	school := env.CreateSchool("Widerruf")
	teacher := env.CreateUser(school, "lehrer-w", "teacher")
	users := map[string]string{}
	for _, l := range []string{"rev-a", "rev-b", "rev-c", "rev-d"} {
		users[l] = env.CreateUser(school, l, "student")
	}
	tTok, _ := env.Login("lehrer-w", "desk", true)
	revoked := pushRegister(t, env, "rev-a", users["rev-a"], "phone", "fcm")
	loggedOut := pushRegister(t, env, "rev-b", users["rev-b"], "phone", "apns")
	unpushed := pushRegister(t, env, "rev-c", users["rev-c"], "phone", "fcm")
	barrier := pushRegister(t, env, "rev-d", users["rev-d"], "phone", "apns")
	conv := pushGroup(t, env, tTok, "Widerrufsgruppe", users["rev-a"], users["rev-b"], users["rev-c"], users["rev-d"])

	// A second device of rev-a revokes the phone.
	other, _ := env.Login("rev-a", "laptop", true)
	env.JSON("DELETE", "/api/v1/trust/"+revoked.trustID, other, nil, http.StatusNoContent, nil)
	env.JSON("POST", "/api/v1/logout", loggedOut.token, nil, http.StatusNoContent, nil)
	env.JSON("DELETE", "/api/v1/trust/"+unpushed.trustID+"/push", unpushed.token, nil, http.StatusNoContent, nil)

	pushSend(t, env, tTok, conv, "nach dem Widerruf", teacher+"/desk")
	waitPushes(t, prov, 1, barrier.devTok)
	pushIdle(t, env)
	for _, d := range []*pushDevice{revoked, loggedOut, unpushed} {
		if n := len(prov.To(d.devTok)); n != 0 {
			t.Errorf("%s/%s got %d pushes after revocation", d.user, d.device, n)
		}
	}
}

// A dead token on each provider deletes the registration (GET /trust shows
// push false) and is not tried again.
func TestPushDeadToken(t *testing.T) {
	prov := pushtest.New(t)
	env := testenv.New(t, pushOpts(prov, "fcm", "apns"))
	school := env.CreateSchool("Tote Tokens")
	teacher := env.CreateUser(school, "lehrer-d", "teacher")
	a := env.CreateUser(school, "dead-a", "student")
	b := env.CreateUser(school, "dead-b", "student")
	c := env.CreateUser(school, "dead-c", "student")
	tTok, _ := env.Login("lehrer-d", "desk", true)
	fcmDead := pushRegister(t, env, "dead-a", a, "phone", "fcm")
	apnsDead := pushRegister(t, env, "dead-b", b, "iphone", "apns")
	barrier := pushRegister(t, env, "dead-c", c, "phone", "fcm")
	prov.Script(func(q *pushtest.Request) *pushtest.Reply {
		switch q.Token {
		case fcmDead.devTok:
			return pushtest.FCMUnregistered()
		case apnsDead.devTok:
			return pushtest.APNsError(410, "Unregistered", "")
		}
		return nil
	})
	conv := pushGroup(t, env, tTok, "Gruppe", a, b, c)
	pushSend(t, env, tTok, conv, "eins", teacher+"/desk")
	waitPushes(t, prov, 1, fcmDead.devTok, apnsDead.devTok, barrier.devTok)
	for _, d := range []*pushDevice{fcmDead, apnsDead} {
		testenv.Eventually(t, 5*time.Second, "registration of "+d.device+" gone", func() bool {
			for _, e := range authTrusts(t, env, d.token) {
				if e.ID == d.trustID {
					return !e.Push
				}
			}
			return false
		})
	}
	pushSend(t, env, tTok, conv, "zwei", teacher+"/desk")
	waitPushes(t, prov, 2, barrier.devTok)
	pushIdle(t, env)
	for _, d := range []*pushDevice{fcmDead, apnsDead} {
		if n := len(prov.To(d.devTok)); n != 1 {
			t.Errorf("%s tried %d times, want 1", d.device, n)
		}
	}
	r := env.Do("GET", "/metrics", "", nil)
	for _, s := range []string{`klassenfunk_push_total{outcome="dead_token",provider="fcm"} 1`, `klassenfunk_push_total{outcome="dead_token",provider="apns"} 1`} {
		if !strings.Contains(string(r.Body), s) {
			t.Errorf("/metrics lacks %s", s)
		}
	}
}

// A node restarted with a pending push sends it exactly once.
func TestPushRestart(t *testing.T) {
	prov := pushtest.New(t)
	dir := t.TempDir()
	inDir := func(c *server.Config) { c.DataDir = dir }
	slow := func(c *server.Config) { c.Push.Tuning.RetryBase, c.Push.Tuning.RetryMax = time.Hour, time.Hour }
	env := testenv.New(t, pushOpts(prov, "fcm", "apns"), inDir, slow)
	school := env.CreateSchool("Neustart")
	teacher := env.CreateUser(school, "lehrer-n", "teacher")
	a := env.CreateUser(school, "restart-a", "student")
	b := env.CreateUser(school, "restart-b", "student")
	tTok, _ := env.Login("lehrer-n", "desk", true)
	served := pushRegister(t, env, "restart-a", a, "phone", "fcm")
	stuck := pushRegister(t, env, "restart-b", b, "iphone", "apns")
	prov.Script(func(q *pushtest.Request) *pushtest.Reply {
		if q.Token == stuck.devTok {
			return pushtest.APNsError(503, "ServiceUnavailable", "")
		}
		return nil
	})
	conv := pushGroup(t, env, tTok, "Gruppe", a, b)
	m := pushSend(t, env, tTok, conv, "vor dem Neustart", teacher+"/desk")
	waitPushes(t, prov, 1, served.devTok, stuck.devTok)
	testenv.Eventually(t, 5*time.Second, "retry scheduled", func() bool { return env.Metric("klassenfunk_push_total") >= 2 })
	pushIdleOrWaiting(t, env)
	env.Srv.Drain(context.Background())
	env.HTTP.Close()
	if err := env.Srv.Close(); err != nil {
		t.Fatal(err)
	}

	prov.Script(nil)
	env2 := testenv.New(t, pushOpts(prov, "fcm", "apns"), inDir)
	waitPushes(t, prov, 2, stuck.devTok)
	pushIdle(t, env2)
	q := prov.To(stuck.devTok)[1]
	if p, _ := stuck.open(t, q); p.M != m.ID || p.C != conv {
		t.Errorf("after restart: %+v", p)
	}
	env2.Srv.Drain(context.Background())
	env2.HTTP.Close()
	if err := env2.Srv.Close(); err != nil {
		t.Fatal(err)
	}

	env3 := testenv.New(t, pushOpts(prov, "fcm", "apns"), inDir)
	pushIdle(t, env3)
	if n := len(prov.To(served.devTok)); n != 1 {
		t.Errorf("device served before the restart got %d pushes, want 1", n)
	}
	if n := len(prov.To(stuck.devTok)); n != 2 {
		t.Errorf("stuck device got %d requests, want 2", n)
	}
}

// pushIdleOrWaiting waits until nothing is in flight (a push may wait for
// its retry).
func pushIdleOrWaiting(t *testing.T, env *testenv.Env) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, "nothing in flight", func() bool {
		return env.Metric("klassenfunk_push_in_flight") == 0 && env.Metric("klassenfunk_push_intake_depth") == 0
	})
}

// The operator's test push: one per registered device, outcomes without
// tokens.
func TestPushAdminTest(t *testing.T) {
	prov := pushtest.New(t)
	env := testenv.New(t, pushOpts(prov, "fcm", "apns"))
	school := env.CreateSchool("Testpush")
	u := env.CreateUser(school, "tested", "teacher")
	phone := pushRegister(t, env, "tested", u, "phone", "fcm")
	tablet := pushRegister(t, env, "tested", u, "tablet", "apns")
	env.Login("tested", "kiosk", false)
	env.Login("tested", "laptop", true) // no registration
	prov.Script(func(q *pushtest.Request) *pushtest.Reply {
		if q.Token == tablet.devTok {
			return pushtest.APNsError(400, "BadDeviceToken", "")
		}
		return nil
	})

	var out struct {
		UserID  string            `json:"user_id"`
		Devices []push.TestResult `json:"devices"`
	}
	r := env.JSON("POST", "/api/v1/admin/push-test", testenv.OperatorToken, map[string]string{"user_id": u}, http.StatusOK, &out)
	slices.SortFunc(out.Devices, func(a, b push.TestResult) int { return strings.Compare(a.Provider, b.Provider) })
	if out.UserID != u || len(out.Devices) != 2 ||
		out.Devices[0].Provider != "apns" || out.Devices[0].Outcome != "dead_token" || out.Devices[0].TrustID != tablet.trustID ||
		out.Devices[1].Provider != "fcm" || out.Devices[1].Outcome != "sent" || out.Devices[1].TrustID != phone.trustID {
		t.Fatalf("push test: %s", r.Body)
	}
	for _, d := range []*pushDevice{phone, tablet} {
		if strings.Contains(string(r.Body), d.devTok) {
			t.Error("the answer holds a device token")
		}
	}
	q := prov.To(phone.devTok)
	if len(q) != 1 {
		t.Fatalf("%d test pushes to the phone", len(q))
	}
	if _, plain := phone.open(t, q[0]); plain != `{"t":"test"}` {
		t.Errorf("test push plaintext %s", plain)
	}

	for name, tc := range map[string]struct {
		token string
		body  any
		want  int
		code  string
	}{
		"user token":   {phone.token, map[string]string{"user_id": u}, 403, "forbidden"},
		"no token":     {"", map[string]string{"user_id": u}, 401, "unauthorized"},
		"unknown user": {testenv.OperatorToken, map[string]string{"user_id": "nobody"}, 404, "not_found"},
		"no user id":   {testenv.OperatorToken, map[string]string{}, 400, "invalid_request"},
		"bad json":     {testenv.OperatorToken, "[", 400, "invalid_request"},
	} {
		t.Run(name, func(t *testing.T) {
			authWantError(t, authCall(t, env, "POST", "/api/v1/admin/push-test", tc.token, tc.body, nil), tc.want, tc.code)
		})
	}
	var none struct{ Devices []json.RawMessage }
	other := env.CreateUser(school, "unregistered", "student")
	env.JSON("POST", "/api/v1/admin/push-test", testenv.OperatorToken, map[string]string{"user_id": other}, http.StatusOK, &none)
	if none.Devices == nil || len(none.Devices) != 0 {
		t.Errorf("devices of a user without registrations: %v", none.Devices)
	}
}
