package storage_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"klassenfunk/internal/redistest"
	"klassenfunk/storage"
	"klassenfunk/storage/storagetest"
)

// prefixes hands every store of a test process its own key prefix, so
// that parallel subtests can share one Redis.
var prefixes atomic.Int64

func newPrefix() string { return fmt.Sprintf("t%d:", prefixes.Add(1)) }

// openRedis opens a store with a fresh key prefix on client and closes it
// with the test.
func openRedis(tb testing.TB, client redis.UniversalClient, opt *storage.RedisOptions) *storage.Redis {
	tb.Helper()
	o := storage.RedisOptions{KeyPrefix: newPrefix()}
	if opt != nil {
		o = *opt
		if o.KeyPrefix == "" {
			o.KeyPrefix = newPrefix()
		}
	}
	r, err := storage.OpenRedis(context.Background(), client, &o)
	if err != nil {
		tb.Fatalf("OpenRedis: %v", err)
	}
	tb.Cleanup(func() {
		if err := r.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return r
}

func newClient(tb testing.TB, addr string) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: addr})
	tb.Cleanup(func() { c.Close() })
	return c
}

func TestRedis(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	client := newClient(t, srv.Addr())
	storagetest.Run(t, func(t *testing.T) storage.Store { return openRedis(t, client, nil) })
	t.Run("PushOutbox", func(t *testing.T) {
		t.Parallel()
		testPushOutbox(t, openRedis(t, client, nil))
	})
	t.Run("Limiter", func(t *testing.T) {
		t.Parallel()
		testLimiter(t, openRedis(t, client, nil), client)
	})
}

