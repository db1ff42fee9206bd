package proto

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// sendFrame returns a valid send frame as JSON after applying mod to its
// members.
func sendFrame(mod func(m map[string]any)) string {
	m := map[string]any{
		"type":         "send",
		"ref":          "r1",
		"conversation": "c1",
		"client_id":    "k1",
		"ciphertext":   b64("hello"),
		"keys":         map[string]any{"u1/d1": b64("key1")},
		"attachments":  []any{"a1"},
	}
	if mod != nil {
		mod(m)
	}
	return mustJSON(m)
}

// syncFrame returns a sync frame with the given cursors member.
func syncFrame(cursors string) string {
	return `{"type":"sync","cursors":` + cursors + `}`
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// manyKeys returns n keys named u<i>/d.
func manyKeys(n int) map[string]any {
	keys := make(map[string]any, n)
	for i := range n {
		keys[fmt.Sprintf("u%d/d", i)] = b64("k")
	}
	return keys
}

func manyIDs(n int) []any {
	ids := make([]any, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("a%d", i)
	}
	return ids
}

func manyCursors(n int) string {
	var sb strings.Builder
	sb.WriteByte('{')
	for i := range n {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `"c%d":%d`, i, i)
	}
	sb.WriteByte('}')
	return sb.String()
}

func set(key string, v any) func(map[string]any) {
	return func(m map[string]any) { m[key] = v }
}

func del(key string) func(map[string]any) {
	return func(m map[string]any) { delete(m, key) }
}

func TestDecodeClientFrameValid(t *testing.T) {
	long := strings.Repeat("x", MaxIDLen)
	tests := map[string]struct {
		frame string
		want  ClientFrame
	}{
		"ping": {
			frame: `{"type":"ping"}`,
			want:  ClientFrame{Type: TypePing},
		},
		"ping with ref and unknown members": {
			frame: ` {"type":"ping","ref":"p1","extra":{"a":[1,2]},"token":5} `,
			want:  ClientFrame{Type: TypePing, Ref: "p1"},
		},
		"null ref is absent": {
			frame: `{"type":"ping","ref":null}`,
			want:  ClientFrame{Type: TypePing},
		},
		"ref of MaxIDLen": {
			frame: `{"type":"ping","ref":"` + long + `"}`,
			want:  ClientFrame{Type: TypePing, Ref: long},
		},
		"last duplicate wins": {
			frame: `{"type":"send","type":"ping"}`,
			want:  ClientFrame{Type: TypePing},
		},
		"auth": {
			frame: `{"type":"auth","token":"tok"}`,
			want:  ClientFrame{Type: TypeAuth, Token: "tok"},
		},
		"auth token of MaxTokenLen": {
			frame: `{"type":"auth","token":"` + strings.Repeat("t", MaxTokenLen) + `"}`,
			want:  ClientFrame{Type: TypeAuth, Token: strings.Repeat("t", MaxTokenLen)},
		},
		"sync without cursors": {
			frame: `{"type":"sync"}`,
			want:  ClientFrame{Type: TypeSync},
		},
		"sync null cursors": {
			frame: syncFrame(`null`),
			want:  ClientFrame{Type: TypeSync},
		},
		"sync empty cursors": {
			frame: syncFrame(`{}`),
			want:  ClientFrame{Type: TypeSync, Cursors: map[string]uint64{}},
		},
		"sync cursors": {
			frame: syncFrame(`{"c1":0,"c2":17,"c3":18446744073709551615}`),
			want:  ClientFrame{Type: TypeSync, Cursors: map[string]uint64{"c1": 0, "c2": 17, "c3": 1<<64 - 1}},
		},
		"send": {
			frame: sendFrame(nil),
			want: ClientFrame{Type: TypeSend, Ref: "r1", Send: &Send{
				Conversation: "c1", ClientID: "k1", Ciphertext: []byte("hello"),
				Keys: map[string][]byte{"u1/d1": []byte("key1")}, Attachments: []string{"a1"},
			}},
		},
		"send without ref and attachments": {
			frame: sendFrame(func(m map[string]any) { delete(m, "ref"); delete(m, "attachments") }),
			want: ClientFrame{Type: TypeSend, Send: &Send{
				Conversation: "c1", ClientID: "k1", Ciphertext: []byte("hello"),
				Keys: map[string][]byte{"u1/d1": []byte("key1")},
			}},
		},
		"send with escapes, device id with slash, empty attachments": {
			frame: `{"type":"send","conversation":"c\u0031","client_id":"k\"1","ciphertext":"aGVs\u0062G8=",` +
				`"keys":{"u1/d/2":"a2V5MQ=="},"attachments":[]}`,
			want: ClientFrame{Type: TypeSend, Send: &Send{
				Conversation: "c1", ClientID: `k"1`, Ciphertext: []byte("hello"),
				Keys: map[string][]byte{"u1/d/2": []byte("key1")},
			}},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := DecodeClientFrame([]byte(tc.frame))
			if err != nil {
				t.Fatalf("DecodeClientFrame: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
				if got.Send != nil && tc.want.Send != nil {
					t.Errorf("send got %+v, want %+v", *got.Send, *tc.want.Send)
				}
			}
		})
	}
}

