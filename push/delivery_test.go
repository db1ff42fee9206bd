package push_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"klassenfunk/push"
	"klassenfunk/push/pushtest"
	"klassenfunk/storage"
)

func TestSealOpen(t *testing.T) {
	secret := make([]byte, 32)
	secret[0] = 7
	blob, err := push.Seal(secret, "sid-1", push.Payload{T: "message", C: "c1", M: "m1", S: 42})
	if err != nil {
		t.Fatal(err)
	}
	p, plain, err := push.Open(secret, "sid-1", blob)
	if err != nil || string(plain) != `{"t":"message","c":"c1","m":"m1","s":42}` || p.S != 42 {
		t.Fatalf("open: %+v %s %v", p, plain, err)
	}
	if _, _, err := push.Open(secret, "sid-2", blob); err == nil {
		t.Error("a blob opens under another service id")
	}
	other := make([]byte, 32)
	if _, _, err := push.Open(other, "sid-1", blob); err == nil {
		t.Error("a blob opens under another secret")
	}
	blob2, _ := push.Seal(secret, "sid-1", push.Payload{T: "message", C: "c1", M: "m1", S: 42})
	if blob2 == blob {
		t.Error("two seals share a nonce")
	}
	if _, err := push.Seal(secret[:16], "sid", push.Payload{T: "test"}); err == nil {
		t.Error("a 16-byte secret seals")
	}
	_, plain, _ = push.Open(secret, "s", mustSeal(t, secret, "s", push.Payload{T: "test"}))
	if string(plain) != `{"t":"test"}` {
		t.Errorf("test payload %s", plain)
	}
}

func mustSeal(t *testing.T, secret []byte, sid string, p push.Payload) string {
	b, err := push.Seal(secret, sid, p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The sending device gets no push; the sender's other devices do.
func TestSenderDeviceExcluded(t *testing.T) {
	r := newRig(t)
	sending := r.device("u1", "phone", push.ProviderFCM)
	other := r.device("u1", "tablet", push.ProviderAPNs)
	peer := r.device("u2", "phone", push.ProviderFCM)
	r.start()
	r.send("c", []string{"u1", "u2"}, "u1", "phone")
	r.waitFor(other, 1)
	r.waitFor(peer, 1)
	r.idle()
	if n := len(r.prov.To(r.tokens[sending])); n != 0 {
		t.Errorf("the sending device got %d pushes", n)
	}
}

// A device with an open WebSocket, on this node or another (Presence says
// so), gets no push; one that connects between queueing and sending
// neither (the re-check before the send).
func TestNoPushWhileOnline(t *testing.T) {
	r := newRig(t)
	online := r.device("u1", "phone", push.ProviderFCM)
	later := r.device("u2", "phone", push.ProviderAPNs)
	offline := r.device("u3", "phone", push.ProviderFCM)
	r.presence.set("u1", "phone", true) // open on another node
	r.presence.hook = func(key string, call int) bool {
		switch key {
		case "u1/phone":
			return true
		case "u2/phone":
			return call > 1 // offline when queued, online when due
		}
		return false
	}
	r.start()
	r.send("c", []string{"u1", "u2", "u3", "u4"}, "u4", "x")
	r.waitFor(offline, 1)
	r.idle()
	for _, id := range []string{online, later} {
		if n := len(r.prov.To(r.tokens[id])); n != 0 {
			t.Errorf("%s got %d pushes while online", id, n)
		}
	}
	if got := r.outcome("fcm", push.OutcomeSkippedOnline) + r.outcome("apns", push.OutcomeSkippedOnline); got != 2 {
		t.Errorf("skipped_online = %v, want 2", got)
	}
	r.outboxEmpty()
}

// A dead token deletes the registration, and the device is not tried again.
func TestDeadToken(t *testing.T) {
	tests := map[string]struct {
		provider string
		reply    *pushtest.Reply
	}{
		"fcm unregistered":      {push.ProviderFCM, pushtest.FCMUnregistered()},
		"fcm invalid token":     {push.ProviderFCM, pushtest.FCMInvalidToken()},
		"apns 410 unregistered": {push.ProviderAPNs, pushtest.APNsError(410, "Unregistered", "")},
		"apns 410 expired":      {push.ProviderAPNs, pushtest.APNsError(410, "ExpiredToken", "")},
		"apns bad device token": {push.ProviderAPNs, pushtest.APNsError(400, "BadDeviceToken", "")},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t)
			dead := r.device("u1", "phone", tc.provider)
			barrier := r.device("u2", "phone", tc.provider)
			r.prov.Script(func(q *pushtest.Request) *pushtest.Reply {
				if q.Token == r.tokens[dead] {
					return tc.reply
				}
				return nil
			})
			r.start()
			r.send("c", []string{"u1", "u2"}, "u9", "x")
			r.waitFor(barrier, 1)
			r.waitFor(dead, 1)
			eventually(t, "registration deleted", func() bool {
				c, err := r.store.Credential(context.Background(), dead)
				return err == nil && c.Push == nil
			})
			eventually(t, "dead_token counted", func() bool { return r.outcome(tc.provider, push.OutcomeDeadToken) == 1 })
			// The next message: the barrier device gets it, the dead one is
			// not tried.
			r.send("c", []string{"u1", "u2"}, "u9", "x")
			r.waitFor(barrier, 2)
			r.idle()
			if n := len(r.prov.To(r.tokens[dead])); n != 1 {
				t.Errorf("dead token tried %d times, want 1", n)
			}
			r.outboxEmpty()
		})
	}
}

