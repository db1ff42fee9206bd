package storage

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"
)

// TestAppendMessageJSON: the hand-written encoder gives json.Marshal's
// bytes, for plain messages and for the awkward cases.
func TestAppendMessageJSON(t *testing.T) {
	base := time.Date(2025, time.March, 3, 8, 0, 0, 123456789, time.UTC)
	cases := []Message{
		{},
		{ID: "m1", Conversation: "c1", Seq: 42, SenderUser: "u1", SenderDevice: "d1", ClientID: "x",
			SentAt: base, ExpiresAt: base.Add(720 * time.Hour), Ciphertext: []byte("secret"),
			Keys: map[string][]byte{"u2/d2": {1, 2, 3}, "u1/d1": {}, "a/b": nil}, Attachments: []string{"a1", "a2"}},
		{ID: "ü\u2028\u2029<>&\"\\\n\r\t\b\f\x01\x1f\x7f", ClientID: "日本語 🎉", Keys: map[string][]byte{},
			SentAt: base.In(time.FixedZone("x", 3600)), ExpiresAt: time.Date(9999, 12, 31, 23, 59, 59, 1, time.UTC)},
		{ID: "bad\xffutf8", SentAt: base},
		{ID: "y", SentAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)},
		{ID: "z", SentAt: time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC)},
		{ID: "att", Attachments: []string{}, Seq: 1<<64 - 1},
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		m := Message{ID: randString(r), Conversation: randString(r), SenderUser: randString(r),
			SenderDevice: randString(r), ClientID: randString(r), Seq: r.Uint64(),
			SentAt: time.Unix(r.Int64N(1<<35), r.Int64N(1e9)), ExpiresAt: time.Unix(r.Int64N(1<<35), 0).UTC(),
			Ciphertext: []byte(randString(r)), Keys: map[string][]byte{randString(r): []byte(randString(r)), randString(r): nil}}
		cases = append(cases, m)
	}
	for _, m := range cases {
		want, wantErr := json.Marshal(m)
		got, err := appendMessageJSON([]byte("prefix"), &m)
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("appendMessageJSON(%+v): error %v, json.Marshal: %v", m, err, wantErr)
		}
		if err != nil {
			continue
		}
		if !bytes.Equal(got, append([]byte("prefix"), want...)) {
			t.Fatalf("appendMessageJSON(%+v)\n got %s\nwant prefix%s", m, got, want)
		}
	}
}

func randString(r *rand.Rand) string {
	const alphabet = "aZ09 <>&\"\\\n\x00\x1fü€🎉\u2028\u2029/"
	runes := []rune(alphabet)
	b := make([]rune, r.IntN(12))
	for i := range b {
		b[i] = runes[r.IntN(len(runes))]
	}
	return string(b)
}

func BenchmarkAppendMessageJSON(b *testing.B) {
	m := Message{ID: "0193d1c6a0e07c3e9b1f", Conversation: "0193d1c6a0e07c3e9b20", SenderUser: "0193d1c6a0e07c3e9b21",
		SenderDevice: "device-1", ClientID: "client-123456", SentAt: time.Now(), ExpiresAt: time.Now().Add(720 * time.Hour),
		Ciphertext: make([]byte, 200), Keys: map[string][]byte{"u1/device-1": make([]byte, 48), "u2/device-2": make([]byte, 48)}}
	b.Run("hand", func(b *testing.B) {
		b.ReportAllocs()
		var buf []byte
		for b.Loop() {
			buf, _ = appendMessageJSON(buf[:0], &m)
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			json.Marshal(&m)
		}
	})
}
