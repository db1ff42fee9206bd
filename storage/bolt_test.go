package storage_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"klassenfunk/storage"
	"klassenfunk/storage/storagetest"
)

// openBolt opens a fresh Bolt in a temporary directory and registers a
// cleanup that checks the file's consistency and closes it.
func openBolt(tb testing.TB, opt *storage.BoltOptions) *storage.Bolt {
	tb.Helper()
	b, err := storage.OpenBolt(filepath.Join(tb.TempDir(), "klassenfunk.db"), opt)
	if err != nil {
		tb.Fatalf("OpenBolt: %v", err)
	}
	tb.Cleanup(func() {
		if err := b.Check(); err != nil && !errors.Is(err, storage.ErrClosed) {
			tb.Errorf("Check: %v", err)
		}
		if err := b.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return b
}

func TestBolt(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Store {
		return openBolt(t, &storage.BoltOptions{NoSync: true})
	})
}

// TestBoltSync runs the suite with fsync on, as in production.
func TestBoltSync(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Store {
		return openBolt(t, nil)
	})
}

func TestBoltReopen(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "klassenfunk.db")
	base := time.Date(2025, time.March, 3, 8, 0, 0, 0, time.UTC)

	b, err := storage.OpenBolt(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(b.CreateSchool(ctx, storage.School{ID: "s1", Name: "Schule", CreatedAt: base}))
	must(b.CreateUser(ctx, storage.User{ID: "u1", School: "s1", Login: "Anna", Role: storage.RoleTeacher, Countries: []string{}, CreatedAt: base}))
	must(b.CreateConversation(ctx, storage.Conversation{ID: "g1", School: "s1", Kind: storage.ConvGroup, Creator: "u1", Members: []storage.Member{{UserID: "u1", CanWrite: true}}, CreatedAt: base}))
	for i := range 3 {
		_, _, err := b.AppendMessage(ctx, storage.Message{
			ID: fmt.Sprintf("m%d", i), Conversation: "g1", SenderUser: "u1", SenderDevice: "d", ClientID: fmt.Sprint(i),
			SentAt: base, ExpiresAt: base.Add(time.Hour), Ciphertext: []byte("x"),
		})
		must(err)
	}
	n, err := b.DeleteExpiredMessages(ctx, base.Add(time.Hour), 1)
	must(err)
	if n != 1 {
		t.Fatalf("swept %d, want 1", n)
	}
	must(b.PutMeta(ctx, "operator_token", []byte("hash")))
	must(b.Check())
	must(b.Close())

	b, err = storage.OpenBolt(path, nil)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer func() { must(b.Check()); must(b.Close()) }()
	u, err := b.UserByLogin(ctx, "anna")
	must(err)
	if u.ID != "u1" || u.Countries == nil {
		t.Fatalf("user after reopen: %+v", u)
	}
	c, err := b.Conversation(ctx, "g1")
	must(err)
	if c.LastSeq != 3 {
		t.Fatalf("LastSeq after reopen = %d, want 3", c.LastSeq)
	}
	msgs, _, err := b.MessagesAfter(ctx, "g1", 0, 10, base)
	must(err)
	if len(msgs) != 2 || msgs[0].Seq != 2 || msgs[1].Seq != 3 {
		t.Fatalf("messages after reopen: %+v", msgs)
	}
	v, err := b.GetMeta(ctx, "operator_token")
	must(err)
	if string(v) != "hash" {
		t.Fatalf("meta after reopen = %q", v)
	}
	m, _, err := b.AppendMessage(ctx, storage.Message{ID: "m9", Conversation: "g1", SenderUser: "u1", SenderDevice: "d", ClientID: "9", SentAt: base, ExpiresAt: base.Add(time.Hour)})
	must(err)
	if m.Seq != 4 {
		t.Fatalf("seq after reopen = %d, want 4", m.Seq)
	}
	fi, err := os.Stat(path)
	must(err)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("file mode = %v, want 0600", fi.Mode().Perm())
	}
}

func TestBoltLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "klassenfunk.db")
	b, err := storage.OpenBolt(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	start := time.Now()
	b2, err := storage.OpenBolt(path, nil)
	if err == nil {
		b2.Close()
		t.Fatal("second OpenBolt on the same file succeeded")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("second OpenBolt took %v", d)
	}
	if !strings.Contains(err.Error(), "database is locked by another process") || !strings.Contains(err.Error(), path) {
		t.Fatalf("error = %q, want it to name the path and say the database is locked", err)
	}
}

func TestCredentialByHashAllocs(t *testing.T) {
	ctx := context.Background()
	b := openBolt(t, &storage.BoltOptions{NoSync: true})
	c := testCred(1)
	if err := b.PutCredential(ctx, c); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := b.CredentialByHash(ctx, c.TokenHash); err != nil {
			t.Fatal(err)
		}
	})
	// bbolt's read transaction and the JSON decode of one record.
	if allocs > 40 {
		t.Fatalf("CredentialByHash: %v allocations, want at most 40", allocs)
	}
}

func testCred(i int) storage.Credential {
	now := time.Date(2025, time.March, 3, 8, 0, 0, 0, time.UTC)
	return storage.Credential{
		ID:         fmt.Sprintf("cred-%06d", i),
		TokenHash:  sha256.Sum256(fmt.Appendf(nil, "token-%d", i)),
		Kind:       storage.CredTrust,
		UserID:     fmt.Sprintf("user-%06d", i),
		School:     "school-1",
		DeviceID:   fmt.Sprintf("device-%d", i),
		DeviceName: "Pixel 8",
		OS:         "android",
		CreatedAt:  now,
		LastUsedAt: now,
		ServiceID:  fmt.Sprintf("svc-%d", i),
		Push: &storage.PushRegistration{
			Provider: "fcm", Token: strings.Repeat("t", 160),
			Secret: make([]byte, 32), UpdatedAt: now,
		},
	}
}

