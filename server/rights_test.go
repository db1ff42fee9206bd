package server_test

import (
	"archive/zip"
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"klassenfunk/internal/testenv"
	"klassenfunk/proto"
	"klassenfunk/server"
	"klassenfunk/storage"
)

// rightsWorld: school "Schule am Deich" with anna (teacher), ben (student)
// and carl (teacher). anna has a trust relationship with a push
// registration and a device key, and a session; there is a group of all
// three (created by anna), a direct conversation anna↔ben, and messages in
// both, from anna and from ben.
type rightsWorld struct {
	env              *testenv.Env
	school           string
	anna, ben, carl  string // user ids
	annaTok, annaSes string
	annaTrust        string
	benTok, carlTok  string
	group, direct    string
	pushToken        string
	pushSecret       []byte
}

func rightsKeys(users ...string) map[string]string {
	keys := map[string]string{}
	for _, u := range users {
		keys[u] = base64.StdEncoding.EncodeToString([]byte("wrapped-for:" + u))
	}
	return keys
}

func rightsSend(t *testing.T, env *testenv.Env, tok, conv, clientID, text string, keys map[string]string) proto.Message {
	t.Helper()
	var m proto.Message
	env.JSON("POST", "/api/v1/conversations/"+conv+"/messages", tok, map[string]any{
		"client_id": clientID, "ciphertext": base64.StdEncoding.EncodeToString([]byte(text)), "keys": keys,
	}, http.StatusCreated, &m)
	return m
}

// rightsUpload uploads size bytes as tok's user and returns the attachment id.
func rightsUpload(t *testing.T, env *testenv.Env, tok string, size int) string {
	t.Helper()
	req, err := http.NewRequest("POST", env.URL+"/api/v1/attachments", bytes.NewReader(bytes.Repeat([]byte{9}, size)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var a struct{ ID string }
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil || resp.StatusCode != http.StatusCreated || a.ID == "" {
		t.Fatalf("POST /attachments: %d, %v", resp.StatusCode, err)
	}
	return a.ID
}

func newRightsWorld(t *testing.T, opts ...testenv.Option) *rightsWorld {
	t.Helper()
	env := testenv.New(t, opts...)
	w := &rightsWorld{env: env}
	w.school = env.CreateSchool("Schule am Deich")
	w.anna = env.CreateUser(w.school, "anna", "teacher")
	w.ben = env.CreateUser(w.school, "ben", "student")
	w.carl = env.CreateUser(w.school, "carl", "teacher")
	w.annaTok, w.annaTrust = env.Login("anna", "anna-phone", true)
	w.annaSes, _ = env.Login("anna", "anna-pc", false)
	w.benTok, _ = env.Login("ben", "ben-phone", true)
	w.carlTok, _ = env.Login("carl", "carl-phone", true)
	w.pushToken, w.pushSecret = "fcm-token-of-anna-7f3c", bytes.Repeat([]byte{0xA7}, 32)
	err := env.Srv.Store().UpdateCredential(context.Background(), w.annaTrust, func(c *storage.Credential) error {
		c.Push = &storage.PushRegistration{Provider: "fcm", Token: w.pushToken, Secret: w.pushSecret, UpdatedAt: env.Clock.Now()}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	env.JSON("PUT", "/api/v1/keys", w.annaTok, map[string]string{"public_key": base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 32))}, http.StatusNoContent, nil)
	env.JSON("PUT", "/api/v1/keys", w.benTok, map[string]string{"public_key": base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{2}, 32))}, http.StatusNoContent, nil)
	var c struct{ ID string }
	env.JSON("POST", "/api/v1/conversations", w.annaTok, map[string]any{
		"kind": "group", "title": "Klasse 7b",
		"members": []map[string]any{{"user_id": w.ben, "can_write": true}, {"user_id": w.carl, "can_write": true}},
	}, http.StatusCreated, &c)
	w.group = c.ID
	r := env.Do("POST", "/api/v1/conversations", w.annaTok, map[string]any{"kind": "direct", "peer": w.ben})
	if r.Status != http.StatusCreated {
		t.Fatalf("direct: %d %s", r.Status, r.Body)
	}
	json.Unmarshal(r.Body, &c)
	w.direct = c.ID
	return w
}

// keyName is the wrapped-key name of a user's device.
func keyName(user, device string) string { return user + "/" + device }

