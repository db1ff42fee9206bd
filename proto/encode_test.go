package proto

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// awkward holds strings that need escaping or replacement in JSON.
var awkward = map[string]string{
	"plain":         "hello",
	"empty":         "",
	"quote":         `say "hi"`,
	"backslash":     `C:\path\`,
	"controls":      "a\x00b\x01c\x1f\b\f\n\r\t\x7f",
	"line sep":      "a\u2028b\u2029c",
	"html":          "<script>&amp;</script>",
	"unicode":       "Grüße 👋 \ufffd",
	"invalid UTF-8": "a\xffb\xc3(c\xed\xa0\x80d\xf4\x90\x80\x80",
	"truncated":     "end\xe2\x82",
	"slash":         "u/d",
}

// jsonString returns s as encoding/json encodes it without HTML escaping.
func jsonString(t testing.TB, s string) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSuffix(buf.String(), "\n")
}

// canonical returns s as it reads back after a JSON round trip.
func canonical(t testing.TB, s string) string {
	var out string
	if err := json.Unmarshal([]byte(jsonString(t, s)), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestAppendStringMatchesEncodingJSON(t *testing.T) {
	for name, s := range awkward {
		t.Run(name, func(t *testing.T) {
			got := string(appendString(nil, s))
			if want := jsonString(t, s); got != want {
				t.Errorf("appendString(%q) = %s, want %s", s, got, want)
			}
		})
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range awkward {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := string(appendString([]byte("x"), s))
		if want := "x" + jsonString(t, s); got != want {
			t.Errorf("appendString(%q) = %s, want %s", s, got[1:], want[1:])
		}
	})
}

func decodeServer(t *testing.T, frame []byte) *ServerFrame {
	t.Helper()
	if !json.Valid(frame) {
		t.Fatalf("invalid JSON: %s", frame)
	}
	if bytes.HasSuffix(frame, []byte("\n")) {
		t.Fatalf("trailing newline: %q", frame)
	}
	f, err := DecodeServerFrame(frame)
	if err != nil {
		t.Fatalf("DecodeServerFrame(%s): %v", frame, err)
	}
	return f
}

func TestServerFramesRoundTrip(t *testing.T) {
	berlin := time.FixedZone("CEST", 2*60*60)
	sentAt := time.Date(2025, 6, 1, 14, 30, 15, 123456789, berlin)
	for name, s := range awkward {
		t.Run(name, func(t *testing.T) {
			want := canonical(t, s)
			prefix := []byte("prefix")

			out := AppendReady(prefix, s, s)
			f := decodeServer(t, out[len(prefix):])
			if !reflect.DeepEqual(*f, ServerFrame{Type: TypeReady, UserID: want, DeviceID: want}) {
				t.Errorf("ready: got %+v", *f)
			}

			out = AppendSent(prefix, s, s, 1<<64-1, sentAt)
			f = decodeServer(t, out[len(prefix):])
			if f.Type != TypeSent || f.Ref != want || f.ID != want || f.Seq != 1<<64-1 || !f.SentAt.Equal(sentAt) {
				t.Errorf("sent: got %+v", *f)
			}
			if f.SentAt.Location() != time.UTC || !bytes.Contains(out, []byte(`"2025-06-01T12:30:15.123456789Z"`)) {
				t.Errorf("sent_at not in UTC: %s", out)
			}

			out = AppendError(prefix, s, Code(s), s)
			f = decodeServer(t, out[len(prefix):])
			if !reflect.DeepEqual(*f, ServerFrame{Type: TypeError, Ref: want, Code: Code(want), ErrMessage: want}) {
				t.Errorf("error: got %+v", *f)
			}
		})
	}
}

func TestAppendErrorOmitsEmptyRef(t *testing.T) {
	got := string(AppendError(nil, "", CodeInvalidRequest, "bad"))
	want := `{"type":"error","code":"invalid_request","message":"bad"}`
	if got != want {
		t.Errorf("AppendError = %s, want %s", got, want)
	}
	got = string(AppendError(nil, "r1", CodeRateLimited, "slow down"))
	want = `{"type":"error","ref":"r1","code":"rate_limited","message":"slow down"}`
	if got != want {
		t.Errorf("AppendError = %s, want %s", got, want)
	}
}

func TestRefOnlyFrames(t *testing.T) {
	for _, typ := range []string{TypePong, TypeSynced} {
		var got []byte
		if typ == TypePong {
			got = AppendPong(nil, "r\"1")
		} else {
			got = AppendSynced(nil, "r\"1")
		}
		if want := `{"type":"` + typ + `","ref":"r\"1"}`; string(got) != want {
			t.Errorf("got %s, want %s", got, want)
		}
		if f := decodeServer(t, got); f.Type != typ || f.Ref != "r\"1" {
			t.Errorf("decoded %+v", *f)
		}
	}
}

func TestFixedFrames(t *testing.T) {
	tests := map[string]struct {
		got  []byte
		want string
	}{
		"pong":   {got: AppendPong(nil, ""), want: TypePong},
		"synced": {got: AppendSynced(nil, ""), want: TypeSynced},
		"ping":   {got: AppendPing(nil), want: TypePing},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if want := `{"type":"` + tc.want + `"}`; string(tc.got) != want {
				t.Errorf("got %s, want %s", tc.got, want)
			}
			if f := decodeServer(t, tc.got); !reflect.DeepEqual(*f, ServerFrame{Type: tc.want}) {
				t.Errorf("decoded %+v", *f)
			}
		})
	}
}

func testMessage(s string) *Message {
	return &Message{
		ID:           s + "id",
		Conversation: s + "conv",
		Seq:          42,
		Sender:       Sender{UserID: s + "user", DeviceID: s + "device"},
		SentAt:       time.Date(2025, 6, 1, 14, 30, 15, 500_000_000, time.FixedZone("X", -3*60*60)),
		ExpiresAt:    time.Date(2025, 7, 1, 17, 30, 15, 0, time.UTC),
		Ciphertext:   []byte("\x00\xffciphertext\n"),
		Keys: map[string][]byte{
			"other/device": []byte("other key"),
			s + "u/d":      []byte("my key"),
			"u/other":      []byte("not mine"),
		},
		Attachments: []string{s + "a1", "a2"},
	}
}

func TestAppendMessageRoundTrip(t *testing.T) {
	for name, s := range awkward {
		t.Run(name, func(t *testing.T) {
			m := testMessage(s)
			out := AppendMessage([]byte("prefix"), m, s+"u/d")
			f := decodeServer(t, out[len("prefix"):])
			if f.Type != TypeMessage || f.Message == nil {
				t.Fatalf("got %+v", *f)
			}
			c := func(x string) string { return canonical(t, x) }
			want := &Message{
				ID:           c(m.ID),
				Conversation: c(m.Conversation),
				Seq:          m.Seq,
				Sender:       Sender{UserID: c(m.Sender.UserID), DeviceID: c(m.Sender.DeviceID)},
				SentAt:       m.SentAt.UTC(),
				ExpiresAt:    m.ExpiresAt.UTC(),
				Ciphertext:   m.Ciphertext,
				Keys:         map[string][]byte{c(s + "u/d"): []byte("my key")},
				Attachments:  []string{c(m.Attachments[0]), "a2"},
			}
			if !reflect.DeepEqual(f.Message, want) {
				t.Errorf("got  %+v\nwant %+v", *f.Message, *want)
			}

			// The message object alone is what the frame embeds.
			obj := AppendMessageJSON(nil, m, s+"u/d")
			if !bytes.Equal(out[len("prefix"):], append(append([]byte(`{"type":"message","message":`), obj...), '}')) {
				t.Errorf("AppendMessage does not embed AppendMessageJSON:\n%s\n%s", out, obj)
			}
		})
	}
}

func TestAppendMessageKeyFiltering(t *testing.T) {
	m := testMessage("")
	tests := map[string]struct {
		keyName string
		want    map[string][]byte
	}{
		"own key only":  {keyName: "u/d", want: map[string][]byte{"u/d": []byte("my key")}},
		"other device":  {keyName: "u/other", want: map[string][]byte{"u/other": []byte("not mine")}},
		"absent key":    {keyName: "u/none", want: map[string][]byte{}},
		"empty keyName": {keyName: "", want: map[string][]byte{}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var got Message
			raw := AppendMessageJSON(nil, m, tc.keyName)
			if err := json.Unmarshal(raw, &got); err != nil {
				t.Fatalf("%s: %v", raw, err)
			}
			if !reflect.DeepEqual(got.Keys, tc.want) {
				t.Errorf("keys = %v, want %v (%s)", got.Keys, tc.want, raw)
			}
			if len(tc.want) == 0 && !bytes.Contains(raw, []byte(`"keys":{}`)) {
				t.Errorf("keys not an empty object: %s", raw)
			}
		})
	}
}

func TestAppendMessageEmptyAttachments(t *testing.T) {
	m := testMessage("")
	m.Attachments = nil
	raw := AppendMessageJSON(nil, m, "u/d")
	if !bytes.HasSuffix(raw, []byte(`,"attachments":[]}`)) {
		t.Errorf("attachments not []: %s", raw)
	}
	want := `{"id":"id","conversation":"conv","seq":42,"sender":{"user_id":"user","device_id":"device"},` +
		`"sent_at":"2025-06-01T17:30:15.5Z","expires_at":"2025-07-01T17:30:15Z","ciphertext":"AP9jaXBoZXJ0ZXh0Cg==",` +
		`"keys":{"u/d":"bXkga2V5"},"attachments":[]}`
	if string(raw) != want {
		t.Errorf("AppendMessageJSON =\n%s\nwant\n%s", raw, want)
	}
}

func TestClientFramesRoundTrip(t *testing.T) {
	for name, s := range awkward {
		if s == "" {
			continue // not a valid id: the decoder's tests cover it
		}
		t.Run(name, func(t *testing.T) {
			c := canonical(t, s)
			if !validID(c) {
				t.Fatalf("%q is not a valid id", c)
			}

			out := AppendAuth(nil, s)
			f, err := DecodeClientFrame(out)
			if err != nil || f.Type != TypeAuth || f.Token != c {
				t.Errorf("auth %s: %+v, %v", out, f, err)
			}

			dev := s // a device id has no control characters (ValidDeviceID)
			if ContainsControl(s) {
				dev = "dev"
			}
			send := &Send{
				Conversation: s,
				ClientID:     s,
				Ciphertext:   []byte{0, 1, 2, 0xff},
				Keys:         map[string][]byte{s + "/" + dev: {1}, "b/c": {2}},
				Attachments:  []string{s, "x"},
			}
			out = AppendSendFrame(nil, s, send)
			f, err = DecodeClientFrame(out)
			if err != nil {
				t.Fatalf("send %s: %v", out, err)
			}
			want := &Send{
				Conversation: c,
				ClientID:     c,
				Ciphertext:   send.Ciphertext,
				Keys:         map[string][]byte{c + "/" + canonical(t, dev): {1}, "b/c": {2}},
				Attachments:  []string{c, "x"},
			}
			if f.Type != TypeSend || f.Ref != c || !reflect.DeepEqual(f.Send, want) {
				t.Errorf("send %s: got %+v %+v", out, f, f.Send)
			}

			cursors := map[string]uint64{s: 1<<64 - 1, "a": 0, "b": 7}
			out = AppendSync(nil, cursors)
			f, err = DecodeClientFrame(out)
			wantCursors := map[string]uint64{c: 1<<64 - 1, "a": 0, "b": 7}
			if err != nil || f.Type != TypeSync || !reflect.DeepEqual(f.Cursors, wantCursors) {
				t.Errorf("sync %s: %+v, %v", out, f, err)
			}
		})
	}
}

func TestClientFramesExact(t *testing.T) {
	tests := map[string]struct {
		got  []byte
		want string
	}{
		"auth": {got: AppendAuth(nil, "tok"), want: `{"type":"auth","token":"tok"}`},
		"sync nil": {
			got: AppendSync(nil, nil), want: `{"type":"sync"}`,
		},
		"sync empty": {
			got: AppendSync(nil, map[string]uint64{}), want: `{"type":"sync","cursors":{}}`,
		},
		"sync sorted": {
			got: AppendSync(nil, map[string]uint64{"b": 2, "a": 1, "c": 3}), want: `{"type":"sync","cursors":{"a":1,"b":2,"c":3}}`,
		},
		"send minimal": {
			got:  AppendSendFrame(nil, "", &Send{ClientID: "k", Ciphertext: []byte("hi"), Keys: map[string][]byte{"u/b": {1}, "u/a": {2}}}),
			want: `{"type":"send","client_id":"k","ciphertext":"aGk=","keys":{"u/a":"Ag==","u/b":"AQ=="}}`,
		},
		"send full": {
			got: AppendSendFrame(nil, "r", &Send{Conversation: "c", ClientID: "k", Ciphertext: []byte("hi"),
				Keys: map[string][]byte{"u/a": {2}}, Attachments: []string{"x", "y"}}),
			want: `{"type":"send","ref":"r","conversation":"c","client_id":"k","ciphertext":"aGk=","keys":{"u/a":"Ag=="},"attachments":["x","y"]}`,
		},
		"send nil": {
			got: AppendSendFrame(nil, "", nil), want: `{"type":"send","client_id":"","ciphertext":"","keys":{}}`,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if string(tc.got) != tc.want {
				t.Errorf("got  %s\nwant %s", tc.got, tc.want)
			}
		})
	}
}

func TestDecodeServerFrame(t *testing.T) {
	valid := map[string]struct {
		frame string
		want  ServerFrame
	}{
		"unknown type": {frame: `{"type":"typing","seq":"not a number","message":7}`, want: ServerFrame{Type: "typing"}},
		"ready":        {frame: `{"type":"ready","user_id":"u","device_id":"d","extra":1}`, want: ServerFrame{Type: TypeReady, UserID: "u", DeviceID: "d"}},
		"error without ref": {
			frame: `{"type":"error","code":"forbidden","message":"no"}`,
			want:  ServerFrame{Type: TypeError, Code: CodeForbidden, ErrMessage: "no"},
		},
	}
	for name, tc := range valid {
		t.Run(name, func(t *testing.T) {
			f, err := DecodeServerFrame([]byte(tc.frame))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*f, tc.want) {
				t.Errorf("got %+v, want %+v", *f, tc.want)
			}
		})
	}

	invalid := map[string]string{
		"not JSON":              `{`,
		"no type":               `{"ref":"r"}`,
		"type not a string":     `{"type":5}`,
		"message without body":  `{"type":"message"}`,
		"message is a string":   `{"type":"message","message":"hi"}`,
		"error message object":  `{"type":"error","code":"internal","message":{}}`,
		"sent with bad time":    `{"type":"sent","ref":"r","id":"i","seq":1,"sent_at":"yesterday"}`,
		"sent with bad seq":     `{"type":"sent","seq":-1}`,
		"bad base64 in message": `{"type":"message","message":{"ciphertext":"-_"}}`,
		"array":                 `[]`,
	}
	for name, frame := range invalid {
		t.Run(name, func(t *testing.T) {
			if f, err := DecodeServerFrame([]byte(frame)); err == nil {
				t.Errorf("DecodeServerFrame accepted %s: %+v", frame, *f)
			}
		})
	}
}

// TestAppendMessageNoAlloc guards the gateway's hot path: writing a message
// frame into a buffer with enough capacity must not allocate.
func TestAppendMessageNoAlloc(t *testing.T) {
	m := benchMessage()
	buf := make([]byte, 0, 2*len(AppendMessage(nil, m, "user/device")))
	allocs := testing.AllocsPerRun(100, func() {
		buf = AppendMessage(buf[:0], m, "user/device")
	})
	if allocs != 0 {
		t.Errorf("AppendMessage allocated %v times per run, want 0", allocs)
	}
}

func benchMessage() *Message {
	keys := make(map[string][]byte, 30)
	for i := range 30 {
		keys[KeyName("user", string(rune('a'+i)))] = bytes.Repeat([]byte{byte(i)}, 80)
	}
	keys["user/device"] = bytes.Repeat([]byte{7}, 80)
	return &Message{
		ID:           "01JXR5Q8Z4T3N6M2K9W0V7B1C5",
		Conversation: "conv-01JXR5Q8Z4T3N6M2K9W0V7B1C5",
		Seq:          123456,
		Sender:       Sender{UserID: "usr_3f9a7c", DeviceID: "iPhone of Jana"},
		SentAt:       time.Date(2025, 6, 1, 14, 30, 15, 123456789, time.UTC),
		ExpiresAt:    time.Date(2025, 7, 1, 14, 30, 15, 123456789, time.UTC),
		Ciphertext:   bytes.Repeat([]byte("0123456789abcdef"), 64), // 1 KiB
		Keys:         keys,
		Attachments:  []string{"att_1", "att_2"},
	}
}

func BenchmarkAppendMessage(b *testing.B) {
	m := benchMessage()
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendMessage(buf[:0], m, "user/device")
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkAppendMessageEncodingJSON(b *testing.B) {
	m := benchMessage()
	b.ReportAllocs()
	for b.Loop() {
		mm := *m
		mm.Keys = map[string][]byte{"user/device": m.Keys["user/device"]}
		if _, err := json.Marshal(struct {
			Type    string   `json:"type"`
			Message *Message `json:"message"`
		}{TypeMessage, &mm}); err != nil {
			b.Fatal(err)
		}
	}
}

// TestQuoteShortCutsWholeCharacters: a long name in an error message is
// shortened at a character boundary, so the message stays valid UTF-8
// (a device id of 128 × "ä" was cut inside a character).
func TestQuoteShortCutsWholeCharacters(t *testing.T) {
	for _, s := range []string{"0123456789abcdefghijkl/" + strings.Repeat("ä", 128), "a" + strings.Repeat("ä", 100),
		"ab" + strings.Repeat("€", 60), strings.Repeat("x", 100)} {
		q := quoteShort(s)
		if !utf8.ValidString(q) || strings.Contains(q, `\x`) || !strings.HasSuffix(q, `"…`) || len(q) > 64+len(`""…`) {
			t.Errorf("quoteShort(%.8q…) = %s", s, q)
		}
	}
	if q := quoteShort("kurz"); q != `"kurz"` {
		t.Errorf("quoteShort(kurz) = %s", q)
	}
}
