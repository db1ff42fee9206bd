package storage

import (
	"context"
	"time"
)

// Store is everything a backend provides. Consumers depend on the smaller
// interfaces below, or on their own subsets; the conformance suite tests a
// Store as a whole.
//
// Every method is safe for concurrent use. Every write is durable when it
// returns without error. Reads that take a now argument treat records whose
// ExpiresAt is not after now as gone, even before a sweep removed them.
type Store interface {
	Accounts
	Credentials
	LoginHistory
	Meta
	DeviceKeys
	Conversations
	Messages
	Attachments
	Erasure
	Notices

	// Ping reports whether the backend can serve requests (readiness).
	Ping(ctx context.Context) error
	// Close releases the backend. Safe to call twice.
	Close() error
}

// Accounts stores schools and users.
type Accounts interface {
	// CreateSchool stores a new school; ErrConflict if its ID exists.
	CreateSchool(ctx context.Context, s School) error
	// School returns one school or ErrNotFound.
	School(ctx context.Context, id string) (School, error)
	// Schools lists every school, ordered by name.
	Schools(ctx context.Context) ([]School, error)
	// UpdateSchool applies fn to the stored school atomically (settings).
	// fn must not change ID. An error from fn aborts without writing.
	UpdateSchool(ctx context.Context, id string, fn func(*School) error) error
	// CreateUser stores a new user; ErrConflict if its ID exists or its
	// login is taken (logins compare case-insensitively, server-wide).
	CreateUser(ctx context.Context, u User) error
	// User returns one user or ErrNotFound.
	User(ctx context.Context, id string) (User, error)
	// UserByLogin finds a user by login, case-insensitively.
	UserByLogin(ctx context.Context, login string) (User, error)
	// UpdateUser applies fn to the stored user atomically. fn must not
	// change ID or Login. An error from fn aborts without writing.
	UpdateUser(ctx context.Context, id string, fn func(*User) error) error
	// UsersOfSchool lists the users of one school, ordered by ID.
	UsersOfSchool(ctx context.Context, school string) ([]User, error)
	// CountUsers returns the number of users by role and by status
	// ("active", "disabled"), for anonymous statistics.
	CountUsers(ctx context.Context) (byRole map[Role]int, byStatus map[string]int, err error)
}

// Credentials stores trust relationships and sessions.
type Credentials interface {
	// PutCredential creates or replaces a credential (by ID).
	PutCredential(ctx context.Context, c Credential) error
	// CredentialByHash finds a credential by its token hash. It is on the
	// path of every authenticated request and must be cheap.
	CredentialByHash(ctx context.Context, h TokenHash) (Credential, error)
	// Credential returns a credential by ID or ErrNotFound.
	Credential(ctx context.Context, id string) (Credential, error)
	// CredentialsOf lists a user's credentials, oldest first.
	CredentialsOf(ctx context.Context, userID string) ([]Credential, error)
	// TouchCredential records use: it sets LastUsedAt and, when expiresAt
	// is not zero, ExpiresAt. ErrNotFound when the credential is gone.
	// Concurrent touches are grouped into one write.
	TouchCredential(ctx context.Context, id string, lastUsed, expiresAt time.Time) error
	// UpdateCredential applies fn to the stored credential atomically
	// (push registration changes). fn must not change ID, TokenHash or
	// UserID. An error from fn aborts without writing.
	UpdateCredential(ctx context.Context, id string, fn func(*Credential) error) error
	// DeleteCredential removes a credential and returns what was removed,
	// or ErrNotFound.
	DeleteCredential(ctx context.Context, id string) (Credential, error)
	// DeleteExpiredSessions removes session credentials whose ExpiresAt is
	// not after now and returns them.
	DeleteExpiredSessions(ctx context.Context, now time.Time) ([]Credential, error)
	// CountCredentials returns the number of credentials by kind, for
	// anonymous statistics.
	CountCredentials(ctx context.Context) (map[CredKind]int, error)
}

