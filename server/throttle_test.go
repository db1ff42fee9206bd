package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"klassenfunk/auth"
	"klassenfunk/internal/redistest"
	"klassenfunk/internal/testenv"
	"klassenfunk/server"
)

// bruteForceStep is one login attempt of TestLoginBruteForce.
type bruteForceStep struct {
	advance    time.Duration
	login      string
	password   string // "" means the right one
	xff        string // X-Forwarded-For
	want       int
	retryAfter int // with 429: the exact Retry-After
}

// TestLoginBruteForce runs login attempts against the clock and checks the
// brute-force lock per login and per client address.
func TestLoginBruteForce(t *testing.T) {
	const wrong = "wrong-password"
	type step = bruteForceStep
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
	for _, nodes := range []int{1, 2} {
		for name, tc := range tests {
			t.Run(fmt.Sprintf("%d nodes/%s", nodes, name), func(t *testing.T) {
				runBruteForceSteps(t, nodes, tc.opt, tc.steps)
			})
		}
	}
}

// runBruteForceSteps runs steps against one node, or against two nodes
// that share a Redis (and a clock), taking turns: a lock must hold on
// every node of a cluster.
func runBruteForceSteps(t *testing.T, nodes int, opt testenv.Option, steps []bruteForceStep) {
	envs := startAuthNodes(t, nodes, opt)
	clock := envs[0].Clock
	for i, s := range steps {
		env := envs[i%len(envs)]
		clock.Advance(s.advance)
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
}

// startAuthNodes starts the auth world on one node, or on two nodes that
// share a Redis and the first node's clock.
func startAuthNodes(t *testing.T, nodes int, opts ...testenv.Option) []*testenv.Env {
	envs, _ := startAuthNodesRedis(t, nodes, opts...)
	return envs
}

// startAuthNodesRedis is startAuthNodes that also returns the Redis (nil
// for one node).
func startAuthNodesRedis(t *testing.T, nodes int, opts ...testenv.Option) ([]*testenv.Env, *redistest.Server) {
	t.Helper()
	if nodes == 1 {
		return []*testenv.Env{newAuthWorld(t, opts...).env}, nil
	}
	r := redistest.Start(t)
	opts = append(opts, func(c *server.Config) { c.RedisURL = r.URL() })
	n1 := newAuthWorld(t, opts...).env
	n2 := testenv.New(t, append(opts, func(c *server.Config) { c.Now = n1.Clock.Now })...)
	return []*testenv.Env{n1, n2}, r
}

// TestLoginBruteForceRedisDown: a cluster node that cannot reach the
// shared counters refuses logins (500 internal) instead of letting them
// through uncounted, and counts again once Redis is back.
func TestLoginBruteForceRedisDown(t *testing.T) {
	envs, r := startAuthNodesRedis(t, 2, func(c *server.Config) { c.Auth.MaxFailuresPerLogin = 2 })
	login := func(env *testenv.Env, password string) testenv.Response {
		return authCall(t, env, "POST", "/api/v1/login", "", authLoginBody("teacher-a", password, "dev", "ios", false), nil)
	}
	authWantError(t, login(envs[0], "wrong-password"), http.StatusUnauthorized, "unauthorized")
	r.Kill()
	authWantError(t, login(envs[1], testenv.Password("teacher-a")), http.StatusInternalServerError, "internal")
	r.Restart()
	testenv.Eventually(t, 10*time.Second, "nodes ready again", func() bool {
		return envs[0].Do("GET", "/readyz", "", nil).Status == 200 && envs[1].Do("GET", "/readyz", "", nil).Status == 200
	})
	authWantError(t, login(envs[1], "wrong-password"), http.StatusUnauthorized, "unauthorized")
	authWantError(t, login(envs[0], testenv.Password("teacher-a")), http.StatusTooManyRequests, "rate_limited")
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
		// Each case leaves the other limit out of reach: an attempt that
		// holds a slot of one limit but is refused by the other would be
		// answered 429, and fewer than 3 would get 401.
		"per login": {
			opt:   func(c *server.Config) { c.Auth.MaxFailuresPerLogin, c.Auth.MaxFailuresPerAddr = 3, 100 },
			login: func(int) string { return "teacher-a" },
		},
		"per address": {
			opt:   func(c *server.Config) { c.Auth.MaxFailuresPerAddr, c.Auth.MaxFailuresPerLogin = 3, 100 },
			login: func(i int) string { return []string{"teacher-a", "student-a", "admin-a", "ghost"}[i%4] },
		},
	}
	for _, nodes := range []int{1, 2} {
		for name, tc := range tests {
			t.Run(fmt.Sprintf("%d nodes/%s", nodes, name), func(t *testing.T) {
				loginBruteForceConcurrent(t, nodes, tc.opt, tc.login, attempts)
			})
		}
	}
}

