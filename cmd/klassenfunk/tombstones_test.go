package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"klassenfunk/auth"
	"klassenfunk/internal/testenv"
	"klassenfunk/server"
	"klassenfunk/storage"
)

// tombNode is a node on a data directory, started and stopped by the test.
type tombNode struct {
	t   *testing.T
	srv *server.Server
	hs  *httptest.Server
}

func startTombNode(t *testing.T, dir string) *tombNode {
	t.Helper()
	cfg := server.Config{DataDir: dir, NoSync: true, OperatorToken: testenv.OperatorToken}
	cfg.Auth.Argon2 = auth.Argon2Params{Memory: 64, Time: 1, Threads: 1}
	srv, err := server.New(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	n := &tombNode{t: t, srv: srv, hs: httptest.NewServer(srv.Handler())}
	t.Cleanup(n.stop)
	return n
}

func (n *tombNode) stop() {
	n.hs.Close()
	if err := n.srv.Close(); err != nil {
		n.t.Errorf("server close: %v", err)
	}
}

// call sends a JSON request and decodes a JSON answer into out.
func (n *tombNode) call(method, path, token string, body any, want int, out any) {
	n.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, n.hs.URL+path, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		n.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		n.t.Fatalf("%s %s: %d %s, want %d", method, path, resp.StatusCode, b, want)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			n.t.Fatalf("decode %s: %v", b, err)
		}
	}
}

