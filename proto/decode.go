package proto

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// strictBase64 decodes standard padded base64 and rejects non-zero trailing
// bits. Like every base64.Encoding it still skips CR and LF, which
// decodeBase64 therefore rejects itself.
var strictBase64 = base64.StdEncoding.Strict()

// errNotBase64 is DecodeBase64's error; its text names no input.
var errNotBase64 = errors.New("proto: not standard padded base64")

// DecodeBase64 decodes s as API.md's binary values are written: standard
// padded base64, without the line breaks that encoding/base64 skips and
// without non-zero trailing bits. Every base64 field of a request is read
// with it, so that one value has one spelling.
func DecodeBase64(s string) ([]byte, error) {
	if strings.ContainsAny(s, "\r\n") {
		return nil, errNotBase64
	}
	b, err := strictBase64.DecodeString(s)
	if err != nil {
		return nil, errNotBase64
	}
	return b, nil
}

// DecodeClientFrame parses and validates one client→server text frame.
//
// On success the returned frame satisfies every rule and limit of the wire
// format. On failure it returns an [*Error] with [CodeInvalidRequest] (not
// a JSON object, invalid UTF-8, missing or unknown type, wrong member
// types, bad base64, bad ids or key names, missing required members) or
// [CodePayloadTooLarge] (data longer than [MaxFrameSize], ciphertext or a
// wrapped key too large, too many keys, attachments or cursors), together
// with a frame whose Ref is set if the ref could be read and is valid, and
// whose Type is set if it is a known client frame type. The other fields
// of a rejected frame are zero.
//
// DecodeClientFrame never panics, whatever data holds. The returned frame
// does not alias data.
func DecodeClientFrame(data []byte) (ClientFrame, *Error) {
	if len(data) > MaxFrameSize {
		return ClientFrame{}, Errorf(CodePayloadTooLarge, "frame exceeds %d bytes", MaxFrameSize)
	}
	if err := checkObject(data); err != nil {
		return ClientFrame{}, err
	}
	if d := parseFast(data); d != nil {
		defer d.release()
		return decodeFrame(d)
	}
	obj, err := parseJSON(data)
	if err != nil {
		return ClientFrame{}, err
	}
	return decodeFrame(obj)
}

// DecodeSend parses and validates the JSON body of POST
// /conversations/{id}/messages under the same rules as a send frame. A
// "conversation" member in the body is ignored: the caller sets
// Conversation from the path. data is not limited to MaxFrameSize; the
// caller caps the body size. The returned send does not alias data.
func DecodeSend(data []byte) (*Send, *Error) {
	if err := checkObject(data); err != nil {
		return nil, err
	}
	if d := parseFast(data); d != nil {
		defer d.release()
		return decodeSendBody(d)
	}
	obj, err := parseJSON(data)
	if err != nil {
		return nil, err
	}
	return decodeSendBody(obj)
}

// frameObject is the parsed top-level JSON object of a frame or request
// body. Its methods read members by exact name, treat a member whose value
// is null as absent and, like encoding/json decoding into a map, take the
// last occurrence of a duplicate name. The strings and slices they return
// never alias the parser's memory.
//
// Two parsers implement it with identical results: [fastObject] (fastjson,
// used whenever it can be) and [jsonObject] (encoding/json, the reference,
// used for everything fastObject declines, which includes every malformed
// frame, so that error messages stay those of encoding/json).
type frameObject interface {
	// stringMember returns member name as a string. ok is false if the
	// member is missing or null; a value of another type is an error.
	stringMember(name string) (s string, ok bool, err *Error)
	// base64Member decodes member name as described at [decodeBase64]; a
	// missing or null member gives nil.
	base64Member(name, what string, max int) ([]byte, *Error)
	// keys decodes the keys object of a send. Names and sizes are left to
	// Validate.
	keys() (map[string][]byte, *Error)
	// attachments decodes the attachments array of a send.
	attachments() ([]string, *Error)
	// cursors decodes the cursors object of a sync frame and checks its
	// rules. A missing or null object gives nil.
	cursors() (map[string]uint64, *Error)
}

