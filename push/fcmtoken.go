package push

import (
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"golang.org/x/oauth2"
)

// tokenGate puts FCM's OAuth access token on each request, as
// oauth2.Transport does, with two differences for when the token endpoint
// fails:
//
//   - A failed fetch is remembered: requests in the next tokenRetryMin
//     (doubling to tokenRetryMax while fetches keep failing) fail at once
//     with it. Otherwise every pending push, and each of the SDK's own
//     retries of it, would ask the endpoint again: dozens of token
//     requests per message in an outage.
//   - A refusal of the credentials themselves (the token endpoint answers
//     400, 401 or 403: a revoked or wrong service-account key) is marked in
//     the request's answer, so that the push counts as failed instead of
//     being retried until the message expires.
//
// Fetches are one at a time; a valid token is reused until it expires
// (src is a ReuseTokenSource).
type tokenGate struct {
	src  oauth2.TokenSource
	base http.RoundTripper
	now  func() time.Time

	mu    sync.Mutex
	err   error         // the last fetch's failure, nil after a success
	until time.Time     // err stands until then
	wait  time.Duration // the current wait after a failure
}

const (
	tokenRetryMin = time.Second
	tokenRetryMax = time.Minute
)

func (g *tokenGate) token() (*oauth2.Token, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err != nil && g.now().Before(g.until) {
		return nil, g.err
	}
	tok, err := g.src.Token()
	if err != nil {
		g.wait = min(max(2*g.wait, tokenRetryMin), tokenRetryMax)
		g.err, g.until = err, g.now().Add(g.wait)
		return nil, err
	}
	g.err, g.wait = nil, 0
	return tok, nil
}

func (g *tokenGate) RoundTrip(r *http.Request) (*http.Response, error) {
	tok, err := g.token()
	if err != nil {
		if r.Body != nil {
			r.Body.Close() // a RoundTripper closes the body, also on errors
		}
		if a, ok := r.Context().Value(answerKey{}).(*answer); ok {
			a.credentialsRefused = credentialsRefused(err)
		}
		return nil, fmt.Errorf("FCM OAuth token: %w", err)
	}
	r2 := r.Clone(r.Context())
	tok.SetAuthHeader(r2)
	return g.base.RoundTrip(r2)
}

// credentialsRefused reports whether a token fetch failed because the
// endpoint refused the service account (not because it was unreachable,
// overloaded or failing).
func credentialsRefused(err error) bool {
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.Response == nil {
		return false
	}
	switch re.Response.StatusCode {
	case http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden:
		return true
	}
	return false
}
