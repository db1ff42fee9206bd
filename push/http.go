package push

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"net/http"
	"time"

	"klassenfunk/auth"
	"klassenfunk/internal/httpapi"
	"klassenfunk/internal/ids"
	"klassenfunk/proto"
	"klassenfunk/storage"
)

// Limits of a registration.
const (
	// MaxTokenLen caps a device token (FCM tokens are about 160
	// characters today, APNs tokens 64 hex digits).
	MaxTokenLen = 4096
	// MaxAPNsTokenLen caps an APNs token (hex digits).
	MaxAPNsTokenLen = 200
	// MaxTopicLen caps an APNs topic (the app's bundle id).
	MaxTopicLen = 255
)

// testPushTTL is how long an operator's test push may wait at the
// provider.
const testPushTTL = time.Hour

// Register adds the push routes to mux: PUT and DELETE /api/v1/push for
// trust credentials, and the operator's POST /api/v1/admin/push-test.
func (r *Relay) Register(mux *http.ServeMux, h *auth.HTTP) {
	mux.HandleFunc("PUT /api/v1/push", h.Authed(r.putPush))
	mux.HandleFunc("DELETE /api/v1/push", h.Authed(r.deletePush))
	mux.HandleFunc("POST /api/v1/admin/push-test", h.Operator(r.pushTest))
}

// Registration is the body of PUT /push.
type Registration struct {
	Provider string `json:"provider"`
	Token    string `json:"token"`
	Topic    string `json:"topic"`
	Sandbox  bool   `json:"sandbox"`
}

func (g *Registration) validate(r *Relay) error {
	switch g.Provider {
	case ProviderFCM, ProviderAPNs:
	default:
		return proto.Errorf(proto.CodeInvalidRequest, `provider must be "fcm" or "apns"`)
	}
	if !r.Enabled(g.Provider) {
		return proto.Errorf(proto.CodeInvalidRequest, "push provider %q is not configured on this server", g.Provider)
	}
	if g.Token == "" || len(g.Token) > MaxTokenLen {
		return proto.Errorf(proto.CodeInvalidRequest, "token must be 1 to %d characters", MaxTokenLen)
	}
	if g.Provider == ProviderAPNs {
		if len(g.Token) > MaxAPNsTokenLen || !hexDigits(g.Token) {
			return proto.Errorf(proto.CodeInvalidRequest, "an APNs token is 1 to %d hex digits", MaxAPNsTokenLen)
		}
		if g.Topic == "" || len(g.Topic) > MaxTopicLen || !topicChars(g.Topic) {
			return proto.Errorf(proto.CodeInvalidRequest, "topic (the app's bundle id) is required for apns: 1 to %d letters, digits, '.', '-' or '_'", MaxTopicLen)
		}
		return nil
	}
	if !tokenChars(g.Token) {
		return proto.Errorf(proto.CodeInvalidRequest, "token holds characters an FCM token does not have")
	}
	g.Topic, g.Sandbox = "", false // FCM has neither
	return nil
}

func hexDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

func alnum(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

func topicChars(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !alnum(c) && c != '.' && c != '-' && c != '_' {
			return false
		}
	}
	return true
}

// tokenChars admits what FCM tokens are made of (URL-safe base64 and ':').
func tokenChars(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !alnum(c) && c != '-' && c != '_' && c != ':' && c != '.' {
			return false
		}
	}
	return true
}

// RegistrationView is the answer of PUT /push.
type RegistrationView struct {
	ServiceID  string `json:"service_id"`
	PushSecret string `json:"push_secret"`
}

// RegisterDevice sets the caller's push registration with a new push secret and
// returns it with the service ID. Trust credentials only.
func (r *Relay) RegisterDevice(ctx context.Context, p auth.Principal, g Registration) (RegistrationView, error) {
	if p.Cred.Kind != storage.CredTrust {
		return RegistrationView{}, errSessionPush
	}
	if err := g.validate(r); err != nil {
		return RegistrationView{}, err
	}
	secret := make([]byte, SecretLen)
	rand.Read(secret) // never fails (crypto/rand, Go ≥ 1.24)
	var sid string
	err := r.store.UpdateCredential(ctx, p.Cred.ID, func(c *storage.Credential) error {
		if c.ServiceID == "" {
			c.ServiceID = ids.New()
		}
		sid = c.ServiceID
		c.Push = &storage.PushRegistration{
			Provider: g.Provider, Token: g.Token, Topic: g.Topic, Sandbox: g.Sandbox,
			Secret: secret, UpdatedAt: r.now().UTC(),
		}
		return nil
	})
	if errors.Is(err, storage.ErrNotFound) {
		return RegistrationView{}, errUnauthorized
	}
	if err != nil {
		return RegistrationView{}, err
	}
	return RegistrationView{ServiceID: sid, PushSecret: base64.StdEncoding.EncodeToString(secret)}, nil
}

