package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"strings"
	"testing"
)

func TestClean(t *testing.T) {
	tests := map[string]struct{ in, want string }{
		"plain":          {"Treffen um 8 im Raum 204", "Treffen um 8 im Raum 204"},
		"umlauts, emoji": {"Grüße 👋", "Grüße 👋"},
		"newline":        {"a\nb", `a\nb`},
		"tab":            {"a\tb", `a\tb`},
		"escape":         {"\x1b[2J\x1b]0;pwned\x07", `\u001b[2J\u001b]0;pwned\u0007`},
		"carriage":       {"fake\rreal", `fake\u000dreal`},
		"bidi override":  {"abc\u202edcba", `abc\u202edcba`},
		"line separator": {"a\u2028b", `a\u2028b`},
		"c1 control":     {"a\u009bb", `a\u009bb`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := clean(tc.in); got != tc.want {
				t.Fatalf("clean(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestSafeFileName(t *testing.T) {
	tests := map[string]string{
		"plan.pdf":             "plan.pdf",
		"../../.bashrc":        "bashrc",
		"/etc/passwd":          "passwd",
		`..\..\windows\x.exe`:  "x.exe",
		"":                     "attachment-1",
		"..":                   "attachment-1",
		"a\x00b\nc.txt":        "abc.txt",
		"sub/dir/Stundenplan":  "Stundenplan",
		".hidden":              "hidden",
		"Vertretungsplan 7b.t": "Vertretungsplan 7b.t",
	}
	for in, want := range tests {
		if got := safeFileName(in, 0); got != want {
			t.Errorf("safeFileName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestUsage(t *testing.T) {
	ctx := context.Background()
	var out, errOut bytes.Buffer
	if err := run(ctx, nil, strings.NewReader(""), &out, &errOut); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("no command: %v", err)
	}
	if err := run(ctx, []string{"frobnicate"}, strings.NewReader(""), &out, &errOut); err == nil || !strings.Contains(err.Error(), "unknown command") {
		t.Fatalf("unknown command: %v", err)
	}
	var ue usageError
	if err := run(ctx, []string{"--state", t.TempDir(), "send", "conv"}, strings.NewReader(""), &out, &errOut); !errors.As(err, &ue) {
		t.Fatalf("send without text: %v", err)
	}
	out.Reset()
	if err := run(ctx, []string{"help"}, strings.NewReader(""), &out, &errOut); err != nil || !strings.Contains(out.String(), "listen") {
		t.Fatalf("help: %v\n%s", err, out.String())
	}
	if err := run(ctx, []string{"--state", t.TempDir(), "whoami"}, strings.NewReader(""), &out, &errOut); err == nil || !strings.Contains(err.Error(), "not logged in") {
		t.Fatalf("whoami without login: %v", err)
	}
}