func TestDecodeClientFrameLimits(t *testing.T) {
	long := strings.Repeat("x", MaxIDLen)
	tests := map[string]struct {
		frame string
		check func(*ClientFrame) bool
	}{
		"ciphertext of MaxCiphertextSize": {
			frame: sendFrame(set("ciphertext", base64.StdEncoding.EncodeToString(make([]byte, MaxCiphertextSize)))),
			check: func(f *ClientFrame) bool { return len(f.Send.Ciphertext) == MaxCiphertextSize },
		},
		"wrapped key of MaxWrappedKeySize": {
			frame: sendFrame(set("keys", map[string]any{"u/d": base64.StdEncoding.EncodeToString(make([]byte, MaxWrappedKeySize))})),
			check: func(f *ClientFrame) bool { return len(f.Send.Keys["u/d"]) == MaxWrappedKeySize },
		},
		"MaxKeys keys": {
			frame: sendFrame(set("keys", manyKeys(MaxKeys))),
			check: func(f *ClientFrame) bool { return len(f.Send.Keys) == MaxKeys },
		},
		"MaxAttachments attachments": {
			frame: sendFrame(set("attachments", manyIDs(MaxAttachments))),
			check: func(f *ClientFrame) bool { return len(f.Send.Attachments) == MaxAttachments },
		},
		"ids of MaxIDLen": {
			frame: sendFrame(func(m map[string]any) {
				m["conversation"] = long
				m["client_id"] = long
				m["keys"] = map[string]any{long + "/" + long: b64("k")}
				m["attachments"] = []any{long}
			}),
			check: func(f *ClientFrame) bool { return f.Send.Conversation == long && f.Send.ClientID == long },
		},
		"MaxCursors cursors": {
			frame: syncFrame(manyCursors(MaxCursors)),
			check: func(f *ClientFrame) bool { return len(f.Cursors) == MaxCursors },
		},
		"cursor id of MaxIDLen": {
			frame: syncFrame(`{"` + long + `":1}`),
			check: func(f *ClientFrame) bool { return f.Cursors[long] == 1 },
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := DecodeClientFrame([]byte(tc.frame))
			if err != nil {
				t.Fatalf("DecodeClientFrame: %v", err)
			}
			if !tc.check(&got) {
				t.Errorf("decoded frame %+v fails check", got)
			}
		})
	}
}

