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
