package client

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/json"
	"fmt"
)

// PushPayload is the plaintext of a push blob (API.md, "What Google and
// Apple receive"): which message to fetch with GET /messages/{id}.
type PushPayload struct {
	// T is the payload type; "message" for a new message.
	T string `json:"t"`
	// C is the conversation id.
	C string `json:"c"`
	// M is the message id.
	M string `json:"m"`
	// S is the message's seq.
	S uint64 `json:"s"`
}

// OpenPushBlob decrypts the "p" member of a push with the push secret of
// the device's registration (PUT /push) and its service id (the "sid"
// member): p = base64(nonce(12) ‖ AES-256-GCM(push_secret, nonce,
// plaintext, additional data = service_id)). Errors wrap ErrPushBlob or
// ErrFormat.
func OpenPushBlob(secret []byte, serviceID, p string) (PushPayload, error) {
	var out PushPayload
	if len(secret) != 32 {
		return out, fmt.Errorf("%w: push secret of %d bytes, want 32", ErrPushBlob, len(secret))
	}
	blob, err := base64.StdEncoding.DecodeString(p)
	if err != nil {
		return out, fmt.Errorf("%w: blob is not standard base64", ErrPushBlob)
	}
	if len(blob) < NonceSize+TagSize {
		return out, fmt.Errorf("%w: blob of %d bytes is too short", ErrPushBlob, len(blob))
	}
	b, err := aes.NewCipher(secret)
	if err != nil {
		return out, err
	}
	g, err := cipher.NewGCM(b)
	if err != nil {
		return out, err
	}
	pt, err := g.Open(nil, blob[:NonceSize], blob[NonceSize:], []byte(serviceID))
	if err != nil {
		return out, fmt.Errorf("%w: authentication failed (wrong secret or service id, or tampered)", ErrPushBlob)
	}
	if err := json.Unmarshal(pt, &out); err != nil {
		return out, fmt.Errorf("%w: push payload: %v", ErrFormat, err)
	}
	return out, nil
}
