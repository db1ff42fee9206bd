package storage

import "time"

// Tombstone records that an account was erased. It holds nothing but the
// user ID (an opaque random ID; the login is not kept, it may be taken
// again) and the time, so that the erasure can be applied again to a
// restored backup.
type Tombstone struct {
	UserID   string    `json:"user_id"`
	ErasedAt time.Time `json:"erased_at"`
}

// NoticeCountryBlocked is the kind of a notice about a login or token use
// refused by the account's country restriction.
const NoticeCountryBlocked = "country_blocked"

// Notice is a system message to a user.
type Notice struct {
	At   time.Time `json:"at"`
	Kind string    `json:"kind"`
	// Country is the ISO 3166-1 alpha-2 code the address was located in,
	// "" when it could not be located.
	Country string `json:"country"`
	// IP is the client address, anonymised.
	IP string `json:"ip"`
}
