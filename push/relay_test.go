package push_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"klassenfunk/internal/testenv"
	"klassenfunk/push"
	"klassenfunk/push/pushtest"
	"klassenfunk/storage"
)

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// presence is a fake Presence: "open on another node" is whatever it says.
type presence struct {
	mu     sync.Mutex
	online map[string]bool // user/device
	calls  map[string]int
	// hook, when set, answers instead (per call count).
	hook func(key string, call int) bool
}

func (p *presence) Online(_ context.Context, user, device string) (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := user + "/" + device
	p.calls[k]++
	if p.hook != nil {
		return p.hook(k, p.calls[k]), nil
	}
	return p.online[k], nil
}

func (p *presence) set(user, device string, on bool) {
	p.mu.Lock()
	p.online[user+"/"+device] = on
	p.mu.Unlock()
}

// lockedBuffer collects logs.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// rig is a relay over a real bbolt store, pointed at a fake provider.
type rig struct {
	t        testing.TB
	store    *storage.Bolt
	prov     *pushtest.Server
	clock    *clock
	presence *presence
	logs     *lockedBuffer
	tuning   push.Tuning
	relay    *push.Relay
	reg      *prometheus.Registry
	secrets  map[string][]byte // credential id → push secret
	sids     map[string]string // credential id → service id
	tokens   map[string]string // credential id → device token
	seq      uint64
}

