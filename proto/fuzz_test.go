package proto

import (
	"encoding/base64"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzDecodeClientFrame checks that DecodeClientFrame never panics, that
// it rejects with the right kind of error, and that every frame it accepts
// obeys all limits (checked again here, independently) and survives a
// round trip through the client encoders.
func FuzzDecodeClientFrame(f *testing.F) {
	seeds := []string{
		`{"type":"ping"}`,
		`{"type":"ping","ref":"p1","x":[1,{"y":null}]}`,
		`{"type":"auth","token":"secret-token"}`,
		`{"type":"auth","token":""}`,
		`{"type":"sync"}`,
		`{"type":"sync","cursors":{}}`,
		`{"type":"sync","cursors":{"c1":0,"c2":17,"c3":18446744073709551615}}`,
		`{"type":"sync","cursors":{"c1":-1}}`,
		`{"type":"sync","cursors":{"c1":1.5,"":2}}`,
		`{"type":"sync","cursors":{"c1":18446744073709551616}}`,
		sendFrame(nil),
		sendFrame(set("keys", map[string]any{"u/d/e": b64("k"), "v/w": b64("l")})),
		sendFrame(set("attachments", []any{"a1", "a1"})),
		sendFrame(set("ciphertext", "aGVsbG8")),
		sendFrame(set("ciphertext", "aGVs\nbG8=")),
		sendFrame(set("keys", map[string]any{"/d": b64("k")})),
		sendFrame(set("keys", map[string]any{"u/d": base64.StdEncoding.EncodeToString(make([]byte, MaxWrappedKeySize+1))})),
		`{"type":"send","ref":"r\u0031","conversation":"c","client_id":"k","ciphertext":"a\u0047k=","keys":{"u\/d":"aw=="}}`,
		`{"type":"send","ref":5}`,
		`{"type":"shout"}`,
		`{"TYPE":"ping"}`,
		`{"type":"ping"`,
		`[]`,
		`null`,
		"{\"type\":\"ping\",\"x\":\"\xff\"}",
		``,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		frame, err := DecodeClientFrame(data)
		if len(frame.Ref) > MaxIDLen {
			t.Fatalf("Ref of %d bytes", len(frame.Ref))
		}
		if err != nil {
			if err.Code != CodeInvalidRequest && err.Code != CodePayloadTooLarge {
				t.Fatalf("unexpected code %q: %v", err.Code, err)
			}
			if err.Message == "" {
				t.Fatal("empty error message")
			}
			if frame.Send != nil || frame.Cursors != nil || frame.Token != "" {
				t.Fatalf("rejected frame has a payload: %+v", frame)
			}
			return
		}
		checkAccepted(t, data, &frame)

		// Re-encode with the client encoders and decode again.
		var again []byte
		switch frame.Type {
		case TypeAuth:
			again = AppendAuth(nil, frame.Token)
		case TypeSend:
			again = AppendSendFrame(nil, frame.Ref, frame.Send)
		case TypeSync:
			again = AppendSync(nil, frame.Cursors)
		case TypePing:
			again = AppendPing(nil)
		}
		frame2, err := DecodeClientFrame(again)
		if err != nil {
			t.Fatalf("re-encoded frame %s rejected: %v", again, err)
		}
		if frame.Type != TypeSend {
			frame.Ref = "" // only send frames carry the ref when re-encoded
		}
		if !reflect.DeepEqual(frame, frame2) {
			t.Fatalf("round trip changed the frame:\n%+v\n%+v", frame, frame2)
		}
	})
}

// checkAccepted re-checks every rule for a frame DecodeClientFrame
// accepted, without using the package's own validation helpers.
func checkAccepted(t *testing.T, data []byte, f *ClientFrame) {
	t.Helper()
	if len(data) > MaxFrameSize || !utf8.Valid(data) {
		t.Fatalf("accepted a frame of %d bytes or invalid UTF-8", len(data))
	}
	okID := func(s string) bool { return len(s) >= 1 && len(s) <= MaxIDLen }
	okDevice := func(s string) bool { return s != "" && len([]rune(s)) <= MaxIDLen } // characters
	switch f.Type {
	case TypePing:
		if f.Token != "" || f.Send != nil || f.Cursors != nil {
			t.Fatalf("ping with payload: %+v", f)
		}
	case TypeAuth:
		if len(f.Token) < 1 || len(f.Token) > MaxTokenLen {
			t.Fatalf("token of %d bytes", len(f.Token))
		}
		if f.Send != nil || f.Cursors != nil {
			t.Fatalf("auth with other payload: %+v", f)
		}
	case TypeSync:
		if len(f.Cursors) > MaxCursors {
			t.Fatalf("%d cursors", len(f.Cursors))
		}
		for id := range f.Cursors {
			if !okID(id) {
				t.Fatalf("cursor conversation id %q", id)
			}
		}
		if f.Token != "" || f.Send != nil {
			t.Fatalf("sync with other payload: %+v", f)
		}
	case TypeSend:
		s := f.Send
		if s == nil {
			t.Fatal("send without payload")
		}
		if f.Token != "" || f.Cursors != nil {
			t.Fatalf("send with other payload: %+v", f)
		}
		if !okID(s.Conversation) || !okID(s.ClientID) {
			t.Fatalf("conversation %q, client_id %q", s.Conversation, s.ClientID)
		}
		if len(s.Ciphertext) < 1 || len(s.Ciphertext) > MaxCiphertextSize {
			t.Fatalf("ciphertext of %d bytes", len(s.Ciphertext))
		}
		if len(s.Keys) < 1 || len(s.Keys) > MaxKeys {
			t.Fatalf("%d keys", len(s.Keys))
		}
		for name, key := range s.Keys {
			i := strings.IndexByte(name, '/')
			if i < 0 || !okID(name[:i]) || !okDevice(name[i+1:]) {
				t.Fatalf("key name %q", name)
			}
			if len(key) < 1 || len(key) > MaxWrappedKeySize {
				t.Fatalf("wrapped key of %d bytes", len(key))
			}
		}
		if len(s.Attachments) > MaxAttachments {
			t.Fatalf("%d attachments", len(s.Attachments))
		}
		seen := make(map[string]bool)
		for _, a := range s.Attachments {
			if !okID(a) || seen[a] {
				t.Fatalf("attachment %q (duplicate: %v)", a, seen[a])
			}
			seen[a] = true
		}
	default:
		t.Fatalf("accepted type %q", f.Type)
	}
}

// FuzzDecodeServerFrame checks that DecodeServerFrame never panics and that
// what it accepts has a type.
func FuzzDecodeServerFrame(f *testing.F) {
	f.Add(AppendReady(nil, "u", "d"))
	f.Add(AppendSent(nil, "r", "i", 1, benchMessage().SentAt))
	f.Add(AppendMessage(nil, benchMessage(), "user/device"))
	f.Add(AppendError(nil, "r", CodeForbidden, "no"))
	f.Add(AppendPong(nil, ""))
	f.Add(AppendSynced(nil, "r1"))
	f.Add([]byte(`{"type":"message","message":"text"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		frame, err := DecodeServerFrame(data)
		if err == nil && (frame == nil || frame.Type == "") {
			t.Fatalf("accepted %q as %+v", data, frame)
		}
	})
}
