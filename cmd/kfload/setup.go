//go:build unix

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// user is one account with one logged-in personal device.
type user struct {
	idx        int
	login      string
	clientHash string // base64 of 32 random bytes: the server treats it as the password
	device     string
	id         string // user id
	token      string // trust credential
	keyName    string // "<user id>/<device id>"
}

// api calls the HTTP API of API.md.
type api struct {
	base string // http://host:port, no trailing slash
	op   string // operator token
	hc   *http.Client
}

// apiError is a non-2xx answer.
type apiError struct {
	method, path string
	status       int
	body         string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%s %s: HTTP %d: %s", e.method, e.path, e.status, e.body)
}

// do sends a JSON request and decodes a 2xx JSON answer into out (when not
// nil). Any other status is an *apiError carrying the body.
func (a *api) do(ctx context.Context, method, path, token string, body, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+"/api/v1"+path, rd)
	if err != nil {
		return 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return resp.StatusCode, fmt.Errorf("%s %s: reading body: %w", method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, &apiError{method, path, resp.StatusCode, string(bytes.TrimSpace(b))}
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: HTTP %d: decoding %q: %w", method, path, resp.StatusCode, b, err)
		}
	}
	return resp.StatusCode, nil
}

// newHTTPClient returns a client for the setup phase: keep-alive, enough idle
// connections for the worker pool, connections spread over the source
// addresses.
func newHTTPClient(conc int, dial func(ctx context.Context, network, addr string) (net.Conn, error)) *http.Client {
	tr := &http.Transport{
		DialContext:           dial,
		MaxIdleConns:          0, // no global limit
		MaxIdleConnsPerHost:   conc * 2,
		IdleConnTimeout:       30 * time.Second,
		ResponseHeaderTimeout: 2 * time.Minute,
		ForceAttemptHTTP2:     false,
		DisableCompression:    true,
	}
	return &http.Client{Transport: tr, Timeout: 3 * time.Minute}
}

// parallel runs fn(0..n-1) on conc workers. The first error stops the
// others and is returned. done counts finished items (for progress).
func parallel(ctx context.Context, n, conc int, done *atomic.Int64, fn func(ctx context.Context, i int) error) error {
	if n == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next     atomic.Int64
		once     sync.Once
		firstErr error
		wg       sync.WaitGroup
	)
	for range min(conc, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := fn(ctx, i); err != nil {
					once.Do(func() { firstErr = err; cancel() })
					return
				}
				if done != nil {
					done.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return firstErr
}

// phase runs one timed setup step over n items and prints its progress
// and duration to stderr.
func phase(ctx context.Context, name string, n, conc int, fn func(ctx context.Context, i int) error) (time.Duration, error) {
	start := time.Now()
	var done atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				fmt.Fprintf(os.Stderr, "  %s: %d/%d (%.0f/s)\n", name, done.Load(), n,
					float64(done.Load())/time.Since(start).Seconds())
			}
		}
	})
	err := parallel(ctx, n, conc, &done, fn)
	close(stop)
	wg.Wait()
	d := time.Since(start)
	if err != nil {
		return d, fmt.Errorf("%s: %w", name, err)
	}
	rate := 0.0
	if d > 0 {
		rate = float64(n) / d.Seconds()
	}
	fmt.Fprintf(os.Stderr, "setup: %-13s %6d in %8s (%.0f/s)\n", name, n, d.Round(time.Millisecond), rate)
	return d, nil
}

func randB64(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return fmt.Sprintf("%x", b)
}

// setupTimes is how long each setup step took.
type setupTimes struct {
	School        time.Duration `json:"school_ns"`
	Users         time.Duration `json:"users_ns"`
	Logins        time.Duration `json:"logins_ns"`
	Keys          time.Duration `json:"keys_ns"`
	Conversations time.Duration `json:"conversations_ns"`
	Connect       time.Duration `json:"connect_ns"`
	Total         time.Duration `json:"total_ns"`
}