func TestDecodeClientFrameInvalid(t *testing.T) {
	long := strings.Repeat("x", MaxIDLen+1)
	tests := map[string]struct {
		frame   string
		code    Code
		wantRef string // Ref expected in the rejected frame
	}{
		// Frame structure.
		"empty":            {frame: ``, code: CodeInvalidRequest},
		"whitespace":       {frame: "  \n", code: CodeInvalidRequest},
		"not JSON":         {frame: `hello`, code: CodeInvalidRequest},
		"truncated":        {frame: `{"type":"ping"`, code: CodeInvalidRequest},
		"array":            {frame: `[{"type":"ping"}]`, code: CodeInvalidRequest},
		"null":             {frame: `null`, code: CodeInvalidRequest},
		"string":           {frame: `"ping"`, code: CodeInvalidRequest},
		"number":           {frame: `1`, code: CodeInvalidRequest},
		"two objects":      {frame: `{"type":"ping"}{"type":"ping"}`, code: CodeInvalidRequest},
		"trailing garbage": {frame: `{"type":"ping"} x`, code: CodeInvalidRequest},
		"invalid UTF-8":    {frame: "{\"type\":\"ping\",\"x\":\"\xff\"}", code: CodeInvalidRequest},
		// A lone surrogate escape would decode to U+FFFD, like a bad byte.
		"lone surrogate escape": {frame: `{"type":"send","ref":"r1","conversation":"c","client_id":"a\ud800","ciphertext":"AAAA","keys":{"u/d":"AAAA"}}`, code: CodeInvalidRequest},
		"lone low surrogate":    {frame: `{"type":"ping","x":"\\\udfff"}`, code: CodeInvalidRequest},
		"frame too large":       {frame: `{"type":"ping","x":"` + strings.Repeat("x", MaxFrameSize) + `"}`, code: CodePayloadTooLarge},
		"missing type":          {frame: `{"ref":"r1"}`, code: CodeInvalidRequest, wantRef: "r1"},
		"null type":             {frame: `{"type":null,"ref":"r1"}`, code: CodeInvalidRequest, wantRef: "r1"},
		"empty type":            {frame: `{"type":"","ref":"r1"}`, code: CodeInvalidRequest, wantRef: "r1"},
		"type is a number":      {frame: `{"type":1,"ref":"r1"}`, code: CodeInvalidRequest, wantRef: "r1"},
		"type is an object":     {frame: `{"type":{},"ref":"r1"}`, code: CodeInvalidRequest, wantRef: "r1"},
		"unknown type":          {frame: `{"type":"shout","ref":"r1"}`, code: CodeInvalidRequest, wantRef: "r1"},
		"server frame type":     {frame: `{"type":"pong"}`, code: CodeInvalidRequest},
		"type in upper case":    {frame: `{"TYPE":"ping"}`, code: CodeInvalidRequest},
		"type differs in case": {
			frame: `{"type":"Ping"}`, code: CodeInvalidRequest,
		},
		"ref is a number": {frame: `{"type":"ping","ref":1}`, code: CodeInvalidRequest},
		"ref too long":    {frame: `{"type":"ping","ref":"` + long + `"}`, code: CodeInvalidRequest},

		// auth
		"auth without token": {frame: `{"type":"auth"}`, code: CodeInvalidRequest},
		"auth null token":    {frame: `{"type":"auth","token":null}`, code: CodeInvalidRequest},
		"auth empty token":   {frame: `{"type":"auth","token":""}`, code: CodeInvalidRequest},
		"auth token number":  {frame: `{"type":"auth","token":123}`, code: CodeInvalidRequest},
		"auth token too long": {
			frame: `{"type":"auth","token":"` + strings.Repeat("t", MaxTokenLen+1) + `"}`, code: CodeInvalidRequest,
		},

		// send: conversation and client_id
		"send missing conversation":  {frame: sendFrame(del("conversation")), code: CodeInvalidRequest, wantRef: "r1"},
		"send empty conversation":    {frame: sendFrame(set("conversation", "")), code: CodeInvalidRequest, wantRef: "r1"},
		"send conversation number":   {frame: sendFrame(set("conversation", 5)), code: CodeInvalidRequest, wantRef: "r1"},
		"send conversation too long": {frame: sendFrame(set("conversation", long)), code: CodeInvalidRequest, wantRef: "r1"},
		"send missing client_id":     {frame: sendFrame(del("client_id")), code: CodeInvalidRequest, wantRef: "r1"},
		"send empty client_id":       {frame: sendFrame(set("client_id", "")), code: CodeInvalidRequest, wantRef: "r1"},
		"send client_id array":       {frame: sendFrame(set("client_id", []any{"k"})), code: CodeInvalidRequest, wantRef: "r1"},
		"send client_id too long":    {frame: sendFrame(set("client_id", long)), code: CodeInvalidRequest, wantRef: "r1"},

		// send: ciphertext
		"send missing ciphertext":    {frame: sendFrame(del("ciphertext")), code: CodeInvalidRequest, wantRef: "r1"},
		"send empty ciphertext":      {frame: sendFrame(set("ciphertext", "")), code: CodeInvalidRequest, wantRef: "r1"},
		"send ciphertext number":     {frame: sendFrame(set("ciphertext", 42)), code: CodeInvalidRequest, wantRef: "r1"},
		"send ciphertext byte array": {frame: sendFrame(set("ciphertext", []any{1, 2})), code: CodeInvalidRequest, wantRef: "r1"},
		"send ciphertext URL-safe":   {frame: sendFrame(set("ciphertext", "-_-_")), code: CodeInvalidRequest, wantRef: "r1"},
		"send ciphertext unpadded":   {frame: sendFrame(set("ciphertext", "aGVsbG8")), code: CodeInvalidRequest, wantRef: "r1"},
		"send ciphertext over-padded": {
			frame: sendFrame(set("ciphertext", "aGVsbG8==")), code: CodeInvalidRequest, wantRef: "r1",
		},
		"send ciphertext with escaped newline": {
			frame: sendFrame(set("ciphertext", "aGVs\nbG8=")), code: CodeInvalidRequest, wantRef: "r1",
		},
		"send ciphertext with CR": {
			frame: sendFrame(set("ciphertext", "aGVs\rbG8=")), code: CodeInvalidRequest, wantRef: "r1",
		},
		"send ciphertext with space": {
			frame: sendFrame(set("ciphertext", "aGVs bG8=")), code: CodeInvalidRequest, wantRef: "r1",
		},
		"send ciphertext non-zero padding bits": {
			frame: sendFrame(set("ciphertext", "aGVsbG9=")), code: CodeInvalidRequest, wantRef: "r1",
		},
		"send ciphertext too large": {
			frame: sendFrame(set("ciphertext", base64.StdEncoding.EncodeToString(make([]byte, MaxCiphertextSize+1)))),
			code:  CodePayloadTooLarge, wantRef: "r1",
		},
		"send ciphertext encoding too long": {
			frame: sendFrame(set("ciphertext", strings.Repeat("!", base64.StdEncoding.EncodedLen(MaxCiphertextSize)+4))),
			code:  CodePayloadTooLarge, wantRef: "r1",
		},
		"send ciphertext too large without padding bytes": {
			// 87384 characters without '=' decode to 65538 bytes.
			frame: sendFrame(set("ciphertext", strings.Repeat("A", base64.StdEncoding.EncodedLen(MaxCiphertextSize)))),
			code:  CodePayloadTooLarge, wantRef: "r1",
		},

		// send: keys
		"send missing keys":    {frame: sendFrame(del("keys")), code: CodeInvalidRequest, wantRef: "r1"},
		"send null keys":       {frame: sendFrame(set("keys", nil)), code: CodeInvalidRequest, wantRef: "r1"},
		"send empty keys":      {frame: sendFrame(set("keys", map[string]any{})), code: CodeInvalidRequest, wantRef: "r1"},
		"send keys array":      {frame: sendFrame(set("keys", []any{b64("k")})), code: CodeInvalidRequest, wantRef: "r1"},
		"send keys string":     {frame: sendFrame(set("keys", "u/d")), code: CodeInvalidRequest, wantRef: "r1"},
		"send key value num":   {frame: sendFrame(set("keys", map[string]any{"u/d": 1})), code: CodeInvalidRequest, wantRef: "r1"},
		"send key value null":  {frame: sendFrame(set("keys", map[string]any{"u/d": nil})), code: CodeInvalidRequest, wantRef: "r1"},
		"send key value empty": {frame: sendFrame(set("keys", map[string]any{"u/d": ""})), code: CodeInvalidRequest, wantRef: "r1"},
		"send key value not base64": {
			frame: sendFrame(set("keys", map[string]any{"u/d": "a2V5MQ"})), code: CodeInvalidRequest, wantRef: "r1",
		},
		"send key name without slash": {
			frame: sendFrame(set("keys", map[string]any{"ud": b64("k")})), code: CodeInvalidRequest, wantRef: "r1",
		},
		"send key name empty": {
			frame: sendFrame(set("keys", map[string]any{"": b64("k")})), code: CodeInvalidRequest, wantRef: "r1",
		},
		"send key name empty user": {
			frame: sendFrame(set("keys", map[string]any{"/d": b64("k")})), code: CodeInvalidRequest, wantRef: "r1",
		},
		"send key name empty device": {
			frame: sendFrame(set("keys", map[string]any{"u/": b64("k")})), code: CodeInvalidRequest, wantRef: "r1",
		},
		"send key name only slash": {
			frame: sendFrame(set("keys", map[string]any{"/": b64("k")})), code: CodeInvalidRequest, wantRef: "r1",
		},
		"send key name user too long": {
			frame: sendFrame(set("keys", map[string]any{long + "/d": b64("k")})), code: CodeInvalidRequest, wantRef: "r1",
		},
		"send key name device too long": {
			frame: sendFrame(set("keys", map[string]any{"u/" + long: b64("k")})), code: CodeInvalidRequest, wantRef: "r1",
		},
		"send wrapped key too large": {
			frame: sendFrame(set("keys", map[string]any{"u/d": base64.StdEncoding.EncodeToString(make([]byte, MaxWrappedKeySize+1))})),
			code:  CodePayloadTooLarge, wantRef: "r1",
		},
		"send too many keys": {
			frame: sendFrame(set("keys", manyKeys(MaxKeys+1))), code: CodePayloadTooLarge, wantRef: "r1",
		},
		"send invalid key name beats too large key": {
			frame: sendFrame(set("keys", map[string]any{
				"a/a": base64.StdEncoding.EncodeToString(make([]byte, MaxWrappedKeySize+1)),
				"b/b": base64.StdEncoding.EncodeToString(make([]byte, MaxWrappedKeySize+1)),
				"c":   b64("k"),
				"d/d": base64.StdEncoding.EncodeToString(make([]byte, MaxWrappedKeySize+1)),
			})),
			code: CodeInvalidRequest, wantRef: "r1",
		},

		// send: attachments
		"send attachments object": {frame: sendFrame(set("attachments", map[string]any{})), code: CodeInvalidRequest, wantRef: "r1"},
		"send attachments string": {frame: sendFrame(set("attachments", "a1")), code: CodeInvalidRequest, wantRef: "r1"},
		"send attachment number":  {frame: sendFrame(set("attachments", []any{1})), code: CodeInvalidRequest, wantRef: "r1"},
		"send attachment null":    {frame: sendFrame(set("attachments", []any{nil})), code: CodeInvalidRequest, wantRef: "r1"},
		"send attachment empty":   {frame: sendFrame(set("attachments", []any{""})), code: CodeInvalidRequest, wantRef: "r1"},
		"send attachment too long": {
			frame: sendFrame(set("attachments", []any{long})), code: CodeInvalidRequest, wantRef: "r1",
		},
		"send duplicate attachments": {
			frame: sendFrame(set("attachments", []any{"a1", "a2", "a1"})), code: CodeInvalidRequest, wantRef: "r1",
		},
		"send too many attachments": {
			frame: sendFrame(set("attachments", manyIDs(MaxAttachments+1))), code: CodePayloadTooLarge, wantRef: "r1",
		},

		// sync
		"sync cursors array":       {frame: syncFrame(`[1]`), code: CodeInvalidRequest},
		"sync cursors number":      {frame: syncFrame(`1`), code: CodeInvalidRequest},
		"sync cursor negative":     {frame: syncFrame(`{"c1":-1}`), code: CodeInvalidRequest},
		"sync cursor negative 0":   {frame: syncFrame(`{"c1":-0}`), code: CodeInvalidRequest},
		"sync cursor fractional":   {frame: syncFrame(`{"c1":1.5}`), code: CodeInvalidRequest},
		"sync cursor with .0":      {frame: syncFrame(`{"c1":1.0}`), code: CodeInvalidRequest},
		"sync cursor exponent":     {frame: syncFrame(`{"c1":1e2}`), code: CodeInvalidRequest},
		"sync cursor string":       {frame: syncFrame(`{"c1":"1"}`), code: CodeInvalidRequest},
		"sync cursor null":         {frame: syncFrame(`{"c1":null}`), code: CodeInvalidRequest},
		"sync cursor bool":         {frame: syncFrame(`{"c1":true}`), code: CodeInvalidRequest},
		"sync cursor overflow":     {frame: syncFrame(`{"c1":18446744073709551616}`), code: CodeInvalidRequest},
		"sync cursor leading zero": {frame: syncFrame(`{"c1":01}`), code: CodeInvalidRequest},
		"sync empty conversation":  {frame: syncFrame(`{"":1}`), code: CodeInvalidRequest},
		"sync conversation too long": {
			frame: syncFrame(`{"` + long + `":1}`), code: CodeInvalidRequest,
		},
		"sync too many cursors": {frame: syncFrame(manyCursors(MaxCursors + 1)), code: CodePayloadTooLarge},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f, err := DecodeClientFrame([]byte(tc.frame))
			if err == nil {
				t.Fatalf("DecodeClientFrame accepted the frame: %+v", f)
			}
			if err.Code != tc.code {
				t.Errorf("code = %q (%v), want %q", err.Code, err, tc.code)
			}
			if err.Message == "" {
				t.Error("empty error message")
			}
			if f.Ref != tc.wantRef {
				t.Errorf("Ref = %q, want %q", f.Ref, tc.wantRef)
			}
			if f.Send != nil || f.Cursors != nil || f.Token != "" {
				t.Errorf("rejected frame has payload: %+v", f)
			}
		})
	}
}

