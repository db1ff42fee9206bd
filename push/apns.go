package push

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sideshow/apns2"
	"github.com/sideshow/apns2/certificate"
	"github.com/sideshow/apns2/token"
	"golang.org/x/net/http2"
)

// APNsConfig configures the Apple Push Notification service. APNs is on
// exactly when token auth (KeyFile, KeyID and TeamID) or certificate auth
// (CertFile) is configured; token auth wins when both are.
type APNsConfig struct {
	// KeyFile is the .p8 signing key; KeyID its key id, TeamID the Apple
	// developer team.
	KeyFile string
	KeyID   string
	TeamID  string
	// CertFile is a client certificate (.p12, or PEM with certificate and
	// key) for certificate auth; CertPassword unlocks it.
	CertFile     string
	CertPassword string
	// Endpoint replaces both the production and the sandbox host
	// (https://api.push.apple.com, https://api.sandbox.push.apple.com).
	Endpoint string
}

func (c APNsConfig) tokenAuth() bool { return c.KeyFile != "" }

func (c APNsConfig) enabled() bool { return c.tokenAuth() || c.CertFile != "" }

type apnsSender struct {
	prod, sandbox *apns2.Client
	tr            *http2.Transport
	tok           *token.Token // nil with certificate auth
	auth          string
}

func newAPNs(cfg APNsConfig, tc *tls.Config) (*apnsSender, error) {
	tc = tc.Clone()
	s := &apnsSender{}
	if cfg.tokenAuth() {
		if cfg.KeyID == "" || cfg.TeamID == "" {
			return nil, fmt.Errorf("push: APNs token auth needs the key file, the key id and the team id")
		}
		key, err := token.AuthKeyFromFile(cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("push: APNs key %s: %w", cfg.KeyFile, err)
		}
		s.tok = &token.Token{AuthKey: key, KeyID: cfg.KeyID, TeamID: cfg.TeamID}
		if _, err := s.tok.Generate(); err != nil {
			return nil, fmt.Errorf("push: APNs key %s: %w", cfg.KeyFile, err)
		}
		s.auth = "token"
	} else {
		var cert tls.Certificate
		var err error
		if strings.HasSuffix(strings.ToLower(cfg.CertFile), ".p12") {
			cert, err = certificate.FromP12File(cfg.CertFile, cfg.CertPassword)
		} else {
			cert, err = certificate.FromPemFile(cfg.CertFile, cfg.CertPassword)
		}
		if err != nil {
			return nil, fmt.Errorf("push: APNs certificate %s: %w", cfg.CertFile, err)
		}
		tc.Certificates = []tls.Certificate{cert}
		s.auth = "certificate"
	}
	// One HTTP/2 connection pool for both hosts, kept open: Apple asks
	// providers not to reconnect for every push.
	s.tr = &http2.Transport{TLSClientConfig: tc, ReadIdleTimeout: 15 * time.Second, PingTimeout: 15 * time.Second}
	hc := &http.Client{Transport: captureTransport{s.tr}}
	mk := func(host string) *apns2.Client {
		var c *apns2.Client
		if s.tok != nil {
			c = apns2.NewTokenClient(s.tok)
		} else {
			c = apns2.NewClient(tc.Certificates[0])
		}
		c.HTTPClient = hc
		c.Host = host
		return c
	}
	prod, sandbox := apns2.HostProduction, apns2.HostDevelopment
	if cfg.Endpoint != "" {
		prod = strings.TrimRight(cfg.Endpoint, "/")
		sandbox = prod
	}
	s.prod, s.sandbox = mk(prod), mk(sandbox)
	return s, nil
}

func (s *apnsSender) describe() []any {
	return []any{"auth", s.auth, "host", s.prod.Host, "sandbox_host", s.sandbox.Host}
}

func (s *apnsSender) close() { s.tr.CloseIdleConnections() }

// apnsPayload is exactly {"aps":{"alert":{"loc-key":"NEW_MESSAGE"},
// "mutable-content":1,"sound":"default"},"sid":…,"p":…}: the Notification
// Service Extension decrypts p and shows the real notification.
func apnsPayload(serviceID, blob string) []byte {
	b := make([]byte, 0, 112+len(serviceID)+len(blob))
	b = append(b, `{"aps":{"alert":{"loc-key":"NEW_MESSAGE"},"mutable-content":1,"sound":"default"},"sid":`...)
	b = strconv.AppendQuote(b, serviceID)
	b = append(b, `,"p":`...)
	b = strconv.AppendQuote(b, blob)
	return append(b, '}')
}

// send sends an alert push, priority 10, topic from the registration,
// apns-expiration = the message's expires_at, apns-collapse-id = service ID.
func (s *apnsSender) send(ctx context.Context, d *delivery) answerOf {
	n := &apns2.Notification{
		DeviceToken: d.reg.Token,
		Topic:       d.reg.Topic,
		Payload:     apnsPayload(d.serviceID, d.blob),
		PushType:    apns2.PushTypeAlert,
		Priority:    apns2.PriorityHigh,
		Expiration:  d.expiresAt,
		CollapseID:  d.serviceID,
	}
	c := s.prod
	if d.reg.Sandbox {
		c = s.sandbox
	}
	var a answer
	res, err := c.PushWithContext(withAnswer(ctx, &a), n)
	if err != nil {
		return answerOf{verdict: verdictRetry, retryAfter: a.retryAfter, detail: redact(err.Error(), d.reg.Token)}
	}
	detail := fmt.Sprintf("APNs %d %s", res.StatusCode, res.Reason)
	switch {
	case res.StatusCode == http.StatusOK:
		return answerOf{verdict: verdictSent}
	case res.StatusCode == http.StatusGone,
		res.Reason == apns2.ReasonBadDeviceToken, res.Reason == apns2.ReasonUnregistered, res.Reason == apns2.ReasonExpiredToken:
		return answerOf{verdict: verdictDead, detail: detail}
	case res.Reason == apns2.ReasonExpiredProviderToken && s.tok != nil:
		// Our JWT is older than Apple accepts: sign a new one and retry.
		s.tok.Lock()
		s.tok.Generate()
		s.tok.Unlock()
		return answerOf{verdict: verdictRetry, detail: detail}
	case res.StatusCode == http.StatusTooManyRequests || res.StatusCode >= 500:
		return answerOf{verdict: verdictRetry, retryAfter: a.retryAfter, detail: detail}
	}
	return answerOf{verdict: verdictFailed, detail: detail}
}
