package auth

import (
	"crypto/sha256"
	"strings"

	"klassenfunk/internal/ids"
	"klassenfunk/storage"
)

// tokenPrefix marks Klassenfunk credentials so that secret scanners and
// humans recognise a leaked one.
const tokenPrefix = "kf1_"

// newToken returns a fresh 256-bit bearer token and its hash.
func newToken() (string, storage.TokenHash) {
	t := tokenPrefix + ids.Random(32)
	return t, hashToken(t)
}

func hashToken(t string) storage.TokenHash { return sha256.Sum256([]byte(t)) }

// plausibleToken rejects what cannot be one of our tokens before any lookup.
func plausibleToken(t string) bool {
	return len(t) == len(tokenPrefix)+43 && strings.HasPrefix(t, tokenPrefix)
}
