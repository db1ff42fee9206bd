package storage

import (
	"context"
	"time"
)

// PushOutbox is the push relay's durable queue: at most one pending push
// per device (trust credential), naming the newest message the device is to
// be woken for. It is separate from Store, so that a backend can offer it
// or not; Bolt does (bolt_push.go).
//
// Every method is safe for concurrent use and durable when it returns
// without error.
type PushOutbox interface {
	// PutPushes stores entries in one durable write. An entry replaces the
	// pending entry of the same credential, if any: a burst of messages
	// becomes one push per device.
	PutPushes(ctx context.Context, entries []PushEntry) error
	// PendingPushes returns every stored entry, ordered by credential ID
	// (the relay loads them when it starts).
	PendingPushes(ctx context.Context) ([]PushEntry, error)
	// DonePushes removes, in one durable write, the entry of each
	// credential in done whose MessageID still equals the given one. An
	// empty MessageID removes the entry whatever it names (revocation). An
	// entry replaced meanwhile by a newer message stays.
	DonePushes(ctx context.Context, done []PushDone) error
	// CountRegistrations returns the number of push registrations by
	// provider ("fcm", "apns"), for anonymous statistics.
	CountRegistrations(ctx context.Context) (map[string]int, error)
	// ClaimPush claims, for owner and until the given time (a lease), the
	// sending of the push for messageID to the device of credID, so that of
	// several nodes sharing the outbox one sends it at a time. A claim that
	// is already owner's is renewed. ClaimTaken means another owner's lease
	// runs: ask again when it may have run out (its owner may have died);
	// ClaimDone means FinishPush was called: drop the push. A backend that
	// only one process opens may always report ClaimHeld.
	ClaimPush(ctx context.Context, credID, messageID, owner string, until time.Time) (ClaimState, error)
	// FinishPush marks the push for messageID to credID's device as done
	// (sent, or given up) until the given time: later claims get ClaimDone.
	FinishPush(ctx context.Context, credID, messageID string, until time.Time) error
}

// ClaimState is the answer of ClaimPush (meaningless with an error).
type ClaimState int

const (
	ClaimHeld  ClaimState = iota // the caller holds the claim: send
	ClaimTaken                   // another owner's lease runs
	ClaimDone                    // the push is done: drop it
)

// PushEntry is one pending push: wake the device of CredID for a message.
type PushEntry struct {
	CredID       string    `json:"-"` // the record's key
	UserID       string    `json:"user_id"`
	DeviceID     string    `json:"device_id"`
	Provider     string    `json:"provider"` // at enqueue time, for metrics
	Conversation string    `json:"conversation"`
	MessageID    string    `json:"message_id"`
	Seq          uint64    `json:"seq"`
	ExpiresAt    time.Time `json:"expires_at"` // the message's; the push's TTL
	EnqueuedAt   time.Time `json:"enqueued_at"`
}

// PushDone names an entry to remove: the credential's entry, if it still
// names MessageID (or whatever it names when MessageID is empty).
type PushDone struct {
	CredID    string
	MessageID string
}
