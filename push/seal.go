package push

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strconv"
)

// SecretLen is the length of a push secret: an AES-256 key.
const SecretLen = 32

const nonceLen = 12

// Payload is the plaintext of a sealed push blob (API.md, "What Google and
// Apple receive"). T is "message" for a new message and "test" for an
// operator's test push (which has no C, M or S).
type Payload struct {
	T string `json:"t"`
	C string `json:"c,omitempty"`
	M string `json:"m,omitempty"`
	S uint64 `json:"s,omitempty"`
}

// appendPayload writes p as {"t":…,"c":…,"m":…,"s":…} (the order of
// API.md). IDs are URL-safe, so quoting never escapes anything; it is done
// properly anyway.
func appendPayload(b []byte, p Payload) []byte {
	b = append(b, `{"t":`...)
	b = strconv.AppendQuote(b, p.T)
	if p.T == "test" {
		return append(b, '}')
	}
	b = append(b, `,"c":`...)
	b = strconv.AppendQuote(b, p.C)
	b = append(b, `,"m":`...)
	b = strconv.AppendQuote(b, p.M)
	b = append(b, `,"s":`...)
	b = strconv.AppendUint(b, p.S, 10)
	return append(b, '}')
}

// Seal returns the blob p of a push: base64(nonce(12) ‖ AES-256-GCM(secret,
// nonce, plaintext, additional data = serviceID)).
func Seal(secret []byte, serviceID string, p Payload) (string, error) {
	if len(secret) != SecretLen {
		return "", errors.New("push: secret must be 32 bytes")
	}
	block, err := aes.NewCipher(secret)
	if err != nil {
		return "", err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return "", err
	}
	var buf [256]byte
	plain := appendPayload(buf[:0], p)
	out := make([]byte, nonceLen, nonceLen+len(plain)+gcm.Overhead())
	rand.Read(out[:nonceLen]) // never fails (crypto/rand, Go ≥ 1.24)
	out = gcm.Seal(out, out[:nonceLen], plain, []byte(serviceID))
	return base64.StdEncoding.EncodeToString(out), nil
}

// Open is what an app does with a blob: it checks and decrypts it. The
// reference client and the tests use it.
func Open(secret []byte, serviceID, blob string) (Payload, []byte, error) {
	raw, err := base64.StdEncoding.Strict().DecodeString(blob)
	if err != nil {
		return Payload{}, nil, err
	}
	if len(secret) != SecretLen || len(raw) < nonceLen {
		return Payload{}, nil, errors.New("push: bad secret or blob")
	}
	block, err := aes.NewCipher(secret)
	if err != nil {
		return Payload{}, nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return Payload{}, nil, err
	}
	plain, err := gcm.Open(nil, raw[:nonceLen], raw[nonceLen:], []byte(serviceID))
	if err != nil {
		return Payload{}, nil, err
	}
	var p Payload
	if err := json.Unmarshal(plain, &p); err != nil {
		return Payload{}, nil, err
	}
	return p, plain, nil
}