// setupAccounts creates the school, the users, logs every user in as a
// personal device, uploads a key for each and creates one direct
// conversation per pair. users[2i] sends to users[2i+1]; users[2*pairs:]
// are the idle users. It returns the conversation ids by pair.
func setupAccounts(ctx context.Context, a *api, runID string, role string, pairs, idle, conc int, st *setupTimes) ([]*user, []string, error) {
	t0 := time.Now()
	var school struct {
		ID string `json:"id"`
	}
	if _, err := a.do(ctx, "POST", "/schools", a.op, map[string]string{"name": "kfload " + runID}, &school); err != nil {
		return nil, nil, fmt.Errorf("create school: %w", err)
	}
	st.School = time.Since(t0)
	fmt.Fprintf(os.Stderr, "setup: %-13s %6d in %8s (id %s)\n", "school", 1, st.School.Round(time.Millisecond), school.ID)

	n := 2*pairs + idle
	users := make([]*user, n)
	for i := range users {
		users[i] = &user{
			idx:        i,
			login:      fmt.Sprintf("kfload-%s-%d", runID, i),
			clientHash: randB64(32),
			device:     fmt.Sprintf("kfload-dev-%d", i),
		}
	}
	var err error
	st.Users, err = phase(ctx, "users", n, conc, func(ctx context.Context, i int) error {
		u := users[i]
		var out struct {
			ID string `json:"id"`
		}
		_, err := a.do(ctx, "POST", "/schools/"+school.ID+"/users", a.op, map[string]string{
			"login": u.login, "display_name": fmt.Sprintf("Load User %d", i), "role": role, "client_hash": u.clientHash,
		}, &out)
		if err != nil {
			return err
		}
		if out.ID == "" {
			return fmt.Errorf("create user %s: no id in answer", u.login)
		}
		u.id = out.ID
		return nil
	})
	if err != nil {
		return nil, nil, err
	}

	st.Logins, err = phase(ctx, "logins", n, conc, func(ctx context.Context, i int) error {
		u := users[i]
		var out struct {
			User struct {
				ID string `json:"id"`
			} `json:"user"`
			Credential struct {
				Kind  string `json:"kind"`
				Token string `json:"token"`
			} `json:"credential"`
		}
		_, err := a.do(ctx, "POST", "/login", "", map[string]any{
			"login": u.login, "client_hash": u.clientHash,
			"device": map[string]any{"id": u.device, "name": "kfload " + u.device, "os": "linux", "personal": true},
		}, &out)
		if err != nil {
			return err
		}
		if out.Credential.Token == "" || out.Credential.Kind != "trust" || out.User.ID != u.id {
			return fmt.Errorf("login %s: unexpected answer: user %q (want %q), credential kind %q, token set %v",
				u.login, out.User.ID, u.id, out.Credential.Kind, out.Credential.Token != "")
		}
		u.token = out.Credential.Token
		u.keyName = u.id + "/" + u.device
		return nil
	})
	if err != nil {
		return nil, nil, err
	}

	st.Keys, err = phase(ctx, "keys", n, conc, func(ctx context.Context, i int) error {
		_, err := a.do(ctx, "PUT", "/keys", users[i].token, map[string]string{"public_key": randB64(32)}, nil)
		return err
	})
	if err != nil {
		return nil, nil, err
	}

	convs := make([]string, pairs)
	st.Conversations, err = phase(ctx, "conversations", pairs, conc, func(ctx context.Context, i int) error {
		snd, rcv := users[2*i], users[2*i+1]
		var out struct {
			ID      string `json:"id"`
			Kind    string `json:"kind"`
			Members []struct {
				UserID   string `json:"user_id"`
				CanWrite bool   `json:"can_write"`
			} `json:"members"`
		}
		status, err := a.do(ctx, "POST", "/conversations", snd.token, map[string]string{"kind": "direct", "peer": rcv.id}, &out)
		if err != nil {
			return err
		}
		if out.ID == "" || (status != http.StatusCreated && status != http.StatusOK) {
			return fmt.Errorf("create conversation %d: HTTP %d without id", i, status)
		}
		convs[i] = out.ID
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return users, convs, nil
}
