package proto

import (
	"math/rand/v2"
	"testing"
)

// benchSendFrame returns a send frame as a client writes it: a 200-byte
// ciphertext, two 48-byte wrapped keys under "<user id>/<device id>"
// names, a client_id, a conversation id and a ref; about 700 bytes.
func benchSendFrame() []byte {
	rng := rand.New(rand.NewPCG(1, 2))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	s := &Send{
		Conversation: "conv-01JXR5Q8Z4T3N6M2K9W0V7B1C5",
		ClientID:     "01JXR5QA7E2D9G4H6J8K0M1N3P",
		Ciphertext:   random(200),
		Keys: map[string][]byte{
			KeyName("usr_3f9a7c2b", "dev_01JXR5Q8Z4T3N6M2K9W0V7B1C5"): random(48),
			KeyName("usr_81d0e4aa", "dev_01JXR5R2C7V5X3Z1B9N7M5K3H1"): random(48),
		},
	}
	return AppendSendFrame(nil, "r-000042", s)
}

func BenchmarkDecodeClientFrameSend(b *testing.B) {
	frame := benchSendFrame()
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeClientFrame(frame); err != nil {
			b.Fatal(err)
		}
	}
}
