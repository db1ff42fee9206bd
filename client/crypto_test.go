package client

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"klassenfunk/proto"
)

// party is one device in the crypto tests.
type party struct {
	key  *DeviceKey
	addr Addr
}

func newParty(t *testing.T, user, device string) party {
	t.Helper()
	k, err := GenerateDeviceKey()
	if err != nil {
		t.Fatal(err)
	}
	return party{key: k, addr: Addr{user, device}}
}

func (p party) recipient() Recipient {
	return Recipient{UserID: p.addr.UserID, DeviceID: p.addr.DeviceID, PublicKey: p.key.PublicKey()}
}

// sealFor builds a delivered message from alice to the given recipients, as
// the server would deliver it (all keys; a reader gets only its own).
func sealFor(t *testing.T, conv string, from party, text string, to ...party) *proto.Message {
	t.Helper()
	var rs []Recipient
	for _, p := range to {
		rs = append(rs, p.recipient())
	}
	pt, err := EncodeContent(&Content{Text: text, ClientID: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	s, err := from.key.SealMessage(conv, from.addr, pt, rs)
	if err != nil {
		t.Fatal(err)
	}
	return &proto.Message{
		ID: "m1", Conversation: conv, Seq: 1,
		Sender: proto.Sender{UserID: from.addr.UserID, DeviceID: from.addr.DeviceID},
		SentAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour),
		Ciphertext: s.Ciphertext, Keys: s.Keys,
	}
}

func openText(p party, m *proto.Message) (string, error) {
	pt, err := p.key.OpenMessage(p.addr, m)
	if err != nil {
		return "", err
	}
	c, err := DecodeContent(pt)
	if err != nil {
		return "", err
	}
	return c.Text, nil
}

func cloneMessage(m *proto.Message) *proto.Message {
	c := *m
	c.Ciphertext = bytes.Clone(m.Ciphertext)
	c.Keys = make(map[string][]byte, len(m.Keys))
	for k, v := range m.Keys {
		c.Keys[k] = bytes.Clone(v)
	}
	return &c
}

func TestSealOpenRoundTrip(t *testing.T) {
	alice := newParty(t, "ua", "phone")
	alice2 := newParty(t, "ua", "laptop")
	bob := newParty(t, "ub", "phone")
	m := sealFor(t, "conv1", alice, "Treffen um 8 im Raum 204", bob, alice2)

	if len(m.Keys) != 3 {
		t.Fatalf("keys for %d devices, want 3 (bob, alice's laptop and the sending device itself)", len(m.Keys))
	}
	for _, p := range []party{alice, alice2, bob} {
		got, err := openText(p, m)
		if err != nil {
			t.Fatalf("%s: %v", p.addr.KeyName(), err)
		}
		if got != "Treffen um 8 im Raum 204" {
			t.Fatalf("%s: got %q", p.addr.KeyName(), got)
		}
		if n := len(m.Keys[p.addr.KeyName()]); n != WrappedKeySize {
			t.Fatalf("wrapped key of %d bytes, want %d", n, WrappedKeySize)
		}
	}
	if m.Ciphertext[0] != FormatVersion {
		t.Fatalf("version byte %d", m.Ciphertext[0])
	}
	if len(m.Ciphertext)%PadBlock != Overhead%PadBlock {
		t.Fatalf("ciphertext of %d bytes: plaintext not padded to %d", len(m.Ciphertext), PadBlock)
	}
	if bytes.Contains(m.Ciphertext, []byte("Raum 204")) {
		t.Fatal("plaintext visible in the ciphertext")
	}
}

// TestTampering is the tampering table of the issue: every change to what
// the server stores or delivers fails with a clear error.
func TestTampering(t *testing.T) {
	alice := newParty(t, "ua", "phone")
	bob := newParty(t, "ub", "phone")
	carol := newParty(t, "uc", "phone")
	bob2 := newParty(t, "ub", "tablet")
	orig := sealFor(t, "conv1", alice, "geheim", bob)
	bobKey := bob.addr.KeyName()

	tests := map[string]struct {
		reader party
		change func(m *proto.Message)
		want   error
	}{
		"flipped ciphertext byte (body)":        {bob, func(m *proto.Message) { m.Ciphertext[HeaderSize+3] ^= 0x01 }, ErrBodyAuth},
		"flipped ciphertext byte (nonce)":       {bob, func(m *proto.Message) { m.Ciphertext[1] ^= 0x80 }, ErrBodyAuth},
		"flipped ciphertext byte (tag)":         {bob, func(m *proto.Message) { m.Ciphertext[len(m.Ciphertext)-1] ^= 0x01 }, ErrBodyAuth},
		"changed version byte":                  {bob, func(m *proto.Message) { m.Ciphertext[0] = 2 }, ErrVersion},
		"truncated ciphertext":                  {bob, func(m *proto.Message) { m.Ciphertext = m.Ciphertext[:Overhead-1] }, ErrFormat},
		"ciphertext cut short":                  {bob, func(m *proto.Message) { m.Ciphertext = m.Ciphertext[:len(m.Ciphertext)-1] }, ErrBodyAuth},
		"flipped wrapped-key byte (enc)":        {bob, func(m *proto.Message) { m.Keys[bobKey][0] ^= 0x01 }, ErrKeyUnwrap},
		"flipped wrapped-key byte (sealed key)": {bob, func(m *proto.Message) { m.Keys[bobKey][PublicKeySize+1] ^= 0x01 }, ErrKeyUnwrap},
		"flipped wrapped-key byte (tag)":        {bob, func(m *proto.Message) { m.Keys[bobKey][WrappedKeySize-1] ^= 0x01 }, ErrKeyUnwrap},
		"truncated wrapped key":                 {bob, func(m *proto.Message) { m.Keys[bobKey] = m.Keys[bobKey][:40] }, ErrKeyUnwrap},
		"moved to another conversation":         {bob, func(m *proto.Message) { m.Conversation = "conv2" }, ErrKeyUnwrap},
		"other sender claimed":                  {bob, func(m *proto.Message) { m.Sender.UserID = "uc" }, ErrBodyAuth},
		"other sending device claimed":          {bob, func(m *proto.Message) { m.Sender.DeviceID = "laptop" }, ErrBodyAuth},
		"for another device, none for this one": {carol, func(*proto.Message) {}, ErrNotForDevice},
		"another device's key given to this one": {carol, func(m *proto.Message) {
			m.Keys[carol.addr.KeyName()] = m.Keys[bobKey]
		}, ErrKeyUnwrap},
		"another device of the same user": {bob2, func(m *proto.Message) {
			m.Keys[bob2.addr.KeyName()] = m.Keys[bobKey]
		}, ErrKeyUnwrap},
		"ciphertext of another message": {bob, func(m *proto.Message) {
			m.Ciphertext = sealFor(t, "conv1", alice, "geheim", bob).Ciphertext
		}, ErrBodyAuth},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			m := cloneMessage(orig)
			tc.change(m)
			text, err := openText(tc.reader, m)
			if err == nil {
				t.Fatalf("decrypted to %q, want %v", text, tc.want)
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
		})
	}
	// The untouched message still opens (the table did not share bytes).
	if _, err := openText(bob, orig); err != nil {
		t.Fatalf("original: %v", err)
	}
}

