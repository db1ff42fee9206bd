package push

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	firebase "firebase.google.com/go/v4"
	"firebase.google.com/go/v4/errorutils"
	"firebase.google.com/go/v4/messaging"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
	"google.golang.org/api/option"
)

// FCMConfig configures Firebase Cloud Messaging (HTTP v1). FCM is on
// exactly when CredentialsFile is set.
type FCMConfig struct {
	// CredentialsFile is the service-account JSON of the Firebase project.
	// Its token_uri is where the OAuth access token is fetched.
	CredentialsFile string
	// Endpoint replaces the SDK's base URL https://fcm.googleapis.com/v1
	// (with the /v1). Empty: the default.
	Endpoint string
}

// fcmScope is the OAuth scope of the FCM HTTP v1 API.
const fcmScope = "https://www.googleapis.com/auth/firebase.messaging"

// maxFCMTTL is FCM's limit on a message's TTL (4 weeks); a longer
// retention is capped to it.
const maxFCMTTL = 28 * 24 * time.Hour

type fcmSender struct {
	client   *messaging.Client
	tr       *http.Transport
	project  string
	endpoint string
}

func newFCM(ctx context.Context, cfg FCMConfig, tc *tls.Config) (*fcmSender, error) {
	raw, err := os.ReadFile(cfg.CredentialsFile)
	if err != nil {
		return nil, fmt.Errorf("push: FCM credentials: %w", err)
	}
	var sa struct {
		Type      string `json:"type"`
		ProjectID string `json:"project_id"`
	}
	if err := json.Unmarshal(raw, &sa); err != nil || sa.Type != "service_account" || sa.ProjectID == "" {
		return nil, fmt.Errorf("push: FCM credentials %s: not a service-account JSON with a project_id", cfg.CredentialsFile)
	}
	tr := httpTransport(tc)
	// The token source fetches its OAuth tokens (at the file's token_uri)
	// through the same transport, so the CA file applies to it too. Its
	// context lives as long as the relay: it is used for every refresh.
	tokenCtx := context.WithValue(context.Background(), oauth2.HTTPClient, &http.Client{Transport: tr, Timeout: 30 * time.Second})
	creds, err := google.CredentialsFromJSONWithType(tokenCtx, raw, google.ServiceAccount, fcmScope)
	if err != nil {
		return nil, fmt.Errorf("push: FCM credentials %s: %w", cfg.CredentialsFile, err)
	}
	hc := &http.Client{Transport: &tokenGate{src: creds.TokenSource, base: captureTransport{tr}, now: time.Now}}
	opts := []option.ClientOption{option.WithHTTPClient(hc)}
	endpoint := "https://fcm.googleapis.com/v1"
	if cfg.Endpoint != "" {
		endpoint = strings.TrimRight(cfg.Endpoint, "/")
		opts = append(opts, option.WithEndpoint(endpoint))
	}
	app, err := firebase.NewApp(ctx, &firebase.Config{ProjectID: sa.ProjectID}, opts...)
	if err != nil {
		return nil, fmt.Errorf("push: firebase app: %w", err)
	}
	client, err := app.Messaging(ctx)
	if err != nil {
		return nil, fmt.Errorf("push: firebase messaging: %w", err)
	}
	return &fcmSender{client: client, tr: tr, project: sa.ProjectID, endpoint: endpoint}, nil
}

func (s *fcmSender) describe() []any {
	return []any{"project", s.project, "endpoint", s.endpoint}
}

func (s *fcmSender) close() { s.tr.CloseIdleConnections() }

// send sends a data-only message: {"sid", "p"}, Android priority high,
// TTL = the message's remaining retention, one collapse key per device
// (the service ID: FCM keeps at most 4 collapse keys per device).
//
// The SDK itself retries 503 answers and transport failures (up to 4
// times, honouring Retry-After) within ctx; what comes back from such a
// burst counts as one attempt of the relay.
func (s *fcmSender) send(ctx context.Context, d *delivery) answerOf {
	ttl := d.expiresAt.Sub(d.now).Truncate(time.Second)
	if ttl > maxFCMTTL {
		ttl = maxFCMTTL
	}
	if ttl < 0 {
		ttl = 0
	}
	msg := &messaging.Message{
		Token: d.reg.Token,
		Data:  map[string]string{"sid": d.serviceID, "p": d.blob},
		Android: &messaging.AndroidConfig{
			CollapseKey: d.serviceID,
			Priority:    "high",
			TTL:         &ttl,
		},
	}
	var a answer
	_, err := s.client.Send(withAnswer(ctx, &a), msg)
	if err == nil {
		return answerOf{verdict: verdictSent}
	}
	detail := redact(err.Error(), d.reg.Token)
	resp := errorutils.HTTPResponse(err)
	switch {
	case messaging.IsUnregistered(err):
		return answerOf{verdict: verdictDead, detail: detail}
	case resp != nil && resp.StatusCode == http.StatusBadRequest && invalidTokenBody(resp):
		return answerOf{verdict: verdictDead, detail: detail}
	case a.credentialsRefused:
		// The token endpoint refused the service account: retrying
		// cannot help until the operator replaces the key.
		return answerOf{verdict: verdictFailed, detail: detail}
	case resp == nil:
		// No HTTP answer: a transport failure, a timeout, or no OAuth
		// token. The SDK has retried already.
		return answerOf{verdict: verdictRetry, retryAfter: a.retryAfter, detail: detail}
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		ra := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
		return answerOf{verdict: verdictRetry, retryAfter: max(ra, a.retryAfter), detail: detail}
	}
	return answerOf{verdict: verdictFailed, detail: detail}
}

// invalidTokenBody reports whether an INVALID_ARGUMENT answer is about the
// token (a google.rpc.BadRequest field violation on message.token, or the
// message FCM gives for a malformed token) rather than about the message.
func invalidTokenBody(resp *http.Response) bool {
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return false
	}
	var body struct {
		Error struct {
			Status  string `json:"status"`
			Message string `json:"message"`
			Details []struct {
				FieldViolations []struct {
					Field string `json:"field"`
				} `json:"fieldViolations"`
			} `json:"details"`
		} `json:"error"`
	}
	if json.Unmarshal(b, &body) != nil || body.Error.Status != "INVALID_ARGUMENT" {
		return false
	}
	for _, d := range body.Error.Details {
		for _, v := range d.FieldViolations {
			if v.Field == "message.token" {
				return true
			}
		}
	}
	return strings.Contains(strings.ToLower(body.Error.Message), "registration token")
}