// TestEraseEndToEnd erases anna over HTTP and checks what is gone and what
// stays.
func TestEraseEndToEnd(t *testing.T) {
	w := newRightsWorld(t)
	env := w.env
	ctx := context.Background()
	all := map[string]string{}
	for k, v := range rightsKeys(keyName(w.anna, "anna-phone"), keyName(w.ben, "ben-phone"), keyName(w.carl, "carl-phone")) {
		all[k] = v
	}
	fromAnna := rightsSend(t, env, w.annaTok, w.group, "a1", "hallo von anna", all)
	rightsSend(t, env, w.benTok, w.direct, "b1", "hallo anna", all)
	rightsSend(t, env, w.annaTok, w.direct, "a2", "hallo ben", all)
	ws := env.Dial(w.annaTok)
	wsSession := env.Dial(w.annaSes)
	benWS := env.Dial(w.benTok)

	// Wrong password: 401, nothing erased. A malformed one: 400.
	authWantError(t, authCall(t, env, "POST", "/api/v1/me/erase", w.annaTok, map[string]string{"client_hash": testenv.ClientHash("not anna's")}, nil), 401, "unauthorized")
	authWantError(t, authCall(t, env, "POST", "/api/v1/me/erase", w.annaTok, map[string]string{"client_hash": "short"}, nil), 400, "invalid_request")
	annaHash := testenv.ClientHash(testenv.Password("anna")) // her own, broken by a line break
	authWantError(t, authCall(t, env, "POST", "/api/v1/me/erase", w.annaTok, map[string]string{"client_hash": annaHash[:8] + "\r\n" + annaHash[8:]}, nil), 400, "invalid_request")
	authWantError(t, authCall(t, env, "POST", "/api/v1/me/erase", w.annaTok, `{}`, nil), 400, "invalid_request")
	authWantStatus(t, authCall(t, env, "GET", "/api/v1/me", w.annaTok, nil, nil), 200)
	if _, err := env.Srv.Store().User(ctx, w.anna); err != nil {
		t.Fatalf("after a wrong password: %v", err)
	}
	if ts, _ := env.Srv.Store().Tombstones(ctx); len(ts) != 0 {
		t.Fatalf("tombstones after a wrong password: %v", ts)
	}

	authWantStatus(t, authCall(t, env, "POST", "/api/v1/me/erase", w.annaTok, map[string]string{"client_hash": testenv.ClientHash(testenv.Password("anna"))}, nil), 204)

	// Every socket of anna closes with 4401; ben's stays.
	for name, s := range map[string]*testenv.WS{"trust": ws, "session": wsSession} {
		if code := s.CloseCode(5 * time.Second); code != int(proto.CloseUnauthorized) {
			t.Fatalf("%s socket: close code %d, want 4401", name, code)
		}
	}
	benWS.Send(`{"type":"ping"}`)
	if f, _ := benWS.ReadType(proto.TypePong); f == nil {
		t.Fatal("ben's socket: no pong")
	}

	// Tokens and password are dead.
	for _, tok := range []string{w.annaTok, w.annaSes} {
		authWantError(t, authCall(t, env, "GET", "/api/v1/me", tok, nil, nil), 401, "unauthorized")
	}
	authWantError(t, authCall(t, env, "POST", "/api/v1/login", "", testenv.LoginBody("anna", "anna-phone", true), nil), 401, "unauthorized")
	if _, resp, err := env.DialRaw(http.Header{"Authorization": {"Bearer " + w.annaTok}}); err == nil || resp == nil || resp.StatusCode != 401 {
		t.Fatalf("WebSocket with anna's token: %v %v, want 401", err, resp)
	}

	// The store holds nothing of anna but the tombstone.
	st := env.Srv.Store()
	if _, err := st.User(ctx, w.anna); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("User: %v", err)
	}
	if _, err := st.UserByLogin(ctx, "anna"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("UserByLogin: %v", err)
	}
	if cs, err := st.CredentialsOf(ctx, w.anna); err != nil || len(cs) != 0 {
		t.Fatalf("CredentialsOf: %v %v", cs, err)
	}
	if _, err := st.Credential(ctx, w.annaTrust); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("trust credential: %v", err)
	}
	if ls, err := st.Logins(ctx, w.anna); err != nil || len(ls) != 0 {
		t.Fatalf("Logins: %v %v", ls, err)
	}
	if ks, err := st.DeviceKeysOf(ctx, []string{w.anna}); err != nil || len(ks) != 0 {
		t.Fatalf("DeviceKeysOf: %v %v", ks, err)
	}
	if cs, err := st.ConversationsOf(ctx, w.anna); err != nil || len(cs) != 0 {
		t.Fatalf("ConversationsOf: %v %v", cs, err)
	}
	if regs, err := st.(storage.PushOutbox).CountRegistrations(ctx); err != nil || regs["fcm"] != 0 {
		t.Fatalf("push registrations: %v %v", regs, err)
	}
	ts, err := st.Tombstones(ctx)
	if err != nil || len(ts) != 1 || ts[0].UserID != w.anna || !ts[0].ErasedAt.Equal(env.Clock.Now()) {
		t.Fatalf("Tombstones: %+v %v", ts, err)
	}

	// Ben: the conversations live on without anna; her messages stay
	// until they expire.
	var convs []struct {
		ID      string           `json:"id"`
		Kind    string           `json:"kind"`
		Members []storage.Member `json:"members"`
	}
	env.JSON("GET", "/api/v1/conversations", w.benTok, nil, 200, &convs)
	if len(convs) != 2 {
		t.Fatalf("ben's conversations: %+v", convs)
	}
	for _, c := range convs {
		for _, m := range c.Members {
			if m.UserID == w.anna {
				t.Fatalf("anna is still a member of %s (%s)", c.ID, c.Kind)
			}
		}
	}
	var hist struct{ Messages []proto.Message }
	env.JSON("GET", "/api/v1/conversations/"+w.group+"/messages", w.benTok, nil, 200, &hist)
	if len(hist.Messages) != 1 || hist.Messages[0].ID != fromAnna.ID {
		t.Fatalf("group history: %+v", hist.Messages)
	}
	// Ben's export lists the conversations without anna.
	files := exportFiles(t, env, w.benTok)
	var exported []struct {
		ID      string           `json:"id"`
		Members []storage.Member `json:"members"`
	}
	if err := json.Unmarshal(files["conversations.json"], &exported); err != nil || len(exported) != 2 {
		t.Fatalf("ben's conversations.json: %s %v", files["conversations.json"], err)
	}
	for _, c := range exported {
		if slices.ContainsFunc(c.Members, func(m storage.Member) bool { return m.UserID == w.anna }) {
			t.Fatalf("ben's export lists anna as a member of %s", c.ID)
		}
	}
	// The login is free again; a new anna is a new account.
	newAnna := env.CreateUser(w.school, "anna", "parent")
	if newAnna == w.anna {
		t.Fatal("the new account got the erased id")
	}
	newTok, _ := env.Login("anna", "anna-phone", true)
	var list []struct{ ID string }
	env.JSON("GET", "/api/v1/conversations", newTok, nil, 200, &list)
	if len(list) != 0 {
		t.Fatalf("the new anna sees the old anna's conversations: %+v", list)
	}
}

