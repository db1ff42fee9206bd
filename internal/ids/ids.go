// Package ids makes opaque, URL-safe random identifiers and secrets.
package ids

import (
	"crypto/rand"
	"encoding/base64"
)

// New returns a random 128-bit identifier as 22 URL-safe characters.
func New() string { return Random(16) }

// Random returns n random bytes encoded as unpadded URL-safe base64.
func Random(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never returns an error (crypto/rand, Go ≥ 1.24)
	return base64.RawURLEncoding.EncodeToString(b)
}
