package messenger

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"klassenfunk/proto"
	"klassenfunk/storage"
)

func codecEvents() []*Event {
	at := time.Date(2026, 11, 27, 8, 50, 1, 123456789, time.UTC)
	return []*Event{
		{Kind: EventMessage, ExcludeDevice: "u1/phone", Message: &storage.Message{
			ID: "m1", Conversation: "c1", Seq: 42, SenderUser: "u1", SenderDevice: "phone", ClientID: "k1",
			SentAt: at, ExpiresAt: at.Add(720 * time.Hour), Ciphertext: []byte{0, 1, 2, 255},
			Keys:        map[string][]byte{"u1/phone": {1}, "u2/tab": make([]byte, 80), "u2/empty": {}},
			Attachments: []string{"a1", "a2"},
		}},
		{Kind: EventMessage, Message: &storage.Message{ID: "m2", Conversation: "c1", Seq: 0, SentAt: at, ExpiresAt: at}},
		{Kind: EventMessage, Message: &storage.Message{ID: "m3", Seq: 7, SentAt: at.In(time.FixedZone("CET", 3600)), ExpiresAt: at}}, // JSON inside
		{Kind: EventClose, CredID: "cred9", Code: proto.CloseUnauthorized},
		{Kind: EventClose, Code: proto.CloseCountryBlocked},
		{Kind: EventCountryCheck},
	}
}

// sameEvent compares events as the hub uses them: times by instant.
func sameEvent(a, b *Event) bool {
	if a.Kind != b.Kind || a.ExcludeDevice != b.ExcludeDevice || a.CredID != b.CredID || a.Code != b.Code || (a.Message == nil) != (b.Message == nil) {
		return false
	}
	if a.Message == nil {
		return true
	}
	am, bm := *a.Message, *b.Message
	if !am.SentAt.Equal(bm.SentAt) || !am.ExpiresAt.Equal(bm.ExpiresAt) {
		return false
	}
	am.SentAt, am.ExpiresAt, bm.SentAt, bm.ExpiresAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	return reflect.DeepEqual(am, bm)
}

func TestEventCodecRoundTrip(t *testing.T) {
	origin := eventOrigin("node-A")
	for i, ev := range codecEvents() {
		b, err := appendEvent(nil, origin, ev)
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if string(b[:len(origin)]) != string(origin) {
			t.Fatalf("event %d does not start with its origin", i)
		}
		var got Event
		if err := decodeEvent(b, &got); err != nil {
			t.Fatalf("event %d: decode: %v", i, err)
		}
		if !sameEvent(&got, ev) {
			t.Fatalf("event %d: got %+v / %+v, want %+v / %+v", i, got, got.Message, *ev, ev.Message)
		}
	}
}

// Events from nodes of earlier builds come as JSON, with or without the
// origin member that one build put first.
func TestEventCodecReadsJSON(t *testing.T) {
	for i, ev := range codecEvents() {
		plain, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		withOrigin := append([]byte(`{"o":"old-node",`), plain[1:]...)
		for _, b := range [][]byte{plain, withOrigin} {
			var got Event
			if err := decodeEvent(b, &got); err != nil || !sameEvent(&got, ev) {
				t.Fatalf("event %d from %s: %+v, %v", i, b, got, err)
			}
		}
	}
}

// Every cut of a valid event, and a few bytes of garbage, is refused
// without a panic.
func TestEventCodecRefusesCorrupt(t *testing.T) {
	b, err := appendEvent(nil, eventOrigin("n"), codecEvents()[0])
	if err != nil {
		t.Fatal(err)
	}
	for n := 0; n < len(b); n++ {
		var ev Event
		if err := decodeEvent(b[:n], &ev); err == nil {
			t.Fatalf("a cut after %d of %d bytes decoded: %+v", n, len(b), ev)
		}
	}
	for _, junk := range [][]byte{nil, {0x02}, {0x02, 0xff}, {0x03, 0, 0}, []byte("not json")} {
		var ev Event
		if err := decodeEvent(junk, &ev); err == nil {
			t.Fatalf("%q decoded: %+v", junk, ev)
		}
	}
}

func FuzzDecodeEvent(f *testing.F) {
	for _, ev := range codecEvents() {
		b, _ := appendEvent(nil, eventOrigin("seed"), ev)
		f.Add(b)
		j, _ := json.Marshal(ev)
		f.Add(j)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var ev Event
		if decodeEvent(b, &ev) != nil || ev.Message == nil {
			return
		}
		// What decodes encodes again to an event that decodes the same.
		again, err := appendEvent(nil, eventOrigin("x"), &ev)
		if err != nil {
			return
		}
		var ev2 Event
		if err := decodeEvent(again, &ev2); err != nil || !sameEvent(&ev, &ev2) {
			t.Fatalf("re-encoded event: %+v, %v", ev2, err)
		}
	})
}