// decodeFrame decodes and validates the client frame obj. It implements
// DecodeClientFrame after parsing.
func decodeFrame(obj frameObject) (ClientFrame, *Error) {
	var f ClientFrame
	ref, _, err := obj.stringMember("ref")
	if err != nil {
		return f, err
	}
	if len(ref) > MaxIDLen {
		return f, Errorf(CodeInvalidRequest, "ref is longer than %d bytes", MaxIDLen)
	}
	f.Ref = ref

	typ, ok, err := obj.stringMember("type")
	if err != nil {
		return f, err
	}
	if !ok {
		return f, Errorf(CodeInvalidRequest, "type is required")
	}
	switch typ {
	case TypePing:
		f.Type = typ
	case TypeAuth:
		f.Type = typ
		token, _, err := obj.stringMember("token")
		if err != nil {
			return f, err
		}
		if token == "" {
			return f, Errorf(CodeInvalidRequest, "token is required")
		}
		if len(token) > MaxTokenLen {
			return f, Errorf(CodeInvalidRequest, "token is longer than %d bytes", MaxTokenLen)
		}
		f.Token = token
	case TypeSend:
		f.Type = typ
		s, err := decodeSend(obj, true)
		if err != nil {
			return f, err
		}
		if err := s.Validate(true); err != nil {
			return f, err
		}
		f.Send = s
	case TypeSync:
		f.Type = typ
		cursors, err := obj.cursors()
		if err != nil {
			return f, err
		}
		f.Cursors = cursors
	default:
		return f, Errorf(CodeInvalidRequest, "unknown frame type %s", quoteShort(typ))
	}
	return f, nil
}

// decodeSendBody decodes and validates the send request body obj. It
// implements DecodeSend after parsing.
func decodeSendBody(obj frameObject) (*Send, *Error) {
	s, err := decodeSend(obj, false)
	if err != nil {
		return nil, err
	}
	if err := s.Validate(false); err != nil {
		return nil, err
	}
	return s, nil
}

// Validate checks s against every rule and limit for a send: a client_id
// of 1 to MaxIDLen bytes; a non-empty ciphertext of at most
// MaxCiphertextSize bytes; 1 to MaxKeys keys, each named
// "<user id>/<device id>" (see [SplitKeyName]) and holding 1 to
// MaxWrappedKeySize bytes; at most MaxAttachments distinct attachment ids
// of 1 to MaxIDLen bytes each. With requireConversation, Conversation must
// also be 1 to MaxIDLen bytes; without it, Conversation is not checked.
//
// Exceeded size and count limits give [CodePayloadTooLarge], everything
// else [CodeInvalidRequest]. Fields are checked in the order listed above,
// and within the keys every invalid entry is reported before an oversized
// one, so the code does not depend on map iteration order.
func (s *Send) Validate(requireConversation bool) *Error {
	if s == nil {
		return Errorf(CodeInvalidRequest, "send is missing")
	}
	if requireConversation {
		if s.Conversation == "" {
			return Errorf(CodeInvalidRequest, "conversation is required")
		}
		if len(s.Conversation) > MaxIDLen {
			return Errorf(CodeInvalidRequest, "conversation is longer than %d bytes", MaxIDLen)
		}
	}
	if s.ClientID == "" {
		return Errorf(CodeInvalidRequest, "client_id is required")
	}
	if len(s.ClientID) > MaxIDLen {
		return Errorf(CodeInvalidRequest, "client_id is longer than %d bytes", MaxIDLen)
	}
	if len(s.Ciphertext) == 0 {
		return Errorf(CodeInvalidRequest, "ciphertext is required")
	}
	if len(s.Ciphertext) > MaxCiphertextSize {
		return Errorf(CodePayloadTooLarge, "ciphertext exceeds %d bytes", MaxCiphertextSize)
	}
	if len(s.Keys) == 0 {
		return Errorf(CodeInvalidRequest, "keys must hold at least one wrapped key")
	}
	if len(s.Keys) > MaxKeys {
		return Errorf(CodePayloadTooLarge, "more than %d keys", MaxKeys)
	}
	var tooLarge *Error
	for name, key := range s.Keys {
		if _, _, ok := SplitKeyName(name); !ok {
			return Errorf(CodeInvalidRequest, `key name %s is not "<user id>/<device id>"`, quoteShort(name))
		}
		if len(key) == 0 {
			return Errorf(CodeInvalidRequest, "wrapped key for %s is empty", quoteShort(name))
		}
		if len(key) > MaxWrappedKeySize && tooLarge == nil {
			tooLarge = Errorf(CodePayloadTooLarge, "wrapped key for %s exceeds %d bytes", quoteShort(name), MaxWrappedKeySize)
		}
	}
	if tooLarge != nil {
		return tooLarge
	}
	if len(s.Attachments) > MaxAttachments {
		return Errorf(CodePayloadTooLarge, "more than %d attachments", MaxAttachments)
	}
	for i, a := range s.Attachments {
		if a == "" {
			return Errorf(CodeInvalidRequest, "attachment id is empty")
		}
		if len(a) > MaxIDLen {
			return Errorf(CodeInvalidRequest, "attachment id is longer than %d bytes", MaxIDLen)
		}
		for _, b := range s.Attachments[:i] {
			if a == b {
				return Errorf(CodeInvalidRequest, "duplicate attachment %s", quoteShort(a))
			}
		}
	}
	return nil
}

