package push

import (
	"net/url"
	"strings"
	"testing"
)

func TestRedact(t *testing.T) {
	tok := "fcmToken:APA91b-xyz_0123456789abcdefghijklmnopqrstuvwxyz/+ABCDEFGHIJ"
	fp := "tok:" + fingerprint(tok)
	for name, in := range map[string]string{
		"as it is":        `Post "https://fcm/v1/send": invalid token ` + tok,
		"path-escaped":    `Post "https://api.push.apple.com/3/device/` + url.PathEscape(tok) + `": refused`,
		"query-escaped":   "token=" + url.QueryEscape(tok) + "&x=1",
		"cut short":       "SenderId mismatch for " + tok[:40] + "…",
		"quoted in parts": "token starts " + tok[:20] + " and ends " + tok[len(tok)-20:],
	} {
		got := redact(in, tok)
		if !strings.Contains(got, fp) {
			t.Errorf("%s: %q has no fingerprint", name, got)
		}
		for i := 0; i+redactPiece <= len(tok); i++ {
			if strings.Contains(got, tok[i:i+redactPiece]) {
				t.Errorf("%s: %q keeps %q of the token", name, got, tok[i:i+redactPiece])
			}
		}
	}
	if got := redact("no token here", tok); got != "no token here" {
		t.Errorf("a text without the token changed: %q", got)
	}
	if got := redact("text", ""); got != "text" {
		t.Errorf("an empty token changed the text: %q", got)
	}
}