// A dead-token answer does not delete a registration the device renewed
// meanwhile.
func TestDeadTokenKeepsNewRegistration(t *testing.T) {
	r := newRig(t)
	id := r.device("u1", "phone", push.ProviderFCM)
	old := r.tokens[id]
	release := make(chan struct{})
	r.prov.Script(func(q *pushtest.Request) *pushtest.Reply {
		if q.Token == old {
			<-release
			return pushtest.FCMUnregistered()
		}
		return nil
	})
	r.start()
	r.send("c", []string{"u1"}, "u9", "x")
	r.waitFor(id, 1)
	err := r.store.UpdateCredential(context.Background(), id, func(c *storage.Credential) error {
		c.Push.Token = "fcm:renewed"
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	close(release)
	eventually(t, "dead token counted", func() bool { return r.outcome("fcm", push.OutcomeDeadToken) == 1 })
	c, _ := r.store.Credential(context.Background(), id)
	if c.Push == nil || c.Push.Token != "fcm:renewed" {
		t.Errorf("registration %+v, want the renewed one kept", c.Push)
	}
}

// 429 with Retry-After: the next attempt comes no sooner than it says.
func TestRetryAfter(t *testing.T) {
	for _, provider := range []string{push.ProviderFCM, push.ProviderAPNs} {
		t.Run(provider, func(t *testing.T) {
			t.Parallel()
			r := newRig(t)
			id := r.device("u1", "phone", provider)
			r.prov.Script(func(q *pushtest.Request) *pushtest.Reply {
				if q.Attempt > 1 {
					return nil
				}
				if provider == push.ProviderFCM {
					return pushtest.FCMError(429, "QUOTA_EXCEEDED", "1")
				}
				return pushtest.APNsError(429, "TooManyRequests", "1")
			})
			r.start()
			m := r.send("c", []string{"u1"}, "u9", "x")
			qs := r.waitFor(id, 2)
			if gap := qs[1].At.Sub(qs[0].At); gap < time.Second {
				t.Errorf("retried after %v, before Retry-After (1s)", gap)
			}
			if p := r.open(id, qs[1]); p.M != m.ID {
				t.Errorf("retry carries %+v", p)
			}
			r.idle()
			if got := r.outcome(provider, push.OutcomeRetried); got != 1 {
				t.Errorf("retried = %v, want 1", got)
			}
			if got := r.outcome(provider, push.OutcomeSent); got != 1 {
				t.Errorf("sent = %v, want 1", got)
			}
		})
	}
}

// Server errors are retried with a growing backoff.
func TestServerErrorBackoff(t *testing.T) {
	tests := map[string]struct {
		provider string
		reply    *pushtest.Reply
	}{
		// FCM 503 is retried by the SDK itself within one send; 500 by us.
		"fcm 500":  {push.ProviderFCM, pushtest.FCMError(500, "INTERNAL", "")},
		"apns 503": {push.ProviderAPNs, pushtest.APNsError(503, "ServiceUnavailable", "")},
		"apns 500": {push.ProviderAPNs, pushtest.APNsError(500, "InternalServerError", "")},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t)
			id := r.device("u1", "phone", tc.provider)
			r.prov.Script(func(q *pushtest.Request) *pushtest.Reply {
				if q.Attempt <= 3 {
					return tc.reply
				}
				return nil
			})
			r.start()
			r.send("c", []string{"u1"}, "u9", "x")
			qs := r.waitFor(id, 4)
			base := r.tuning.RetryBase
			for i := 1; i < 4; i++ {
				// Equal jitter: at least half of base·2^(i-1).
				min := (base << (i - 1)) / 2
				if gap := qs[i].At.Sub(qs[i-1].At); gap < min {
					t.Errorf("attempt %d after %v, want ≥ %v", i+1, gap, min)
				}
			}
			r.idle()
			if got := r.outcome(tc.provider, push.OutcomeRetried); got != 3 {
				t.Errorf("retried = %v, want 3", got)
			}
			if got := r.outcome(tc.provider, push.OutcomeSent); got != 1 {
				t.Errorf("sent = %v, want 1", got)
			}
			if n := len(r.prov.To(r.tokens[id])); n != 4 {
				t.Errorf("%d attempts, want 4", n)
			}
		})
	}
}

