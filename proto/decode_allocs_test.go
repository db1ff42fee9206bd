// The race detector makes sync.Pool drop items at random, so allocation
// counts are only meaningful without it.

//go:build !race

package proto

import "testing"

// TestDecodeClientFrameSendAllocs guards the hot path's allocation count.
func TestDecodeClientFrameSendAllocs(t *testing.T) {
	frame := benchSendFrame()
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := DecodeClientFrame(frame); err != nil {
			t.Fatal(err)
		}
	})
	// The frame, Send, ref, type, conversation, client_id, ciphertext, the
	// keys map and its two names and two wrapped keys.
	if allocs > 13 {
		t.Errorf("DecodeClientFrame of a send allocated %v times, want at most 13", allocs)
	}
}
