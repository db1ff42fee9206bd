package main

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestGeneratedOperatorTokenNotLogged: without a terminal, a generated
// operator token goes to a file only the server's user can read, never to
// stderr (a log collector would keep it); a later token replaces the file.
func TestGeneratedOperatorTokenNotLogged(t *testing.T) {
	dir := t.TempDir()
	var stderr bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&stderr, nil))
	path := filepath.Join(dir, operatorTokenFile)
	for _, tok := range []string{"kfop_first-token-aaaaaaaaaaaaaaaa", "kfop_second-token-bbbbbbbbbbbbbbb"} {
		if err := showOperatorToken(&stderr, dir, tok, log); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil || string(b) != tok+"\n" {
			t.Fatalf("file holds %q, %v; want the token", b, err)
		}
		if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
			t.Fatalf("file mode %v, want 0600", fi.Mode().Perm())
		}
	}
	out := stderr.String()
	if strings.Contains(out, "kfop_") || strings.Count(out, path) != 2 {
		t.Fatalf("stderr holds a token, or does not name the file twice:\n%s", out)
	}

	// An unwritable data dir fails the start loudly, with the way out.
	if err := showOperatorToken(&stderr, filepath.Join(dir, "missing"), "kfop_x", log); err == nil || !strings.Contains(err.Error(), "operator-token --reset") {
		t.Fatalf("missing dir: %v", err)
	}
}

// TestOperatorTokenFileChecked: a start reminds the operator of a token
// file that still holds the operator token, and removes one whose token
// was replaced (by KLASSENFUNK_OPERATOR_TOKEN or a reset), which would
// only be refused. The token itself is never logged.
func TestOperatorTokenFileChecked(t *testing.T) {
	dir := t.TempDir()
	var stderr bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&stderr, nil))
	const tok = "kfop_generated-token-cccccccccccccc"
	if err := showOperatorToken(&stderr, dir, tok, log); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, operatorTokenFile)
	current := tok
	isOperator := func(s string) bool { return s == current }

	stderr.Reset()
	checkOperatorTokenFile(dir, isOperator, log)
	if _, err := os.Stat(path); err != nil || !strings.Contains(stderr.String(), "still in a file") {
		t.Fatalf("file with the operator token: %v; log:\n%s", err, &stderr)
	}

	current = "kfop_configured-token-ddddddddddddd"
	stderr.Reset()
	checkOperatorTokenFile(dir, isOperator, log)
	if _, err := os.Stat(path); !os.IsNotExist(err) || !strings.Contains(stderr.String(), "removed the operator token file") {
		t.Fatalf("file with a replaced token: %v; log:\n%s", err, &stderr)
	}
	if strings.Contains(stderr.String(), "kfop_") {
		t.Fatalf("the log holds a token:\n%s", &stderr)
	}

	stderr.Reset()
	checkOperatorTokenFile(dir, isOperator, log)
	if stderr.Len() != 0 {
		t.Fatalf("no file, yet the log says:\n%s", &stderr)
	}
}
