// Package ids makes opaque, URL-safe random identifiers and secrets.
package ids

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"time"
)

// New returns a random identifier as 22 URL-safe characters (128 bits,
// less a sliver). It never starts with '-', which command lines would take
// for a flag (`kfchat direct USER_ID`, the admin commands).
func New() string {
	b := make([]byte, 16)
	rand.Read(b)
	if b[0]>>2 == 62 { // '-' in the URL-safe alphabet
		b[0] &^= 0x80 // now 'e'
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// Random returns n random bytes encoded as unpadded URL-safe base64.
func Random(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never returns an error (crypto/rand, Go ≥ 1.24)
	return base64.RawURLEncoding.EncodeToString(b)
}

// sortable is URL-safe base64 with its alphabet in ASCII order, so that
// encoded strings sort like the bytes they encode.
var sortable = base64.NewEncoding("-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz").WithPadding(base64.NoPadding)

// NewSortable returns a 128-bit identifier as 22 URL-safe characters that
// sort by creation time: 48 bits of milliseconds, then 80 random bits.
// Stores index such ids by appending rather than at random places, which
// keeps the pages a write touches few. The time in it is no secret: it is
// the message's sent_at, which readers see anyway.
func NewSortable(now time.Time) string {
	var b [16]byte
	// The top bit is set so that ids never start with '-' (which command
	// lines would take for a flag); it is the same for all, so the order
	// holds.
	binary.BigEndian.PutUint64(b[:8], (uint64(now.UnixMilli())|1<<47)<<16)
	rand.Read(b[6:])
	return sortable.EncodeToString(b[:])
}
