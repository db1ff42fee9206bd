package client

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hpke"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"slices"

	"klassenfunk/proto"
)

// The format of docs/e2ee.md, version 1. Changing anything here is a new
// format version.
const (
	// FormatVersion is the first byte of every ciphertext (message body
	// and attachment) of this format.
	FormatVersion byte = 1

	// HPKE suite identifiers (RFC 9180, section 7): DHKEM(X25519,
	// HKDF-SHA256), HKDF-SHA256, AES-256-GCM, mode_base.
	KEMID  uint16 = 0x0020
	KDFID  uint16 = 0x0001
	AEADID uint16 = 0x0002

	// ContentKeySize is the size of a content key (AES-256).
	ContentKeySize = 32
	// NonceSize is the AES-GCM nonce size.
	NonceSize = 12
	// TagSize is the AES-GCM tag size.
	TagSize = 16
	// HeaderSize is version byte plus nonce.
	HeaderSize = 1 + NonceSize
	// Overhead is what sealing adds to a plaintext: header and tag.
	Overhead = HeaderSize + TagSize
	// PublicKeySize is the size of an X25519 public key (and of HPKE's enc).
	PublicKeySize = 32
	// WrappedKeySize is the size of a wrapped content key: HPKE's enc
	// followed by the sealed content key and its tag.
	WrappedKeySize = PublicKeySize + ContentKeySize + TagSize
)

// Labels that start every associated-data and info string, so that no value
// of one kind can be taken for another.
const (
	labelMessage    = "klassenfunk/v1/message"
	labelAttachment = "klassenfunk/v1/attachment"
	labelWrap       = "klassenfunk/v1/wrap"
)

var (
	suiteKEM  = hpke.DHKEM(ecdh.X25519())
	suiteKDF  = hpke.HKDFSHA256()
	suiteAEAD = hpke.AES256GCM()
)

// Addr is one device: "<user id>/<device id>" on the wire.
type Addr struct {
	UserID   string
	DeviceID string
}

// KeyName returns the name of the device's entry in a message's keys.
func (a Addr) KeyName() string { return proto.KeyName(a.UserID, a.DeviceID) }

// DeviceKey is a device's X25519 key pair. Its private half never leaves
// the device.
type DeviceKey struct {
	ecdh *ecdh.PrivateKey
	hpke hpke.PrivateKey
}

// GenerateDeviceKey makes a new device key pair.
func GenerateDeviceKey() (*DeviceKey, error) {
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return newDeviceKey(k)
}

// ParseDeviceKey loads a device key from the 32 bytes of [DeviceKey.Bytes].
func ParseDeviceKey(raw []byte) (*DeviceKey, error) {
	k, err := ecdh.X25519().NewPrivateKey(raw)
	if err != nil {
		return nil, fmt.Errorf("device key: %w", err)
	}
	return newDeviceKey(k)
}

func newDeviceKey(k *ecdh.PrivateKey) (*DeviceKey, error) {
	hk, err := hpke.NewDHKEMPrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("device key: %w", err)
	}
	return &DeviceKey{ecdh: k, hpke: hk}, nil
}

// Bytes returns the 32-byte X25519 private key (secret: store it 0600).
func (k *DeviceKey) Bytes() []byte { return k.ecdh.Bytes() }

// PublicKey returns the 32-byte X25519 public key, as sent with PUT /keys.
func (k *DeviceKey) PublicKey() []byte { return k.ecdh.PublicKey().Bytes() }

// Recipient is a device that gets a wrapped key, as listed by GET
// /conversations/{id}/devices.
type Recipient struct {
	UserID    string `json:"user_id"`
	DeviceID  string `json:"device_id"`
	PublicKey []byte `json:"public_key"`
}

// Addr returns the recipient's device address.
func (r Recipient) Addr() Addr { return Addr{r.UserID, r.DeviceID} }

// fields encodes each value as a 2-byte big-endian length followed by its
// bytes, and concatenates them (docs/e2ee.md, "lp").
func fields(vals ...string) []byte {
	n := 0
	for _, v := range vals {
		n += 2 + len(v)
	}
	b := make([]byte, 0, n)
	for _, v := range vals {
		if len(v) > 0xffff {
			panic("client: field longer than 65535 bytes") // ids are ≤ 257 bytes
		}
		b = binary.BigEndian.AppendUint16(b, uint16(len(v)))
		b = append(b, v...)
	}
	return b
}

// MessageAAD is the associated data of a message body: it binds the body to
// its conversation and sending device.
func MessageAAD(conversation string, sender Addr) []byte {
	return fields(labelMessage, conversation, sender.KeyName())
}

// AttachmentAAD is the associated data of an attachment's bytes: it binds
// them to the conversation and the sending device of the message that
// carries their key.
func AttachmentAAD(conversation string, sender Addr) []byte {
	return fields(labelAttachment, conversation, sender.KeyName())
}

// WrapInfo is the HPKE info of a wrapped key: it binds the wrapped key to
// its conversation and recipient device.
func WrapInfo(conversation string, recipient Addr) []byte {
	return fields(labelWrap, conversation, recipient.KeyName())
}

// NewContentKey returns a fresh random content key.
func NewContentKey() []byte {
	k := make([]byte, ContentKeySize)
	rand.Read(k) // never fails (Go ≥ 1.24)
	return k
}

