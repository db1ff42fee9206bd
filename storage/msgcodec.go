package storage

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"time"
)

// The binary form of a stored message (the msgs value after T(ExpiresAt),
// and the tail of a message-log record). JSON values (which start with
// '{') written before it existed are still read.
//
//	0x01
//	id, conversation, sender user, sender device, client id: each uvarint(len)+bytes
//	sent, expires: each varint(unix seconds), uvarint(nanoseconds)
//	ciphertext: uvarint(0) for nil, else uvarint(len+1)+bytes
//	keys: uvarint(0) for nil, else uvarint(n+1), then n times name, value (as ciphertext)
//	attachments: uvarint(n), then n times uvarint(len)+bytes
//
// The seq is not stored: it is in the key. About a third smaller than the
// JSON (no base64, no member names), and much cheaper to encode and decode:
// every message is written twice (log and checkpoint) and read on sync.
const binaryMessage = 0x01

// binaryEncodable reports whether the binary form gives back m exactly:
// its times must be UTC, since the form keeps no time zone.
func binaryEncodable(m *Message) bool {
	return m.SentAt.Location() == time.UTC && m.ExpiresAt.Location() == time.UTC
}

// appendMessageValue appends the stored form of m: binary when it can
// carry m exactly, JSON otherwise.
func appendMessageValue(buf []byte, m *Message) ([]byte, error) {
	if !binaryEncodable(m) {
		c := *m // marshalling m itself would put every caller's message on the heap
		body, err := json.Marshal(&c)
		return append(buf, body...), err
	}
	buf = append(buf, binaryMessage)
	for _, s := range [...]string{m.ID, m.Conversation, m.SenderUser, m.SenderDevice, m.ClientID} {
		buf = appendStr(buf, s)
	}
	for _, t := range [...]time.Time{m.SentAt, m.ExpiresAt} {
		buf = binary.AppendVarint(buf, t.Unix())
		buf = binary.AppendUvarint(buf, uint64(t.Nanosecond()))
	}
	buf = appendOptBytes(buf, m.Ciphertext)
	if m.Keys == nil {
		buf = binary.AppendUvarint(buf, 0)
	} else {
		buf = binary.AppendUvarint(buf, uint64(len(m.Keys))+1)
		for k, v := range m.Keys {
			buf = appendStr(buf, k)
			buf = appendOptBytes(buf, v)
		}
	}
	buf = binary.AppendUvarint(buf, uint64(len(m.Attachments)))
	for _, a := range m.Attachments {
		buf = appendStr(buf, a)
	}
	return buf, nil
}

// valueSize is an upper bound of the size of the binary form of m, so that
// a message kept in memory (the message log's table) wastes no capacity.
// The JSON fallback may need more; append then grows the buffer.
func valueSize(m *Message) int {
	const v = binary.MaxVarintLen64
	n := 1 + 5*v + len(m.ID) + len(m.Conversation) + len(m.SenderUser) + len(m.SenderDevice) + len(m.ClientID) +
		4*v + v + len(m.Ciphertext) + v + v
	for k, b := range m.Keys {
		n += 2*v + len(k) + len(b)
	}
	for _, a := range m.Attachments {
		n += v + len(a)
	}
	return n
}

func appendStr(buf []byte, s string) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(s)))
	return append(buf, s...)
}

func appendOptBytes(buf, b []byte) []byte {
	if b == nil {
		return binary.AppendUvarint(buf, 0)
	}
	buf = binary.AppendUvarint(buf, uint64(len(b))+1)
	return append(buf, b...)
}

var errCorruptMessage = errors.New("corrupt binary message")

