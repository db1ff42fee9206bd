package client

import (
	"bytes"
	"encoding/json"
	"fmt"
	"unicode/utf8"
)

// Content is the plaintext of a message: a small JSON object
// (docs/e2ee.md, "Message plaintext"). Receivers ignore members they do not
// know.
type Content struct {
	// Text is the message text (UTF-8).
	Text string `json:"text"`
	// ClientID repeats the client_id of the send. The server does not
	// deliver client_id with a message; inside the ciphertext it is
	// authenticated, so a receiver can recognise a ciphertext that the
	// server replays as a new message.
	ClientID string `json:"client_id,omitempty"`
	// Attachments carry what a receiver needs to fetch and decrypt each
	// attachment.
	Attachments []AttachmentRef `json:"attachments,omitempty"`
}

// AttachmentRef describes one encrypted attachment inside a message.
type AttachmentRef struct {
	// ID is the id from POST /attachments; it is also listed in the
	// message's (cleartext) attachments.
	ID string `json:"id"`
	// Key is the attachment's 32-byte content key (base64 in JSON).
	Key []byte `json:"key"`
	// Name is the file name the sender gave, for display only.
	Name string `json:"name,omitempty"`
	// Type is the media type, e.g. "image/jpeg"; may be empty.
	Type string `json:"type,omitempty"`
	// Size is the plaintext size in bytes.
	Size int64 `json:"size"`
}

// PadBlock is the block size that encoded message plaintexts are padded to
// with trailing spaces, so that the ciphertext length reveals the text
// length only roughly.
const PadBlock = 64

// EncodeContent encodes c as JSON and pads it with ASCII spaces to a
// multiple of PadBlock bytes (JSON allows trailing white space).
func EncodeContent(c *Content) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(c); err != nil {
		return nil, err
	}
	b := bytes.TrimRight(buf.Bytes(), "\n")
	if pad := (PadBlock - len(b)%PadBlock) % PadBlock; pad > 0 {
		b = append(b, bytes.Repeat([]byte{' '}, pad)...)
	}
	return b, nil
}

// DecodeContent parses a decrypted message plaintext. Anything that is not
// a UTF-8 JSON object is ErrFormat.
func DecodeContent(plaintext []byte) (*Content, error) {
	if !utf8.Valid(plaintext) {
		return nil, fmt.Errorf("%w: plaintext is not UTF-8", ErrFormat)
	}
	if t := bytes.TrimLeft(plaintext, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return nil, fmt.Errorf("%w: plaintext is not a JSON object", ErrFormat)
	}
	var c Content
	if err := json.Unmarshal(plaintext, &c); err != nil {
		return nil, fmt.Errorf("%w: plaintext: %v", ErrFormat, err)
	}
	for _, a := range c.Attachments {
		if a.ID == "" || len(a.Key) != ContentKeySize || a.Size < 0 {
			return nil, fmt.Errorf("%w: attachment entry without id or with a bad key", ErrFormat)
		}
	}
	return &c, nil
}

// SealAttachment encrypts attachment bytes with a fresh content key for a
// message that this device (self) will send to conversation. Upload the
// result with POST /attachments and put the key into the message's
// [AttachmentRef].
func SealAttachment(conversation string, self Addr, data []byte) (sealed, key []byte, err error) {
	key = NewContentKey()
	sealed, err = SealBody(key, AttachmentAAD(conversation, self), data)
	return sealed, key, err
}

// OpenAttachment decrypts downloaded attachment bytes with the key from the
// message and the message's conversation and sender.
func OpenAttachment(conversation string, sender Addr, key, sealed []byte) ([]byte, error) {
	return OpenBody(key, AttachmentAAD(conversation, sender), sealed)
}
