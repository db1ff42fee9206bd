package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"klassenfunk/auth"
	"klassenfunk/server"
)

// clearEnv removes every KLASSENFUNK_* variable for the test, so that the
// developer's environment cannot change the results.
func clearEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "KLASSENFUNK_") {
			t.Setenv(k, "") // restores the old value afterwards
			os.Unsetenv(k)
		}
	}
}

// runCLI runs the command line and returns stdout, stderr and the error.
func runCLI(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(args, strings.NewReader(stdin), &out, &errb)
	return out.String(), errb.String(), err
}

var idRE = regexp.MustCompile(`^[A-Za-z0-9_-]{22}$`)

func TestRunCommands(t *testing.T) {
	clearEnv(t)
	tests := map[string]struct {
		args       []string
		wantErr    error  // errors.Is
		wantErrMsg string // substring
		wantOut    string // substring of stdout
		wantStderr string // substring of stderr
	}{
		"no arguments":    {args: nil, wantErr: flag.ErrHelp, wantStderr: "Usage: klassenfunk"},
		"help":            {args: []string{"help"}, wantOut: "Usage: klassenfunk"},
		"--help":          {args: []string{"--help"}, wantOut: "serve"},
		"unknown command": {args: []string{"frobnicate"}, wantErrMsg: `unknown command "frobnicate"`, wantStderr: "Usage"},
		"admin help":      {args: []string{"admin", "--help"}, wantErr: flag.ErrHelp, wantStderr: "create-user"},
		"serve extra arg": {args: []string{"serve", "--data", "DIR", "extra"}, wantErrMsg: "serve takes no arguments"},
		"admin unknown task without token": {args: []string{"admin", "--server", "http://127.0.0.1:1", "fly"},
			wantErrMsg: `unknown admin task "fly"`},
		"admin no task": {args: []string{"admin", "--offline", "--data", "DIR"}, wantErr: flag.ErrHelp, wantStderr: "Tasks:"},
		"admin unknown task": {args: []string{"admin", "--offline", "--data", "DIR", "fly"},
			wantErrMsg: `unknown admin task "fly"`},
		"create-school without name": {args: []string{"admin", "--offline", "--data", "DIR", "create-school"},
			wantErrMsg: "usage: klassenfunk admin create-school NAME"},
		"create-school --help": {args: []string{"admin", "--offline", "--data", "DIR", "create-school", "--help"},
			wantErr: flag.ErrHelp, wantStderr: "Usage: klassenfunk admin create-school NAME"},
		"create-school -h": {args: []string{"admin", "--server", "http://127.0.0.1:1", "create-school", "-h"},
			wantErr: flag.ErrHelp, wantStderr: "create-school NAME"},
		"create-school unknown flag": {args: []string{"admin", "--offline", "--data", "DIR", "create-school", "--name", "X"},
			wantErrMsg: "flag provided but not defined"},
		"stats --help": {args: []string{"admin", "--server", "http://127.0.0.1:1", "stats", "--help"},
			wantErr: flag.ErrHelp, wantStderr: "admin stats"},
		"create-school empty name": {args: []string{"admin", "--offline", "--data", "DIR", "create-school", "  "},
			wantErrMsg: "name must be"},
		"operator-token --help": {args: []string{"admin", "--offline", "--data", "DIR", "operator-token", "--help"},
			wantErr: flag.ErrHelp, wantStderr: "operator-token --reset"},
		"backup --help": {args: []string{"admin", "--server", "http://127.0.0.1:1", "backup", "--help"},
			wantErr: flag.ErrHelp, wantStderr: "admin backup"},
		"operator-token without --reset": {args: []string{"admin", "--offline", "--data", "DIR", "operator-token"},
			wantErrMsg: "operator-token --reset"},
		"online without token": {args: []string{"admin", "--server", "http://127.0.0.1:1", "list-schools"},
			wantErrMsg: "no operator token"},
		"explicit config missing": {args: []string{"admin", "--offline", "--config", "does/not/exist.yaml", "--data", "DIR", "list-schools"},
			wantErrMsg: "config"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			args := make([]string, len(tc.args))
			for i, a := range tc.args {
				args[i] = strings.ReplaceAll(a, "DIR", dir)
			}
			out, errOut, err := runCLI(t, "", args...)
			switch {
			case tc.wantErr != nil:
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err %v, want %v", err, tc.wantErr)
				}
			case tc.wantErrMsg != "":
				if err == nil || !strings.Contains(err.Error(), tc.wantErrMsg) {
					t.Fatalf("err %v, want one containing %q", err, tc.wantErrMsg)
				}
			default:
				if err != nil {
					t.Fatalf("err %v", err)
				}
			}
			if !strings.Contains(out, tc.wantOut) || !strings.Contains(errOut, tc.wantStderr) {
				t.Fatalf("stdout %q (want %q), stderr %q (want %q)", out, tc.wantOut, errOut, tc.wantStderr)
			}
		})
	}
}

