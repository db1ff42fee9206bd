package storage

import (
	"encoding/base64"
	"encoding/json"
	"slices"
	"time"
	"unicode/utf8"
)

// appendMessageJSON appends json.Marshal(m), byte for byte, to buf. It is
// the encoder of every stored message (json.Marshal's reflection was 4% of
// the server's CPU at saturation). Messages it cannot encode exactly as
// encoding/json would (a string that is not valid UTF-8, a time outside
// the years 0–9999) go through json.Marshal.
func appendMessageJSON(buf []byte, m *Message) ([]byte, error) {
	if !simpleMessage(m) {
		body, err := json.Marshal(m)
		return append(buf, body...), err
	}
	buf = append(buf, `{"id":`...)
	buf = appendJSONString(buf, m.ID)
	buf = append(buf, `,"conversation":`...)
	buf = appendJSONString(buf, m.Conversation)
	buf = append(buf, `,"seq":`...)
	buf = appendUint(buf, m.Seq)
	buf = append(buf, `,"sender_user":`...)
	buf = appendJSONString(buf, m.SenderUser)
	buf = append(buf, `,"sender_device":`...)
	buf = appendJSONString(buf, m.SenderDevice)
	buf = append(buf, `,"client_id":`...)
	buf = appendJSONString(buf, m.ClientID)
	buf = append(buf, `,"sent_at":`...)
	buf = appendJSONTime(buf, m.SentAt)
	buf = append(buf, `,"expires_at":`...)
	buf = appendJSONTime(buf, m.ExpiresAt)
	buf = append(buf, `,"ciphertext":`...)
	buf = appendJSONBytes(buf, m.Ciphertext)
	buf = append(buf, `,"keys":`...)
	if m.Keys == nil {
		buf = append(buf, "null"...)
	} else {
		buf = append(buf, '{')
		for i, k := range slices.Sorted(mapKeys(m.Keys)) {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = appendJSONString(buf, k)
			buf = append(buf, ':')
			buf = appendJSONBytes(buf, m.Keys[k])
		}
		buf = append(buf, '}')
	}
	if len(m.Attachments) > 0 {
		buf = append(buf, `,"attachments":[`...)
		for i, a := range m.Attachments {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = appendJSONString(buf, a)
		}
		buf = append(buf, ']')
	}
	return append(buf, '}'), nil
}

func mapKeys(m map[string][]byte) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// simpleMessage reports whether appendMessageJSON can encode m itself.
func simpleMessage(m *Message) bool {
	for _, s := range [...]string{m.ID, m.Conversation, m.SenderUser, m.SenderDevice, m.ClientID} {
		if !utf8.ValidString(s) {
			return false
		}
	}
	for k := range m.Keys {
		if !utf8.ValidString(k) {
			return false
		}
	}
	for _, a := range m.Attachments {
		if !utf8.ValidString(a) {
			return false
		}
	}
	return simpleTime(m.SentAt) && simpleTime(m.ExpiresAt)
}

func simpleTime(t time.Time) bool {
	y := t.Year()
	return y >= 0 && y <= 9999
}

func appendUint(buf []byte, n uint64) []byte {
	var d [20]byte
	i := len(d)
	for {
		i--
		d[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			break
		}
	}
	return append(buf, d[i:]...)
}

func appendJSONTime(buf []byte, t time.Time) []byte {
	buf = append(buf, '"')
	buf = t.AppendFormat(buf, time.RFC3339Nano)
	return append(buf, '"')
}

func appendJSONBytes(buf []byte, b []byte) []byte {
	if b == nil {
		return append(buf, "null"...)
	}
	buf = append(buf, '"')
	buf = base64.StdEncoding.AppendEncode(buf, b)
	return append(buf, '"')
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s (valid UTF-8) quoted as encoding/json does,
// HTML-safe escapes included.
func appendJSONString(buf []byte, s string) []byte {
	buf = append(buf, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			buf = append(buf, s[start:i]...)
			switch c {
			case '"', '\\':
				buf = append(buf, '\\', c)
			case '\n':
				buf = append(buf, '\\', 'n')
			case '\r':
				buf = append(buf, '\\', 'r')
			case '\t':
				buf = append(buf, '\\', 't')
			case '\b':
				buf = append(buf, '\\', 'b')
			case '\f':
				buf = append(buf, '\\', 'f')
			default:
				buf = append(buf, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == '\u2028' || r == '\u2029' {
			buf = append(buf, s[start:i]...)
			buf = append(buf, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	buf = append(buf, s[start:]...)
	return append(buf, '"')
}
