package auth_test

import (
	"context"
	"crypto/sha256"
	"log/slog"
	"net/netip"
	"path/filepath"
	"testing"

	"klassenfunk/auth"
	"klassenfunk/storage"
)

// benchService returns a Service on a real bbolt file (with fsync) and a
// user "bench" whose client_hash is returned.
func benchService(b *testing.B, p auth.Argon2Params) (*auth.Service, []byte) {
	b.Helper()
	ctx := context.Background()
	st, err := storage.OpenBolt(filepath.Join(b.TempDir(), "klassenfunk.db"), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	svc, err := auth.New(auth.Config{Store: st, Argon2: p, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	sc, err := svc.CreateSchool(ctx, "Bench")
	if err != nil {
		b.Fatal(err)
	}
	ch := sha256.Sum256([]byte("bench password"))
	if _, err := svc.CreateUser(ctx, auth.NewUser{School: sc.ID, Login: "bench", DisplayName: "Bench", Role: storage.RoleTeacher, ClientHash: ch[:]}); err != nil {
		b.Fatal(err)
	}
	return svc, ch[:]
}

var benchAddr = netip.MustParseAddr("192.0.2.10")

// BenchmarkAuthenticate measures the per-request cost of a bearer token:
// hash, credential lookup, user lookup (the touch write happens at most
// once per TouchInterval).
func BenchmarkAuthenticate(b *testing.B) {
	for _, kind := range []struct {
		name     string
		personal bool
	}{{"trust", true}, {"session", false}} {
		personal := kind.personal
		b.Run(kind.name, func(b *testing.B) {
			ctx := context.Background()
			// Cheap Argon2: only the setup logs in.
			svc, ch := benchService(b, auth.Argon2Params{Memory: 64, Time: 1, Threads: 1})
			res, err := svc.Login(ctx, "bench", ch, auth.Device{ID: "d", OS: "ios", Personal: &personal}, benchAddr)
			if err != nil {
				b.Fatal(err)
			}
			b.Run("serial", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, err := svc.Authenticate(ctx, res.Token); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("parallel", func(b *testing.B) {
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, err := svc.Authenticate(ctx, res.Token); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
			b.Run("bad token", func(b *testing.B) {
				b.ReportAllocs()
				bad := res.Token[:len(res.Token)-1] + "A"
				if bad == res.Token {
					bad = res.Token[:len(res.Token)-1] + "B"
				}
				for b.Loop() {
					if _, err := svc.Authenticate(ctx, bad); err == nil {
						b.Fatal("bad token accepted")
					}
				}
			})
		})
	}
}

// BenchmarkLogin measures a successful login with the default Argon2
// parameters (19 MiB, t=2, p=1): one Argon2id verification, a credential
// write and a login-history write.
func BenchmarkLogin(b *testing.B) {
	ctx := context.Background()
	svc, ch := benchService(b, auth.Argon2Params{})
	personal := false
	dev := auth.Device{ID: "d", OS: "web", Personal: &personal}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := svc.Login(ctx, "bench", ch, dev, benchAddr); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := svc.Login(ctx, "bench", ch, dev, benchAddr); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
