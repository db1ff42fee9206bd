package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"klassenfunk/internal/testenv"
	"klassenfunk/proto"
)

// world is a real in-process server with one school.
type world struct {
	env    *testenv.Env
	school string
}

func newWorld(t *testing.T, opts ...testenv.Option) *world {
	t.Helper()
	e := testenv.New(t, opts...)
	return &world{env: e, school: e.CreateSchool("Gymnasium Musterstadt")}
}

// fastHash stands in for the PBKDF2 client_hash where the test is not
// about it (the server cannot tell).
func fastHash(login string) []byte {
	h := sha256.Sum256([]byte("client-test/" + login))
	return h[:]
}

// user creates a user whose client_hash is hash.
func (w *world) user(t *testing.T, login, role string, hash []byte) string {
	t.Helper()
	var out struct{ ID string }
	w.env.JSON("POST", "/api/v1/schools/"+w.school+"/users", testenv.OperatorToken, map[string]string{
		"login": login, "display_name": login, "role": role,
		"client_hash": base64.StdEncoding.EncodeToString(hash),
	}, http.StatusCreated, &out)
	return out.ID
}

// device logs a new device of login in, with its own state directory.
func (w *world) device(t *testing.T, login string) (*Chat, *Account, *State) {
	t.Helper()
	st, err := OpenState(filepath.Join(t.TempDir(), login))
	if err != nil {
		t.Fatal(err)
	}
	acc, err := Login(context.Background(), st, w.env.URL, login, "", LoginOptions{ClientHash: fastHash(login), DeviceName: "test"})
	if err != nil {
		t.Fatalf("login %s: %v", login, err)
	}
	c, acc2, err := LoadChat(st)
	if err != nil {
		t.Fatal(err)
	}
	if acc2.Credential.Token != acc.Credential.Token {
		t.Fatal("stored account differs")
	}
	return c, acc, st
}

