package e2e_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"klassenfunk/auth"
)

const (
	// The message of the issue.
	plaintext = "Treffen um 8 im Raum 204"
	reply     = "Alles klar, bis morgen früh"
	caption   = "Hier der neue Vertretungsplan"
	// Sent after the server restarted.
	afterRestart = "Nach dem Neustart: Wandertag am Freitag"
	// The attachment's content.
	attachmentText = "Vertretungsplan Klasse 7b: Mathe entfällt, Deutsch in Raum 112"

	alicePassword = "Schultafel-Kreide-2026"
	bobPassword   = "Pausenhof.Fussball!9"
	operatorToken = "kfop_e2e-operator-token-3f9c2a7d1b"
)

// account is the part of kfchat's account.json the test reads.
type account struct {
	User struct {
		ID string `json:"id"`
	} `json:"user"`
	Credential struct {
		Token string `json:"token"`
	} `json:"credential"`
	TrustID string `json:"trust_id"`
}

// TestQuickStart runs docs/quickstart.md with the real binaries: a server,
// a school with two users, two devices chatting through kfchat (with an
// attachment), a device revoked, and then a leak audit of everything the
// server wrote.
func TestQuickStart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	tmp := t.TempDir()
	serverBin, kfchat := buildBinaries(t, ctx, filepath.Join(tmp, "bin"))

	// The server: a free port chosen by the kernel (read back from the
	// log), cheap Argon2, debug logging so that every request is logged.
	dataDir := filepath.Join(tmp, "data")
	cfgPath := filepath.Join(tmp, "klassenfunk.yaml")
	cfg := "log_level: debug\nauth:\n  argon2:\n    memory_kib: 64\n    time: 1\n    threads: 1\n"
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(tmp, "home")
	env := baseEnv(home)
	srvEnv := append(env[:len(env):len(env)],
		"KLASSENFUNK_DATA="+dataDir, "KLASSENFUNK_OPERATOR_TOKEN="+operatorToken, "KLASSENFUNK_LISTEN=127.0.0.1:0")
	srv := startProc(t, ctx, "klassenfunk serve", srvEnv, serverBin, "serve", "--config", cfgPath)
	addr := serving(t, srv)
	base := "http://" + addr

	// Quick start step 1: a school and two users.
	opEnv := append(env[:len(env):len(env)], "KLASSENFUNK_OPERATOR_TOKEN="+operatorToken)
	school := strings.TrimSpace(runCmd(t, ctx, opEnv, "", serverBin, "admin", "--server", base, "create-school", "Gymnasium Musterstadt"))
	userID := func(out string) string { return strings.Split(strings.TrimSpace(out), "\t")[0] }
	aliceID := userID(runCmd(t, ctx, opEnv, alicePassword+"\n", serverBin, "admin", "--server", base,
		"create-user", "--school", school, "--login", "alice", "--name", "Alice Adler", "--role", "teacher"))
	bobID := userID(runCmd(t, ctx, opEnv, bobPassword+"\n", serverBin, "admin", "--server", base,
		"create-user", "--school", school, "--login", "bob", "--name", "Bob Berger", "--role", "parent"))

	// Step 2: each terminal sets its server and login once, then logs in
	// (password on stdin, as when piped; a terminal would be asked).
	aliceEnv := append(env[:len(env):len(env)], "KFCHAT_SERVER="+base, "KFCHAT_LOGIN=alice")
	bobEnv := append(env[:len(env):len(env)], "KFCHAT_SERVER="+base, "KFCHAT_LOGIN=bob")
	runCmd(t, ctx, aliceEnv, alicePassword+"\n", kfchat, "login", "alice")
	runCmd(t, ctx, bobEnv, bobPassword+"\n", kfchat, "login", "bob")
	if who := runCmd(t, ctx, aliceEnv, "", kfchat, "whoami"); !strings.Contains(who, "user\t"+aliceID+"\n") {
		t.Fatalf("whoami:\n%s", who)
	}
	stateRoot := filepath.Join(home, ".config", "kfchat", strings.ReplaceAll(addr, ":", "_"))
	for _, login := range []string{"alice", "bob"} {
		dir := filepath.Join(stateRoot, login)
		fileMode(t, dir, 0o700)
		for _, f := range []string{"account.json", "device.json"} {
			fileMode(t, filepath.Join(dir, f), 0o600)
		}
	}

	// Step 3: alice opens the direct conversation with bob (by user id).
	conv := strings.TrimSpace(runCmd(t, ctx, aliceEnv, "", kfchat, "direct", bobID))
	if conv == "" || strings.ContainsAny(conv, " \t\n") {
		t.Fatalf("direct printed %q", conv)
	}

	// Step 4: bob listens in his terminal; alice sends.
	bobListen := startProc(t, ctx, "bob: kfchat listen", bobEnv, kfchat, "listen")
	bobListen.waitLine(bobListen.stderr, 15*time.Second, "synced", func(l string) bool { return l == "kfchat: synced" })
	runCmd(t, ctx, aliceEnv, "", kfchat, "send", conv, plaintext)
	want := fmt.Sprintf("[%s] %s: %s", conv, aliceID, plaintext)
	bobListen.waitLine(bobListen.stdout, 15*time.Second, fmt.Sprintf("line %q", want), func(l string) bool {
		if strings.Contains(l, "Raum 204") && l != want {
			t.Errorf("bob printed %q, want %q", l, want)
		}
		return l == want
	})

	// Bob answers; alice reads the history back, her own message included.
	runCmd(t, ctx, bobEnv, "", kfchat, "send", conv, reply)
	hist := runCmd(t, ctx, aliceEnv, "", kfchat, "history", conv)
	for _, line := range []string{
		fmt.Sprintf("[%s] #1 %s: %s", conv, aliceID, plaintext),
		fmt.Sprintf("[%s] #2 %s: %s", conv, bobID, reply),
	} {
		if !strings.Contains(hist, line+"\n") {
			t.Fatalf("history lacks %q:\n%s", line, hist)
		}
	}

	// An attachment: bob's listen announces it, bob saves and reads it.
	attPath := filepath.Join(tmp, "vertretungsplan.txt")
	if err := os.WriteFile(attPath, []byte(attachmentText), 0o600); err != nil {
		t.Fatal(err)
	}
	runCmd(t, ctx, aliceEnv, "", kfchat, "send", "--attach", attPath, conv, caption)
	bobListen.waitLine(bobListen.stdout, 15*time.Second, "the caption", func(l string) bool {
		return l == fmt.Sprintf("[%s] %s: %s", conv, aliceID, caption)
	})
	attLine := bobListen.waitLine(bobListen.stdout, 15*time.Second, "the attachment line", func(l string) bool {
		return strings.Contains(l, `[attachment "vertretungsplan.txt"`)
	})
	m := regexp.MustCompile(`kfchat save (\S+)\]$`).FindStringSubmatch(attLine)
	if m == nil {
		t.Fatalf("attachment line %q names no message", attLine)
	}
	saveDir := filepath.Join(tmp, "bob-downloads")
	if err := os.Mkdir(saveDir, 0o700); err != nil {
		t.Fatal(err)
	}
	runCmd(t, ctx, bobEnv, "", kfchat, "save", m[1], saveDir)
	if got, err := os.ReadFile(filepath.Join(saveDir, "vertretungsplan.txt")); err != nil || string(got) != attachmentText {
		t.Fatalf("saved attachment %q, %v", got, err)
	}

	// The server restarts (same port, same data): bob's listen reconnects
	// by itself, syncs, and prints what alice sends afterwards.
	if err := srv.stop(20 * time.Second); err != nil {
		t.Fatalf("server after SIGTERM: %v", err)
	}
	bobListen.waitLine(bobListen.stderr, 15*time.Second, "the disconnect", func(l string) bool {
		return strings.HasPrefix(l, "kfchat: disconnected")
	})
	srvEnv[len(srvEnv)-1] = "KLASSENFUNK_LISTEN=" + addr
	srv2 := startProc(t, ctx, "klassenfunk serve (restarted)", srvEnv, serverBin, "serve", "--config", cfgPath)
	servers := []*proc{srv, srv2}
	waitReady(t, base, 20*time.Second)
	bobListen.waitLine(bobListen.stderr, 20*time.Second, "the resync", func(l string) bool { return l == "kfchat: synced" })
	runCmd(t, ctx, aliceEnv, "", kfchat, "send", conv, afterRestart)
	bobListen.waitLine(bobListen.stdout, 15*time.Second, "the message sent after the restart", func(l string) bool {
		return l == fmt.Sprintf("[%s] %s: %s", conv, aliceID, afterRestart)
	})

	// Bob's second device is revoked from his first: its listen ends with
	// an error, and the revoked token is refused afterwards.
	bob2State := filepath.Join(tmp, "bob-tablet")
	runCmd(t, ctx, bobEnv, bobPassword+"\n", kfchat, "--state", bob2State, "login", "--name", "Tablet", "bob")
	bob2Listen := startProc(t, ctx, "bob's tablet: kfchat listen", bobEnv, kfchat, "--state", bob2State, "listen")
	bob2Listen.waitLine(bob2Listen.stderr, 15*time.Second, "synced", func(l string) bool { return l == "kfchat: synced" })
	var tablet account
	readJSON(t, filepath.Join(bob2State, "account.json"), &tablet)
	devices := runCmd(t, ctx, bobEnv, "", kfchat, "devices")
	if !strings.Contains(devices, tablet.TrustID+"\tTablet\t") || strings.Count(devices, "\n") != 2 || !strings.Contains(devices, "(this device)") {
		t.Fatalf("devices:\n%s", devices)
	}
	bob2Token := tablet.Credential.Token
	runCmd(t, ctx, bobEnv, "", kfchat, "revoke", tablet.TrustID)
	bob2Listen.waitLine(bob2Listen.stderr, 15*time.Second, "the revocation", func(l string) bool { return strings.Contains(l, "revoked") })
	select {
	case <-bob2Listen.exited:
		if bob2Listen.err == nil {
			t.Fatal("revoked listen exited with status 0")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("revoked listen still runs")
	}
	if _, errOut, err := tryCmd(ctx, bobEnv, "", kfchat, "--state", bob2State, "conversations"); err == nil || !strings.Contains(errOut, "not logged in") {
		t.Fatalf("revoked device still works: %v %s", err, errOut)
	}

	// Collect the secrets before shutting everything down.
	var alice, bob account
	readJSON(t, filepath.Join(stateRoot, "alice", "account.json"), &alice)
	readJSON(t, filepath.Join(stateRoot, "bob", "account.json"), &bob)
	if alice.User.ID != aliceID || bob.User.ID != bobID || alice.Credential.Token == "" || bob.Credential.Token == "" {
		t.Fatalf("state files: alice %+v, bob %+v", alice, bob)
	}
	if err := bobListen.stop(10 * time.Second); err != nil {
		t.Fatalf("listen after SIGTERM: %v\n%s", err, bobListen.all.Bytes())
	}
	if err := srv2.stop(20 * time.Second); err != nil {
		t.Fatalf("server after SIGTERM: %v", err)
	}

	secrets := map[string][]byte{
		"message text":          []byte(plaintext),
		"reply text":            []byte(reply),
		"caption":               []byte(caption),
		"text after restart":    []byte(afterRestart),
		"attachment content":    []byte(attachmentText),
		"attachment file name":  []byte("vertretungsplan.txt"),
		"alice's password":      []byte(alicePassword),
		"bob's password":        []byte(bobPassword),
		"alice's token":         []byte(alice.Credential.Token),
		"bob's token":           []byte(bob.Credential.Token),
		"bob's tablet's token":  []byte(bob2Token),
		"operator token":        []byte(operatorToken),
		"alice's client_hash":   auth.ClientHash("alice", alicePassword),
		"bob's client_hash":     auth.ClientHash("bob", bobPassword),
		"alice's device key":    devicePrivateKey(t, filepath.Join(stateRoot, "alice")),
		"bob's device key":      devicePrivateKey(t, filepath.Join(stateRoot, "bob")),
		"bob's tablet's device": devicePrivateKey(t, bob2State),
	}
	// Every form checked must also have been long enough to mean
	// something.
	for name, s := range secrets {
		if len(s) < 16 {
			t.Fatalf("secret %s is too short to audit", name)
		}
	}

	// The audit: every file under the data directory (the bbolt file
	// whole, free pages included, and the attachment blobs) and every line
	// the server logged.
	var audited []string
	var db []byte
	err := filepath.WalkDir(dataDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if filepath.Base(path) == "klassenfunk.db" {
			db = b
		}
		audited = append(audited, fmt.Sprintf("%s (%d bytes)", strings.TrimPrefix(path, dataDir), len(b)))
		if found := leaks(b, secrets); len(found) > 0 {
			t.Errorf("%s contains %s", path, strings.Join(found, ", "))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var logs []byte
	for _, p := range servers {
		logs = append(logs, p.all.Bytes()...)
	}
	if found := leaks(logs, secrets); len(found) > 0 {
		t.Errorf("the server log contains %s", strings.Join(found, ", "))
	}

	// Controls: the audit looked at real data. The database holds the
	// users and the conversation; the log holds every request.
	if !bytes.Contains(db, []byte("Alice Adler")) || !bytes.Contains(db, []byte(conv)) {
		t.Fatalf("klassenfunk.db (%d bytes) lacks the users or the conversation: the audit read the wrong file", len(db))
	}
	if len(audited) < 2 {
		t.Fatalf("audited only %v: the attachment blob is missing", audited)
	}
	for _, want := range []string{`"path":"/api/v1/login"`, `"path":"/api/v1/keys"`, `"path":"/api/v1/attachments"`, `"path":"/api/v1/ws"`, `"level":"DEBUG"`} {
		if !bytes.Contains(logs, []byte(want)) {
			t.Fatalf("the server log lacks %s: debug request logging is off or the capture failed", want)
		}
	}
	t.Logf("audited %d log bytes and %s", len(logs), strings.Join(audited, ", "))
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func devicePrivateKey(t *testing.T, stateDir string) []byte {
	t.Helper()
	var d struct {
		PrivateKey string `json:"private_key"`
	}
	readJSON(t, filepath.Join(stateDir, "device.json"), &d)
	k, err := base64.StdEncoding.DecodeString(d.PrivateKey)
	if err != nil || len(k) != 32 {
		t.Fatalf("device key in %s: %v", stateDir, err)
	}
	return k
}