// checkObject rejects data that is not valid UTF-8 (ValidText) or does not start, after
// JSON whitespace, with '{'. Both parsers run only on data it accepts.
func checkObject(data []byte) *Error {
	if !ValidText(data) {
		return Errorf(CodeInvalidRequest, "not valid UTF-8 (a byte sequence, or a \\u escape of half a surrogate pair)")
	}
	if v := bytes.TrimLeft(data, " \t\r\n"); len(v) == 0 || v[0] != '{' {
		return Errorf(CodeInvalidRequest, "not a JSON object")
	}
	return nil
}

// decodeSend decodes the members of a send without validating them beyond
// their JSON types, base64 and the count limits.
func decodeSend(obj frameObject, withConversation bool) (*Send, *Error) {
	var (
		s   Send
		err *Error
	)
	if withConversation {
		if s.Conversation, _, err = obj.stringMember("conversation"); err != nil {
			return nil, err
		}
	}
	if s.ClientID, _, err = obj.stringMember("client_id"); err != nil {
		return nil, err
	}
	if s.Ciphertext, err = obj.base64Member("ciphertext", "ciphertext", MaxCiphertextSize); err != nil {
		return nil, err
	}
	if s.Keys, err = obj.keys(); err != nil {
		return nil, err
	}
	if s.Attachments, err = obj.attachments(); err != nil {
		return nil, err
	}
	return &s, nil
}

// decodeBase64 decodes enc, the contents of a JSON string, as strict
// standard padded base64. If max > 0, an encoding that is longer than any
// encoding of max bytes is reported as too large before decoding. The
// result never aliases enc.
func decodeBase64(enc []byte, what string, max int) ([]byte, *Error) {
	if max > 0 && len(enc) > base64.StdEncoding.EncodedLen(max) {
		return nil, Errorf(CodePayloadTooLarge, "%s exceeds %d bytes", what, max)
	}
	// Two IndexByte calls are much faster than ContainsAny.
	if bytes.IndexByte(enc, '\r') >= 0 || bytes.IndexByte(enc, '\n') >= 0 {
		return nil, Errorf(CodeInvalidRequest, "%s is not standard padded base64", what)
	}
	b := make([]byte, base64.StdEncoding.DecodedLen(len(enc)))
	n, err := strictBase64.Decode(b, enc)
	if err != nil {
		return nil, Errorf(CodeInvalidRequest, "%s is not standard padded base64", what)
	}
	return b[:n], nil
}

// Errors that both frameObject implementations report.

func errNotString(name string) *Error {
	return Errorf(CodeInvalidRequest, "%s must be a string", name)
}

func errNotBase64String(what string) *Error {
	return Errorf(CodeInvalidRequest, "%s must be a base64 string", what)
}

func errNotObject(name string) *Error {
	return Errorf(CodeInvalidRequest, "%s must be an object", name)
}

func errTooManyKeys() *Error {
	return Errorf(CodePayloadTooLarge, "more than %d keys", MaxKeys)
}

func errNotArray(name string) *Error {
	return Errorf(CodeInvalidRequest, "%s must be an array", name)
}

func errTooManyAttachments() *Error {
	return Errorf(CodePayloadTooLarge, "more than %d attachments", MaxAttachments)
}

func errAttachmentNotString() *Error {
	return Errorf(CodeInvalidRequest, "attachment ids must be strings")
}

func errTooManyCursors() *Error {
	return Errorf(CodePayloadTooLarge, "more than %d cursors", MaxCursors)
}

func errCursorID() *Error {
	return Errorf(CodeInvalidRequest, "cursor conversation ids must be 1 to %d bytes", MaxIDLen)
}

