package proto

import (
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Frame types: the value of a frame's "type" member.
const (
	// TypeAuth is a client frame carrying a credential, the first frame of
	// a connection that was not authenticated by header.
	TypeAuth = "auth"
	// TypeSend is a client frame carrying a new message.
	TypeSend = "send"
	// TypeSync is a client frame asking for every stored message after the
	// given cursors.
	TypeSync = "sync"
	// TypePing is a client keepalive frame; the server answers with pong.
	TypePing = "ping"

	// TypeReady is a server frame sent once the connection is
	// authenticated.
	TypeReady = "ready"
	// TypeSent is a server frame confirming that a send is durably stored.
	TypeSent = "sent"
	// TypeMessage is a server frame delivering a message.
	TypeMessage = "message"
	// TypeError is a server frame reporting a bad client frame.
	TypeError = "error"
	// TypePong is the server's answer to ping.
	TypePong = "pong"
	// TypeSynced is a server frame marking the end of a sync replay.
	TypeSynced = "synced"
)

// Send is the body of a send frame and of POST
// /conversations/{id}/messages (there Conversation comes from the path).
type Send struct {
	// Conversation is the id of the target conversation.
	Conversation string `json:"conversation,omitempty"`
	// ClientID is chosen by the client; sending the same ClientID again
	// returns the message stored the first time.
	ClientID string `json:"client_id"`
	// Ciphertext is the end-to-end encrypted message, opaque to the
	// server. On the wire it is standard padded base64.
	Ciphertext []byte `json:"ciphertext"`
	// Keys maps "<user id>/<device id>" to the message key wrapped for that
	// device. On the wire the values are standard padded base64.
	Keys map[string][]byte `json:"keys"`
	// Attachments lists the ids of previously uploaded attachments.
	Attachments []string `json:"attachments,omitempty"`
}

// ClientFrame is a decoded client→server frame. Exactly the fields that
// belong to Type are set.
type ClientFrame struct {
	// Type is one of TypeAuth, TypeSend, TypeSync or TypePing.
	Type string
	// Ref is the client's reference, echoed in the matching sent or error
	// frame. DecodeClientFrame fills it in even when it rejects the frame,
	// if the ref itself could be read and is valid.
	Ref string
	// Token is the credential of an auth frame.
	Token string
	// Send is the payload of a send frame.
	Send *Send
	// Cursors maps conversation ids to the last seq the client has seen,
	// for a sync frame. It is nil when the frame has no cursors.
	Cursors map[string]uint64
}

// Sender identifies the device that sent a message.
type Sender struct {
	// UserID is the id of the sending user.
	UserID string `json:"user_id"`
	// DeviceID is the sending device, unique within UserID.
	DeviceID string `json:"device_id"`
}

// Message is a stored message as the server delivers it.
type Message struct {
	// ID is the message id, unique on the server.
	ID string `json:"id"`
	// Conversation is the id of the conversation.
	Conversation string `json:"conversation"`
	// Seq is the message's position in the conversation, starting at 1.
	Seq uint64 `json:"seq"`
	// Sender is the sending device.
	Sender Sender `json:"sender"`
	// SentAt is when the server stored the message.
	SentAt time.Time `json:"sent_at"`
	// ExpiresAt is when the message is deleted for everyone.
	ExpiresAt time.Time `json:"expires_at"`
	// Ciphertext is the encrypted message (standard padded base64 on the
	// wire).
	Ciphertext []byte `json:"ciphertext"`
	// Keys holds the wrapped keys by "<user id>/<device id>". On the wire a
	// reader receives only its own device's entry.
	Keys map[string][]byte `json:"keys"`
	// Attachments lists attachment ids; on the wire it is always an array,
	// [] when there are none.
	Attachments []string `json:"attachments"`
}

// ServerFrame is a decoded server→client frame, for clients and tests.
// Which fields are set depends on Type. Use [DecodeServerFrame] rather than
// encoding/json: the error frame's "message" (a string, here ErrMessage)
// and the message frame's "message" (an object, here Message) share a
// name on the wire.
type ServerFrame struct {
	// Type is the frame type.
	Type string `json:"type"`
	// Ref echoes the client's ref (sent, error).
	Ref string `json:"ref,omitempty"`
	// UserID is the authenticated user (ready).
	UserID string `json:"user_id,omitempty"`
	// DeviceID is the authenticated device (ready).
	DeviceID string `json:"device_id,omitempty"`
	// ID is the id of the stored message (sent).
	ID string `json:"id,omitempty"`
	// Seq is the seq of the stored message (sent).
	Seq uint64 `json:"seq,omitempty"`
	// SentAt is when the message was stored (sent).
	SentAt time.Time `json:"sent_at,omitempty"`
	// Message is the delivered message (message).
	Message *Message `json:"message,omitempty"`
	// Code is the error code (error).
	Code Code `json:"code,omitempty"`
	// ErrMessage is the human-readable error text (error); on the wire it
	// is the error frame's "message".
	ErrMessage string `json:"message_text,omitempty"`
}

// KeyName returns the name under which a device's wrapped key is stored in
// a message's keys: "<user id>/<device id>".
func KeyName(userID, deviceID string) string {
	return userID + "/" + deviceID
}

// SplitKeyName splits a key name at its first '/' into user id and device
// id. ok reports whether name is valid: a user id of 1 to MaxIDLen bytes
// and a device id that [ValidDeviceID] accepts.
func SplitKeyName(name string) (userID, deviceID string, ok bool) {
	userID, deviceID, found := strings.Cut(name, "/")
	if !found || !validID(userID) || !ValidDeviceID(deviceID) {
		return "", "", false
	}
	return userID, deviceID, true
}

// ValidDeviceID reports whether id is a device id of 1 to MaxIDLen
// characters of UTF-8 without control characters. The app chooses it, so
// it is counted as API.md counts it: in characters, not bytes. A control
// character takes six bytes in JSON (\u0001); with them, 1,024 keys named
// for such devices would not fit in one frame.
func ValidDeviceID(id string) bool {
	return id != "" && len(id) <= utf8.UTFMax*MaxIDLen && utf8.ValidString(id) && utf8.RuneCountInString(id) <= MaxIDLen && !ContainsControl(id)
}

// ContainsControl reports whether s holds a control character (U+0000 to
// U+001F, U+007F to U+009F) or a bidirectional embedding, override or
// isolate (U+202A to U+202E, U+2066 to U+2069): none belongs in a name
// people read or an id a client chooses, and the bidi ones can make a name
// read as another ("Trojan Source").
func ContainsControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool {
		return unicode.IsControl(r) || (r >= 0x202A && r <= 0x202E) || (r >= 0x2066 && r <= 0x2069)
	})
}

// ValidName reports whether s (a school's name, a user's display name, a
// group's title) is 1 to max characters of valid UTF-8 without
// ContainsControl's characters.
func ValidName(s string, max int) bool {
	return s != "" && utf8.ValidString(s) && utf8.RuneCountInString(s) <= max && !ContainsControl(s)
}

// validID reports whether id is non-empty and at most MaxIDLen bytes.
func validID(id string) bool {
	return id != "" && len(id) <= MaxIDLen
}