// LoginHistory keeps the last successful logins of each user and counts the
// failed attempts in between.
type LoginHistory interface {
	// RecordLoginFailure counts one failed attempt on the user's account.
	RecordLoginFailure(ctx context.Context, userID string) error
	// RecordLoginSuccess prepends ev to the user's history with
	// FailedBefore set to the failures counted since the previous success,
	// resets that count, and keeps at most keep events.
	RecordLoginSuccess(ctx context.Context, userID string, ev LoginEvent, keep int) error
	// Logins returns the user's history, newest first.
	Logins(ctx context.Context, userID string) ([]LoginEvent, error)
	// ForgetLoginsBefore removes the user's events from before cutoff
	// (retention) and returns how many it removed; an unknown user has
	// none.
	ForgetLoginsBefore(ctx context.Context, userID string, cutoff time.Time) (int, error)
}

// Meta stores small server-wide values (the operator token hash).
type Meta interface {
	// GetMeta returns the value of key or ErrNotFound.
	GetMeta(ctx context.Context, key string) ([]byte, error)
	// PutMeta sets key to value.
	PutMeta(ctx context.Context, key string, value []byte) error
}

// DeviceKeys is the directory of the devices' public end-to-end keys.
type DeviceKeys interface {
	// PutDeviceKey sets the public key of one device of a user.
	PutDeviceKey(ctx context.Context, k DeviceKey) error
	// DeviceKeysOf returns the keys of every device of the given users,
	// ordered by user then device.
	DeviceKeysOf(ctx context.Context, userIDs []string) ([]DeviceKey, error)
	// DeleteDeviceKey removes one device's key (revocation); no error when
	// absent.
	DeleteDeviceKey(ctx context.Context, userID, deviceID string) error
}

// Conversations stores conversations and their members.
type Conversations interface {
	// CreateConversation stores a new group conversation; ErrConflict if
	// the ID exists.
	CreateConversation(ctx context.Context, c Conversation) error
	// CreateDirect returns the direct conversation between the two
	// members of c, creating it from c when the pair has none yet.
	// created tells which happened. Atomic: two concurrent calls for the
	// same pair yield one conversation.
	CreateDirect(ctx context.Context, c Conversation) (conv Conversation, created bool, err error)
	// Conversation returns one conversation (with LastSeq) or ErrNotFound.
	Conversation(ctx context.Context, id string) (Conversation, error)
	// ConversationsOf lists the conversations userID is a member of, with
	// LastSeq, ordered by ID.
	ConversationsOf(ctx context.Context, userID string) ([]Conversation, error)
	// UpdateConversation applies fn to the stored conversation atomically
	// (membership changes). fn must not change ID, School or Kind. An
	// error from fn aborts without writing.
	UpdateConversation(ctx context.Context, id string, fn func(*Conversation) error) error
}

// Messages stores end-to-end-encrypted messages.
type Messages interface {
	// AppendMessage stores m with the next seq of its conversation and
	// returns it with Seq set, created=true. If the conversation already
	// holds a message with the same SenderUser, SenderDevice and ClientID
	// (and that message has not expired), that message is returned
	// instead, created=false; whether that earlier message has expired is
	// judged at m.SentAt. The caller sets ID, SentAt and ExpiresAt.
	// The attachments m names get m.Conversation added to their
	// Conversations in the same transaction. Seqs start at 1 and have no
	// gaps. Durable on return; concurrent appends share fsyncs.
	AppendMessage(ctx context.Context, m Message) (msg Message, created bool, err error)
	// Message returns one message or ErrNotFound (also once expired).
	Message(ctx context.Context, id string, now time.Time) (Message, error)
	// MessageByClientID returns the unexpired message of conv that
	// AppendMessage would return for a retry with this sender and client
	// id, or ErrNotFound. It stores nothing: it answers a retry that may
	// no longer append (its sender lost the right to write).
	MessageByClientID(ctx context.Context, conv, user, device, clientID string, now time.Time) (Message, error)
	// MessagesAfter returns up to limit unexpired messages of a
	// conversation with seq > afterSeq, ascending, and whether more follow.
	MessagesAfter(ctx context.Context, conv string, afterSeq uint64, limit int, now time.Time) (msgs []Message, more bool, err error)
	// DeleteExpiredMessages physically removes up to max messages whose
	// ExpiresAt is not after now and returns how many it removed.
	DeleteExpiredMessages(ctx context.Context, now time.Time, max int) (int, error)
	// CountMessages returns the number of stored messages.
	CountMessages(ctx context.Context) (int, error)
}

