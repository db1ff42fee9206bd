package proto

import (
	"crypto/pbkdf2"
	"crypto/sha256"
	"strings"
)

// ClientHashLen is the length of a decoded client_hash.
const ClientHashLen = 32

// ClientHashIterations is the PBKDF2 iteration count of API.md.
const ClientHashIterations = 600000

// ClientHash derives the client_hash of API.md from a password, as apps do
// before anything leaves the device: PBKDF2-HMAC-SHA256(password,
// "klassenfunk/v1/" + lowercase(login), 600000 iterations, 32 bytes). The
// server treats it as the password.
func ClientHash(login, password string) []byte {
	salt := "klassenfunk/v1/" + strings.ToLower(login)
	key, err := pbkdf2.Key(sha256.New, password, []byte(salt), ClientHashIterations, ClientHashLen)
	if err != nil { // only for invalid parameters, which these are not
		panic(err)
	}
	return key
}