func TestSendValidate(t *testing.T) {
	valid := func() *Send {
		return &Send{
			Conversation: "c1",
			ClientID:     "k1",
			Ciphertext:   []byte("ct"),
			Keys:         map[string][]byte{"u/d": []byte("k")},
			Attachments:  []string{"a1", "a2"},
		}
	}
	long := strings.Repeat("x", MaxIDLen+1)
	tests := map[string]struct {
		mod                 func(*Send)
		requireConversation bool
		code                Code // "" means valid
	}{
		"valid":                      {requireConversation: true},
		"valid without conversation": {mod: func(s *Send) { s.Conversation = "" }},
		"conversation not checked when not required": {
			mod: func(s *Send) { s.Conversation = long },
		},
		"missing conversation": {
			mod: func(s *Send) { s.Conversation = "" }, requireConversation: true, code: CodeInvalidRequest,
		},
		"conversation too long": {
			mod: func(s *Send) { s.Conversation = long }, requireConversation: true, code: CodeInvalidRequest,
		},
		"missing client_id":     {mod: func(s *Send) { s.ClientID = "" }, code: CodeInvalidRequest},
		"client_id too long":    {mod: func(s *Send) { s.ClientID = long }, code: CodeInvalidRequest},
		"nil ciphertext":        {mod: func(s *Send) { s.Ciphertext = nil }, code: CodeInvalidRequest},
		"ciphertext too large":  {mod: func(s *Send) { s.Ciphertext = make([]byte, MaxCiphertextSize+1) }, code: CodePayloadTooLarge},
		"nil keys":              {mod: func(s *Send) { s.Keys = nil }, code: CodeInvalidRequest},
		"empty wrapped key":     {mod: func(s *Send) { s.Keys["u/d"] = nil }, code: CodeInvalidRequest},
		"bad key name":          {mod: func(s *Send) { s.Keys["u"] = []byte("k") }, code: CodeInvalidRequest},
		"wrapped key too large": {mod: func(s *Send) { s.Keys["u/d"] = make([]byte, MaxWrappedKeySize+1) }, code: CodePayloadTooLarge},
		"too many keys": {
			mod: func(s *Send) {
				for i := range MaxKeys {
					s.Keys[fmt.Sprintf("u/%d", i)] = []byte("k")
				}
			},
			code: CodePayloadTooLarge,
		},
		"empty attachment":     {mod: func(s *Send) { s.Attachments[1] = "" }, code: CodeInvalidRequest},
		"attachment too long":  {mod: func(s *Send) { s.Attachments[1] = long }, code: CodeInvalidRequest},
		"duplicate attachment": {mod: func(s *Send) { s.Attachments[1] = "a1" }, code: CodeInvalidRequest},
		"too many attachments": {
			mod:  func(s *Send) { s.Attachments = make([]string, MaxAttachments+1) },
			code: CodePayloadTooLarge,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s := valid()
			if tc.mod != nil {
				tc.mod(s)
			}
			err := s.Validate(tc.requireConversation)
			switch {
			case tc.code == "" && err != nil:
				t.Errorf("Validate: %v", err)
			case tc.code != "" && err == nil:
				t.Errorf("Validate accepted %+v", s)
			case tc.code != "" && err.Code != tc.code:
				t.Errorf("code = %q (%v), want %q", err.Code, err, tc.code)
			}
		})
	}

	t.Run("nil send", func(t *testing.T) {
		var s *Send
		if err := s.Validate(false); err == nil || err.Code != CodeInvalidRequest {
			t.Errorf("Validate(nil) = %v, want invalid_request", err)
		}
	})
}