// TestBodyAADBindsContext checks the associated data on its own: the same
// body and key under another conversation or sender do not open.
func TestBodyAADBindsContext(t *testing.T) {
	ck := NewContentKey()
	a := Addr{"ua", "phone"}
	body, err := SealBody(ck, MessageAAD("conv1", a), []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	for name, aad := range map[string][]byte{
		"other conversation": MessageAAD("conv2", a),
		"other sender":       MessageAAD("conv1", Addr{"ub", "phone"}),
		"attachment context": AttachmentAAD("conv1", a),
		// Length prefixes keep the fields apart: conversation "conv1"
		// with sender "ua/phone" is not "conv1u" with "a/phone".
		"shifted field boundary": MessageAAD("conv1u", Addr{"a", "phone"}),
	} {
		if _, err := OpenBody(ck, aad, body); !errors.Is(err, ErrBodyAuth) {
			t.Errorf("%s: error %v, want ErrBodyAuth", name, err)
		}
	}
	if _, err := OpenBody(ck, MessageAAD("conv1", a), body); err != nil {
		t.Fatal(err)
	}
}

func TestSealSkipsUnusableKeys(t *testing.T) {
	alice := newParty(t, "ua", "phone")
	bob := newParty(t, "ub", "phone")
	bad := []Recipient{
		bob.recipient(),
		{UserID: "uc", DeviceID: "zero", PublicKey: make([]byte, 32)}, // low order: X25519 gives all zeros
		{UserID: "ud", DeviceID: "short", PublicKey: []byte{1, 2, 3}},
		{UserID: "", DeviceID: "noname", PublicKey: bob.key.PublicKey()},
	}
	s, err := alice.key.SealMessage("conv1", alice.addr, []byte(`{"text":"hi"}`), bad)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Keys) != 2 || s.Keys[bob.addr.KeyName()] == nil || s.Keys[alice.addr.KeyName()] == nil {
		t.Fatalf("keys %v, want bob and alice", keysOf(s.Keys))
	}
	if len(s.Skipped) != 3 {
		t.Fatalf("skipped %v, want 3 devices", s.Skipped)
	}
}