// SentAtReader is implemented by stores that can tell when a message was
// sent without decoding the rest of it: its wrapped keys, hundreds in a big
// group (the gateway's openedFloor asks this of many sockets at once).
type SentAtReader interface {
	// FirstSentAfter returns the seq and SentAt of the message that
	// MessagesAfter(ctx, conv, afterSeq, 1, now) would return, and false
	// when it would return none.
	FirstSentAfter(ctx context.Context, conv string, afterSeq uint64, now time.Time) (seq uint64, sentAt time.Time, ok bool, err error)
}

// RevAppender is implemented by stores whose conversation reads cost a
// round trip (Redis). They fill Conversation.Rev, and AppendMessageRev is
// AppendMessage that stores m only while its conversation's record still
// has revision rev, in the same atomic step as the append; otherwise it
// returns ErrStale (or ErrNotFound once the conversation is gone). A node
// can then authorise sends against a conversation it keeps in memory: the
// append refuses what a membership change since has made stale.
type RevAppender interface {
	AppendMessageRev(ctx context.Context, m Message, rev string) (msg Message, created bool, err error)
}

// Attachments stores attachment metadata.
type Attachments interface {
	// PutAttachment stores new attachment metadata; ErrConflict if the ID
	// exists.
	PutAttachment(ctx context.Context, a Attachment) error
	// Attachment returns the metadata or ErrNotFound (also once expired).
	Attachment(ctx context.Context, id string, now time.Time) (Attachment, error)
	// AttachmentsOf returns the unexpired attachments the user uploaded,
	// with their Conversations, oldest first (by CreatedAt, then ID): the
	// user's export lists them, also those no message references.
	AttachmentsOf(ctx context.Context, uploader string, now time.Time) ([]Attachment, error)
	// DeleteExpiredAttachments removes up to max attachments whose
	// ExpiresAt is not after now and returns their IDs, so that the
	// caller can remove the blobs.
	DeleteExpiredAttachments(ctx context.Context, now time.Time, max int) ([]string, error)
}

// Erasure removes accounts for good (the right to erasure) and remembers
// which were removed, so that an erasure can be applied again to a restored
// backup (storage/rights.go has the records).
type Erasure interface {
	// EraseUser removes the user and everything stored under it: the user
	// record and its login (which may be taken again), its credentials
	// (with their push registrations and, where the backend keeps a push
	// outbox, their pending pushes), login history, device keys and
	// notices, and its memberships: the user leaves every conversation,
	// and a direct conversation keeps its other member. Messages the user
	// sent and attachments it uploaded stay until they expire. It records
	// a tombstone of the user ID erased at at, unless one exists (then the
	// earlier time stays), and returns the credentials it removed.
	//
	// An unknown user is not an error: the tombstone is recorded all the
	// same and whatever is left of the user is removed, so that erasures
	// can be applied again to a restored backup. Running it twice is
	// harmless.
	EraseUser(ctx context.Context, userID string, at time.Time) (removed []Credential, err error)
	// Tombstones lists the erased users, ordered by ErasedAt, then UserID.
	Tombstones(ctx context.Context) ([]Tombstone, error)
}

// Notices keeps the system messages of a user (a refused login, …).
type Notices interface {
	// AddNotice prepends n to the user's notices and keeps at most keep
	// (keep < 0 counts as 0). ErrNotFound for an unknown user.
	AddNotice(ctx context.Context, userID string, n Notice, keep int) error
	// Notices returns the user's notices, newest first.
	Notices(ctx context.Context, userID string) ([]Notice, error)
}