// TestAdminOfflineNeedsDatabase: an offline task on a directory without a
// database (a typo in --data) fails and creates nothing, instead of
// reporting on, or re-applying erasures to, a new empty database. Only
// create-school, the first step of a setup, may create one.
func TestAdminOfflineNeedsDatabase(t *testing.T) {
	clearEnv(t)
	tombstones := filepath.Join(t.TempDir(), "t.json")
	if err := os.WriteFile(tombstones, []byte(`{"format":"klassenfunk-tombstones/1","tombstones":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, task := range [][]string{
		{"stats"}, {"list-schools"}, {"export-tombstones"}, {"operator-token", "--reset"},
		{"reapply-erasures", "--tombstones", tombstones},
	} {
		typo := filepath.Join(t.TempDir(), "dtaa")
		_, _, err := runCLI(t, "", append([]string{"admin", "--offline", "--data", typo}, task...)...)
		if err == nil || !strings.Contains(err.Error(), "no database at") {
			t.Errorf("%s on a directory without a database: %v, want a refusal", task[0], err)
		}
		if _, err := os.Stat(typo); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s created %s (%v)", task[0], typo, err)
		}
	}
	dir := filepath.Join(t.TempDir(), "data")
	_, errOut, err := runCLI(t, "", "admin", "--offline", "--data", dir, "create-school", "Neue Schule")
	if err != nil || !strings.Contains(errOut, "creating a new database") {
		t.Fatalf("create-school on a new directory: %v, stderr %q", err, errOut)
	}
	if out, _, err := runCLI(t, "", "admin", "--offline", "--data", dir, "list-schools"); err != nil || !strings.Contains(out, "Neue Schule") {
		t.Fatalf("list-schools after it: %q %v", out, err)
	}
}

// TestAdminOffline creates a school and users on a stopped node's data
// directory, then starts a node on it and logs in.
func TestAdminOffline(t *testing.T) {
	clearEnv(t)
	dir := t.TempDir()
	offline := func(args ...string) []string { return append([]string{"admin", "--offline", "--data", dir}, args...) }
	// PBKDF2 with 600000 iterations is slow under -race: compute the
	// client hashes the logins below need once, while the CLI works.
	var hashes sync.WaitGroup
	var aliceHash, frankHash []byte
	hashes.Go(func() { aliceHash = auth.ClientHash("alice", "secret-password") })
	hashes.Go(func() { frankHash = auth.ClientHash("frank", "online-password") })
	defer hashes.Wait()

	out, _, err := runCLI(t, "", offline("create-school", "Gymnasium Musterstadt")...)
	if err != nil {
		t.Fatalf("create-school: %v", err)
	}
	school := strings.TrimSuffix(out, "\n")
	if !idRE.MatchString(school) {
		t.Fatalf("create-school printed %q, want one id line", out)
	}
	users := map[string]struct {
		args       []string
		stdin      string
		wantErrMsg string
		password   string // on success: the password that must log in
		role       string
	}{
		"teacher, password from stdin": {
			args:  []string{"--school", school, "--login", "alice", "--name", "Alice Example", "--role", "teacher"},
			stdin: "secret-password\n", password: "secret-password", role: "teacher",
		},
		"password too short": {
			args:  []string{"--school", school, "--login", "eve", "--name", "Eve", "--role", "student"},
			stdin: "1234567\n", wantErrMsg: "at least 8 characters",
		},
		"empty stdin": {
			args:  []string{"--school", school, "--login", "eve", "--name", "Eve", "--role", "student"},
			stdin: "", wantErrMsg: "no password on stdin",
		},
		"empty line": {
			args:  []string{"--school", school, "--login", "eve", "--name", "Eve", "--role", "student"},
			stdin: "\n", wantErrMsg: "at least 8 characters",
		},
		"unknown role": {
			args:  []string{"--school", school, "--login", "eve", "--name", "Eve", "--role", "janitor"},
			stdin: "secret-password\n", wantErrMsg: "role must be",
		},
		"missing login": {
			args:  []string{"--school", school, "--name", "Eve", "--role", "student"},
			stdin: "secret-password\n", wantErrMsg: "usage:",
		},
		"password on the command line": {
			args:  []string{"--school", school, "--login", "eve", "--name", "Eve", "--role", "student", "secret-password"},
			stdin: "secret-password\n", wantErrMsg: "usage:",
		},
	}
	created := map[string]string{} // login → password
	for name, tc := range users {
		t.Run(name, func(t *testing.T) {
			out, errOut, err := runCLI(t, tc.stdin, offline(append([]string{"create-user"}, tc.args...)...)...)
			if tc.wantErrMsg != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErrMsg) {
					t.Fatalf("err %v, want one containing %q (stdout %q)", err, tc.wantErrMsg, out)
				}
				if out != "" {
					t.Fatalf("stdout %q on failure", out)
				}
				return
			}
			if err != nil {
				t.Fatalf("create-user: %v (stderr %q)", err, errOut)
			}
			f := strings.Split(strings.TrimSuffix(out, "\n"), "\t")
			login := tc.args[3]
			if len(f) != 3 || !idRE.MatchString(f[0]) || f[1] != login || f[2] != tc.role {
				t.Fatalf("create-user printed %q, want id, login %s, role %s", out, login, tc.role)
			}
			if strings.Contains(out+errOut, tc.password) {
				t.Fatalf("the password appears in the output")
			}
			created[login] = tc.password
		})
	}
	if len(created) != 1 {
		t.Fatalf("created %v, want 1 user", created)
	}
	// Logins are unique regardless of case.
	if _, _, err := runCLI(t, "secret-password\n", offline("create-user", "--school", school, "--login", "ALICE", "--name", "A", "--role", "student")...); err == nil || !strings.Contains(err.Error(), "conflict") {
		t.Fatalf("create-user ALICE: %v, want conflict", err)
	}
	if _, _, err := runCLI(t, "secret-password\n", offline("create-user", "--school", "nosuchschool", "--login", "x", "--name", "X", "--role", "student")...); err == nil || !strings.Contains(err.Error(), `no school with the id "nosuchschool"`) {
		t.Fatalf("create-user in an unknown school: %v", err)
	}

	out, _, err = runCLI(t, "", offline("list-schools")...)
	if err != nil || out != school+"\tGymnasium Musterstadt\n" {
		t.Fatalf("list-schools: %q, %v", out, err)
	}
	wantStats(t, offline("stats"), 1, 1)

	// A new operator token, stored only hashed.
	out, _, err = runCLI(t, "", offline("operator-token", "--reset")...)
	opToken := strings.TrimSuffix(out, "\n")
	if err != nil || !strings.HasPrefix(opToken, "kfop_") || len(opToken) < 5+43 {
		t.Fatalf("operator-token --reset: %q, %v", out, err)
	}

	// Now start a node on the directory.
	ctx := context.Background()
	srv, err := server.New(ctx, server.Config{DataDir: dir, NoSync: true}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() { hs.Close(); srv.Close() })
	if srv.OperatorTokenGenerated != "" {
		t.Fatalf("the node generated an operator token although one was stored")
	}

	login := func(login string, clientHash []byte) (int, map[string]any) {
		body, _ := json.Marshal(map[string]any{
			"login":       login,
			"client_hash": base64.StdEncoding.EncodeToString(clientHash),
			"device":      map[string]any{"id": "cli-test", "os": "linux", "personal": false},
		})
		resp, err := http.Post(hs.URL+"/api/v1/login", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	hashes.Wait()
	logins := map[string]struct {
		login string
		hash  []byte
		want  int
	}{
		"alice":                 {"alice", aliceHash, 200},
		"alice, other case":     {"ALICE", aliceHash, 200},
		"alice, wrong password": {"alice", frankHash, 401},
		"eve was not created":   {"eve", aliceHash, 401},
	}
	for name, tc := range logins {
		t.Run("login "+name, func(t *testing.T) {
			status, body := login(tc.login, tc.hash)
			if status != tc.want {
				t.Fatalf("status %d, want %d: %v", status, tc.want, body)
			}
			if tc.want == 200 {
				u, _ := body["user"].(map[string]any)
				if u["school"] != school || !strings.EqualFold(u["login"].(string), tc.login) {
					t.Fatalf("user %v, want login %s in school %s", u, tc.login, school)
				}
			}
		})
	}

	// With the node running, admin talks to its API with the new token.
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(opToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	online := func(args ...string) []string {
		return append([]string{"admin", "--server", hs.URL, "--token-file", tokenFile}, args...)
	}
	out, _, err = runCLI(t, "", online("create-school", "Realschule")...)
	if err != nil || !idRE.MatchString(strings.TrimSuffix(out, "\n")) {
		t.Fatalf("online create-school: %q, %v", out, err)
	}
	school2 := strings.TrimSuffix(out, "\n")
	out, _, err = runCLI(t, "online-password\n", online("create-user", "--school", school2, "--login", "frank", "--name", "Frank", "--role", "teacher")...)
	if err != nil || !strings.HasSuffix(out, "\tfrank\tteacher\n") {
		t.Fatalf("online create-user: %q, %v", out, err)
	}
	if status, body := login("frank", frankHash); status != 200 {
		t.Fatalf("frank login: %d %v", status, body)
	}
	out, _, err = runCLI(t, "", online("list-schools")...)
	if err != nil || !strings.Contains(out, school+"\tGymnasium Musterstadt\n") || !strings.Contains(out, school2+"\tRealschule\n") {
		t.Fatalf("online list-schools: %q, %v", out, err)
	}
	wantStats(t, online("stats"), 2, 2)
	// A wrong token is refused by the server.
	if err := os.WriteFile(tokenFile, []byte("kfop_wrong\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runCLI(t, "", online("list-schools")...); err == nil || !strings.Contains(err.Error(), "HTTP 401") {
		t.Fatalf("wrong operator token: %v, want HTTP 401", err)
	}
}

// wantStats runs an admin stats command and checks its counts of schools
// and accounts.
func wantStats(t *testing.T, args []string, schools, accounts int) {
	t.Helper()
	out, _, err := runCLI(t, "", args...)
	if err != nil {
		t.Fatalf("stats: %v", err)
	}
	var st auth.Stats
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("stats printed %q: %v", out, err)
	}
	n := 0
	for _, c := range st.Accounts.ByRole {
		n += c
	}
	if st.Schools != schools || n != accounts {
		t.Fatalf("stats: %d schools, %d accounts, want %d and %d: %s", st.Schools, n, schools, accounts, out)
	}
}

func TestReadPassword(t *testing.T) {
	tests := map[string]struct {
		stdin   string
		want    string
		wantErr string
	}{
		"newline":           {stdin: "secret-password\n", want: "secret-password"},
		"CRLF":              {stdin: "windows-password\r\n", want: "windows-password"},
		"no newline":        {stdin: "no-newline-password", want: "no-newline-password"},
		"first line only":   {stdin: "first-line-password\nsecond line\n", want: "first-line-password"},
		"inner spaces kept": {stdin: " with spaces \n", want: " with spaces "},
		"exactly 8":         {stdin: "12345678\n", want: "12345678"},
		"7 characters":      {stdin: "1234567\n", wantErr: "at least 8 characters"},
		"empty line":        {stdin: "\n", wantErr: "at least 8 characters"},
		"empty stdin":       {stdin: "", wantErr: "no password on stdin"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var errb bytes.Buffer
			got, err := readPassword(adminEnv{stdin: strings.NewReader(tc.stdin), stdout: io.Discard, stderr: &errb})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("readPassword: %q, %v; want error %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("readPassword: %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// TestAdminBackupRestore: the offline backup and restore tasks, as an
// operator runs them around a stopped server.
func TestAdminBackupRestore(t *testing.T) {
	t.Setenv("GORACE", "atexit_sleep_ms=0") // the file checks' child processes: no second's wait at exit under -race
	clearEnv(t)
	dir := t.TempDir()
	offline := func(args ...string) []string { return append([]string{"admin", "--offline", "--data", dir}, args...) }
	if _, _, err := runCLI(t, "", offline("create-school", "Vorher")...); err != nil {
		t.Fatal(err)
	}
	out, _, err := runCLI(t, "", offline("backup")...)
	file := strings.TrimSpace(out)
	if err != nil || filepath.Dir(file) != filepath.Join(dir, "backups") {
		t.Fatalf("backup: %q %v", out, err)
	}
	if _, _, err := runCLI(t, "", offline("create-school", "Nachher")...); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runCLI(t, "", "admin", "--server", "http://127.0.0.1:1", "restore", file); err == nil || !strings.Contains(err.Error(), "--offline") {
		t.Fatalf("restore without --offline: %v", err)
	}
	out, stderr, err := runCLI(t, "", offline("restore", file)...)
	if err != nil || !strings.Contains(out, "restored") || !strings.Contains(out, "replaced-") || strings.Contains(stderr, "warning") {
		t.Fatalf("restore: %q %q %v", out, stderr, err)
	}
	out, _, err = runCLI(t, "", offline("list-schools")...)
	if err != nil || !strings.Contains(out, "Vorher") || strings.Contains(out, "Nachher") {
		t.Fatalf("schools after the restore: %q %v", out, err)
	}

	// Into an empty data directory (the node's disk lost) nothing but the
	// tombstones beside the backup guard the erasures since: a warning
	// says so, unless a tombstone export is given.
	fresh := t.TempDir()
	_, stderr, err = runCLI(t, "", "admin", "--offline", "--data", fresh, "restore", file)
	if err != nil || !strings.Contains(stderr, "warning: no database was replaced and no --tombstones given") {
		t.Fatalf("restore into an empty data directory: %q %v", stderr, err)
	}
	tombs := filepath.Join(t.TempDir(), "tombstones.json")
	if _, _, err := runCLI(t, "", offline("export-tombstones", "--out", tombs)...); err != nil {
		t.Fatal(err)
	}
	_, stderr, err = runCLI(t, "", "admin", "--offline", "--data", t.TempDir(), "restore", "--tombstones", tombs, file)
	if err != nil || strings.Contains(stderr, "warning") {
		t.Fatalf("restore into an empty data directory with --tombstones: %q %v", stderr, err)
	}
}