func BenchmarkCredentialByHash(b *testing.B) {
	benchCredentialByHash(b, openBolt(b, &storage.BoltOptions{NoSync: true}), 10000)
}

// benchCredentialByHash stores n credentials in db, then looks them up by
// hash, serially and in parallel (every backend's benchmark).
func benchCredentialByHash(b *testing.B, db storage.Store, n int) {
	ctx := context.Background()
	hashes := make([]storage.TokenHash, n)
	for i := range n {
		c := testCred(i)
		hashes[i] = c.TokenHash
		if err := db.PutCredential(ctx, c); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := db.CredentialByHash(ctx, hashes[i%n]); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		var next atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			i := int(next.Add(1000))
			for pb.Next() {
				if _, err := db.CredentialByHash(ctx, hashes[i%n]); err != nil {
					b.Error(err)
					return
				}
				i++
			}
		})
	})
}

// openAppendBench returns a Bolt with fsync on and n group conversations,
// created with fsync off to keep the setup short.
func openAppendBench(b *testing.B, n int) *storage.Bolt {
	path := filepath.Join(b.TempDir(), "bench.db")
	db, err := storage.OpenBolt(path, &storage.BoltOptions{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	createBenchConvs(b, db, n)
	if err := db.Close(); err != nil {
		b.Fatal(err)
	}
	db, err = storage.OpenBolt(path, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := db.Check(); err != nil {
			b.Errorf("Check: %v", err)
		}
		db.Close()
	})
	return db
}

// createBenchConvs creates the groups conv-0000… of the append benchmarks.
func createBenchConvs(b *testing.B, db storage.Conversations, n int) {
	base := time.Date(2025, time.March, 3, 8, 0, 0, 0, time.UTC)
	for i := range n {
		err := db.CreateConversation(context.Background(), storage.Conversation{
			ID: fmt.Sprintf("conv-%04d", i), School: "s1", Kind: storage.ConvGroup, Creator: "u1",
			Members: []storage.Member{{UserID: "u1", CanWrite: true}, {UserID: "u2"}}, CreatedAt: base,
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// benchAppendParallel appends 200-byte messages from par×GOMAXPROCS
// goroutines into convs conversations (created by createBenchConvs); one
// op is one message.
func benchAppendParallel(b *testing.B, db storage.Messages, convs, par int) {
	ctx := context.Background()
	ciphertext := make([]byte, 200)
	key := make([]byte, 48)
	base := time.Date(2025, time.March, 3, 8, 0, 0, 0, time.UTC)
	var seq atomic.Int64
	b.SetParallelism(par)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n := seq.Add(1)
			_, _, err := db.AppendMessage(ctx, storage.Message{
				ID:           fmt.Sprintf("msg-%d", n),
				Conversation: fmt.Sprintf("conv-%04d", n%int64(convs)),
				SenderUser:   "u1",
				SenderDevice: "device-1",
				ClientID:     fmt.Sprintf("client-%d", n),
				SentAt:       base,
				ExpiresAt:    base.Add(720 * time.Hour),
				Ciphertext:   ciphertext,
				Keys:         map[string][]byte{"u2/device-2": key},
			})
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}

// BenchmarkAppendMessageParallel measures durable appends (fsync on) from
// many goroutines into many conversations; one op is one message.
func BenchmarkAppendMessageParallel(b *testing.B) {
	const convs = 256
	for _, par := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("goroutines=%dxGOMAXPROCS", par), func(b *testing.B) {
			benchAppendParallel(b, openAppendBench(b, convs), convs, par)
		})
	}
}

// TestBoltUploadIndex shows that the uploader index forgets an attachment
// with its sweep and a user with its erasure, and is rebuilt for a file
// written before it existed.
func TestBoltUploadIndex(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "klassenfunk.db")
	base := time.Date(2025, time.March, 3, 8, 0, 0, 0, time.UTC)
	b, err := storage.OpenBolt(path, &storage.BoltOptions{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []storage.Attachment{
		{ID: "a1", Uploader: "u1", Size: 1, CreatedAt: base, ExpiresAt: base.Add(time.Hour)},
		{ID: "a2", Uploader: "u1", Size: 1, CreatedAt: base, ExpiresAt: base.Add(48 * time.Hour)},
		{ID: "a3", Uploader: "u2", Size: 1, CreatedAt: base, ExpiresAt: base.Add(48 * time.Hour)},
	} {
		if err := b.PutAttachment(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	index := func(want ...string) {
		t.Helper()
		got, err := storage.UploadIndex(b)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Fatalf("upload index %q, want %q", got, want)
		}
	}
	index("u1/a1", "u1/a2", "u2/a3")
	if ids, err := b.DeleteExpiredAttachments(ctx, base.Add(time.Hour), 10); err != nil || len(ids) != 1 {
		t.Fatalf("DeleteExpiredAttachments: %v, %v", ids, err)
	}
	index("u1/a2", "u2/a3")

	if err := storage.DropUploadIndex(b); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if b, err = storage.OpenBolt(path, &storage.BoltOptions{NoSync: true}); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	index("u1/a2", "u2/a3")
	if as, err := b.AttachmentsOf(ctx, "u1", base); err != nil || len(as) != 1 || as[0].ID != "a2" {
		t.Fatalf("AttachmentsOf after the rebuild: %v, %v", as, err)
	}

	if _, err := b.EraseUser(ctx, "u1", base); err != nil {
		t.Fatal(err)
	}
	index("u2/a3")
}