// loginBruteForceConcurrent sends attempts wrong logins at once, spread
// over the nodes, and wants exactly the limit (3) of them answered 401.
func loginBruteForceConcurrent(t *testing.T, nodes int, opt testenv.Option, login func(int) string, attempts int) {
	envs := startAuthNodes(t, nodes, opt, overlappingHashes)
	count := concurrentLogins(envs, attempts, func(i int) map[string]any {
		return authLoginBody(login(i), "wrong-password", "dev", "ios", false)
	})
	if count[401] != 3 || count[429] != attempts-3 {
		t.Fatalf("statuses %v: want 3 × 401 and %d × 429 (a lock must also stop attempts in flight)", count, attempts-3)
	}
	// And the right password is locked out as well.
	for _, env := range envs {
		r := authCall(t, env, "POST", "/api/v1/login", "", authLoginBody("teacher-a", testenv.Password("teacher-a"), "dev", "ios", false), nil)
		authWantError(t, r, http.StatusTooManyRequests, "rate_limited")
	}
}

// overlappingHashes makes a password hash take a few milliseconds, so that
// login attempts sent together overlap.
func overlappingHashes(c *server.Config) {
	c.Auth.Argon2 = auth.Argon2Params{Memory: 4 << 10, Time: 1, Threads: 1}
}

// concurrentLogins sends n logins at once, spread over the nodes, and
// counts their statuses (-1: no answer).
func concurrentLogins(envs []*testenv.Env, n int, body func(i int) map[string]any) map[int]int {
	start := make(chan struct{})
	statuses := make(chan int, n)
	var wg sync.WaitGroup
	for i := range n {
		b, _ := json.Marshal(body(i))
		url := envs[i%len(envs)].URL + "/api/v1/login"
		wg.Go(func() {
			<-start
			resp, err := http.Post(url, "application/json", bytes.NewReader(b))
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
	return count
}

// TestLoginBurstBehindOneAddress: a class behind its school's one address
// logs in at once, all with the right password, after one typo from that
// address. Attempts beyond the limits that are merely in flight together
// wait for the others instead of getting 429.
func TestLoginBurstBehindOneAddress(t *testing.T) {
	const attempts = 30
	envs := startAuthNodes(t, 1, overlappingHashes, func(c *server.Config) {
		c.Auth.MaxFailuresPerLogin, c.Auth.MaxFailuresPerAddr = 3, 3
	})
	authWantError(t, authCall(t, envs[0], "POST", "/api/v1/login", "", authLoginBody("teacher-a", "typo", "dev", "ios", false), nil),
		http.StatusUnauthorized, "unauthorized") // the address has room for 2 now
	count := concurrentLogins(envs, attempts, func(i int) map[string]any {
		return authLoginBody("student-a", testenv.Password("student-a"), fmt.Sprintf("tablet-%d", i), "android", true)
	})
	if count[200] != attempts {
		t.Fatalf("statuses %v: want %d × 200", count, attempts)
	}
}