func TestSealUsesOwnKeyNotServers(t *testing.T) {
	alice := newParty(t, "ua", "phone")
	mallory := newParty(t, "ua", "phone") // the server claims another key for alice's device
	s, err := alice.key.SealMessage("conv1", alice.addr, []byte(`{"text":"hi"}`), []Recipient{mallory.recipient()})
	if err != nil {
		t.Fatal(err)
	}
	m := &proto.Message{Conversation: "conv1", Sender: proto.Sender{UserID: "ua", DeviceID: "phone"}, Ciphertext: s.Ciphertext, Keys: s.Keys}
	if _, err := alice.key.OpenMessage(alice.addr, m); err != nil {
		t.Fatalf("own device: %v", err)
	}
	if _, err := mallory.key.OpenMessage(mallory.addr, m); !errors.Is(err, ErrKeyUnwrap) {
		t.Fatalf("substituted key: error %v, want ErrKeyUnwrap", err)
	}
}

func TestAttachmentSealOpen(t *testing.T) {
	a := Addr{"ua", "phone"}
	data := bytes.Repeat([]byte("Stundenplan "), 1000)
	sealed, key, err := SealAttachment("conv1", a, data)
	if err != nil {
		t.Fatal(err)
	}
	got, err := OpenAttachment("conv1", a, key, sealed)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("round trip: %v", err)
	}
	sealed[len(sealed)/2] ^= 1
	if _, err := OpenAttachment("conv1", a, key, sealed); !errors.Is(err, ErrBodyAuth) {
		t.Fatalf("tampered attachment: %v", err)
	}
	sealed[len(sealed)/2] ^= 1
	if _, err := OpenAttachment("conv2", a, key, sealed); !errors.Is(err, ErrBodyAuth) {
		t.Fatalf("attachment in another conversation: %v", err)
	}
	if _, err := OpenAttachment("conv1", a, NewContentKey(), sealed); !errors.Is(err, ErrBodyAuth) {
		t.Fatalf("wrong key: %v", err)
	}
}

func TestDeviceKeyBytesRoundTrip(t *testing.T) {
	k, err := GenerateDeviceKey()
	if err != nil {
		t.Fatal(err)
	}
	k2, err := ParseDeviceKey(k.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(k.PublicKey(), k2.PublicKey()) || len(k.PublicKey()) != PublicKeySize {
		t.Fatal("public keys differ after a round trip")
	}
	if _, err := ParseDeviceKey(make([]byte, 31)); err == nil {
		t.Fatal("31-byte key accepted")
	}
}

func TestContentPaddingAndDecode(t *testing.T) {
	for _, n := range []int{0, 1, 30, 63, 64, 65, 1000} {
		c := &Content{Text: string(bytes.Repeat([]byte("ä"), n)), ClientID: "cid"}
		b, err := EncodeContent(c)
		if err != nil {
			t.Fatal(err)
		}
		if len(b)%PadBlock != 0 {
			t.Fatalf("text of %d runes: %d bytes, not a multiple of %d", n, len(b), PadBlock)
		}
		got, err := DecodeContent(b)
		if err != nil || got.Text != c.Text || got.ClientID != "cid" {
			t.Fatalf("decode: %+v %v", got, err)
		}
	}
	for name, bad := range map[string]string{
		"not json":      "hello",
		"array":         `["text"]`,
		"invalid utf8":  "{\"text\":\"\xff\"}",
		"bad key":       `{"text":"x","attachments":[{"id":"a","key":"AAAA","size":1}]}`,
		"attachment id": `{"text":"x","attachments":[{"key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","size":1}]}`,
	} {
		if _, err := DecodeContent([]byte(bad)); !errors.Is(err, ErrFormat) {
			t.Errorf("%s: error %v, want ErrFormat", name, err)
		}
	}
	// Unknown members are ignored, so that later versions can add some.
	if c, err := DecodeContent([]byte(`{"text":"x","reply_to":"m9"}   `)); err != nil || c.Text != "x" {
		t.Fatalf("unknown member: %+v %v", c, err)
	}
}

func keysOf(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
