package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

func TestPasswordRoundTrip(t *testing.T) {
	tests := map[string]struct {
		params     Argon2Params
		wantPrefix string
	}{
		"small":              {Argon2Params{Memory: 64, Time: 1, Threads: 1}, "$argon2id$v=19$m=64,t=1,p=1$"},
		"two lanes":          {Argon2Params{Memory: 128, Time: 3, Threads: 2}, "$argon2id$v=19$m=128,t=3,p=2$"},
		"defaults (OWASP)":   {Argon2Params{}.withDefaults(), "$argon2id$v=19$m=19456,t=2,p=1$"},
		"partial defaults":   {Argon2Params{Memory: 32}.withDefaults(), "$argon2id$v=19$m=32,t=2,p=1$"},
		"only time changed":  {Argon2Params{Time: 1, Memory: 8}.withDefaults(), "$argon2id$v=19$m=8,t=1,p=1$"},
		"threads with deflt": {Argon2Params{Threads: 4, Memory: 64}.withDefaults(), "$argon2id$v=19$m=64,t=2,p=4$"},
	}
	secret := sha256.Sum256([]byte("the right secret"))
	other := sha256.Sum256([]byte("another secret"))
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			enc := hashPassword(secret[:], tc.params)
			if !strings.HasPrefix(enc, tc.wantPrefix) {
				t.Fatalf("encoded %q, want prefix %q", enc, tc.wantPrefix)
			}
			parts := strings.Split(enc, "$")
			if len(parts) != 6 || len(parts[4]) != 22 || len(parts[5]) != 43 { // 16-byte salt, 32-byte hash
				t.Fatalf("encoded %q: want 16-byte salt and 32-byte hash in unpadded base64", enc)
			}
			ok, err := verifyPassword(secret[:], enc)
			if err != nil || !ok {
				t.Fatalf("verify right secret: %v, %v", ok, err)
			}
			for wname, wrong := range map[string][]byte{
				"other secret":  other[:],
				"one bit off":   flipBit(secret[:]),
				"truncated":     secret[:31],
				"empty":         nil,
				"secret + byte": append(append([]byte{}, secret[:]...), 0),
			} {
				ok, err := verifyPassword(wrong, enc)
				if err != nil || ok {
					t.Fatalf("verify %s: %v, %v; want false, nil", wname, ok, err)
				}
			}
			// A fresh salt every time.
			if enc2 := hashPassword(secret[:], tc.params); enc2 == enc {
				t.Fatalf("two hashes of the same secret are equal: %q", enc)
			}
		})
	}
}

func flipBit(b []byte) []byte {
	c := append([]byte{}, b...)
	c[7] ^= 0x10
	return c
}

func TestVerifyPasswordMalformed(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	good := hashPassword(secret, Argon2Params{Memory: 64, Time: 1, Threads: 1})
	parts := strings.Split(good, "$") // "", argon2id, v=19, m=…, salt, hash
	with := func(i int, v string) string {
		p := append([]string{}, parts...)
		p[i] = v
		return strings.Join(p, "$")
	}
	tests := map[string]string{
		"empty":              "",
		"garbage":            "not a hash",
		"bcrypt":             "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy",
		"argon2i":            with(1, "argon2i"),
		"too few parts":      strings.Join(parts[:5], "$"),
		"too many parts":     good + "$extra",
		"no version":         with(2, "19"),
		"old version":        with(2, "v=16"),
		"version not number": with(2, "v=x"),
		"params missing":     with(3, ""),
		"params garbage":     with(3, "m=a,t=1,p=1"),
		"negative memory":    with(3, "m=-1,t=1,p=1"),
		"lanes overflow":     with(3, "m=64,t=1,p=300"),
		"zero passes":        with(3, "m=64,t=0,p=1"),
		"zero lanes":         with(3, "m=64,t=1,p=0"),
		"salt not base64":    with(4, "!!!!"),
		"salt padded":        with(4, parts[4]+"=="),
		"hash not base64":    with(5, "@@@"),
		"hash empty":         with(5, ""),
	}
	for name, enc := range tests {
		t.Run(name, func(t *testing.T) {
			var ok bool
			var err error
			func() {
				defer func() {
					if p := recover(); p != nil {
						t.Fatalf("verifyPassword(%q) panicked: %v", enc, p)
					}
				}()
				ok, err = verifyPassword(secret, enc)
			}()
			if ok || !errors.Is(err, errBadHash) {
				t.Fatalf("verifyPassword(%q) = %v, %v; want false, errBadHash", enc, ok, err)
			}
		})
	}
	if ok, err := verifyPassword(secret, good); !ok || err != nil {
		t.Fatalf("the unmodified hash does not verify: %v, %v", ok, err)
	}
}

// pbkdf2SHA256Block computes PBKDF2-HMAC-SHA256 with a 32-byte output (one
// block) straight from RFC 8018, independent of the code under test.
func pbkdf2SHA256Block(password, salt []byte, iter int) []byte {
	mac := hmac.New(sha256.New, password)
	mac.Write(salt)
	var one [4]byte
	binary.BigEndian.PutUint32(one[:], 1)
	mac.Write(one[:])
	u := mac.Sum(nil)
	t := append([]byte{}, u...)
	for i := 1; i < iter; i++ {
		mac.Reset()
		mac.Write(u)
		u = mac.Sum(u[:0])
		for j := range t {
			t[j] ^= u[j]
		}
	}
	return t
}

func TestPBKDF2Helper(t *testing.T) {
	// Published PBKDF2-HMAC-SHA256 vectors (RFC 7914 §11, and the widely
	// used "password"/"salt" ones), first 32 bytes.
	tests := map[string]struct {
		password, salt string
		iter           int
		want           string
	}{
		"rfc7914":     {"passwd", "salt", 1, "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"},
		"c=1":         {"password", "salt", 1, "120fb6cffcf8b32c43e7225256c4f837a86548c92ccc35480805987cb70be17b"},
		"c=2":         {"password", "salt", 2, "ae4d0c95af6b46d32d0adff928f06dd02a303f8ef3c251dfd6e2d85a95474c43"},
		"c=4096":      {"password", "salt", 4096, "c5e478d59288c841aa530db6845c4c8d962893a001ce4e11a4963873aa98134a"},
		"long inputs": {"passwordPASSWORDpassword", "saltSALTsaltSALTsaltSALTsaltSALTsalt", 4096, "348c89dbcbd32b2f32d814b8116e84cf2b17347ebc1800181c4e2a1fb8dd53e1"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := hex.EncodeToString(pbkdf2SHA256Block([]byte(tc.password), []byte(tc.salt), tc.iter)); got != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestClientHash(t *testing.T) {
	want := pbkdf2SHA256Block([]byte("correct horse battery staple"), []byte("klassenfunk/v1/alice"), 600000)
	tests := map[string]struct {
		login, password string
		equal           bool
	}{
		"capitalised login": {"Alice", "correct horse battery staple", true},
		"other password":    {"Alice", "correct horse battery stapler", false},
		"other login":       {"alice2", "correct horse battery staple", false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			got := ClientHash(tc.login, tc.password)
			if len(got) != ClientHashLen {
				t.Fatalf("length %d, want %d", len(got), ClientHashLen)
			}
			if eq := hmac.Equal(got, want); eq != tc.equal {
				t.Fatalf("ClientHash(%q, …) = %x; equal to the reference %x: %v, want %v", tc.login, got, want, eq, tc.equal)
			}
		})
	}
}