func TestEraseThrottled(t *testing.T) {
	w := newRightsWorld(t)
	env := w.env
	for i := range 5 {
		r := authCall(t, env, "POST", "/api/v1/me/erase", w.annaTok, map[string]string{"client_hash": testenv.ClientHash("guess-" + authItoa(i))}, nil)
		authWantError(t, r, 401, "unauthorized")
	}
	// The lock holds even for the right password, and for logins.
	r := authCall(t, env, "POST", "/api/v1/me/erase", w.annaTok, map[string]string{"client_hash": testenv.ClientHash(testenv.Password("anna"))}, nil)
	authWantError(t, r, 429, "rate_limited")
	if _, err := env.Srv.Store().User(context.Background(), w.anna); err != nil {
		t.Fatalf("erased while locked: %v", err)
	}
	authWantError(t, authCall(t, env, "POST", "/api/v1/login", "", testenv.LoginBody("anna", "x", true), nil), 429, "rate_limited")
	env.Clock.Advance(16 * time.Minute)
	authWantStatus(t, authCall(t, env, "POST", "/api/v1/me/erase", w.annaTok, map[string]string{"client_hash": testenv.ClientHash(testenv.Password("anna"))}, nil), 204)
}

// exportFiles downloads the caller's export and returns its files.
func exportFiles(t *testing.T, env *testenv.Env, tok string) map[string][]byte {
	t.Helper()
	r := authCall(t, env, "GET", "/api/v1/me/export", tok, nil, nil)
	authWantStatus(t, r, 200)
	if ct := r.Header.Get("Content-Type"); ct != "application/zip" {
		t.Fatalf("Content-Type %q", ct)
	}
	zr, err := zip.NewReader(bytes.NewReader(r.Body), int64(len(r.Body)))
	if err != nil {
		t.Fatalf("open zip: %v", err)
	}
	files := map[string][]byte{}
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatalf("read %s: %v", f.Name, err)
		}
		files[f.Name] = b
	}
	return files
}

