package client

import (
	"errors"
	"fmt"
	"time"

	"klassenfunk/proto"
)

var (
	// ErrNotForDevice: the message carries no wrapped key for this device,
	// typically because the device was not a member device (or had no
	// public key on the server) when the message was sent.
	ErrNotForDevice = errors.New("client: message has no key for this device")

	// ErrKeyUnwrap: the wrapped content key does not open with this
	// device's private key in this conversation: it was changed on the
	// way, moved from another conversation or device, or wrapped for
	// another key.
	ErrKeyUnwrap = errors.New("client: wrapped key does not open (tampered, or not for this device)")

	// ErrBodyAuth: the ciphertext does not authenticate under the content
	// key and the message's context (conversation and sender): it was
	// changed on the way or moved to another conversation or sender.
	ErrBodyAuth = errors.New("client: ciphertext failed authentication (tampered, or moved to another conversation or sender)")

	// ErrFormat: a ciphertext, wrapped key or decrypted plaintext does not
	// have the layout of docs/e2ee.md.
	ErrFormat = errors.New("client: malformed encrypted data")

	// ErrVersion: the ciphertext has a format version this client does not
	// know.
	ErrVersion = errors.New("client: unsupported format version")

	// ErrRevoked: the server closed the session with 4401 or refused the
	// credential with 401: the token is bad, expired or revoked. Log in
	// again.
	ErrRevoked = errors.New("client: credential revoked or invalid (log in again)")

	// ErrCountryBlocked: the server closed the session with 4403 or
	// refused the request with country_blocked.
	ErrCountryBlocked = errors.New("client: access from this country is blocked for the account")

	// ErrReplaced: the server closed the session with 4409: newer sockets
	// of the same device took its place (another process runs with the
	// same state directory, or many reconnects raced). Reconnecting would
	// only close one of them in turn.
	ErrReplaced = errors.New("client: replaced by newer connections of this device")

	// ErrNotLoggedIn: the state directory holds no credential.
	ErrNotLoggedIn = errors.New("client: not logged in")

	// ErrNoRecipients: a message would have no device able to read it.
	ErrNoRecipients = errors.New("client: no recipient device")

	// ErrPushBlob: a push blob does not open with the push secret and
	// service id.
	ErrPushBlob = errors.New("client: push blob does not open")

	// ErrSessionClosed: the session stopped before a send was confirmed.
	ErrSessionClosed = errors.New("client: session closed")
)

// APIError is an error answer of the server: the HTTP status and the body's
// error code and message (API.md, "Errors"). In a WebSocket error frame
// Status is the status that goes with Code.
type APIError struct {
	Status  int
	Code    proto.Code
	Message string
	// RetryAfter is the Retry-After of a 429, zero when absent.
	RetryAfter time.Duration
}

func (e *APIError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("server: %s (HTTP %d)", e.Code, e.Status)
	}
	return fmt.Sprintf("server: %s: %s (HTTP %d)", e.Code, e.Message, e.Status)
}

// Is makes errors.Is(err, ErrRevoked) and errors.Is(err,
// ErrCountryBlocked) hold for the matching API errors.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrRevoked:
		return e.Code == proto.CodeUnauthorized
	case ErrCountryBlocked:
		return e.Code == proto.CodeCountryBlocked
	}
	return false
}