func TestLoginWithPasswordUsesPBKDF2ClientHash(t *testing.T) {
	t.Parallel() // PBKDF2 with 600000 iterations is slow under the race detector
	w := newWorld(t)
	const pw = "korrekt Pferd Batterie"
	w.user(t, "Frau.Schmidt", "teacher", ClientHash("Frau.Schmidt", pw))
	st, err := OpenState(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// The salt uses the lower-cased login, so the case of the login typed
	// at the device does not matter.
	acc, err := Login(ctx, st, w.env.URL, "frau.schmidt", pw, LoginOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if acc.Credential.Kind != "trust" || acc.TrustID == "" || acc.Device.OS != "linux" {
		t.Fatalf("account %+v", acc)
	}
	wrong := LoginOptions{ClientHash: fastHash("falsch")} // what any wrong password gives: another hash
	if _, err := Login(ctx, st, w.env.URL, "frau.schmidt", "", wrong); err == nil {
		t.Fatal("wrong password accepted")
	} else if ae := (*APIError)(nil); !errors.As(err, &ae) || ae.Status != 401 {
		t.Fatalf("wrong password: %v", err)
	}
	// The failed login left the stored credential alone.
	if got, err := st.Account(); err != nil || got.Credential.Token != acc.Credential.Token {
		t.Fatalf("stored account after a failed login: %+v, %v", got, err)
	}
}

func TestSendAndReceiveOverHTTP(t *testing.T) {
	w := newWorld(t)
	w.user(t, "alice", "teacher", fastHash("alice"))
	bobID := w.user(t, "bob", "parent", fastHash("bob"))
	ctx := context.Background()
	alice, _, _ := w.device(t, "alice")
	aliceLaptop, _, _ := w.device(t, "alice")
	bob, _, _ := w.device(t, "bob")

	conv, err := alice.API.Direct(ctx, bobID)
	if err != nil {
		t.Fatal(err)
	}
	devs, err := alice.API.Devices(ctx, conv.ID)
	if err != nil || len(devs) != 3 {
		t.Fatalf("devices %+v, %v; want 3", devs, err)
	}

	res, err := alice.Send(ctx, conv.ID, "Elternabend am Dienstag", []File{{Name: "einladung.txt", Type: "text/plain", Data: []byte("Einladung zum Elternabend")}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Skipped) != 0 || len(res.Message.Keys) != 1 {
		t.Fatalf("send result: skipped %v, keys in answer %v (want only the sender's own)", res.Skipped, keysOf(res.Message.Keys))
	}

	for name, reader := range map[string]*Chat{"bob": bob, "alice's laptop": aliceLaptop, "alice's phone": alice} {
		m, err := reader.API.Message(ctx, res.Message.ID)
		if err != nil {
			t.Fatal(err)
		}
		c, err := reader.Open(m)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if c.Text != "Elternabend am Dienstag" || len(c.Attachments) != 1 {
			t.Fatalf("%s: content %+v", name, c)
		}
		data, err := reader.FetchAttachment(ctx, m, c.Attachments[0])
		if err != nil || string(data) != "Einladung zum Elternabend" {
			t.Fatalf("%s: attachment %q, %v", name, data, err)
		}
	}

	// What the server stores is not the attachment's plaintext.
	raw, err := bob.API.Download(ctx, res.Message.Attachments[0])
	if err != nil || bytes.Contains(raw, []byte("Elternabend")) || raw[0] != FormatVersion {
		t.Fatalf("stored attachment: %v, %q", err, raw)
	}

	// A device that logs in after the message has no key for it.
	bobLate, _, _ := w.device(t, "bob")
	m, err := bobLate.API.Message(ctx, res.Message.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bobLate.Open(m); !errors.Is(err, ErrNotForDevice) {
		t.Fatalf("late device: error %v, want ErrNotForDevice", err)
	}
	// History reads the same.
	msgs, more, err := bob.API.History(ctx, conv.ID, 0, 10)
	if err != nil || more || len(msgs) != 1 {
		t.Fatalf("history %d messages, more %v, %v", len(msgs), more, err)
	}
	if c, err := bob.Open(&msgs[0]); err != nil || c.Text != "Elternabend am Dienstag" {
		t.Fatalf("history: %+v %v", c, err)
	}
}

func TestIdempotentPost(t *testing.T) {
	w := newWorld(t)
	w.user(t, "alice", "teacher", fastHash("alice"))
	bobID := w.user(t, "bob", "parent", fastHash("bob"))
	w.device(t, "bob")
	alice, _, _ := w.device(t, "alice")
	ctx := context.Background()
	conv, err := alice.API.Direct(ctx, bobID)
	if err != nil {
		t.Fatal(err)
	}
	snd, _, err := alice.Prepare(ctx, conv.ID, &Content{Text: "einmal"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	m1, err := alice.API.Post(ctx, snd)
	if err != nil {
		t.Fatal(err)
	}
	m2, err := alice.API.Post(ctx, snd)
	if err != nil {
		t.Fatal(err)
	}
	if m1.ID != m2.ID || m1.Seq != m2.Seq {
		t.Fatalf("repeated client_id stored twice: %s/%d and %s/%d", m1.ID, m1.Seq, m2.ID, m2.Seq)
	}
	c, err := alice.Open(m2)
	if err != nil || c.ClientID != snd.ClientID {
		t.Fatalf("client_id inside the ciphertext: %+v %v", c, err)
	}
}

func TestStateFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	st, err := OpenState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Account(); !errors.Is(err, ErrNotLoggedIn) {
		t.Fatalf("empty state: %v", err)
	}
	id, k, err := st.Device()
	if err != nil {
		t.Fatal(err)
	}
	id2, k2, err := st.Device()
	if err != nil || id2 != id || !bytes.Equal(k.PublicKey(), k2.PublicKey()) {
		t.Fatalf("device not stable: %s %s %v", id, id2, err)
	}
	if err := st.SaveAccount(&Account{Server: "http://x", Credential: Credential{Kind: "trust", Token: "kf1_x"}}); err != nil {
		t.Fatal(err)
	}
	if err := st.SaveCursors(map[string]uint64{"c1": 7}); err != nil {
		t.Fatal(err)
	}
	c, err := st.LoadCursors()
	if err != nil || c["c1"] != 7 {
		t.Fatalf("cursors %v %v", c, err)
	}

	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("dir mode %v %v", fi.Mode(), err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 3 {
		t.Fatalf("files %v, want account, device and cursors only (no temporary files left)", entries)
	}
	for _, en := range entries {
		fi, err := en.Info()
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: mode %v, want 0600", en.Name(), fi.Mode())
		}
	}

	// A key file others can read is refused.
	if err := os.Chmod(filepath.Join(dir, deviceFile), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Device(); err == nil {
		t.Fatal("world-readable device key accepted")
	}
}

func TestDefaultStateDir(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", "/cfg")
	t.Setenv("HOME", "/home/x")
	got, err := DefaultStateDir("https://chat.example.org:8443/", "Frau.Schmidt")
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join("/cfg", "kfchat", "chat.example.org_8443", "frau.schmidt"); got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
	if got, _ := DefaultStateDir("http://h", "../../etc"); filepath.Dir(filepath.Dir(got)) != filepath.Join("/cfg", "kfchat") {
		t.Fatalf("login escapes the state root: %s", got)
	}
	if _, err := DefaultStateDir("ftp://h", "a"); err == nil {
		t.Fatal("ftp URL accepted")
	}
}

func TestAPIErrors(t *testing.T) {
	w := newWorld(t)
	c := New(w.env.URL, "kf1_"+string(bytes.Repeat([]byte("A"), 43)))
	_, err := c.Me(context.Background())
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != 401 || ae.Code != proto.CodeUnauthorized || !errors.Is(err, ErrRevoked) {
		t.Fatalf("bad token: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	w.user(t, "alice", "teacher", fastHash("alice"))
	alice, _, _ := w.device(t, "alice")
	if _, err := alice.API.Devices(ctx, "nope"); !errors.As(err, &ae) || ae.Code != proto.CodeNotFound {
		t.Fatalf("unknown conversation: %v", err)
	}
}