// The SDK retries FCM 503 itself; the relay gets the push through.
func TestFCMUnavailable(t *testing.T) {
	r := newRig(t)
	id := r.device("u1", "phone", push.ProviderFCM)
	r.prov.Script(func(q *pushtest.Request) *pushtest.Reply {
		if q.Attempt == 1 {
			return pushtest.FCMError(503, "UNAVAILABLE", "")
		}
		return nil
	})
	r.start()
	r.send("c", []string{"u1"}, "u9", "x")
	r.waitFor(id, 2)
	r.idle()
	if got := r.outcome("fcm", push.OutcomeSent); got != 1 {
		t.Errorf("sent = %v, want 1", got)
	}
}

// A push that cannot get through before its message expires is dropped and
// counted, and not tried again.
func TestTTLExpiry(t *testing.T) {
	for _, provider := range []string{push.ProviderFCM, push.ProviderAPNs} {
		t.Run(provider, func(t *testing.T) {
			t.Parallel()
			r := newRig(t)
			id := r.device("u1", "phone", provider)
			r.prov.Script(func(q *pushtest.Request) *pushtest.Reply {
				if provider == push.ProviderFCM {
					return pushtest.FCMError(500, "INTERNAL", "")
				}
				return pushtest.APNsError(500, "InternalServerError", "")
			})
			r.start()
			r.send("c", []string{"u1"}, "u9", "x")
			r.waitFor(id, 1)
			r.clock.Advance(time.Hour) // the message expires
			eventually(t, "dropped_ttl", func() bool { return r.outcome(provider, push.OutcomeDroppedTTL) == 1 })
			r.idle()
			n := len(r.prov.To(r.tokens[id]))
			r.outboxEmpty()
			// Nothing is left to retry: a later message goes through alone.
			r.prov.Script(nil)
			r.send("c", []string{"u1"}, "u9", "x")
			qs := r.waitFor(id, n+1)
			r.idle()
			if len(qs) != n+1 {
				t.Errorf("%d sends, want %d", len(qs), n+1)
			}
		})
	}
}

// Retry-After beyond the message's expiry drops the push at once.
func TestRetryAfterBeyondTTL(t *testing.T) {
	r := newRig(t)
	id := r.device("u1", "phone", push.ProviderAPNs)
	r.prov.Script(func(*pushtest.Request) *pushtest.Reply {
		return pushtest.APNsError(429, "TooManyRequests", "7200")
	})
	r.start()
	r.send("c", []string{"u1"}, "u9", "x")
	r.waitFor(id, 1)
	eventually(t, "dropped_ttl", func() bool { return r.outcome("apns", push.OutcomeDroppedTTL) == 1 })
	r.idle()
}

