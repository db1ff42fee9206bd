package auth

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/argon2"

	"klassenfunk/proto"
)

// maxArgon2Memory bounds the memory parameter read from a stored hash
// (4 GiB in KiB).
const maxArgon2Memory = 4 << 20

// ClientHashLen is the length of a decoded client_hash.
const ClientHashLen = proto.ClientHashLen

// ClientHash derives the client_hash of API.md; see proto.ClientHash.
func ClientHash(login, password string) []byte { return proto.ClientHash(login, password) }

// Argon2Params are the Argon2id cost parameters.
type Argon2Params struct {
	// Memory in KiB. Zero means 19456 (19 MiB, OWASP's recommendation).
	Memory uint32 `yaml:"memory_kib"`
	// Time is the number of passes. Zero means 2.
	Time uint32 `yaml:"time"`
	// Threads is the parallelism. Zero means 1.
	Threads uint8 `yaml:"threads"`
}

func (p Argon2Params) withDefaults() Argon2Params {
	if p.Memory == 0 {
		p.Memory = 19456
	}
	if p.Time == 0 {
		p.Time = 2
	}
	if p.Threads == 0 {
		p.Threads = 1
	}
	return p
}

// hashPassword returns the encoded Argon2id hash of secret.
func hashPassword(secret []byte, p Argon2Params) string {
	salt := make([]byte, 16)
	rand.Read(salt)
	sum := argon2.IDKey(secret, salt, p.Time, p.Memory, p.Threads, 32)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.Memory, p.Time, p.Threads, b64.EncodeToString(salt), b64.EncodeToString(sum))
}

var errBadHash = errors.New("auth: malformed password hash")

// verifyPassword reports whether secret matches the encoded hash, in time
// that depends only on the hash's parameters.
func verifyPassword(secret []byte, encoded string) (bool, error) {
	parts := strings.Split(encoded, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return false, errBadHash
	}
	var version int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return false, errBadHash
	}
	var p Argon2Params
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.Memory, &p.Time, &p.Threads); err != nil ||
		p.Time == 0 || p.Threads == 0 || // argon2.IDKey panics on these
		p.Memory > maxArgon2Memory || p.Time > 64 { // a corrupt record must not exhaust the machine
		return false, errBadHash
	}
	b64 := base64.RawStdEncoding
	salt, err := b64.DecodeString(parts[4])
	if err != nil {
		return false, errBadHash
	}
	want, err := b64.DecodeString(parts[5])
	if err != nil || len(want) == 0 {
		return false, errBadHash
	}
	got := argon2.IDKey(secret, salt, p.Time, p.Memory, p.Threads, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}
