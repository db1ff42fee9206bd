package proto

import (
	"encoding/base64"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
)

// Server frames. Each appender appends exactly one compact JSON object,
// without a trailing newline, and allocates nothing when dst has enough
// spare capacity.

// AppendReady appends {"type":"ready","user_id":…,"device_id":…} to dst.
func AppendReady(dst []byte, userID, deviceID string) []byte {
	dst = append(dst, `{"type":"ready","user_id":`...)
	dst = appendString(dst, userID)
	dst = append(dst, `,"device_id":`...)
	dst = appendString(dst, deviceID)
	return append(dst, '}')
}

// AppendSent appends {"type":"sent","ref":…,"id":…,"seq":N,"sent_at":…}
// to dst. The ref member is always present, "" if the send had no ref.
func AppendSent(dst []byte, ref, id string, seq uint64, sentAt time.Time) []byte {
	dst = append(dst, `{"type":"sent","ref":`...)
	dst = appendString(dst, ref)
	dst = append(dst, `,"id":`...)
	dst = appendString(dst, id)
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, `,"sent_at":`...)
	dst = appendTime(dst, sentAt)
	return append(dst, '}')
}

// AppendMessage appends {"type":"message","message":{…}} to dst, with the
// message object as written by [AppendMessageJSON].
func AppendMessage(dst []byte, m *Message, keyName string) []byte {
	dst = append(dst, `{"type":"message","message":`...)
	dst = AppendMessageJSON(dst, m, keyName)
	return append(dst, '}')
}

// AppendMessageJSON appends the JSON object of m to dst, as used in message
// frames and HTTP responses. Its keys member holds only the entry
// m.Keys[keyName] (see [KeyName]) and is {} if there is none, so that a
// reader receives only its own device's wrapped key. Attachments is written
// as [] when m has none.
func AppendMessageJSON(dst []byte, m *Message, keyName string) []byte {
	dst = append(dst, `{"id":`...)
	dst = appendString(dst, m.ID)
	dst = append(dst, `,"conversation":`...)
	dst = appendString(dst, m.Conversation)
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendUint(dst, m.Seq, 10)
	dst = append(dst, `,"sender":{"user_id":`...)
	dst = appendString(dst, m.Sender.UserID)
	dst = append(dst, `,"device_id":`...)
	dst = appendString(dst, m.Sender.DeviceID)
	dst = append(dst, `},"sent_at":`...)
	dst = appendTime(dst, m.SentAt)
	dst = append(dst, `,"expires_at":`...)
	dst = appendTime(dst, m.ExpiresAt)
	dst = append(dst, `,"ciphertext":`...)
	dst = appendBase64(dst, m.Ciphertext)
	dst = append(dst, `,"keys":{`...)
	if key, ok := m.Keys[keyName]; ok {
		dst = appendString(dst, keyName)
		dst = append(dst, ':')
		dst = appendBase64(dst, key)
	}
	dst = append(dst, `},"attachments":`...)
	dst = appendStrings(dst, m.Attachments)
	return append(dst, '}')
}

// AppendError appends {"type":"error","ref":…,"code":…,"message":…} to
// dst. The ref member is left out when ref is empty.
func AppendError(dst []byte, ref string, code Code, msg string) []byte {
	dst = append(dst, `{"type":"error",`...)
	if ref != "" {
		dst = append(dst, `"ref":`...)
		dst = appendString(dst, ref)
		dst = append(dst, ',')
	}
	dst = append(dst, `"code":`...)
	dst = appendString(dst, string(code))
	dst = append(dst, `,"message":`...)
	dst = appendString(dst, msg)
	return append(dst, '}')
}

// AppendPong appends {"type":"pong","ref":…} to dst: the ref of the
// client's ping, left out when empty.
func AppendPong(dst []byte, ref string) []byte {
	return appendRefOnly(dst, TypePong, ref)
}

// AppendSynced appends {"type":"synced","ref":…} to dst: the ref of the
// client's sync, left out when empty.
func AppendSynced(dst []byte, ref string) []byte {
	return appendRefOnly(dst, TypeSynced, ref)
}

func appendRefOnly(dst []byte, typ, ref string) []byte {
	dst = append(dst, `{"type":"`...)
	dst = append(dst, typ...)
	if ref == "" {
		return append(dst, `"}`...)
	}
	dst = append(dst, `","ref":`...)
	dst = appendString(dst, ref)
	return append(dst, '}')
}

