package storage

import "time"

// Role is a user's role within their school.
type Role string

// The roles of API.md.
const (
	RoleAdmin   Role = "admin"
	RoleTeacher Role = "teacher"
	RoleStudent Role = "student"
	RoleParent  Role = "parent"
)

// Valid reports whether r is one of the four roles.
func (r Role) Valid() bool {
	switch r {
	case RoleAdmin, RoleTeacher, RoleStudent, RoleParent:
		return true
	}
	return false
}

// School is a tenant. Schools never see each other.
type School struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// NoStudentDirect switches off direct conversations between two
	// students: none can be started, and the existing ones are read-only
	// until it is cleared. The zero value (false) allows them, the default
	// of API.md.
	NoStudentDirect bool      `json:"no_student_direct,omitempty"`
	CreatedAt       time.Time `json:"created_at"`
}

// User is an account of one school.
type User struct {
	ID          string `json:"id"`
	School      string `json:"school"`
	Login       string `json:"login"` // as created; unique case-insensitively across the server
	DisplayName string `json:"display_name"`
	Role        Role   `json:"role"`
	// PasswordHash is the encoded Argon2id hash of the client_hash
	// (see package auth for the format).
	PasswordHash string `json:"password_hash"`
	// Countries restricts logins to these ISO 3166-1 alpha-2 codes; nil
	// means no restriction.
	Countries []string  `json:"countries,omitempty"`
	Disabled  bool      `json:"disabled,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// CredKind tells a trust credential from a session credential.
type CredKind string

// Credential kinds (API.md, POST /login).
const (
	// CredTrust is the long-lived credential of a personal device: the
	// trust relationship.
	CredTrust CredKind = "trust"
	// CredSession is the credential of a shared device. It ends after a
	// period of inactivity and never gets push.
	CredSession CredKind = "session"
)

// TokenHash is the SHA-256 of a bearer token. Tokens themselves are never
// stored.
type TokenHash [32]byte

// Credential is a trust relationship or a session: a token bound to a user
// and a device.
type Credential struct {
	ID         string    `json:"id"`
	TokenHash  TokenHash `json:"token_hash"`
	Kind       CredKind  `json:"kind"`
	UserID     string    `json:"user_id"`
	School     string    `json:"school"`
	DeviceID   string    `json:"device_id"`
	DeviceName string    `json:"device_name"`
	OS         string    `json:"os"`
	CreatedAt  time.Time `json:"created_at"`
	LastUsedAt time.Time `json:"last_used_at"`
	// ExpiresAt is a session's idle deadline; zero for trust credentials.
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	// ServiceID identifies the trust relationship in pushes; random, stable
	// while the relationship lives. Empty for sessions.
	ServiceID string `json:"service_id,omitempty"`
	// Push is the device's push registration, nil when it has none.
	Push *PushRegistration `json:"push,omitempty"`
}

// PushRegistration is where and how a device is woken.
type PushRegistration struct {
	Provider string `json:"provider"` // "fcm" or "apns"
	Token    string `json:"token"`
	Topic    string `json:"topic,omitempty"`
	Sandbox  bool   `json:"sandbox,omitempty"`
	// Secret is the 32-byte key that seals push blobs for this device.
	Secret    []byte    `json:"secret"`
	UpdatedAt time.Time `json:"updated_at"`
}

// LoginEvent is one successful login in a user's history.
type LoginEvent struct {
	At         time.Time `json:"at"`
	IP         string    `json:"ip"` // anonymised
	DeviceName string    `json:"device_name"`
	// FailedBefore counts the failed attempts on the account since the
	// previous successful login.
	FailedBefore int `json:"failed_before"`
}

// DeviceKey is a device's public end-to-end key.
type DeviceKey struct {
	UserID    string `json:"user_id"`
	DeviceID  string `json:"device_id"`
	PublicKey []byte `json:"public_key"`
}

// ConvKind is the kind of a conversation.
type ConvKind string

// Conversation kinds.
const (
	ConvDirect ConvKind = "direct"
	ConvGroup  ConvKind = "group"
)

// Member is a member of a conversation.
type Member struct {
	UserID   string `json:"user_id"`
	CanWrite bool   `json:"can_write"`
}

// Conversation is a direct or group conversation inside one school.
type Conversation struct {
	ID        string    `json:"id"`
	School    string    `json:"school"`
	Kind      ConvKind  `json:"kind"`
	Title     string    `json:"title,omitempty"`
	Creator   string    `json:"creator"`
	Members   []Member  `json:"members"`
	CreatedAt time.Time `json:"created_at"`
	// LastSeq is the highest seq allocated in the conversation. Backends
	// fill it on read; it is not written through CreateConversation.
	LastSeq uint64 `json:"-"`
	// Rev identifies the stored record's content (members, rights,
	// title), set on read by stores that implement RevAppender; empty
	// elsewhere. Never written.
	Rev string `json:"-"`
}

// Member returns the member entry of userID and whether it exists.
func (c *Conversation) Member(userID string) (Member, bool) {
	for _, m := range c.Members {
		if m.UserID == userID {
			return m, true
		}
	}
	return Member{}, false
}

// Message is a stored end-to-end-encrypted message.
type Message struct {
	ID           string            `json:"id"`
	Conversation string            `json:"conversation"`
	Seq          uint64            `json:"seq"`
	SenderUser   string            `json:"sender_user"`
	SenderDevice string            `json:"sender_device"`
	ClientID     string            `json:"client_id"`
	SentAt       time.Time         `json:"sent_at"`
	ExpiresAt    time.Time         `json:"expires_at"`
	Ciphertext   []byte            `json:"ciphertext"`
	Keys         map[string][]byte `json:"keys"`
	Attachments  []string          `json:"attachments,omitempty"`
}

// Attachment is the metadata of an uploaded encrypted blob. The bytes live
// outside the record store (package messenger keeps them as files).
type Attachment struct {
	ID        string    `json:"id"`
	Uploader  string    `json:"uploader"`
	Size      int64     `json:"size"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	// Conversations lists the conversations with a message that references
	// the attachment; their members may read it.
	Conversations []string `json:"conversations,omitempty"`
}
