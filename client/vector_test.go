package client

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"klassenfunk/proto"
)

var update = flag.Bool("update", false, "regenerate testdata/vector_v1.json")

// vector is testdata/vector_v1.json: a message and a push blob made once by
// this package, for other implementations to check their decryption and
// their associated-data encoding against (docs/e2ee.md, "Test vector").
type vector struct {
	Comment string `json:"comment"`
	// Recipient is the reading device: its address and private key.
	Recipient struct {
		UserID     string `json:"user_id"`
		DeviceID   string `json:"device_id"`
		PrivateKey []byte `json:"private_key"`
		PublicKey  []byte `json:"public_key"`
	} `json:"recipient"`
	// Message is the message as GET /messages/{id} returns it to that
	// device.
	Message proto.Message `json:"message"`
	// Intermediate values, hex.
	WrapInfoHex   string `json:"wrap_info_hex"`
	MessageAADHex string `json:"message_aad_hex"`
	ContentKeyHex string `json:"content_key_hex"`
	// Plaintext is the exact decrypted plaintext (JSON padded with
	// spaces).
	Plaintext string `json:"plaintext"`
	// Attachment: its sealed bytes (hex) and plaintext; the key is in the
	// message plaintext.
	AttachmentAADHex    string `json:"attachment_aad_hex"`
	AttachmentSealedHex string `json:"attachment_sealed_hex"`
	AttachmentPlaintext string `json:"attachment_plaintext"`
	// Push blob.
	Push struct {
		Secret    []byte      `json:"push_secret"`
		ServiceID string      `json:"service_id"`
		P         string      `json:"p"`
		Payload   PushPayload `json:"payload"`
	} `json:"push"`
}

const vectorFile = "testdata/vector_v1.json"

func TestVectorV1(t *testing.T) {
	if *update {
		writeVector(t)
	}
	b, err := os.ReadFile(vectorFile)
	if err != nil {
		t.Fatal(err)
	}
	var v vector
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	k, err := ParseDeviceKey(v.Recipient.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(k.PublicKey(), v.Recipient.PublicKey) {
		t.Fatal("public key does not match the private key")
	}
	self := Addr{v.Recipient.UserID, v.Recipient.DeviceID}
	m := &v.Message
	sender := Addr{m.Sender.UserID, m.Sender.DeviceID}
	if got := hex.EncodeToString(WrapInfo(m.Conversation, self)); got != v.WrapInfoHex {
		t.Fatalf("wrap info %s, want %s", got, v.WrapInfoHex)
	}
	if got := hex.EncodeToString(MessageAAD(m.Conversation, sender)); got != v.MessageAADHex {
		t.Fatalf("message aad %s, want %s", got, v.MessageAADHex)
	}
	if got := hex.EncodeToString(AttachmentAAD(m.Conversation, sender)); got != v.AttachmentAADHex {
		t.Fatalf("attachment aad %s, want %s", got, v.AttachmentAADHex)
	}
	ck, err := k.UnwrapKey(WrapInfo(m.Conversation, self), m.Keys[self.KeyName()])
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(ck) != v.ContentKeyHex {
		t.Fatal("content key differs")
	}
	pt, err := k.OpenMessage(self, m)
	if err != nil {
		t.Fatal(err)
	}
	if string(pt) != v.Plaintext {
		t.Fatalf("plaintext %q, want %q", pt, v.Plaintext)
	}
	c, err := DecodeContent(pt)
	if err != nil || len(c.Attachments) != 1 {
		t.Fatalf("content %+v, %v", c, err)
	}
	sealed, _ := hex.DecodeString(v.AttachmentSealedHex)
	att, err := OpenAttachment(m.Conversation, sender, c.Attachments[0].Key, sealed)
	if err != nil || string(att) != v.AttachmentPlaintext {
		t.Fatalf("attachment %q, %v", att, err)
	}
	p, err := OpenPushBlob(v.Push.Secret, v.Push.ServiceID, v.Push.P)
	if err != nil || p != v.Push.Payload {
		t.Fatalf("push %+v, %v", p, err)
	}
}

func writeVector(t *testing.T) {
	t.Helper()
	var v vector
	v.Comment = "Klassenfunk E2EE format v1 (docs/e2ee.md). Binary values are standard base64 unless the name ends in _hex. The message is what the recipient device receives: only its own entry in keys."
	// Fixed, recognisable keys: fine for a test vector, never for use.
	priv := bytes.Repeat([]byte{0x42}, 32)
	k, err := ParseDeviceKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	self := Addr{"u_bob", "bobs-phone"}
	from := Addr{"u_alice", "alices-phone"}
	const conv = "c_klasse7b"
	v.Recipient.UserID, v.Recipient.DeviceID = self.UserID, self.DeviceID
	v.Recipient.PrivateKey, v.Recipient.PublicKey = priv, k.PublicKey()

	attPlain := "Stundenplan 7b: Mo 1. Stunde Mathe"
	attSealed, attKey, err := SealAttachment(conv, from, []byte(attPlain))
	if err != nil {
		t.Fatal(err)
	}
	pt, err := EncodeContent(&Content{Text: "Treffen um 8 im Raum 204", ClientID: "cid-0001",
		Attachments: []AttachmentRef{{ID: "a_plan", Key: attKey, Name: "plan.txt", Type: "text/plain", Size: int64(len(attPlain))}}})
	if err != nil {
		t.Fatal(err)
	}
	ck := NewContentKey()
	body, err := SealBody(ck, MessageAAD(conv, from), pt)
	if err != nil {
		t.Fatal(err)
	}
	wrapped, err := WrapKey(k.PublicKey(), WrapInfo(conv, self), ck)
	if err != nil {
		t.Fatal(err)
	}
	sentAt := time.Date(2026, 9, 1, 8, 0, 0, 0, time.UTC)
	v.Message = proto.Message{
		ID: "m_0001", Conversation: conv, Seq: 1,
		Sender: proto.Sender{UserID: from.UserID, DeviceID: from.DeviceID},
		SentAt: sentAt, ExpiresAt: sentAt.Add(720 * time.Hour),
		Ciphertext: body, Keys: map[string][]byte{self.KeyName(): wrapped}, Attachments: []string{"a_plan"},
	}
	v.WrapInfoHex = hex.EncodeToString(WrapInfo(conv, self))
	v.MessageAADHex = hex.EncodeToString(MessageAAD(conv, from))
	v.AttachmentAADHex = hex.EncodeToString(AttachmentAAD(conv, from))
	v.ContentKeyHex = hex.EncodeToString(ck)
	v.Plaintext = string(pt)
	v.AttachmentSealedHex = hex.EncodeToString(attSealed)
	v.AttachmentPlaintext = attPlain

	v.Push.Secret = bytes.Repeat([]byte{0x5a}, 32)
	v.Push.ServiceID = "s_9Qm2"
	v.Push.Payload = PushPayload{T: "message", C: conv, M: "m_0001", S: 1}
	payload, _ := json.Marshal(v.Push.Payload)
	blk, _ := aes.NewCipher(v.Push.Secret)
	g, _ := cipher.NewGCM(blk)
	nonce := NewContentKey()[:NonceSize]
	v.Push.P = base64.StdEncoding.EncodeToString(g.Seal(nonce, nonce, payload, []byte(v.Push.ServiceID)))

	out, err := json.MarshalIndent(&v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(vectorFile), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(vectorFile, append(out, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}