// Revocation: no push for a revoked device, and a pending one (in backoff)
// is dropped at once.
func TestRevocation(t *testing.T) {
	r := newRig(t)
	retrying := r.device("u1", "phone", push.ProviderFCM)
	revoked := r.device("u2", "phone", push.ProviderAPNs)
	barrier := r.device("u3", "phone", push.ProviderFCM)
	r.tuning.RetryBase = 300 * time.Millisecond
	r.tuning.RetryMax = 300 * time.Millisecond
	r.prov.Script(func(q *pushtest.Request) *pushtest.Reply {
		if q.Token == r.tokens[retrying] {
			return pushtest.FCMError(500, "INTERNAL", "")
		}
		return nil
	})
	r.start()
	ctx := context.Background()
	if _, err := r.store.DeleteCredential(ctx, revoked); err != nil {
		t.Fatal(err)
	}
	r.relay.Forget(revoked)
	r.send("c", []string{"u1", "u2", "u3"}, "u9", "x")
	r.waitFor(barrier, 1)
	r.waitFor(retrying, 1)
	// Revoke the device whose push waits for its retry.
	if _, err := r.store.DeleteCredential(ctx, retrying); err != nil {
		t.Fatal(err)
	}
	r.relay.Forget(retrying)
	r.idle()
	r.outboxEmpty()
	r.send("c", []string{"u1", "u2", "u3"}, "u9", "x")
	r.waitFor(barrier, 2)
	r.idle()
	if n := len(r.prov.To(r.tokens[revoked])); n != 0 {
		t.Errorf("revoked device got %d pushes", n)
	}
	if n := len(r.prov.To(r.tokens[retrying])); n != 1 {
		t.Errorf("device revoked during backoff: %d attempts, want 1", n)
	}
}