// senderFields returns the sender user, sender device and client id of
// the stored message value v (after T(ExpiresAt)). The binary form is read
// only as far as these fields, and its slices alias v.
func senderFields(v []byte) (user, device, client []byte, err error) {
	if len(v) == 0 || v[0] != binaryMessage {
		var m Message
		if err := decodeMessageValue(v, &m); err != nil {
			return nil, nil, nil, err
		}
		return []byte(m.SenderUser), []byte(m.SenderDevice), []byte(m.ClientID), nil
	}
	d := msgDecoder{b: v[1:]}
	var f [5][]byte // id, conversation, user, device, client id
	for i := range f {
		f[i] = d.take(d.uvarint())
	}
	return f[2], f[3], f[4], d.err
}

// sentAtOf returns the SentAt of a message value without decoding the
// rest of it.
func sentAtOf(v []byte) (time.Time, error) {
	if len(v) == 0 || v[0] != binaryMessage {
		var m Message
		err := decodeMessageValue(v, &m)
		return m.SentAt, err
	}
	d := msgDecoder{b: v[1:]}
	for range 5 { // id, conversation, user, device, client id
		d.take(d.uvarint())
	}
	return d.time(), d.err
}

// decodeMessageValue decodes what appendMessageValue wrote (Seq stays 0).
func decodeMessageValue(v []byte, m *Message) error {
	if len(v) == 0 || v[0] != binaryMessage {
		return decode(v, m, "message")
	}
	d := msgDecoder{b: v[1:]}
	for _, s := range [...]*string{&m.ID, &m.Conversation, &m.SenderUser, &m.SenderDevice, &m.ClientID} {
		*s = d.str()
	}
	m.SentAt, m.ExpiresAt = d.time(), d.time()
	m.Ciphertext = d.optBytes()
	if n := d.uvarint(); n > 0 {
		n--
		if n > uint64(len(d.b)) { // each key takes at least two bytes
			return errCorruptMessage
		}
		m.Keys = make(map[string][]byte, n)
		for range n {
			k := d.str()
			m.Keys[k] = d.optBytes()
		}
	}
	if n := d.uvarint(); n > 0 {
		if n > uint64(len(d.b)) {
			return errCorruptMessage
		}
		m.Attachments = make([]string, n)
		for i := range m.Attachments {
			m.Attachments[i] = d.str()
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = errCorruptMessage
	}
	return d.err
}

// msgDecoder reads the binary form; the first failure sticks and later
// reads return zero values.
type msgDecoder struct {
	b   []byte
	err error
}

func (d *msgDecoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	x, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errCorruptMessage
		return 0
	}
	d.b = d.b[n:]
	return x
}

func (d *msgDecoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	x, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = errCorruptMessage
		return 0
	}
	d.b = d.b[n:]
	return x
}

func (d *msgDecoder) take(n uint64) []byte {
	if d.err != nil || n > uint64(len(d.b)) {
		d.err = errCorruptMessage
		return nil
	}
	p := d.b[:n:n]
	d.b = d.b[n:]
	return p
}

// time reads seconds and nanoseconds.
func (d *msgDecoder) time() time.Time {
	sec, ns := d.varint(), d.uvarint()
	if ns >= 1e9 {
		d.err = errCorruptMessage
	}
	return time.Unix(sec, int64(ns)).UTC()
}

func (d *msgDecoder) str() string { return string(d.take(d.uvarint())) }

// optBytes returns a copy: values from bbolt are only valid inside their
// transaction.
func (d *msgDecoder) optBytes() []byte {
	n := d.uvarint()
	if n == 0 || d.err != nil {
		return nil
	}
	return append([]byte{}, d.take(n-1)...)
}

// AppendMessageValue appends the compact form of m that the store keeps
// (binary, or JSON for times that are not UTC), without its Seq: for
// carrying a message between nodes. DecodeMessageValue reads it back.
func AppendMessageValue(buf []byte, m *Message) ([]byte, error) { return appendMessageValue(buf, m) }

// DecodeMessageValue decodes what AppendMessageValue wrote into m (Seq
// stays as it is).
func DecodeMessageValue(v []byte, m *Message) error { return decodeMessageValue(v, m) }