func (n *tombNode) login(login string) string {
	n.t.Helper()
	var out struct {
		Credential struct{ Token string } `json:"credential"`
	}
	n.call("POST", "/api/v1/login", "", testenv.LoginBody(login, login+"-phone", true), 200, &out)
	return out.Credential.Token
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// withBolt opens the stopped node's database for a look.
func withBolt(t *testing.T, dir string, fn func(st *storage.Bolt)) {
	t.Helper()
	st, err := storage.OpenBolt(filepath.Join(dir, "klassenfunk.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	fn(st)
}

// TestTombstonesSurviveRestore: erase → export tombstones → restore an
// older copy of the database → reapply → the account is gone again
// (offline), and the same through the running server's API (online).
func TestTombstonesSurviveRestore(t *testing.T) {
	t.Setenv("GORACE", "atexit_sleep_ms=0") // the file checks' child processes: no second's wait at exit under -race
	clearEnv(t)
	ctx := context.Background()
	dir := t.TempDir()
	db := filepath.Join(dir, "klassenfunk.db")
	backup := filepath.Join(t.TempDir(), "backup.db")
	tombFile := filepath.Join(t.TempDir(), "tombstones.json")
	tokenFile := filepath.Join(t.TempDir(), "operator-token")
	if err := os.WriteFile(tokenFile, []byte(testenv.OperatorToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	// Day 1: two accounts; the nightly backup.
	n := startTombNode(t, dir)
	var school struct{ ID string }
	n.call("POST", "/api/v1/schools", testenv.OperatorToken, map[string]string{"name": "Schule"}, 201, &school)
	ids := map[string]string{}
	for _, login := range []string{"anna", "ben"} {
		var u struct{ ID string }
		n.call("POST", "/api/v1/schools/"+school.ID+"/users", testenv.OperatorToken, map[string]string{
			"login": login, "display_name": login, "role": "teacher", "client_hash": testenv.ClientHash(testenv.Password(login)),
		}, 201, &u)
		ids[login] = u.ID
		n.login(login)
	}
	n.stop()
	copyFile(t, db, backup)

	// Day 2: anna erases her account; the tombstones are exported (online).
	n = startTombNode(t, dir)
	tok := n.login("anna")
	n.call("POST", "/api/v1/me/erase", tok, map[string]string{"client_hash": testenv.ClientHash(testenv.Password("anna"))}, 204, nil)
	out, errOut, err := runCLI(t, "", "admin", "--server", n.hs.URL, "--token-file", tokenFile, "export-tombstones", "--out", tombFile)
	if err != nil || !strings.Contains(errOut, "1 tombstones written") {
		t.Fatalf("export-tombstones: %q %q %v", out, errOut, err)
	}
	n.stop()
	var tf struct {
		Format     string              `json:"format"`
		Tombstones []storage.Tombstone `json:"tombstones"`
	}
	b, err := os.ReadFile(tombFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &tf); err != nil || tf.Format != "klassenfunk-tombstones/1" || len(tf.Tombstones) != 1 || tf.Tombstones[0].UserID != ids["anna"] {
		t.Fatalf("tombstone file %s: %v", b, err)
	}
	erasedAt := tf.Tombstones[0].ErasedAt

	// Day 3: the database is restored from the day-1 backup: anna is back.
	restore := func() {
		t.Helper()
		copyFile(t, backup, db)
		withBolt(t, dir, func(st *storage.Bolt) {
			if _, err := st.UserByLogin(ctx, "anna"); err != nil {
				t.Fatalf("the backup lacks anna: %v", err)
			}
		})
	}
	restore()
	offline := func(args ...string) []string { return append([]string{"admin", "--offline", "--data", dir}, args...) }
	out, _, err = runCLI(t, "", offline("reapply-erasures", "--tombstones", tombFile)...)
	if err != nil || !strings.HasPrefix(out, "1 erasures reapplied") || !strings.Contains(out, "; 1 credentials removed") {
		t.Fatalf("reapply-erasures: %q %v", out, err)
	}
	withBolt(t, dir, func(st *storage.Bolt) {
		if _, err := st.User(ctx, ids["anna"]); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("anna after reapply: %v", err)
		}
		if _, err := st.UserByLogin(ctx, "anna"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("anna's login after reapply: %v", err)
		}
		if cs, _ := st.CredentialsOf(ctx, ids["anna"]); len(cs) != 0 {
			t.Fatalf("anna's credentials after reapply: %v", cs)
		}
		if _, err := st.User(ctx, ids["ben"]); err != nil {
			t.Fatalf("ben after reapply: %v", err)
		}
		ts, err := st.Tombstones(ctx)
		if err != nil || len(ts) != 1 || ts[0].UserID != ids["anna"] || !ts[0].ErasedAt.Equal(erasedAt) {
			t.Fatalf("tombstones after reapply: %+v %v", ts, err)
		}
	})
	// Again: nothing left to do.
	out, _, err = runCLI(t, "", offline("reapply-erasures", "--tombstones", tombFile)...)
	if err != nil || !strings.Contains(out, "; 0 credentials removed") {
		t.Fatalf("reapply-erasures again: %q %v", out, err)
	}
	// The offline export lists the same.
	out, _, err = runCLI(t, "", offline("export-tombstones")...)
	var again struct{ Tombstones []storage.Tombstone }
	if err != nil || json.Unmarshal([]byte(out), &again) != nil || len(again.Tombstones) != 1 ||
		again.Tombstones[0].UserID != ids["anna"] || !again.Tombstones[0].ErasedAt.Equal(erasedAt) {
		t.Fatalf("offline export-tombstones: %q %v", out, err)
	}

	// Online: restore again, start the node, reapply through the API.
	restore()
	n = startTombNode(t, dir)
	annaTok := n.login("anna") // works on the restored database
	out, _, err = runCLI(t, "", "admin", "--server", n.hs.URL, "--token-file", tokenFile, "reapply-erasures", "--tombstones", tombFile)
	if err != nil || !strings.HasPrefix(out, "1 erasures reapplied") || !strings.Contains(out, "; 1 credentials removed") { // the new login replaced the old trust of the same device
		t.Fatalf("online reapply-erasures: %q %v", out, err)
	}
	n.call("GET", "/api/v1/me", annaTok, nil, 401, nil)
	n.call("POST", "/api/v1/login", "", testenv.LoginBody("anna", "anna-phone", true), 401, nil)
	n.login("ben")
	n.call("GET", "/api/v1/admin/tombstones", "", nil, 401, nil)
}

func TestTombstoneTaskErrors(t *testing.T) {
	clearEnv(t)
	dir := t.TempDir()
	if _, _, err := runCLI(t, "", "admin", "--offline", "--data", dir, "create-school", "Schule"); err != nil {
		t.Fatal(err) // a database to work on
	}
	files := map[string]string{
		"wrong format": `{"format":"something-else/1","tombstones":[]}`,
		"no user id":   `{"format":"klassenfunk-tombstones/1","tombstones":[{"erased_at":"2026-01-01T00:00:00Z"}]}`,
		"no time":      `{"format":"klassenfunk-tombstones/1","tombstones":[{"user_id":"u1"}]}`,
		"not JSON":     `tombstones`,
	}
	paths := map[string]string{}
	for name, body := range files {
		p := filepath.Join(t.TempDir(), "t.json")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		paths[name] = p
	}
	tests := map[string]struct {
		args    []string
		wantErr string
	}{
		"reapply without file":    {[]string{"reapply-erasures"}, "usage: klassenfunk admin reapply-erasures --tombstones FILE"},
		"reapply, missing file":   {[]string{"reapply-erasures", "--tombstones", filepath.Join(dir, "nope.json")}, "no such file"},
		"reapply, wrong format":   {[]string{"reapply-erasures", "--tombstones", paths["wrong format"]}, "format"},
		"reapply, no user id":     {[]string{"reapply-erasures", "--tombstones", paths["no user id"]}, "needs user_id and erased_at"},
		"reapply, no time":        {[]string{"reapply-erasures", "--tombstones", paths["no time"]}, "needs user_id and erased_at"},
		"reapply, not JSON":       {[]string{"reapply-erasures", "--tombstones", paths["not JSON"]}, "tombstone file"},
		"export, extra arguments": {[]string{"export-tombstones", "x"}, "usage: klassenfunk admin export-tombstones"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, _, err := runCLI(t, "", append([]string{"admin", "--offline", "--data", dir}, tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
	// The reapply of an empty list, from stdin, is fine.
	out, _, err := runCLI(t, `{"format":"klassenfunk-tombstones/1","tombstones":[]}`, "admin", "--offline", "--data", dir, "reapply-erasures", "--tombstones", "-")
	if err != nil || !strings.HasPrefix(out, "0 erasures reapplied") {
		t.Fatalf("empty reapply: %q %v", out, err)
	}
	// The usage names both tasks.
	_, errOut, _ := runCLI(t, "", "admin", "--help")
	for _, task := range []string{"export-tombstones", "reapply-erasures"} {
		if !strings.Contains(errOut, task) {
			t.Errorf("admin --help does not name %s", task)
		}
	}
}