// A registration deleted before the push is due: not sent (the re-check).
func TestRegistrationGoneBeforeSend(t *testing.T) {
	r := newRig(t)
	id := r.device("u1", "phone", push.ProviderFCM)
	barrier := r.device("u2", "phone", push.ProviderFCM)
	r.tuning.CoalesceWindow = time.Hour
	r.start()
	r.send("c", []string{"u1", "u2"}, "u9", "x")
	r.waitFor(id, 1)
	r.waitFor(barrier, 1)
	// The next push waits for the window; meanwhile the device deletes
	// its registration (DELETE /trust/{id}/push goes straight to the store).
	r.send("c", []string{"u1"}, "u9", "x")
	eventually(t, "queued", func() bool { return r.metric("klassenfunk_push_queue_depth", nil) == 1 })
	err := r.store.UpdateCredential(context.Background(), id, func(c *storage.Credential) error {
		c.Push = nil
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	r.relay.Forget(id)
	r.idle()
	if n := len(r.prov.To(r.tokens[id])); n != 1 {
		t.Errorf("%d pushes, want 1", n)
	}
}

// Messages to one device within the coalesce window become one push, for
// the newest message.
func TestCoalesce(t *testing.T) {
	r := newRig(t)
	id := r.device("u1", "phone", push.ProviderAPNs)
	r.tuning.CoalesceWindow = 500 * time.Millisecond
	r.start()
	var last storage.Message
	for range 30 {
		last = r.send("busy-group", []string{"u1", "u2"}, "u2", "x")
	}
	r.idle()
	qs := r.prov.To(r.tokens[id])
	if len(qs) < 1 || len(qs) > 2 {
		t.Fatalf("%d pushes for 30 messages, want 1 or 2", len(qs))
	}
	if p := r.open(id, qs[len(qs)-1]); p.M != last.ID || p.S != last.Seq {
		t.Errorf("last push names %+v, want the newest message %s", p, last.ID)
	}
	if len(qs) == 2 && qs[1].At.Sub(qs[0].At) < 400*time.Millisecond {
		t.Errorf("second push %v after the first, inside the window", qs[1].At.Sub(qs[0].At))
	}
	if qs[0].Header.Get("apns-collapse-id") != r.sids[id] {
		t.Errorf("collapse id %q", qs[0].Header.Get("apns-collapse-id"))
	}
}

// A push accepted for sending survives a restart and is sent exactly once;
// a push sent before the restart is not sent again.
func TestRestartExactlyOnce(t *testing.T) {
	r := newRig(t)
	done := r.device("u1", "phone", push.ProviderFCM)
	stuck := r.device("u2", "phone", push.ProviderAPNs)
	r.tuning.RetryBase = time.Hour // no retry before the restart
	r.tuning.RetryMax = time.Hour
	r.prov.Script(func(q *pushtest.Request) *pushtest.Reply {
		if q.Token == r.tokens[stuck] {
			return pushtest.APNsError(503, "ServiceUnavailable", "")
		}
		return nil
	})
	r.clock.t = r.clock.t.Add(0)
	r.tuning.SendTimeout = 2 * time.Second
	first := r.start()
	m := r.send("c", []string{"u1", "u2"}, "u9", "x")
	r.waitFor(done, 1)
	r.waitFor(stuck, 1)
	eventually(t, "retry scheduled", func() bool { return r.outcome("apns", push.OutcomeRetried) == 1 })
	first.Close()
	if es := r.pending(); len(es) != 1 || es[0].CredID != stuck || es[0].MessageID != m.ID {
		t.Fatalf("outbox after stop %+v, want the stuck push only", es)
	}

	// Restart with the provider healthy: the pending push goes out once.
	r.prov.Script(nil)
	r.tuning.RetryBase, r.tuning.RetryMax = 0, 0
	second := r.start()
	qs := r.waitFor(stuck, 2)
	if p := r.open(stuck, qs[1]); p.M != m.ID {
		t.Errorf("after restart: %+v", p)
	}
	r.idle()
	second.Close()
	if n := len(r.pending()); n != 0 {
		t.Fatalf("outbox holds %d entries", n)
	}

	// A third start sends nothing.
	third := r.start()
	r.idle()
	third.Close()
	if n := len(r.prov.To(r.tokens[done])); n != 1 {
		t.Errorf("device served before the restart got %d pushes, want 1", n)
	}
	if n := len(r.prov.To(r.tokens[stuck])); n != 2 {
		t.Errorf("stuck device got %d requests, want 2 (one refused, one after the restart)", n)
	}
}

// Notify never blocks: with the resolver stuck, the intake fills and
// further events are dropped and counted.
func TestIntakeOverflow(t *testing.T) {
	r := newRig(t)
	r.device("u1", "phone", push.ProviderFCM)
	r.tuning.IntakeQueue = 2
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	var first sync.Once
	r.presence.hook = func(string, int) bool {
		// Only the first call holds the resolver. (A non-blocking send
		// to an unbuffered channel missed it whenever the resolver got
		// here before the test waited, and the test then hung.)
		first.Do(func() {
			entered <- struct{}{}
			<-release
		})
		return false
	}
	r.start()
	r.send("c", []string{"u1"}, "u9", "x")
	<-entered // the resolver is busy with the first event
	start := time.Now()
	for range 10 {
		r.send("c", []string{"u1"}, "u9", "x")
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Notify blocked for %v", d)
	}
	if got := r.metric("klassenfunk_push_intake_dropped_total", nil); got != 8 {
		t.Errorf("intake dropped = %v, want 8", got)
	}
	close(release)
	r.idle()
}

// A provider without credentials is off; Notify for its devices queues
// nothing, and New refuses half-configured APNs token auth.
func TestProviderSwitches(t *testing.T) {
	r := newRig(t)
	id := r.device("u1", "phone", push.ProviderAPNs)
	cfg := r.config()
	cfg.APNs = push.APNsConfig{}
	rl, err := push.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !rl.Enabled("fcm") || rl.Enabled("apns") {
		t.Errorf("enabled fcm=%v apns=%v", rl.Enabled("fcm"), rl.Enabled("apns"))
	}
	rl.Notify(&storage.Conversation{ID: "c", Members: []storage.Member{{UserID: "u1"}}},
		&storage.Message{ID: "m", Conversation: "c", Seq: 1, ExpiresAt: r.clock.Now().Add(time.Hour)})
	rl.Close()
	if n := len(r.pending()); n != 0 || len(r.prov.To(r.tokens[id])) != 0 {
		t.Errorf("push for a provider that is off")
	}
	if n := r.outcome(push.ProviderAPNs, push.OutcomeProviderOff); n != 1 {
		t.Errorf("provider_off = %v, want 1", n)
	}
	if !containsAll(r.logs.String(), `"provider":"apns"`, "push provider off") {
		t.Errorf("provider switch not logged: %s", r.logs.String())
	}

	cfg = r.config()
	cfg.APNs.KeyID = ""
	if _, err := push.New(context.Background(), cfg); err == nil {
		t.Error("APNs without key id accepted")
	}
	cfg = r.config()
	cfg.FCM.CredentialsFile = r.prov.KeyFile // not a service account
	if _, err := push.New(context.Background(), cfg); err == nil {
		t.Error("FCM with a .p8 as service account accepted")
	}
}

// APNs certificate auth: the client certificate instead of a provider
// token.
func TestAPNsCertificateAuth(t *testing.T) {
	r := newRig(t)
	id := r.device("u1", "phone", push.ProviderAPNs)
	cfg := r.config()
	cfg.FCM = push.FCMConfig{}
	cfg.APNs = push.APNsConfig{CertFile: r.prov.CertFile, Endpoint: r.prov.APNsEndpoint()}
	rl, err := push.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.relay = rl
	t.Cleanup(rl.Close)
	r.send("c", []string{"u1"}, "u9", "x")
	q := r.waitFor(id, 1)[0]
	if q.Header.Get("Authorization") != "" {
		t.Errorf("certificate auth sent a provider token")
	}
	r.idle()
	if got := r.outcome("apns", push.OutcomeSent); got != 1 {
		t.Errorf("sent = %v, want 1", got)
	}
}

// Wrong provider credentials: refused pushes are counted as failed and not
// retried (APNs InvalidProviderToken).
func TestAPNsForbidden(t *testing.T) {
	r := newRig(t)
	id := r.device("u1", "phone", push.ProviderAPNs)
	r.prov.Script(func(*pushtest.Request) *pushtest.Reply {
		return &pushtest.Reply{Status: http.StatusForbidden, Body: `{"reason":"InvalidProviderToken"}`}
	})
	r.start()
	r.send("c", []string{"u1"}, "u9", "x")
	r.waitFor(id, 1)
	eventually(t, "failed", func() bool { return r.outcome("apns", push.OutcomeFailed) == 1 })
	r.idle()
	c, err := r.store.Credential(context.Background(), id)
	if err != nil || c.Push == nil {
		t.Errorf("registration deleted for our own credentials' fault: %v", errors.Join(err))
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !contains(s, sub) {
			return false
		}
	}
	return true
}

func contains(s, sub string) bool { return len(sub) == 0 || indexOf(s, sub) >= 0 }

func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

// A provider that does not answer holds up only its own pushes: with every
// FCM worker waiting on a hanging FCM, a push to an iPhone goes out at once.
func TestStalledProviderDoesNotBlockTheOther(t *testing.T) {
	r := newRig(t)
	r.tuning.SendTimeout = time.Minute // the FCM sends stay stuck for the test
	workers := r.tuning.Workers
	var androids []string
	for i := range 2 * workers {
		androids = append(androids, fmt.Sprint("a", i))
		r.device(androids[i], "phone", push.ProviderFCM)
	}
	iphone := r.device("i1", "phone", push.ProviderAPNs)
	release := make(chan struct{})
	defer close(release) // lets the stuck FCM answers go before the relay closes
	var stuck atomic.Int32
	r.prov.Script(func(q *pushtest.Request) *pushtest.Reply {
		if q.Kind == pushtest.KindFCM {
			stuck.Add(1)
			<-release
		}
		return nil
	})
	r.start()
	r.send("c1", androids, "u9", "x")
	eventually(t, "every FCM worker waiting on FCM", func() bool { return int(stuck.Load()) == workers })
	r.send("c2", []string{"i1"}, "u9", "x")
	r.waitFor(iphone, 1)
	if n := stuck.Load(); int(n) != workers {
		t.Fatalf("%d FCM sends started, want %d (one per FCM worker)", n, workers)
	}
}

// oauthRequests counts the token requests the fake provider has had.
func (r *rig) oauthRequests() int {
	n := 0
	for _, q := range r.prov.Requests() {
		if q.Kind == pushtest.KindOAuth {
			n++
		}
	}
	return n
}

// While the OAuth token endpoint fails, the relay asks it about once per
// wait (1 s, doubling), not once per push and SDK retry; once it answers
// again, every push goes out.
func TestOAuthOutageAsksOnce(t *testing.T) {
	r := newRig(t)
	r.tuning.SendTimeout = 500 * time.Millisecond // cuts the SDK's own retries short
	var down atomic.Bool
	down.Store(true)
	r.prov.ScriptOAuth(func(*pushtest.Request) *pushtest.Reply {
		if down.Load() {
			return &pushtest.Reply{Status: http.StatusInternalServerError, Body: `{"error":"internal_failure"}`}
		}
		return nil
	})
	const devices = 10
	var users, ids []string
	for i := range devices {
		users = append(users, fmt.Sprint("u", i))
		ids = append(ids, r.device(users[i], "phone", push.ProviderFCM))
	}
	r.start()
	r.send("c", users, "u99", "x")
	eventually(t, "a failed attempt for every device", func() bool {
		return r.outcome(push.ProviderFCM, push.OutcomeRetried) >= devices
	})
	if n := r.oauthRequests(); n >= devices {
		t.Fatalf("%d token requests for %d pushes during the outage", n, devices)
	}
	down.Store(false)
	for _, id := range ids {
		r.waitFor(id, 1)
	}
}

// A token endpoint that refuses the service account (a revoked key) makes
// the push fail, counted as failed; it is not retried for weeks.
func TestOAuthCredentialsRefused(t *testing.T) {
	r := newRig(t)
	r.tuning.SendTimeout = 500 * time.Millisecond
	r.prov.ScriptOAuth(func(*pushtest.Request) *pushtest.Reply {
		return &pushtest.Reply{Status: http.StatusBadRequest, Body: `{"error":"invalid_grant","error_description":"Invalid JWT Signature."}`}
	})
	r.device("u1", "phone", push.ProviderFCM)
	r.start()
	r.send("c", []string{"u1"}, "u9", "x")
	eventually(t, "the push counted as failed", func() bool {
		return r.outcome(push.ProviderFCM, push.OutcomeFailed) == 1
	})
	if n := r.outcome(push.ProviderFCM, push.OutcomeRetried); n != 0 {
		t.Fatalf("retried = %v, want 0", n)
	}
	r.outboxEmpty() // the acknowledgement is written after the count
}

// Close does not wait out a provider that hangs: after a grace period it
// cancels the sends in flight, whose pushes stay in the outbox for the
// next start.
func TestCloseCancelsHangingSends(t *testing.T) {
	r := newRig(t)
	r.tuning.SendTimeout = time.Hour
	r.tuning.CloseGrace = 100 * time.Millisecond
	id := r.device("u1", "phone", push.ProviderFCM)
	release := make(chan struct{})
	defer close(release)
	var stuck atomic.Int32
	r.prov.Script(func(q *pushtest.Request) *pushtest.Reply {
		stuck.Add(1)
		<-release
		return nil
	})
	rl := r.start()
	r.send("c", []string{"u1"}, "u9", "x")
	eventually(t, "the send waiting on FCM", func() bool { return stuck.Load() == 1 })
	closed := make(chan struct{})
	go func() { rl.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(time.Minute):
		t.Fatal("Close still waits for the hanging send after a minute")
	}
	if p := r.pending(); len(p) != 1 || p[0].CredID != id {
		t.Fatalf("outbox after Close: %+v, want the push to %s", p, id)
	}
}

// A relay with no provider on still drains what an earlier run left in the
// outbox, counted as provider_off.
func TestNoProviderDrainsOutbox(t *testing.T) {
	r := newRig(t)
	id := r.device("u1", "phone", push.ProviderFCM)
	now := r.clock.Now()
	if err := r.store.PutPushes(context.Background(), []storage.PushEntry{{
		CredID: id, UserID: "u1", DeviceID: "phone", Provider: push.ProviderFCM,
		Conversation: "c", MessageID: "m1", Seq: 1, ExpiresAt: now.Add(time.Hour), EnqueuedAt: now,
	}}); err != nil {
		t.Fatal(err)
	}
	cfg := r.config()
	cfg.FCM, cfg.APNs = push.FCMConfig{}, push.APNsConfig{}
	rl, err := push.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rl.Close)
	eventually(t, "the outbox drained", func() bool { return len(r.pending()) == 0 })
	if n := r.outcome(push.ProviderFCM, push.OutcomeProviderOff); n != 1 {
		t.Fatalf("provider_off = %v, want 1", n)
	}
}