// Unregister deletes the caller's push registration (no error when it has
// none) and drops its pending push. Trust credentials only.
func (r *Relay) Unregister(ctx context.Context, p auth.Principal) error {
	if p.Cred.Kind != storage.CredTrust {
		return errSessionPush
	}
	err := r.store.UpdateCredential(ctx, p.Cred.ID, func(c *storage.Credential) error {
		c.Push = nil
		return nil
	})
	if errors.Is(err, storage.ErrNotFound) {
		return errUnauthorized
	}
	if err != nil {
		return err
	}
	r.Forget(p.Cred.ID)
	return nil
}

func (r *Relay) putPush(w http.ResponseWriter, req *http.Request, p auth.Principal) {
	if p.Cred.Kind != storage.CredTrust {
		httpapi.WriteError(w, nil, errSessionPush)
		return
	}
	var g Registration
	if err := httpapi.Decode(w, req, &g); err != nil {
		httpapi.WriteError(w, nil, err)
		return
	}
	v, err := r.RegisterDevice(req.Context(), p, g)
	if err != nil {
		httpapi.WriteError(w, r.log, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, v)
}

func (r *Relay) deletePush(w http.ResponseWriter, req *http.Request, p auth.Principal) {
	if err := r.Unregister(req.Context(), p); err != nil {
		httpapi.WriteError(w, r.log, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// TestResult is the outcome of a test push to one device. It names the
// trust relationship, never the token.
type TestResult struct {
	TrustID  string `json:"trust_id"`
	Provider string `json:"provider"`
	OS       string `json:"os"`
	// Outcome is sent, dead_token (the registration was deleted),
	// retried (throttled or unreachable: try again later), failed or
	// provider_off.
	Outcome string `json:"outcome"`
	Detail  string `json:"detail,omitempty"`
}

// TestPush sends a test push ({"t":"test"}) to every registered device of
// a user, now, bypassing the outbox, and reports each outcome.
func (r *Relay) TestPush(ctx context.Context, userID string) ([]TestResult, error) {
	if _, err := r.store.User(ctx, userID); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return nil, errNotFound
		}
		return nil, err
	}
	creds, err := r.store.CredentialsOf(ctx, userID)
	if err != nil {
		return nil, err
	}
	out := []TestResult{}
	for i := range creds {
		c := &creds[i]
		if c.Kind != storage.CredTrust || c.Push == nil {
			continue
		}
		res := TestResult{TrustID: c.ID, Provider: c.Push.Provider, OS: c.OS}
		snd := r.senders[c.Push.Provider]
		if snd == nil {
			res.Outcome = "provider_off"
			out = append(out, res)
			continue
		}
		blob, err := Seal(c.Push.Secret, c.ServiceID, Payload{T: "test"})
		if err != nil {
			return nil, err
		}
		sctx, cancel := context.WithTimeout(ctx, r.cfg.Tuning.SendTimeout)
		s := r.sendOne(sctx, c, snd, blob, r.now().Add(testPushTTL))
		cancel()
		r.m.count(c.Push.Provider, s.outcome)
		res.Outcome, res.Detail = string(s.outcome), s.detail
		out = append(out, res)
	}
	return out, nil
}

func (r *Relay) pushTest(w http.ResponseWriter, req *http.Request) {
	var body struct {
		UserID string `json:"user_id"`
	}
	if err := httpapi.Decode(w, req, &body); err != nil {
		httpapi.WriteError(w, nil, err)
		return
	}
	if body.UserID == "" {
		httpapi.WriteError(w, nil, proto.Errorf(proto.CodeInvalidRequest, "user_id is required"))
		return
	}
	res, err := r.TestPush(req.Context(), body.UserID)
	if err != nil {
		httpapi.WriteError(w, r.log, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"user_id": body.UserID, "devices": res})
}