func TestDecodeSend(t *testing.T) {
	body := `{"client_id":"k1","conversation":"ignored","ciphertext":"` + b64("ct") + `","keys":{"u/d":"` + b64("k") + `"}}`
	s, err := DecodeSend([]byte(body))
	if err != nil {
		t.Fatalf("DecodeSend: %v", err)
	}
	want := &Send{ClientID: "k1", Ciphertext: []byte("ct"), Keys: map[string][]byte{"u/d": []byte("k")}}
	if !reflect.DeepEqual(s, want) {
		t.Errorf("DecodeSend = %+v, want %+v", s, want)
	}

	tests := map[string]struct {
		body string
		code Code
	}{
		"not an object":  {body: `[]`, code: CodeInvalidRequest},
		"bad base64":     {body: `{"client_id":"k1","ciphertext":"a-b_","keys":{"u/d":"aw=="}}`, code: CodeInvalidRequest},
		"missing keys":   {body: `{"client_id":"k1","ciphertext":"aw=="}`, code: CodeInvalidRequest},
		"bad key name":   {body: `{"client_id":"k1","ciphertext":"aw==","keys":{"ud":"aw=="}}`, code: CodeInvalidRequest},
		"key too large":  {body: `{"client_id":"k1","ciphertext":"aw==","keys":{"u/d":"` + base64.StdEncoding.EncodeToString(make([]byte, MaxWrappedKeySize+1)) + `"}}`, code: CodePayloadTooLarge},
		"Client_ID case": {body: `{"Client_ID":"k1","ciphertext":"aw==","keys":{"u/d":"aw=="}}`, code: CodeInvalidRequest},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s, err := DecodeSend([]byte(tc.body))
			if err == nil {
				t.Fatalf("DecodeSend accepted %+v", s)
			}
			if err.Code != tc.code {
				t.Errorf("code = %q (%v), want %q", err.Code, err, tc.code)
			}
		})
	}
}

