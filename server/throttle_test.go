package server_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"klassenfunk/auth"
	"klassenfunk/internal/testenv"
	"klassenfunk/server"
)

// TestLoginBruteForce runs login attempts against the clock and checks the
// brute-force lock per login and per client address.
func TestLoginBruteForce(t *testing.T) {
	const wrong = "wrong-password"
	type step struct {
		advance    time.Duration
		login      string
		password   string // "" means the right one
		xff        string // X-Forwarded-For
		want       int
		retryAfter int // with 429: the exact Retry-After
	}
	tests := map[string]struct {
		opt   testenv.Option
		steps []step
	}{
		"per login": {
			opt: func(c *server.Config) { c.Auth.MaxFailuresPerLogin = 3 },
			steps: []step{
				{login: "teacher-a", password: wrong, want: 401},
				{advance: time.Minute, login: "teacher-a", password: wrong, want: 401},
				{advance: time.Minute, login: "teacher-a", password: wrong, want: 401},
				// Locked until the first failure leaves the 15-minute window:
				// 13 minutes from now. The right password does not help.
				{login: "teacher-a", want: 429, retryAfter: 13 * 60},
				{login: "TEACHER-A", want: 429, retryAfter: 13 * 60},
				{login: "teacher-a", password: wrong, want: 429, retryAfter: 13 * 60},
				{advance: 10 * time.Minute, login: "teacher-a", want: 429, retryAfter: 3 * 60},
				// Other logins from the same address are not affected.
				{login: "student-a", want: 200},
				{advance: 3*time.Minute - time.Second, login: "teacher-a", want: 429, retryAfter: 1},
				{advance: time.Second, login: "teacher-a", want: 200},
			},
		},
		"per login, sliding window": {
			opt: func(c *server.Config) { c.Auth.MaxFailuresPerLogin = 2; c.Auth.FailureWindow = 10 * time.Minute },
			steps: []step{
				{login: "teacher-a", password: wrong, want: 401},
				{advance: 4 * time.Minute, login: "teacher-a", password: wrong, want: 401},
				{login: "teacher-a", want: 429, retryAfter: 6 * 60},
				// The first failure leaves the window; one more failure
				// locks again until the second one leaves.
				{advance: 6 * time.Minute, login: "teacher-a", password: wrong, want: 401},
				{login: "teacher-a", want: 429, retryAfter: 4 * 60},
				{advance: 4 * time.Minute, login: "teacher-a", want: 200},
			},
		},
		"success resets the login counter": {
			opt: func(c *server.Config) { c.Auth.MaxFailuresPerLogin = 3 },
			steps: []step{
				{login: "teacher-a", password: wrong, want: 401},
				{login: "teacher-a", password: wrong, want: 401},
				{login: "teacher-a", want: 200},
				{login: "teacher-a", password: wrong, want: 401},
				{login: "teacher-a", password: wrong, want: 401},
				{login: "teacher-a", want: 200},
			},
		},
		"unknown logins are counted too": {
			opt: func(c *server.Config) { c.Auth.MaxFailuresPerLogin = 2 },
			steps: []step{
				{login: "ghost", password: wrong, want: 401},
				{login: "ghost", password: wrong, want: 401},
				{login: "ghost", password: wrong, want: 429, retryAfter: 15 * 60},
			},
		},
		"per address": {
			opt: func(c *server.Config) { c.Auth.MaxFailuresPerAddr = 3 },
			steps: []step{
				{login: "teacher-a", password: wrong, want: 401},
				{advance: time.Minute, login: "student-a", password: wrong, want: 401},
				{advance: time.Minute, login: "ghost", password: wrong, want: 401},
				// A login that never failed, with its right password.
				{login: "teacher-b", want: 429, retryAfter: 13 * 60},
				{login: "admin-a", password: wrong, want: 429, retryAfter: 13 * 60},
				{advance: 13 * time.Minute, login: "teacher-b", want: 200},
			},
		},
		"per address, success does not reset it": {
			opt: func(c *server.Config) { c.Auth.MaxFailuresPerAddr = 3 },
			steps: []step{
				{login: "teacher-a", password: wrong, want: 401},
				{login: "student-a", password: wrong, want: 401},
				{login: "teacher-a", want: 200},
				{login: "admin-a", password: wrong, want: 401},
				{login: "teacher-b", want: 429, retryAfter: 15 * 60},
			},
		},
		"X-Forwarded-For of an untrusted peer is ignored": {
			opt: func(c *server.Config) { c.Auth.MaxFailuresPerAddr = 2 },
			steps: []step{
				{login: "teacher-a", password: wrong, xff: "203.0.113.5", want: 401},
				{login: "student-a", password: wrong, xff: "203.0.113.6", want: 401},
				{login: "teacher-b", xff: "198.51.100.7", want: 429, retryAfter: 15 * 60},
			},
		},
		"per address behind a trusted proxy": {
			opt: func(c *server.Config) {
				c.Auth.MaxFailuresPerAddr = 2
				c.TrustedProxies = []string{"127.0.0.0/8"}
			},
			steps: []step{
				{login: "teacher-a", password: wrong, xff: "203.0.113.5", want: 401},
				{login: "student-a", password: wrong, xff: "203.0.113.5", want: 401},
				{login: "teacher-b", xff: "203.0.113.5", want: 429, retryAfter: 15 * 60},
				{login: "teacher-b", xff: "198.51.100.7", want: 200},
				{login: "teacher-b", want: 200},
				{advance: 15 * time.Minute, login: "teacher-b", xff: "203.0.113.5", want: 200},
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			w := newAuthWorld(t, tc.opt)
			env := w.env
			for i, s := range tc.steps {
				env.Clock.Advance(s.advance)
				pw := s.password
				if pw == "" {
					pw = testenv.Password(s.login)
				}
				var h http.Header
				if s.xff != "" {
					h = http.Header{"X-Forwarded-For": {s.xff}}
				}
				r := authCall(t, env, "POST", "/api/v1/login", "", authLoginBody(s.login, pw, "dev", "ios", false), h)
				if r.Status != s.want {
					t.Fatalf("step %d (%s): status %d, want %d; body %s", i, s.login, r.Status, s.want, r.Body)
				}
				switch s.want {
				case 429:
					authWantError(t, r, 429, "rate_limited")
					ra, err := strconv.Atoi(r.Header.Get("Retry-After"))
					if err != nil || ra < 1 || ra != s.retryAfter {
						t.Fatalf("step %d: Retry-After %q, want %d", i, r.Header.Get("Retry-After"), s.retryAfter)
					}
				case 401:
					authWantError(t, r, 401, "unauthorized")
					if r.Header.Get("Retry-After") != "" {
						t.Fatalf("step %d: Retry-After on a 401", i)
					}
				}
			}
		})
	}
}

