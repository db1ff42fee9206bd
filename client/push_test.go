package client

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"testing"
)

// sealPush seals a push payload the way API.md says the server does.
func sealPush(t *testing.T, secret []byte, serviceID, payload string) string {
	t.Helper()
	b, err := aes.NewCipher(secret)
	if err != nil {
		t.Fatal(err)
	}
	g, err := cipher.NewGCM(b)
	if err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, 12)
	rand.Read(nonce)
	return base64.StdEncoding.EncodeToString(g.Seal(nonce, nonce, []byte(payload), []byte(serviceID)))
}

func TestOpenPushBlob(t *testing.T) {
	secret := make([]byte, 32)
	rand.Read(secret)
	const sid = "svc_4J2Xk9"
	p := sealPush(t, secret, sid, `{"t":"message","c":"conv1","m":"msg7","s":42}`)

	got, err := OpenPushBlob(secret, sid, p)
	if err != nil {
		t.Fatal(err)
	}
	if want := (PushPayload{T: "message", C: "conv1", M: "msg7", S: 42}); got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}

	other := make([]byte, 32)
	rand.Read(other)
	raw, _ := base64.StdEncoding.DecodeString(p)
	raw[len(raw)-5] ^= 1
	tampered := base64.StdEncoding.EncodeToString(raw)
	tests := map[string]struct {
		secret []byte
		sid, p string
		want   error
	}{
		"wrong secret":     {other, sid, p, ErrPushBlob},
		"wrong service id": {secret, "svc_other", p, ErrPushBlob},
		"tampered":         {secret, sid, tampered, ErrPushBlob},
		"not base64":       {secret, sid, "%%%", ErrPushBlob},
		"too short":        {secret, sid, base64.StdEncoding.EncodeToString(make([]byte, 27)), ErrPushBlob},
		"short secret":     {secret[:16], sid, p, ErrPushBlob},
		"not json":         {secret, sid, sealPush(t, secret, sid, "hello"), ErrFormat},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := OpenPushBlob(tc.secret, tc.sid, tc.p); !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
		})
	}
}