// Client frames. They sort map entries by name, so their output is
// deterministic; unlike the server appenders they may allocate.

// AppendAuth appends {"type":"auth","token":…} to dst.
func AppendAuth(dst []byte, token string) []byte {
	dst = append(dst, `{"type":"auth","token":`...)
	dst = appendString(dst, token)
	return append(dst, '}')
}

// AppendSendFrame appends a send frame carrying s to dst:
// {"type":"send","ref":…,"conversation":…,"client_id":…,"ciphertext":…,
// "keys":{…},"attachments":[…]}. Ref, conversation and attachments are
// left out when empty. A nil s is written as an empty send.
func AppendSendFrame(dst []byte, ref string, s *Send) []byte {
	if s == nil {
		s = &Send{}
	}
	dst = append(dst, `{"type":"send"`...)
	if ref != "" {
		dst = append(dst, `,"ref":`...)
		dst = appendString(dst, ref)
	}
	if s.Conversation != "" {
		dst = append(dst, `,"conversation":`...)
		dst = appendString(dst, s.Conversation)
	}
	dst = append(dst, `,"client_id":`...)
	dst = appendString(dst, s.ClientID)
	dst = append(dst, `,"ciphertext":`...)
	dst = appendBase64(dst, s.Ciphertext)
	dst = append(dst, `,"keys":{`...)
	names := make([]string, 0, len(s.Keys))
	for name := range s.Keys {
		names = append(names, name)
	}
	slices.Sort(names)
	for i, name := range names {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, name)
		dst = append(dst, ':')
		dst = appendBase64(dst, s.Keys[name])
	}
	dst = append(dst, '}')
	if len(s.Attachments) > 0 {
		dst = append(dst, `,"attachments":`...)
		dst = appendStrings(dst, s.Attachments)
	}
	return append(dst, '}')
}

// AppendSync appends {"type":"sync","cursors":{…}} to dst. The cursors
// member is left out when cursors is nil and written as {} when it is
// empty; either way the server replays every conversation from its oldest
// stored message.
func AppendSync(dst []byte, cursors map[string]uint64) []byte {
	dst = append(dst, `{"type":"sync"`...)
	if cursors != nil {
		dst = append(dst, `,"cursors":{`...)
		ids := make([]string, 0, len(cursors))
		for id := range cursors {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		for i, id := range ids {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendString(dst, id)
			dst = append(dst, ':')
			dst = strconv.AppendUint(dst, cursors[id], 10)
		}
		dst = append(dst, '}')
	}
	return append(dst, '}')
}

// AppendPing appends {"type":"ping"} to dst.
func AppendPing(dst []byte) []byte {
	return append(dst, `{"type":"ping"}`...)
}

// appendTime appends t in UTC as a quoted RFC 3339 string with as many
// fractional digits as needed.
func appendTime(dst []byte, t time.Time) []byte {
	dst = append(dst, '"')
	dst = t.UTC().AppendFormat(dst, time.RFC3339Nano)
	return append(dst, '"')
}

// appendBase64 appends b as a quoted standard padded base64 string.
func appendBase64(dst, b []byte) []byte {
	dst = append(dst, '"')
	dst = base64.StdEncoding.AppendEncode(dst, b)
	return append(dst, '"')
}

// appendStrings appends ss as a JSON array of strings; nil gives [].
func appendStrings(dst []byte, ss []string) []byte {
	dst = append(dst, '[')
	for i, s := range ss {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, s)
	}
	return append(dst, ']')
}

const hexDigits = "0123456789abcdef"

// safeASCII[b] reports whether the ASCII byte b can appear unescaped in a
// JSON string.
var safeASCII = func() (t [utf8.RuneSelf]bool) {
	for b := ' '; b < utf8.RuneSelf; b++ {
		t[b] = b != '"' && b != '\\'
	}
	return t
}()

// appendString appends s as a quoted JSON string, escaped as encoding/json
// does without HTML escaping: '"', '\\' and control characters are
// escaped, U+2028 and U+2029 become \u2028 and \u2029, and every byte of
// invalid UTF-8 becomes \ufffd.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0 // s[start:i] is pending and needs no escaping
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if safeASCII[b] {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
