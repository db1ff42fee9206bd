package storage

import (
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"
)

// TestMessageValueRoundTrip: the binary form decodes to what the JSON form
// decodes to, and messages it cannot carry (times outside UTC) are stored
// as JSON.
func TestMessageValueRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	base := time.Date(2025, time.March, 3, 8, 0, 0, 123456789, time.UTC)
	cases := []Message{
		{},
		{ID: "m", SentAt: base, ExpiresAt: base, Ciphertext: []byte{}, Keys: map[string][]byte{}, Attachments: []string{}},
		{ID: "m", SentAt: base, Keys: map[string][]byte{"a/b": nil, "c/d": {}, "e/f": {1}}, Attachments: []string{"a1", "a2"}},
		{ID: "zone", SentAt: base.In(time.FixedZone("x", 3600)), ExpiresAt: base},
		{ID: "early", SentAt: time.Date(-5, 1, 1, 0, 0, 0, 1, time.UTC), ExpiresAt: time.Date(12000, 1, 1, 0, 0, 0, 0, time.UTC)},
	}
	for range 300 {
		m := Message{ID: randString(r), Conversation: randString(r), SenderUser: randString(r),
			SenderDevice: randString(r), ClientID: randString(r),
			SentAt: time.Unix(r.Int64N(1<<34), r.Int64N(1e9)).UTC(), ExpiresAt: time.Unix(r.Int64N(1<<34), 0).UTC(),
			Ciphertext: []byte(randString(r)), Keys: map[string][]byte{randString(r): []byte(randString(r)), randString(r): nil}}
		if r.IntN(2) == 0 {
			m.Attachments = []string{randString(r)}
		}
		cases = append(cases, m)
	}
	for _, m := range cases {
		v, err := appendMessageValue(nil, &m)
		if err != nil {
			if _, jerr := json.Marshal(m); jerr == nil {
				t.Fatalf("appendMessageValue(%+v): %v", m, err)
			}
			continue
		}
		if wantBinary := binaryEncodable(&m); (v[0] == binaryMessage) != wantBinary {
			t.Fatalf("%+v stored as %q, binary: %v", m, v[:1], wantBinary)
		}
		var got Message
		if err := decodeMessageValue(v, &got); err != nil {
			t.Fatalf("decode %+v: %v", m, err)
		}
		var want Message
		js, err := json.Marshal(m)
		if err != nil {
			continue // the JSON form cannot hold it at all (a year past 9999)
		}
		if err := json.Unmarshal(js, &want); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("round trip of %+v\n got %#v\nwant %#v (as the JSON form gives)", m, got, want)
		}
		if sent, err := sentAtOf(v); err != nil || !sent.Equal(got.SentAt) {
			t.Fatalf("sentAtOf %+v: %v, %v; want %v", m, sent, err, got.SentAt)
		}
		user, device, client, err := senderFields(v)
		if err != nil || string(user) != got.SenderUser || string(device) != got.SenderDevice || string(client) != got.ClientID {
			t.Fatalf("senderFields of %+v: %q, %q, %q, %v", m, user, device, client, err)
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

// FuzzDecodeMessageValue: any bytes decode without a panic, what decodes
// encodes back to a value that decodes the same, and senderFields reads
// the same sender and client id.
func FuzzDecodeMessageValue(f *testing.F) {
	base := time.Date(2025, time.March, 3, 8, 0, 0, 0, time.UTC)
	for _, m := range []Message{{}, {ID: "m", SentAt: base, ExpiresAt: base, Ciphertext: []byte("x"), Keys: map[string][]byte{"a/b": {1}}, Attachments: []string{"a"}}} {
		v, _ := appendMessageValue(nil, &m)
		f.Add(v)
	}
	f.Add([]byte{binaryMessage, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, v []byte) {
		var m Message
		err := decodeMessageValue(v, &m)
		user, device, client, ferr := senderFields(v) // never panics either
		if err == nil && (ferr != nil || string(user) != m.SenderUser || string(device) != m.SenderDevice || string(client) != m.ClientID) {
			t.Fatalf("senderFields of %+v: %q, %q, %q, %v", m, user, device, client, ferr)
		}
		if err != nil || len(v) == 0 || v[0] != binaryMessage {
			return
		}
		again, err := appendMessageValue(nil, &m)
		if err != nil {
			t.Fatal(err)
		}
		var m2 Message
		if err := decodeMessageValue(again, &m2); err != nil || !reflect.DeepEqual(m, m2) {
			t.Fatalf("re-encoded %+v decodes to %+v, %v", m, m2, err)
		}
	})
}

func BenchmarkMessageValue(b *testing.B) {
	m := Message{ID: "0193d1c6a0e07c3e9b1f", Conversation: "0193d1c6a0e07c3e9b20", SenderUser: "0193d1c6a0e07c3e9b21",
		SenderDevice: "device-1", ClientID: "client-123456", SentAt: time.Now().UTC(), ExpiresAt: time.Now().UTC().Add(720 * time.Hour),
		Ciphertext: make([]byte, 200), Keys: map[string][]byte{"u1/device-1": make([]byte, 48), "u2/device-2": make([]byte, 48)}}
	bin, _ := appendMessageValue(nil, &m)
	js, _ := json.Marshal(&m)
	b.Logf("sizes: binary %d B, JSON %d B", len(bin), len(js))
	b.Run("encode/binary", func(b *testing.B) {
		var buf []byte
		for b.Loop() {
			buf, _ = appendMessageValue(buf[:0], &m)
		}
	})
	b.Run("decode/binary", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var out Message
			decodeMessageValue(bin, &out)
		}
	})
	b.Run("decode/json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var out Message
			decodeMessageValue(js, &out)
		}
	})
}