func errCursorValue(id string) *Error {
	return Errorf(CodeInvalidRequest, "cursor for %s is not a non-negative integer", quoteShort(id))
}

// parseUint parses the JSON number raw as a uint64. Only plain digits are
// accepted: no sign, fraction or exponent. Any other JSON value fails.
func parseUint(raw []byte) (uint64, bool) {
	if len(raw) == 0 {
		return 0, false
	}
	var n uint64
	for _, c := range raw {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if n > (math.MaxUint64-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// quoteShort quotes s for an error message, shortened to at most 64 bytes.
func quoteShort(s string) string {
	const max = 64
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut-- // not inside a character: the message stays valid UTF-8
		}
		return fmt.Sprintf("%q…", s[:cut])
	}
	return fmt.Sprintf("%q", s)
}

// DecodeServerFrame decodes one server→client frame. It reads "type" first
// and then decodes the members of that frame type, so that the error
// frame's "message" (a string) ends up in ErrMessage and the message
// frame's "message" (an object) in Message. Frames of an unknown type are
// returned with only Type set and no error, so that clients keep working
// when the server adds frame types. Binary values are decoded with
// encoding/json, which is more lenient than DecodeClientFrame (see the
// package documentation).
func DecodeServerFrame(data []byte) (*ServerFrame, error) {
	var head struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, fmt.Errorf("proto: decode server frame: %w", err)
	}
	if head.Type == "" {
		return nil, fmt.Errorf("proto: decode server frame: type is missing")
	}
	f := &ServerFrame{Type: head.Type}
	switch head.Type {
	case TypeError:
		var e struct {
			Ref     string `json:"ref"`
			Code    Code   `json:"code"`
			Message string `json:"message"`
		}
		if err := json.Unmarshal(data, &e); err != nil {
			return nil, fmt.Errorf("proto: decode error frame: %w", err)
		}
		f.Ref, f.Code, f.ErrMessage = e.Ref, e.Code, e.Message
	case TypeMessage:
		var m struct {
			Message *Message `json:"message"`
		}
		if err := json.Unmarshal(data, &m); err != nil {
			return nil, fmt.Errorf("proto: decode message frame: %w", err)
		}
		if m.Message == nil {
			return nil, fmt.Errorf("proto: decode message frame: message is missing")
		}
		f.Message = m.Message
	case TypeReady, TypeSent, TypePong, TypeSynced:
		var c struct {
			Ref      string    `json:"ref"`
			UserID   string    `json:"user_id"`
			DeviceID string    `json:"device_id"`
			ID       string    `json:"id"`
			Seq      uint64    `json:"seq"`
			SentAt   time.Time `json:"sent_at"`
		}
		if err := json.Unmarshal(data, &c); err != nil {
			return nil, fmt.Errorf("proto: decode %s frame: %w", head.Type, err)
		}
		f.Ref, f.UserID, f.DeviceID, f.ID, f.Seq, f.SentAt = c.Ref, c.UserID, c.DeviceID, c.ID, c.Seq, c.SentAt
	}
	return f, nil
}

// ValidText reports whether data, JSON text, is valid UTF-8 and has no \u
// escape of a UTF-16 surrogate that is not half of a pair. A JSON decoder
// would turn either into U+FFFD, and the server would store a character
// the client never sent. Backslashes outside strings make the JSON
// malformed, which its decoder reports.
func ValidText(data []byte) bool {
	if !utf8.Valid(data) {
		return false
	}
	for i := 0; i < len(data); {
		j := bytes.IndexByte(data[i:], '\\')
		if j < 0 {
			return true
		}
		i += j
		r, ok := escapedRune(data[i:])
		if !ok {
			i += 2 // \\, \" and the like: skip the escaped byte
			continue
		}
		i += 6
		switch {
		case r >= 0xdc00 && r <= 0xdfff:
			return false
		case r >= 0xd800 && r <= 0xdbff:
			low, ok := escapedRune(data[i:])
			if !ok || low < 0xdc00 || low > 0xdfff {
				return false
			}
			i += 6
		}
	}
	return true
}

// escapedRune decodes b's leading \uXXXX escape.
func escapedRune(b []byte) (rune, bool) {
	if len(b) < 6 || b[0] != '\\' || b[1] != 'u' {
		return 0, false
	}
	n, err := strconv.ParseUint(string(b[2:6]), 16, 16)
	return rune(n), err == nil
}