func TestExport(t *testing.T) {
	w := newRightsWorld(t, func(c *server.Config) {
		c.Retention.Messages = time.Hour
		c.Messenger.SendBurst = 1000 // ben posts 520 messages at once
	})
	env := w.env
	ctx := context.Background()
	annaKey, benKey, carlKey := keyName(w.anna, "anna-phone"), keyName(w.ben, "ben-phone"), keyName(w.carl, "carl-phone")
	annaPC := keyName(w.anna, "anna-pc")
	keys := rightsKeys(annaKey, annaPC, benKey, carlKey)
	expired := rightsSend(t, env, w.benTok, w.group, "old", "expires first", keys)
	env.Clock.Advance(50 * time.Minute)
	var kept []proto.Message
	kept = append(kept, rightsSend(t, env, w.benTok, w.group, "g1", "from ben", keys))
	kept = append(kept, rightsSend(t, env, w.annaTok, w.group, "g2", "from anna", keys))
	kept = append(kept, rightsSend(t, env, w.benTok, w.direct, "d1", "direct", rightsKeys(annaKey, benKey)))
	// A conversation anna is not in.
	var other struct{ ID string }
	env.JSON("POST", "/api/v1/conversations", w.carlTok, map[string]any{"kind": "direct", "peer": w.ben}, http.StatusCreated, &other)
	rightsSend(t, env, w.carlTok, other.ID, "x", "not anna's", rightsKeys(benKey, carlKey))
	env.Clock.Advance(20 * time.Minute) // the first message has expired
	// Many messages, so that the export pages through the store.
	for i := range 520 {
		kept = append(kept, rightsSend(t, env, w.benTok, w.direct, "bulk"+authItoa(i), "bulk", rightsKeys(annaKey, benKey)))
	}
	// anna's uploads: one sent with a message, one never sent; and ben's.
	sentAtt, unsentAtt := rightsUpload(t, env, w.annaTok, 300), rightsUpload(t, env, w.annaTok, 7)
	bensAtt := rightsUpload(t, env, w.benTok, 5)
	var withAtt proto.Message
	env.JSON("POST", "/api/v1/conversations/"+w.group+"/messages", w.annaTok, map[string]any{
		"client_id": "with-att", "ciphertext": base64.StdEncoding.EncodeToString([]byte("see attached")), "keys": keys,
		"attachments": []string{sentAtt},
	}, http.StatusCreated, &withAtt)
	kept = append(kept, withAtt)
	notice := storage.Notice{At: env.Clock.Now(), Kind: storage.NoticeCountryBlocked, Country: "FR", IP: "198.51.100.0"}
	if err := env.Srv.Store().AddNotice(ctx, w.anna, notice, 20); err != nil {
		t.Fatal(err)
	}

	r := authCall(t, env, "GET", "/api/v1/me/export", w.annaTok, nil, nil)
	authWantStatus(t, r, 200)
	if cd, want := r.Header.Get("Content-Disposition"), `attachment; filename=klassenfunk-export-2026-09-01.zip`; cd != want {
		t.Fatalf("Content-Disposition %q, want %q", cd, want)
	}
	if cc := r.Header.Get("Cache-Control"); cc != "no-store" {
		t.Fatalf("Cache-Control %q", cc)
	}
	files := exportFiles(t, env, w.annaTok)
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range files {
			if !yield(n) {
				return
			}
		}
	})
	wantNames := []string{"README.txt", "attachments.json", "conversations.json", "devices.json", "keys.json", "logins.json", "messages.json", "notices.json", "profile.json"}
	if !slices.Equal(names, wantNames) {
		t.Fatalf("files %q, want %q", names, wantNames)
	}

	t.Run("README", func(t *testing.T) {
		readme := string(files["README.txt"])
		for _, s := range append(wantNames[1:], "DEUTSCH", "ENGLISH") {
			if !strings.Contains(readme, s) {
				t.Errorf("README.txt does not mention %q", s)
			}
		}
	})
	t.Run("profile", func(t *testing.T) {
		var p map[string]any
		mustJSON(t, files["profile.json"], &p)
		school, _ := p["school"].(map[string]any)
		if p["id"] != w.anna || p["login"] != "anna" || p["display_name"] != "Anna" || p["role"] != "teacher" ||
			school["id"] != w.school || school["name"] != "Schule am Deich" || p["allowed_countries"] != nil || p["disabled"] != false {
			t.Fatalf("profile.json %s", files["profile.json"])
		}
	})
	t.Run("devices", func(t *testing.T) {
		var ds []map[string]any
		mustJSON(t, files["devices.json"], &ds)
		if len(ds) != 2 {
			t.Fatalf("devices.json %s", files["devices.json"])
		}
		byDevice := map[string]map[string]any{}
		for _, d := range ds {
			byDevice[d["device_id"].(string)] = d
		}
		phone, pc := byDevice["anna-phone"], byDevice["anna-pc"]
		if phone["kind"] != "trust" || phone["push"] != true || phone["push_provider"] != "fcm" || phone["id"] != w.annaTrust || phone["expires_at"] != nil {
			t.Fatalf("trust device %v", phone)
		}
		if pc["kind"] != "session" || pc["push"] != false || pc["expires_at"] == nil || pc["os"] != "android" {
			t.Fatalf("session %v", pc)
		}
	})
	t.Run("logins", func(t *testing.T) {
		var ls []map[string]any
		mustJSON(t, files["logins.json"], &ls)
		if len(ls) != 2 || ls[0]["ip"] != "127.0.0.0" || ls[0]["device_name"] == nil {
			t.Fatalf("logins.json %s", files["logins.json"])
		}
	})
	t.Run("conversations", func(t *testing.T) {
		var cs []struct {
			ID      string           `json:"id"`
			Kind    string           `json:"kind"`
			Title   string           `json:"title"`
			Members []storage.Member `json:"members"`
		}
		mustJSON(t, files["conversations.json"], &cs)
		got := map[string]string{}
		for _, c := range cs {
			got[c.ID] = c.Kind + ":" + c.Title + ":" + authItoa(len(c.Members))
		}
		want := map[string]string{w.group: "group:Klasse 7b:3", w.direct: "direct::2"}
		if len(got) != 2 || got[w.group] != want[w.group] || got[w.direct] != want[w.direct] {
			t.Fatalf("conversations.json %v, want %v", got, want)
		}
	})
	t.Run("messages", func(t *testing.T) {
		var ms []proto.Message
		mustJSON(t, files["messages.json"], &ms)
		byID := map[string]proto.Message{}
		for _, m := range ms {
			byID[m.ID] = m
		}
		if len(ms) != len(kept) || len(byID) != len(kept) {
			t.Fatalf("messages.json has %d messages (%d distinct), want %d", len(ms), len(byID), len(kept))
		}
		if _, ok := byID[expired.ID]; ok {
			t.Fatal("messages.json holds an expired message")
		}
		var raw []map[string]any
		mustJSON(t, files["messages.json"], &raw)
		for _, m := range raw {
			if _, ok := m["attachments"].([]any); !ok {
				t.Fatalf("message %v: attachments %v, want a list as in the API ([] when none)", m["id"], m["attachments"])
			}
		}
		for _, k := range kept {
			m, ok := byID[k.ID]
			if !ok {
				t.Fatalf("message %s missing", k.ID)
			}
			if m.Conversation != k.Conversation || m.Seq != k.Seq || m.Sender != k.Sender ||
				!m.SentAt.Equal(k.SentAt) || !m.ExpiresAt.Equal(k.ExpiresAt) || !bytes.Equal(m.Ciphertext, k.Ciphertext) {
				t.Fatalf("message %+v, sent %+v", m, k)
			}
			if !m.ExpiresAt.After(env.Clock.Now()) {
				t.Fatalf("message %s expired at %v", m.ID, m.ExpiresAt)
			}
			names := slices.Sorted(func(yield func(string) bool) {
				for n := range m.Keys {
					if !yield(n) {
						return
					}
				}
			})
			want := []string{annaPC, annaKey}
			if m.Conversation == w.direct {
				want = []string{annaKey}
			}
			sort.Strings(want)
			if !slices.Equal(names, want) {
				t.Fatalf("message %s keys %q, want only anna's %q", m.ID, names, want)
			}
			if string(m.Keys[annaKey]) != "wrapped-for:"+annaKey {
				t.Fatalf("message %s: anna's key %q", m.ID, m.Keys[annaKey])
			}
		}
		// Ordered by conversation as listed, then seq.
		for i := 1; i < len(ms); i++ {
			if ms[i].Conversation == ms[i-1].Conversation && ms[i].Seq <= ms[i-1].Seq {
				t.Fatalf("messages out of order at %d", i)
			}
		}
	})
	t.Run("keys", func(t *testing.T) {
		var ks []struct {
			DeviceID  string `json:"device_id"`
			PublicKey []byte `json:"public_key"`
		}
		mustJSON(t, files["keys.json"], &ks)
		if len(ks) != 1 || ks[0].DeviceID != "anna-phone" || !bytes.Equal(ks[0].PublicKey, bytes.Repeat([]byte{1}, 32)) {
			t.Fatalf("keys.json %s", files["keys.json"])
		}
	})
	t.Run("attachments", func(t *testing.T) {
		type upload struct {
			ID            string    `json:"id"`
			Size          int64     `json:"size"`
			CreatedAt     time.Time `json:"created_at"`
			ExpiresAt     time.Time `json:"expires_at"`
			Conversations []string  `json:"conversations"`
		}
		var as []upload
		mustJSON(t, files["attachments.json"], &as)
		if len(as) != 2 {
			t.Fatalf("attachments.json %s, want anna's two uploads", files["attachments.json"])
		}
		slices.SortFunc(as, func(a, b upload) int { return cmp.Compare(b.Size, a.Size) })
		if as[0].ID != sentAtt || as[0].Size != 300 || !slices.Equal(as[0].Conversations, []string{w.group}) {
			t.Errorf("the sent upload: %+v", as[0])
		}
		if as[1].ID != unsentAtt || as[1].Size != 7 || as[1].Conversations == nil || len(as[1].Conversations) != 0 {
			t.Errorf("the unsent upload: %+v", as[1])
		}
		for _, a := range as {
			if !a.CreatedAt.Equal(env.Clock.Now()) || !a.ExpiresAt.After(a.CreatedAt) {
				t.Errorf("times of %s: %v, %v", a.ID, a.CreatedAt, a.ExpiresAt)
			}
		}
		if bytes.Contains(files["attachments.json"], []byte(bensAtt)) {
			t.Errorf("anna's export lists ben's upload")
		}
	})
	t.Run("notices", func(t *testing.T) {
		var ns []storage.Notice
		mustJSON(t, files["notices.json"], &ns)
		if len(ns) != 1 || ns[0].Country != "FR" || !ns[0].At.Equal(notice.At) || ns[0].IP != notice.IP {
			t.Fatalf("notices.json %s", files["notices.json"])
		}
	})
	t.Run("no secrets and nothing of others", func(t *testing.T) {
		var all []byte
		for _, b := range files {
			all = append(all, b...)
		}
		u, _ := env.Srv.Store().User(ctx, w.anna)
		leaks := []string{
			w.annaTok, w.annaSes, w.benTok, w.pushToken, base64.StdEncoding.EncodeToString(w.pushSecret),
			u.PasswordHash, "argon2id", "password_hash", "token_hash", "service_id",
			base64.StdEncoding.EncodeToString([]byte("wrapped-for:" + benKey)),
			base64.StdEncoding.EncodeToString([]byte("not anna's")), other.ID,
			base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{2}, 32)), // ben's public key
		}
		for _, s := range leaks {
			if bytes.Contains(all, []byte(s)) {
				t.Errorf("the export contains %q", s)
			}
		}
	})

	// Exporting changes nothing, and works again.
	if again := exportFiles(t, env, w.annaTok); !bytes.Equal(again["messages.json"], files["messages.json"]) {
		t.Fatal("a second export differs")
	}
	authWantError(t, authCall(t, env, "GET", "/api/v1/me/export", "", nil, nil), 401, "unauthorized")
}

func mustJSON(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
}