// TestJSONBase64Leniency records how encoding/json decodes []byte, which
// is why this package decodes base64 itself. If it fails, the Go release
// changed the behaviour: update the package documentation.
func TestJSONBase64Leniency(t *testing.T) {
	tests := map[string]struct {
		json      string
		jsonOK    bool // encoding/json accepts it
		strictOK  bool // DecodeClientFrame and DecodeBase64 accept it
		wantBytes string
	}{
		"padded std":         {json: `"aGk="`, jsonOK: true, strictOK: true, wantBytes: "hi"},
		"unpadded":           {json: `"aGk"`},
		"URL-safe":           {json: `"-_8="`},
		"escaped LF inside":  {json: `"aG\nk="`, jsonOK: true, wantBytes: "hi"},
		"escaped CRLF":       {json: `"aG\r\nk="`, jsonOK: true, wantBytes: "hi"},
		"non-zero tail bits": {json: `"aGl="`, jsonOK: true, wantBytes: "hi"},
		"space inside":       {json: `"aG k="`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var b []byte
			err := json.Unmarshal([]byte(tc.json), &b)
			if (err == nil) != tc.jsonOK {
				t.Errorf("encoding/json: err = %v, want ok=%v", err, tc.jsonOK)
			}
			if err == nil && string(b) != tc.wantBytes {
				t.Errorf("encoding/json decoded %q, want %q", b, tc.wantBytes)
			}
			frame := `{"type":"send","conversation":"c","client_id":"k","ciphertext":` + tc.json + `,"keys":{"u/d":"aw=="}}`
			f, perr := DecodeClientFrame([]byte(frame))
			if (perr == nil) != tc.strictOK {
				t.Errorf("DecodeClientFrame: err = %v, want ok=%v", perr, tc.strictOK)
			}
			if perr == nil && string(f.Send.Ciphertext) != tc.wantBytes {
				t.Errorf("DecodeClientFrame decoded %q, want %q", f.Send.Ciphertext, tc.wantBytes)
			}
			var str string // what a JSON decoder hands a field of type string
			if err := json.Unmarshal([]byte(tc.json), &str); err != nil {
				t.Fatal(err)
			}
			b, derr := DecodeBase64(str)
			if (derr == nil) != tc.strictOK {
				t.Errorf("DecodeBase64(%q): err = %v, want ok=%v", str, derr, tc.strictOK)
			}
			if derr == nil && string(b) != tc.wantBytes {
				t.Errorf("DecodeBase64 decoded %q, want %q", b, tc.wantBytes)
			}
		})
	}
}

