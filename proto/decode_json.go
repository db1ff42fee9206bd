package proto

import (
	"bytes"
	"encoding/json"
)

// jsonObject is the [frameObject] parsed by encoding/json: the members of
// the object by exact name, the last of duplicate names winning. It is the
// reference behaviour; [fastObject] must match it.
type jsonObject map[string]json.RawMessage

// parseJSON parses data, which checkObject accepted, as one JSON object.
func parseJSON(data []byte) (jsonObject, *Error) {
	var obj jsonObject
	if err := json.Unmarshal(data, &obj); err != nil {
		return nil, Errorf(CodeInvalidRequest, "malformed JSON: %v", err)
	}
	return obj, nil
}

// member returns the raw value of obj's member name, or nil if it is
// missing or null.
func (obj jsonObject) member(name string) json.RawMessage {
	raw := obj[name]
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	return raw
}

func (obj jsonObject) stringMember(name string) (s string, ok bool, err *Error) {
	raw := obj.member(name)
	if raw == nil {
		return "", false, nil
	}
	b, ok := unquote(raw)
	if !ok {
		return "", false, errNotString(name)
	}
	return string(b), true, nil
}

func (obj jsonObject) base64Member(name, what string, max int) ([]byte, *Error) {
	return rawBase64(obj.member(name), what, max)
}

func (obj jsonObject) keys() (map[string][]byte, *Error) {
	raw := obj.member("keys")
	if raw == nil {
		return nil, nil
	}
	if raw[0] != '{' {
		return nil, errNotObject("keys")
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, Errorf(CodeInvalidRequest, "malformed keys: %v", err)
	}
	if len(m) > MaxKeys {
		return nil, errTooManyKeys()
	}
	keys := make(map[string][]byte, len(m))
	for name, v := range m {
		// No size limit here: Validate reports invalid entries first.
		k, err := rawBase64(v, "wrapped key", 0)
		if err != nil {
			return nil, err
		}
		keys[name] = k
	}
	return keys, nil
}

func (obj jsonObject) attachments() ([]string, *Error) {
	raw := obj.member("attachments")
	if raw == nil {
		return nil, nil
	}
	if raw[0] != '[' {
		return nil, errNotArray("attachments")
	}
	var elems []json.RawMessage
	if err := json.Unmarshal(raw, &elems); err != nil {
		return nil, Errorf(CodeInvalidRequest, "malformed attachments: %v", err)
	}
	if len(elems) > MaxAttachments {
		return nil, errTooManyAttachments()
	}
	if len(elems) == 0 {
		return nil, nil
	}
	ids := make([]string, len(elems))
	for i, e := range elems {
		b, ok := unquote(e)
		if !ok {
			return nil, errAttachmentNotString()
		}
		ids[i] = string(b)
	}
	return ids, nil
}

func (obj jsonObject) cursors() (map[string]uint64, *Error) {
	raw := obj.member("cursors")
	if raw == nil {
		return nil, nil
	}
	if raw[0] != '{' {
		return nil, errNotObject("cursors")
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, Errorf(CodeInvalidRequest, "malformed cursors: %v", err)
	}
	if len(m) > MaxCursors {
		return nil, errTooManyCursors()
	}
	cursors := make(map[string]uint64, len(m))
	for id, v := range m {
		if !validID(id) {
			return nil, errCursorID()
		}
		n, ok := parseUint(v)
		if !ok {
			return nil, errCursorValue(id)
		}
		cursors[id] = n
	}
	return cursors, nil
}

// unquote returns the contents of the JSON string raw, which must come
// from a successful json.Unmarshal of valid UTF-8. ok is false if raw is
// not a string. Without escapes the result aliases raw.
func unquote(raw json.RawMessage) (b []byte, ok bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return nil, false
	}
	if bytes.IndexByte(raw, '\\') < 0 {
		return raw[1 : len(raw)-1], true
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, false
	}
	return []byte(s), true
}

// rawBase64 decodes the JSON string raw with decodeBase64. A nil raw
// gives nil.
func rawBase64(raw json.RawMessage, what string, max int) ([]byte, *Error) {
	if raw == nil {
		return nil, nil
	}
	enc, ok := unquote(raw)
	if !ok {
		return nil, errNotBase64String(what)
	}
	return decodeBase64(enc, what, max)
}