func newRig(t testing.TB) *rig {
	t.Helper()
	st, err := storage.OpenBolt(t.TempDir()+"/kf.db", &storage.BoltOptions{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	r := &rig{
		t: t, store: st, prov: pushtest.New(t),
		clock:    &clock{t: time.Date(2026, 9, 1, 8, 0, 0, 0, time.UTC)},
		presence: &presence{online: map[string]bool{}, calls: map[string]int{}},
		logs:     &lockedBuffer{},
		tuning: push.Tuning{
			Workers: 8, CoalesceWindow: -1, SendTimeout: 3 * time.Second,
			RetryBase: 40 * time.Millisecond, RetryMax: 200 * time.Millisecond,
		},
		secrets: map[string][]byte{}, sids: map[string]string{}, tokens: map[string]string{},
	}
	return r
}

func (r *rig) config() push.Config {
	if r.reg == nil {
		r.reg = prometheus.NewRegistry()
	}
	return push.Config{
		Store:      r.store,
		Presence:   r.presence,
		Log:        slog.New(slog.NewJSONHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registerer: r.reg,
		FCM:        push.FCMConfig{CredentialsFile: r.prov.ServiceAccountFile, Endpoint: r.prov.FCMEndpoint()},
		APNs: push.APNsConfig{
			KeyFile: r.prov.KeyFile, KeyID: pushtest.KeyID, TeamID: pushtest.TeamID, Endpoint: r.prov.APNsEndpoint(),
		},
		CAFile: r.prov.CAFile,
		Tuning: r.tuning,
		Now:    r.clock.Now,
	}
}

// start starts a relay (again, after stop: a restart).
func (r *rig) start() *push.Relay {
	r.t.Helper()
	r.reg = prometheus.NewRegistry()
	rl, err := push.New(context.Background(), r.config())
	if err != nil {
		r.t.Fatalf("push.New: %v", err)
	}
	r.relay = rl
	r.t.Cleanup(rl.Close)
	return rl
}

// device stores a trust credential with a registration and returns its id.
func (r *rig) device(user, device, provider string) string {
	r.t.Helper()
	id := fmt.Sprintf("cred-%s-%s", user, device)
	secret := make([]byte, 32)
	rand.Read(secret)
	tok := make([]byte, 32)
	rand.Read(tok)
	token := hex.EncodeToString(tok)
	if provider == push.ProviderFCM {
		token = "fcm:" + token
	}
	var h storage.TokenHash
	rand.Read(h[:])
	c := storage.Credential{
		ID: id, TokenHash: h, Kind: storage.CredTrust, UserID: user, School: "s1", DeviceID: device,
		DeviceName: device, OS: map[string]string{"fcm": "android", "apns": "ios"}[provider],
		CreatedAt: r.clock.Now(), LastUsedAt: r.clock.Now(), ServiceID: "sid-" + id,
		Push: &storage.PushRegistration{Provider: provider, Token: token, Topic: "de.klassenfunk.app", Secret: secret, UpdatedAt: r.clock.Now()},
	}
	if err := r.store.PutCredential(context.Background(), c); err != nil {
		r.t.Fatal(err)
	}
	r.secrets[id], r.sids[id], r.tokens[id] = secret, c.ServiceID, token
	return id
}

// send notifies the relay of a new message in conv from sender's device.
func (r *rig) send(conv string, members []string, sender, senderDevice string) storage.Message {
	r.seq++
	c := &storage.Conversation{ID: conv, School: "s1", Kind: storage.ConvGroup, Title: "Secret Title"}
	for _, m := range members {
		c.Members = append(c.Members, storage.Member{UserID: m, CanWrite: true})
	}
	now := r.clock.Now()
	m := &storage.Message{
		ID: fmt.Sprintf("msg-%d", r.seq), Conversation: conv, Seq: r.seq, SenderUser: sender, SenderDevice: senderDevice,
		SentAt: now, ExpiresAt: now.Add(time.Hour), Ciphertext: []byte("CIPHERTEXT"),
	}
	r.relay.Notify(c, m)
	return *m
}

// open decrypts a captured push for credential id.
func (r *rig) open(id string, q pushtest.Request) push.Payload {
	r.t.Helper()
	if q.SID != r.sids[id] {
		r.t.Fatalf("push sid %q, want %q", q.SID, r.sids[id])
	}
	p, _, err := push.Open(r.secrets[id], q.SID, q.Blob)
	if err != nil {
		r.t.Fatalf("open blob of %s: %v", id, err)
	}
	return p
}

// waitFor waits until n sends reached the token of credential id.
func (r *rig) waitFor(id string, n int) []pushtest.Request {
	r.t.Helper()
	tok := r.tokens[id]
	r.prov.Wait(r.t, 10*time.Second, fmt.Sprintf("%d pushes to %s", n, id), func(reqs []pushtest.Request) bool {
		c := 0
		for _, q := range reqs {
			if q.Token == tok {
				c++
			}
		}
		return c >= n
	})
	return r.prov.To(tok)
}

// metric sums the series of a metric with the given label values (nil:
// all).
func (r *rig) metric(name string, labels map[string]string) float64 {
	r.t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		r.t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue series
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			case m.Histogram != nil:
				sum += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return sum
}

func (r *rig) outcome(provider string, o push.Outcome) float64 {
	return r.metric("klassenfunk_push_total", map[string]string{"provider": provider, "outcome": string(o)})
}

// eventually polls cond (state that no request signals: metrics, store).
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, what, cond)
}

// pending returns the outbox.
func (r *rig) pending() []storage.PushEntry {
	r.t.Helper()
	es, err := r.store.PendingPushes(context.Background())
	if err != nil {
		r.t.Fatal(err)
	}
	return es
}

// outboxEmpty waits until the outbox is empty (acknowledgements are
// written in the background).
func (r *rig) outboxEmpty() {
	r.t.Helper()
	eventually(r.t, "outbox empty", func() bool { return len(r.pending()) == 0 })
}

// idle waits until the relay holds no pending push and sends nothing.
func (r *rig) idle() {
	r.t.Helper()
	// Read in the order work flows (intake → queue → in flight), one
	// gather each: a push moving on between two reads cannot hide.
	eventually(r.t, "relay idle", func() bool {
		return r.metric("klassenfunk_push_intake_depth", nil) == 0 && r.metric("klassenfunk_push_queue_depth", nil) == 0 &&
			r.metric("klassenfunk_push_in_flight", nil) == 0
	})
}

func TestDeliveryBothProviders(t *testing.T) {
	r := newRig(t)
	a := r.device("u1", "phone", push.ProviderFCM)
	b := r.device("u2", "iphone", push.ProviderAPNs)
	r.start()
	m := r.send("conv-1", []string{"u1", "u2", "u3"}, "u3", "d3")

	fq := r.waitFor(a, 1)[0]
	aq := r.waitFor(b, 1)[0]
	want := push.Payload{T: "message", C: "conv-1", M: m.ID, S: m.Seq}
	for id, q := range map[string]pushtest.Request{a: fq, b: aq} {
		if got := r.open(id, q); got != want {
			t.Errorf("%s: payload %+v, want %+v", id, got, want)
		}
		if q.Proto != 2 {
			t.Errorf("%s: HTTP/%d, want HTTP/2", id, q.Proto)
		}
		_, plain, _ := push.Open(r.secrets[id], q.SID, q.Blob)
		if w := fmt.Sprintf(`{"t":"message","c":"conv-1","m":%q,"s":%d}`, m.ID, m.Seq); string(plain) != w {
			t.Errorf("%s: plaintext %s, want %s", id, plain, w)
		}
	}

	// FCM: data only, priority high, TTL = remaining retention, collapse
	// key = service id.
	if fq.FCM.Notification != nil {
		t.Errorf("FCM message has a notification block: %s", fq.FCM.Notification)
	}
	if len(fq.FCM.Data) != 2 || fq.FCM.Android == nil || fq.FCM.Android.Priority != "high" ||
		fq.FCM.Android.TTL != "3600s" || fq.FCM.Android.CollapseKey != r.sids[a] {
		t.Errorf("FCM message %s", fq.Body)
	}
	// APNs: exact payload and headers.
	wantBody := fmt.Sprintf(`{"aps":{"alert":{"loc-key":"NEW_MESSAGE"},"mutable-content":1,"sound":"default"},"sid":%q,"p":%q}`, aq.SID, aq.Blob)
	if string(aq.Body) != wantBody {
		t.Errorf("APNs body %s, want %s", aq.Body, wantBody)
	}
	for h, v := range map[string]string{
		"apns-push-type": "alert", "apns-priority": "10", "apns-topic": "de.klassenfunk.app",
		"apns-expiration": fmt.Sprint(m.ExpiresAt.Unix()), "apns-collapse-id": r.sids[b],
	} {
		if got := aq.Header.Get(h); got != v {
			t.Errorf("APNs header %s = %q, want %q", h, got, v)
		}
	}
	// One OAuth exchange, reused.
	r.send("conv-1", []string{"u1"}, "u3", "d3")
	r.waitFor(a, 2)
	oauth := 0
	for _, q := range r.prov.Requests() {
		if q.Kind == pushtest.KindOAuth {
			oauth++
		}
	}
	if oauth != 1 {
		t.Errorf("%d OAuth token requests, want 1", oauth)
	}
	r.idle()
	r.outboxEmpty()
	if got := r.outcome("fcm", push.OutcomeSent) + r.outcome("apns", push.OutcomeSent); got != 3 {
		t.Errorf("sent = %v, want 3", got)
	}
	for id, tok := range r.tokens {
		if strings.Contains(r.logs.String(), tok) || strings.Contains(r.logs.String(), r.sids[id]+`","p`) {
			t.Errorf("logs hold a token")
		}
	}
}