func TestSplitKeyName(t *testing.T) {
	tests := map[string]struct {
		name         string
		user, device string
		ok           bool
	}{
		"simple":          {name: "u/d", user: "u", device: "d", ok: true},
		"slash in device": {name: "u/d/e/", user: "u", device: "d/e/", ok: true},
		"device of MaxID": {name: "u/" + strings.Repeat("d", MaxIDLen), user: "u", device: strings.Repeat("d", MaxIDLen), ok: true},
		"no slash":        {name: "ud"},
		"empty user":      {name: "/d"},
		"empty device":    {name: "u/"},
		"device too long": {name: "u/" + strings.Repeat("d", MaxIDLen+1)},
		// Device ids count characters (API.md: max 128 chars).
		"device of MaxID umlauts": {name: "u/" + strings.Repeat("ä", MaxIDLen), user: "u", device: strings.Repeat("ä", MaxIDLen), ok: true},
		"device too many umlauts": {name: "u/" + strings.Repeat("ä", MaxIDLen+1)},
		"user too long":           {name: strings.Repeat("u", MaxIDLen+1) + "/d"},
		"control in device":       {name: "u/d\x01"},
		"DEL in device":           {name: "u/\x7fd"},
		"empty":                   {name: ""},
		"KeyName roundtrip":       {name: KeyName("user", "dev/ice"), user: "user", device: "dev/ice", ok: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			user, device, ok := SplitKeyName(tc.name)
			if user != tc.user || device != tc.device || ok != tc.ok {
				t.Errorf("SplitKeyName(%q) = %q, %q, %v; want %q, %q, %v", tc.name, user, device, ok, tc.user, tc.device, tc.ok)
			}
		})
	}
}

