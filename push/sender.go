package push

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/url"
	"strings"
	"time"

	"klassenfunk/storage"
)

// Providers.
const (
	ProviderFCM  = "fcm"
	ProviderAPNs = "apns"
)

// verdict is a sender's reading of the provider's answer.
type verdict int

const (
	verdictSent   verdict = iota // accepted
	verdictRetry                 // throttled, server error or transport failure
	verdictDead                  // the token is dead: delete the registration
	verdictFailed                // permanent; not retried
)

// delivery is one push to one device.
type delivery struct {
	reg       *storage.PushRegistration
	serviceID string
	blob      string
	// expiresAt is the push's end (the message's expires_at); now is the
	// relay's clock, so that the FCM TTL is expiresAt - now.
	expiresAt time.Time
	now       time.Time
}

// answerOf is what a sender reports.
type answerOf struct {
	verdict    verdict
	retryAfter time.Duration // from Retry-After; 0 when absent
	// detail describes a failure for logs and the operator's push test. It
	// never holds the device token (redact), the secret or the blob.
	detail string
}

// sender talks to one provider. Safe for concurrent use.
type sender interface {
	send(ctx context.Context, d *delivery) answerOf
	// describe is logged once at start: endpoint and identity, no secret.
	describe() []any
	close()
}

var (
	_ sender = (*fcmSender)(nil)
	_ sender = (*apnsSender)(nil)
)

// fingerprint identifies a token in logs without revealing it.
func fingerprint(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:4])
}

// redact removes the token from a library's or a provider's error text
// (apns2's transport errors quote the URL, and with it the token): as it
// is, escaped for a URL, and any redactPiece characters of it in a row
// (a text that cuts it short or quotes it in parts).
func redact(s, token string) string {
	if token == "" {
		return s
	}
	fp := "tok:" + fingerprint(token)
	for _, form := range []string{token, url.PathEscape(token), url.QueryEscape(token)} {
		s = strings.ReplaceAll(s, form, fp)
	}
	for i := 0; i+redactPiece <= len(token); i++ {
		s = strings.ReplaceAll(s, token[i:i+redactPiece], fp)
	}
	return s
}

// redactPiece is the shortest part of a device token that redact removes.
const redactPiece = 16
