package storage_test

import (
	"testing"
	"time"

	"klassenfunk/storage"
)

// The decode cache behind CredentialByHash and User must never serve a
// stale record, nor let a caller's changes leak into the next read.
func TestBoltDecodeCacheNeverStale(t *testing.T) {
	b := openBolt(t, &storage.BoltOptions{NoSync: true})
	ctx := t.Context()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := b.CreateSchool(ctx, storage.School{ID: "s", Name: "S", CreatedAt: t0}); err != nil {
		t.Fatal(err)
	}
	u := storage.User{ID: "u", School: "s", Login: "u", DisplayName: "U", Role: storage.RoleTeacher, CreatedAt: t0, Countries: []string{"DE"}}
	if err := b.CreateUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	c := storage.Credential{ID: "c", TokenHash: storage.TokenHash{1}, Kind: storage.CredTrust, UserID: "u", School: "s",
		DeviceID: "d", CreatedAt: t0, LastUsedAt: t0, Push: &storage.PushRegistration{Provider: "fcm", Token: "t", Secret: []byte{1}}}
	if err := b.PutCredential(ctx, c); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ { // the second round is served from the cache
		got, err := b.CredentialByHash(ctx, c.TokenHash)
		if err != nil || got.Push.Secret[0] != 1 || !got.LastUsedAt.Equal(t0) {
			t.Fatalf("round %d: %+v %v", i, got, err)
		}
		got.Push.Secret[0] = 99 // a caller scribbling on its copy
		gu, err := b.User(ctx, "u")
		if err != nil || gu.Countries[0] != "DE" {
			t.Fatalf("round %d: user %+v %v", i, gu, err)
		}
		gu.Countries[0] = "XX"
	}
	if err := b.TouchCredential(ctx, "c", t0.Add(time.Hour), time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := b.UpdateUser(ctx, "u", func(u *storage.User) error { u.Disabled = true; return nil }); err != nil {
		t.Fatal(err)
	}
	got, _ := b.CredentialByHash(ctx, c.TokenHash)
	if !got.LastUsedAt.Equal(t0.Add(time.Hour)) {
		t.Fatalf("stale credential after touch: last used %v", got.LastUsedAt)
	}
	if gu, _ := b.User(ctx, "u"); !gu.Disabled {
		t.Fatal("stale user after update")
	}
	if _, err := b.DeleteCredential(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.CredentialByHash(ctx, c.TokenHash); err != storage.ErrNotFound {
		t.Fatalf("deleted credential still found: %v", err)
	}
}