// TestLargestSendFitsFrame checks the promise of API.md that the largest
// valid send, with plain ids, fits in one frame.
func TestLargestSendFitsFrame(t *testing.T) {
	id := strings.Repeat("i", MaxIDLen)
	s := &Send{
		Conversation: id,
		ClientID:     id,
		Ciphertext:   make([]byte, MaxCiphertextSize),
		Keys:         make(map[string][]byte, MaxKeys),
	}
	for i := range MaxKeys {
		user := fmt.Sprintf("%0*d", MaxIDLen, i)
		s.Keys[KeyName(user, id)] = make([]byte, MaxWrappedKeySize)
	}
	for i := range MaxAttachments {
		s.Attachments = append(s.Attachments, fmt.Sprintf("%0*d", MaxIDLen, i))
	}
	frame := AppendSendFrame(nil, id, s)
	if len(frame) > MaxFrameSize {
		t.Fatalf("largest send is %d bytes, more than MaxFrameSize %d", len(frame), MaxFrameSize)
	}
	f, err := DecodeClientFrame(frame)
	if err != nil {
		t.Fatalf("DecodeClientFrame: %v", err)
	}
	if !reflect.DeepEqual(f.Send, s) || f.Ref != id {
		t.Error("largest send does not round-trip")
	}
}

func TestValidText(t *testing.T) {
	for text, want := range map[string]bool{
		`{"a":"plain"}`:               true,
		`{"a":"\u00e4 \ud83d\ude00"}`: true,
		`{"a":"\\ud800 \\"}`:          true, // escaped backslashes, no escapes of surrogates
		`{"a":"\ud800"}`:              false,
		`{"a":"\ud800\u0041"}`:        false,
		`{"a":"\udc00\ud800"}`:        false,
		`{"a":"x\\\udc00"}`:           false,
		"{\"a\":\"\xff\"}":            false,
		`{"a":"\ud83d`:                false, // truncated after a high surrogate
		`\`:                           true,  // malformed JSON: the decoder's to report
		`\u12`:                        true,
	} {
		if got := ValidText([]byte(text)); got != want {
			t.Errorf("ValidText(%q) = %v, want %v", text, got, want)
		}
	}
}