func newGCM(key []byte) (cipher.AEAD, error) {
	if len(key) != ContentKeySize {
		return nil, fmt.Errorf("%w: content key of %d bytes", ErrFormat, len(key))
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// SealBody encrypts plaintext with key: version ‖ nonce ‖ AES-256-GCM
// ciphertext and tag, with aad as associated data.
func SealBody(key, aad, plaintext []byte) ([]byte, error) {
	g, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	out := make([]byte, HeaderSize, HeaderSize+len(plaintext)+TagSize)
	out[0] = FormatVersion
	rand.Read(out[1:HeaderSize])
	return g.Seal(out, out[1:HeaderSize], plaintext, aad), nil
}

// OpenBody decrypts what SealBody made. Errors: ErrFormat, ErrVersion,
// ErrBodyAuth.
func OpenBody(key, aad, sealed []byte) ([]byte, error) {
	if len(sealed) < Overhead {
		return nil, fmt.Errorf("%w: ciphertext of %d bytes is shorter than %d", ErrFormat, len(sealed), Overhead)
	}
	if sealed[0] != FormatVersion {
		return nil, fmt.Errorf("%w: version %d", ErrVersion, sealed[0])
	}
	g, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	pt, err := g.Open(nil, sealed[1:HeaderSize], sealed[HeaderSize:], aad)
	if err != nil {
		return nil, ErrBodyAuth
	}
	return pt, nil
}

// WrapKey seals the content key to one device's public key with HPKE
// (single-shot, mode_base, empty aad). The result is enc ‖ ciphertext,
// WrappedKeySize bytes.
func WrapKey(publicKey []byte, info, contentKey []byte) ([]byte, error) {
	if len(publicKey) != PublicKeySize {
		return nil, fmt.Errorf("%w: public key of %d bytes", ErrFormat, len(publicKey))
	}
	pk, err := suiteKEM.NewPublicKey(publicKey)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	return hpke.Seal(pk, suiteKDF, suiteAEAD, info, contentKey)
}

// UnwrapKey opens a wrapped content key with the device's private key.
// Errors: ErrFormat, ErrKeyUnwrap.
func (k *DeviceKey) UnwrapKey(info, wrapped []byte) ([]byte, error) {
	if len(wrapped) != WrappedKeySize {
		return nil, fmt.Errorf("%w: wrapped key of %d bytes, want %d", ErrKeyUnwrap, len(wrapped), WrappedKeySize)
	}
	ck, err := hpke.Open(k.hpke, suiteKDF, suiteAEAD, info, wrapped)
	if err != nil {
		return nil, ErrKeyUnwrap
	}
	if len(ck) != ContentKeySize {
		return nil, fmt.Errorf("%w: content key of %d bytes", ErrKeyUnwrap, len(ck))
	}
	return ck, nil
}

// Sealed is an encrypted message, ready for a send frame or POST
// /conversations/{id}/messages.
type Sealed struct {
	Ciphertext []byte
	Keys       map[string][]byte
	// Skipped lists recipient devices whose public key was unusable; they
	// cannot read the message.
	Skipped []string
}

// SealMessage encrypts plaintext, sent by this device (self), for every
// recipient device of one conversation. This device is always added to the
// recipients, so that it can read its own history back. Recipients with an
// unusable public key or address are skipped and listed in Sealed.Skipped;
// if no device remains, the error is ErrNoRecipients.
func (k *DeviceKey) SealMessage(conversation string, self Addr, plaintext []byte, recipients []Recipient) (*Sealed, error) {
	ck := NewContentKey()
	body, err := SealBody(ck, MessageAAD(conversation, self), plaintext)
	if err != nil {
		return nil, err
	}
	out := &Sealed{Ciphertext: body, Keys: make(map[string][]byte, len(recipients)+1)}
	// The server's list may lack this device (key not yet uploaded) or
	// hold a stale key for it: what this device holds wins.
	recipients = slices.DeleteFunc(slices.Clone(recipients), func(r Recipient) bool { return r.Addr() == self })
	recipients = append(recipients, Recipient{UserID: self.UserID, DeviceID: self.DeviceID, PublicKey: k.PublicKey()})
	for _, r := range recipients {
		name := r.Addr().KeyName()
		if _, _, ok := proto.SplitKeyName(name); !ok {
			out.Skipped = append(out.Skipped, name)
			continue
		}
		if _, dup := out.Keys[name]; dup {
			continue
		}
		w, err := WrapKey(r.PublicKey, WrapInfo(conversation, r.Addr()), ck)
		if err != nil {
			out.Skipped = append(out.Skipped, name)
			continue
		}
		out.Keys[name] = w
	}
	if len(out.Keys) == 0 {
		return nil, ErrNoRecipients
	}
	if len(out.Keys) > proto.MaxKeys {
		return nil, fmt.Errorf("client: %d recipient devices exceed the limit of %d", len(out.Keys), proto.MaxKeys)
	}
	return out, nil
}

// OpenMessage decrypts a received message with this device's key: it
// unwraps the content key from the device's entry in m.Keys and opens the
// body with the message's conversation and sender as context. It returns
// the plaintext bytes; see [DecodeContent] for their meaning.
func (k *DeviceKey) OpenMessage(self Addr, m *proto.Message) ([]byte, error) {
	wrapped, ok := m.Keys[self.KeyName()]
	if !ok {
		return nil, ErrNotForDevice
	}
	ck, err := k.UnwrapKey(WrapInfo(m.Conversation, self), wrapped)
	if err != nil {
		return nil, err
	}
	return OpenBody(ck, MessageAAD(m.Conversation, Addr{m.Sender.UserID, m.Sender.DeviceID}), m.Ciphertext)
}