// TestLoginBruteForceConcurrent fires many wrong logins at once: the lock
// must hold for attempts that are in flight together, not only for ones
// that come one after another.
func TestLoginBruteForceConcurrent(t *testing.T) {
	const attempts = 24
	tests := map[string]struct {
		opt   testenv.Option
		login func(i int) string
	}{
		"per login": {
			opt:   func(c *server.Config) { c.Auth.MaxFailuresPerLogin = 3 },
			login: func(int) string { return "teacher-a" },
		},
		"per address": {
			opt:   func(c *server.Config) { c.Auth.MaxFailuresPerAddr = 3 },
			login: func(i int) string { return []string{"teacher-a", "student-a", "admin-a", "ghost"}[i%4] },
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			w := newAuthWorld(t, tc.opt, func(c *server.Config) {
				// A few milliseconds per hash, so that the attempts overlap.
				c.Auth.Argon2 = auth.Argon2Params{Memory: 4 << 10, Time: 1, Threads: 1}
			})
			env := w.env
			start := make(chan struct{})
			statuses := make(chan int, attempts)
			var wg sync.WaitGroup
			for i := range attempts {
				body, _ := json.Marshal(authLoginBody(tc.login(i), "wrong-password", "dev", "ios", false))
				wg.Go(func() {
					<-start
					resp, err := http.Post(env.URL+"/api/v1/login", "application/json", bytes.NewReader(body))
					if err != nil {
						statuses <- -1
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					statuses <- resp.StatusCode
				})
			}
			close(start)
			wg.Wait()
			close(statuses)
			count := map[int]int{}
			for s := range statuses {
				count[s]++
			}
			if count[401] != 3 || count[429] != attempts-3 {
				t.Fatalf("statuses %v: want 3 × 401 and %d × 429 (a lock must also stop attempts in flight)", count, attempts-3)
			}
			// And the right password is locked out as well.
			r := authCall(t, env, "POST", "/api/v1/login", "", authLoginBody("teacher-a", testenv.Password("teacher-a"), "dev", "ios", false), nil)
			authWantError(t, r, http.StatusTooManyRequests, "rate_limited")
		})
	}
}