func TestRedisCluster(t *testing.T) {
	t.Parallel()
	cl := redistest.StartCluster(t, 3)
	client := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs()})
	t.Cleanup(func() { client.Close() })
	storagetest.Run(t, func(t *testing.T) storage.Store { return openRedis(t, client, nil) })
	t.Run("PushOutbox", func(t *testing.T) {
		t.Parallel()
		testPushOutbox(t, openRedis(t, client, nil))
	})
	t.Run("Limiter", func(t *testing.T) {
		t.Parallel()
		testLimiter(t, openRedis(t, client, nil), client)
	})

	// The same cluster through the URL forms of OpenRedisURL.
	for _, u := range []string{
		"redis+cluster://" + strings.Join(cl.Addrs(), ","),
		"redis://" + strings.Join(cl.Addrs(), ","),
		"redis+cluster://" + cl.Addrs()[0] + "?addr=" + cl.Addrs()[1],
	} {
		r, err := storage.OpenRedisURL(t.Context(), u, &storage.RedisOptions{KeyPrefix: newPrefix()})
		if err != nil {
			t.Fatalf("OpenRedisURL(%s): %v", u, err)
		}
		ctx := t.Context()
		for i := range 20 { // keys in many slots
			if err := r.PutMeta(ctx, fmt.Sprint("k", i), []byte("v")); err != nil {
				t.Fatalf("%s: PutMeta: %v", u, err)
			}
			if err := r.CreateSchool(ctx, storage.School{ID: fmt.Sprint("s", i), Name: "S"}); err != nil {
				t.Fatalf("%s: CreateSchool: %v", u, err)
			}
		}
		if err := r.CheckDurability(ctx); err != nil {
			t.Fatalf("%s: CheckDurability: %v", u, err)
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRedisRestart kills redis-server with SIGKILL after the appends
// returned and starts it again on the same append-only file: with
// appendfsync always nothing acknowledged is lost.
func TestRedisRestart(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	srv := redistest.Start(t)
	prefix := newPrefix()
	r, err := storage.OpenRedisURL(ctx, srv.URL(), &storage.RedisOptions{KeyPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	base := time.Date(2025, time.March, 3, 8, 0, 0, 0, time.UTC)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(r.CreateUser(ctx, storage.User{ID: "u1", School: "s1", Login: "Anna", Role: storage.RoleTeacher, Countries: []string{}, CreatedAt: base}))
	must(r.CreateConversation(ctx, storage.Conversation{ID: "g1", School: "s1", Kind: storage.ConvGroup, Creator: "u1", Members: []storage.Member{{UserID: "u1", CanWrite: true}}, CreatedAt: base}))
	const n = 50
	for i := range n {
		_, _, err := r.AppendMessage(ctx, storage.Message{
			ID: fmt.Sprintf("m%d", i), Conversation: "g1", SenderUser: "u1", SenderDevice: "d", ClientID: fmt.Sprint(i),
			SentAt: base, ExpiresAt: base.Add(time.Hour), Ciphertext: []byte("x"),
		})
		must(err)
	}
	must(r.PutMeta(ctx, "operator_token", []byte("hash")))

	srv.Restart()

	r2, err := storage.OpenRedisURL(ctx, srv.URL(), &storage.RedisOptions{KeyPrefix: prefix})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer r2.Close()
	u, err := r2.UserByLogin(ctx, "anna")
	must(err)
	if u.ID != "u1" || u.Countries == nil {
		t.Fatalf("user after restart: %+v", u)
	}
	c, err := r2.Conversation(ctx, "g1")
	must(err)
	if c.LastSeq != n {
		t.Fatalf("LastSeq after restart = %d, want %d", c.LastSeq, n)
	}
	msgs, more, err := r2.MessagesAfter(ctx, "g1", 0, 500, base)
	must(err)
	if len(msgs) != n || more || msgs[n-1].Seq != n || msgs[n-1].ID != fmt.Sprintf("m%d", n-1) {
		t.Fatalf("messages after restart: %d, more=%v", len(msgs), more)
	}
	m, err := r2.Message(ctx, "m7", base)
	must(err)
	if m.Seq != 8 {
		t.Fatalf("Message m7 after restart: seq %d", m.Seq)
	}
	// The script cache is gone after the restart; EVALSHA falls back.
	m, created, err := r2.AppendMessage(ctx, storage.Message{ID: "again", Conversation: "g1", SenderUser: "u1", SenderDevice: "d", ClientID: "3", SentAt: base, ExpiresAt: base.Add(time.Hour)})
	must(err)
	if created || m.ID != "m3" {
		t.Fatalf("retry after restart: created=%v id=%s", created, m.ID)
	}
	m, _, err = r2.AppendMessage(ctx, storage.Message{ID: "new", Conversation: "g1", SenderUser: "u1", SenderDevice: "d", ClientID: "new", SentAt: base, ExpiresAt: base.Add(time.Hour)})
	must(err)
	if m.Seq != n+1 {
		t.Fatalf("seq after restart = %d, want %d", m.Seq, n+1)
	}
	v, err := r2.GetMeta(ctx, "operator_token")
	must(err)
	if string(v) != "hash" {
		t.Fatalf("meta after restart = %q", v)
	}
	// The first store's client reconnects by itself.
	if _, err := r.Conversation(ctx, "g1"); err != nil {
		t.Fatalf("old client after restart: %v", err)
	}
}

// TestRedisSpecifics covers what the interface leaves to the backend
// (the same choices as Bolt) and what is particular to Redis.
func TestRedisSpecifics(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	srv := redistest.Start(t)
	client := newClient(t, srv.Addr())
	b := openRedis(t, client, nil)
	if _, err := storage.OpenRedis(ctx, client, &storage.RedisOptions{KeyPrefix: "a{b}"}); err == nil {
		t.Fatal("OpenRedis accepted a key prefix with braces")
	}
	if err := b.CheckDurability(ctx); err != nil {
		t.Fatalf("CheckDurability: %v", err)
	}
	if err := client.ConfigSet(ctx, "appendfsync", "everysec").Err(); err != nil {
		t.Fatal(err)
	}
	if err := b.CheckDurability(ctx); err == nil || !strings.Contains(err.Error(), "everysec") {
		t.Fatalf("CheckDurability with everysec: %v", err)
	}
	if err := client.ConfigSet(ctx, "appendfsync", "always").Err(); err != nil {
		t.Fatal(err)
	}
}

// TestRedisLoginClaim shows that a login claimed by a CreateUser that
// never wrote its user (a crash in between) is free again after a minute,
// and not before.
func TestRedisLoginClaim(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	srv := redistest.Start(t)
	client := newClient(t, srv.Addr())
	prefix := newPrefix()
	b := openRedis(t, client, &storage.RedisOptions{KeyPrefix: prefix})
	key := "{" + prefix + "l:anna}"
	claim := func(age time.Duration) {
		v := fmt.Sprintf("ghost\x00%d", time.Now().Add(-age).UnixMilli())
		if err := client.Set(ctx, key, v, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	claim(time.Second)
	if err := b.CreateUser(ctx, storage.User{ID: "u1", Login: "Anna"}); !errors.Is(err, storage.ErrConflict) {
		t.Fatalf("CreateUser on a fresh claim: %v, want ErrConflict", err)
	}
	if _, err := b.UserByLogin(ctx, "anna"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("UserByLogin of a claim without user: %v", err)
	}
	claim(2 * time.Minute)
	if err := b.CreateUser(ctx, storage.User{ID: "u1", Login: "Anna"}); err != nil {
		t.Fatalf("CreateUser on a stale claim: %v", err)
	}
	if u, err := b.UserByLogin(ctx, "ANNA"); err != nil || u.ID != "u1" {
		t.Fatalf("UserByLogin after the takeover: %v %v", u.ID, err)
	}
	if byRole, _, err := b.CountUsers(ctx); err != nil || byRole[""] != 1 {
		t.Fatalf("CountUsers: %v %v", byRole, err)
	}

	// A fresh claim that names a user with another login is left over
	// from a CreateUser whose ID was taken: free at once.
	if err := client.Set(ctx, "{"+prefix+"l:carl}", fmt.Sprintf("u1\x00%d", time.Now().UnixMilli()), 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := b.CreateUser(ctx, storage.User{ID: "u2", Login: "Carl"}); err != nil {
		t.Fatalf("CreateUser on a claim of another user's login: %v", err)
	}

	// Concurrent creations of the same user: one wins, the login stays.
	const n = 10
	errs := make(chan error, n)
	for range n {
		go func() { errs <- b.CreateUser(ctx, storage.User{ID: "u3", Login: "Dora"}) }()
	}
	created := 0
	for range n {
		switch err := <-errs; {
		case err == nil:
			created++
		case !errors.Is(err, storage.ErrConflict):
			t.Fatalf("concurrent CreateUser: %v", err)
		}
	}
	if created != 1 {
		t.Fatalf("%d concurrent CreateUser calls succeeded, want 1", created)
	}
	if u, err := b.UserByLogin(ctx, "dora"); err != nil || u.ID != "u3" {
		t.Fatalf("UserByLogin after concurrent creation: %v %v", u.ID, err)
	}
}

// TestRedisExpiryBackstop checks the Redis expiry of message and
// attachment keys: set for records whose time lies ahead, not for those
// past already, none when turned off.
func TestRedisExpiryBackstop(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	srv := redistest.Start(t)
	client := newClient(t, srv.Addr())
	now := time.Now()
	for name, tc := range map[string]struct {
		backstop time.Duration
		exp      time.Time
		want     bool
	}{
		"ahead":    {0, now.Add(time.Hour), true},
		"past":     {0, now.Add(-2 * time.Hour), false},
		"disabled": {-1, now.Add(time.Hour), false},
	} {
		t.Run(name, func(t *testing.T) {
			prefix := newPrefix()
			b := openRedis(t, client, &storage.RedisOptions{KeyPrefix: prefix, ExpiryBackstop: tc.backstop})
			if err := b.CreateConversation(ctx, storage.Conversation{ID: "g1", School: "s1", Kind: storage.ConvGroup, Members: []storage.Member{{UserID: "u1"}}}); err != nil {
				t.Fatal(err)
			}
			if err := b.PutAttachment(ctx, storage.Attachment{ID: "a1", Uploader: "u1", ExpiresAt: tc.exp}); err != nil {
				t.Fatal(err)
			}
			m := storage.Message{ID: "m1", Conversation: "g1", SenderUser: "u1", ClientID: "c", SentAt: now, ExpiresAt: tc.exp, Attachments: []string{"a1"}}
			if _, _, err := b.AppendMessage(ctx, m); err != nil {
				t.Fatal(err)
			}
			for _, key := range []string{"{" + prefix + "c:g1}m1", "{" + prefix + "a:a1}", "{" + prefix + "a:a1}c"} {
				ttl, err := client.PTTL(ctx, key).Result()
				if err != nil {
					t.Fatal(err)
				}
				if got := ttl > 0; got != tc.want {
					t.Fatalf("PTTL %s = %v, want an expiry: %v", key, ttl, tc.want)
				}
				if tc.want && (ttl < 90*time.Minute || ttl > 2*time.Hour) {
					t.Fatalf("PTTL %s = %v, want about ExpiresAt + 1h", key, ttl)
				}
			}
		})
	}
}

// TestRedisExpiredByRedis: a message whose key Redis expired is gone for
// readers, and the sweep removes what it left behind.
func TestRedisExpiredByRedis(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	srv := redistest.Start(t)
	client := newClient(t, srv.Addr())
	prefix := newPrefix()
	b := openRedis(t, client, &storage.RedisOptions{KeyPrefix: prefix})
	base := time.Date(2025, time.March, 3, 8, 0, 0, 0, time.UTC)
	if err := b.CreateConversation(ctx, storage.Conversation{ID: "g1", School: "s1", Kind: storage.ConvGroup, Members: []storage.Member{{UserID: "u1"}}}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		m := storage.Message{ID: fmt.Sprint("m", i), Conversation: "g1", SenderUser: "u1", ClientID: fmt.Sprint("c", i), SentAt: base, ExpiresAt: base.Add(time.Duration(i) * time.Hour)}
		if _, _, err := b.AppendMessage(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	if err := client.Del(ctx, "{"+prefix+"c:g1}m1").Err(); err != nil { // as Redis's expiry would
		t.Fatal(err)
	}
	if _, err := b.Message(ctx, "m1", base); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Message of a message Redis expired: %v", err)
	}
	msgs, _, err := b.MessagesAfter(ctx, "g1", 0, 10, base)
	if err != nil || len(msgs) != 2 || msgs[0].ID != "m2" {
		t.Fatalf("MessagesAfter: %v %v", msgs, err)
	}
	// Its client id no longer deduplicates.
	m, created, err := b.AppendMessage(ctx, storage.Message{ID: "m4", Conversation: "g1", SenderUser: "u1", ClientID: "c1", SentAt: base, ExpiresAt: base.Add(time.Hour)})
	if err != nil || !created || m.Seq != 4 {
		t.Fatalf("AppendMessage with the client id of an expired message: %v %v %v", m.Seq, created, err)
	}
	n, err := b.DeleteExpiredMessages(ctx, base.Add(time.Hour), 10)
	if err != nil || n != 2 {
		t.Fatalf("DeleteExpiredMessages = %d, %v; want 2", n, err)
	}
	if c, _ := b.CountMessages(ctx); c != 2 {
		t.Fatalf("CountMessages = %d, want 2", c)
	}
	for _, suffix := range []string{"i", "q", "k"} {
		if n, _ := client.HLen(ctx, "{"+prefix+"c:g1}"+suffix).Result(); suffix != "q" && n != 2 {
			t.Fatalf("%s holds %d entries, want 2", suffix, n)
		}
	}
	if n, _ := client.ZCard(ctx, "{"+prefix+"c:g1}q").Result(); n != 2 {
		t.Fatalf("q holds %d entries, want 2", n)
	}
}

func BenchmarkRedisCredentialByHash(b *testing.B) {
	srv := redistest.Start(b)
	benchCredentialByHash(b, openRedis(b, newClient(b, srv.Addr()), nil), 1000)
}

// BenchmarkRedisAppendMessageParallel measures durable appends
// (appendfsync always) from many goroutines into many conversations; one
// op is one message.
func BenchmarkRedisAppendMessageParallel(b *testing.B) {
	const convs = 256
	srv := redistest.Start(b)
	client := newClient(b, srv.Addr())
	for _, par := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("goroutines=%dxGOMAXPROCS", par), func(b *testing.B) {
			db := openRedis(b, client, nil)
			createBenchConvs(b, db, convs)
			benchAppendParallel(b, db, convs, par)
		})
	}
}

func TestOpenRedisURLErrors(t *testing.T) {
	t.Parallel()
	for _, u := range []string{
		"redis://:s3cret@127.0.0.1:notaport/0",
		"redis://:s3cret@127.0.0.1:6379/0?bogus=1",
		"redis+cluster://:s3cret@127.0.0.1:1,127.0.0.1:2?bogus=1",
		"http://127.0.0.1:6379",
	} {
		_, err := storage.OpenRedisURL(t.Context(), u, nil)
		if err == nil {
			t.Fatalf("OpenRedisURL(%q) succeeded", u)
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Fatalf("OpenRedisURL(%q): error shows the password: %v", u, err)
		}
	}
}

func testPushOutbox(t *testing.T, s *storage.Redis) {
	ctx := t.Context()
	base := time.Date(2025, time.March, 3, 8, 0, 0, 0, time.UTC)
	entry := func(cred, msg string) storage.PushEntry {
		return storage.PushEntry{CredID: cred, UserID: "u1", DeviceID: "d-" + cred, Provider: "fcm", Conversation: "g1",
			MessageID: msg, Seq: 7, ExpiresAt: base.Add(time.Hour), EnqueuedAt: base}
	}
	pending := func() []string {
		t.Helper()
		es, err := s.PendingPushes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range es {
			out = append(out, e.CredID+"="+e.MessageID)
		}
		return out
	}
	if got := pending(); len(got) != 0 {
		t.Fatalf("PendingPushes of an empty outbox: %v", got)
	}
	if err := s.PutPushes(ctx, []storage.PushEntry{entry("c2", "m1"), entry("c1", "m1"), entry("c3", "m1")}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutPushes(ctx, []storage.PushEntry{entry("c2", "m2")}); err != nil {
		t.Fatal(err)
	}
	es, err := s.PendingPushes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := entry("c1", "m1")
	if got := es[0]; got.CredID != "c1" || !got.ExpiresAt.Equal(want.ExpiresAt) || got.Seq != 7 || got.DeviceID != "d-c1" {
		t.Fatalf("PendingPushes[0] = %+v", got)
	}
	if got := fmt.Sprint(pending()); got != "[c1=m1 c2=m2 c3=m1]" {
		t.Fatalf("PendingPushes = %s", got)
	}
	// c2 names a newer message: stays; c1 goes; c3 goes whatever it names.
	if err := s.DonePushes(ctx, []storage.PushDone{{CredID: "c2", MessageID: "m1"}, {CredID: "c1", MessageID: "m1"}, {CredID: "c3"}, {CredID: "c9", MessageID: "m1"}}); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(pending()); got != "[c2=m2]" {
		t.Fatalf("PendingPushes after DonePushes = %s", got)
	}

	for i := range 5 {
		c := testCred(i)
		switch i {
		case 0, 1:
		case 2:
			c.Push.Provider = "apns"
		default:
			c.Push = nil
		}
		if err := s.PutCredential(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	regs, err := s.CountRegistrations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(regs) != "map[apns:1 fcm:2]" {
		t.Fatalf("CountRegistrations = %v", regs)
	}
}

// TestRedisUploadIndex shows that the uploader index forgets an attachment
// with its sweep (also one whose expiry entry predates the index and names
// no uploader) and a user with its erasure.
func TestRedisUploadIndex(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	srv := redistest.Start(t)
	client := newClient(t, srv.Addr())
	r := openRedis(t, client, &storage.RedisOptions{KeyPrefix: "up:"})
	base := time.Now().UTC().Truncate(time.Millisecond)
	for _, a := range []storage.Attachment{
		{ID: "a1", Uploader: "u1", Size: 1, CreatedAt: base, ExpiresAt: base.Add(time.Hour)},
		{ID: "a2", Uploader: "u1", Size: 1, CreatedAt: base, ExpiresAt: base.Add(48 * time.Hour)},
		{ID: "old", Uploader: "u2", Size: 1, CreatedAt: base, ExpiresAt: base.Add(time.Hour)},
	} {
		if err := r.PutAttachment(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	// "old" as written before the uploader index: no index entry, and an
	// expiry entry without the uploader.
	if err := client.Del(ctx, "{up:u:u2}a").Err(); err != nil {
		t.Fatal(err)
	}
	members, err := client.ZRange(ctx, "{up:x:a}", 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range members {
		if legacy, ok := strings.CutSuffix(m, "\x00u2"); ok {
			if err := client.ZRem(ctx, "{up:x:a}", m).Err(); err != nil {
				t.Fatal(err)
			}
			if err := client.ZAdd(ctx, "{up:x:a}", redis.Z{Score: float64(base.Add(time.Hour).UnixMilli()), Member: legacy}).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	index := func(user string, want ...string) {
		t.Helper()
		got, err := client.ZRange(ctx, "{up:u:"+user+"}a", 0, -1).Result()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Fatalf("upload index of %s: %q, want %q", user, got, want)
		}
	}
	index("u1", "a1", "a2")
	// A put that conflicts takes back its index entry.
	if err := r.PutAttachment(ctx, storage.Attachment{ID: "a2", Uploader: "u3", Size: 1, CreatedAt: base, ExpiresAt: base.Add(time.Hour)}); !errors.Is(err, storage.ErrConflict) {
		t.Fatalf("PutAttachment with a taken id: %v", err)
	}
	index("u3")
	index("u1", "a1", "a2")
	ids, err := r.DeleteExpiredAttachments(ctx, base.Add(time.Hour), 10)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(ids)
	if strings.Join(ids, " ") != "a1 old" {
		t.Fatalf("swept %q, want a1 and old", ids)
	}
	index("u1", "a2")
	if members, err := client.ZCard(ctx, "{up:x:a}").Result(); err != nil || members != 1 {
		t.Fatalf("expiry index after the sweep: %d entries (%v), want 1", members, err)
	}
	// A record that vanished while its index entry stayed (gone between
	// the index read and the record reads) is left out, not an error.
	if err := r.PutAttachment(ctx, storage.Attachment{ID: "a3", Uploader: "u1", Size: 1, CreatedAt: base, ExpiresAt: base.Add(48 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := client.Del(ctx, "{up:a:a3}").Err(); err != nil {
		t.Fatal(err)
	}
	index("u1", "a2", "a3")
	as, err := r.AttachmentsOf(ctx, "u1", base)
	if err != nil || len(as) != 1 || as[0].ID != "a2" {
		t.Fatalf("AttachmentsOf u1 with a3's record gone: %v, %v; want a2 only", as, err)
	}
	if _, err := r.EraseUser(ctx, "u1", base); err != nil {
		t.Fatal(err)
	}
	index("u1")
}
