package proto

import (
	"fmt"
	"strconv"
	"time"
)

// Code is an API error code. The same codes appear in HTTP error bodies and
// in WebSocket error frames.
type Code string

// API error codes, with the HTTP status each one maps to.
const (
	// CodeInvalidRequest: malformed JSON, wrong types, missing required
	// fields or values that break a rule (400).
	CodeInvalidRequest Code = "invalid_request"
	// CodeUnauthorized: missing, bad, expired or revoked credential (401).
	CodeUnauthorized Code = "unauthorized"
	// CodeForbidden: authenticated but not allowed (403).
	CodeForbidden Code = "forbidden"
	// CodeCountryBlocked: the request comes from a country the account does
	// not allow (403).
	CodeCountryBlocked Code = "country_blocked"
	// CodeNotFound: the thing does not exist or the caller may not see it
	// (404).
	CodeNotFound Code = "not_found"
	// CodeConflict: the request conflicts with existing state, such as a
	// login that is taken (409).
	CodeConflict Code = "conflict"
	// CodePayloadTooLarge: a body, frame, value or count exceeds its limit
	// (413).
	CodePayloadTooLarge Code = "payload_too_large"
	// CodeRateLimited: too many requests; see [Error.RetryAfter] (429).
	CodeRateLimited Code = "rate_limited"
	// CodeInternal: the server failed (500).
	CodeInternal Code = "internal"
)

// HTTPStatus returns the HTTP status code that goes with c. Unknown codes
// map to 500 Internal Server Error. (The numbers are spelled out so that
// clients importing proto need not link net/http.)
func (c Code) HTTPStatus() int {
	switch c {
	case CodeInvalidRequest:
		return 400 // http.StatusBadRequest
	case CodeUnauthorized:
		return 401 // http.StatusUnauthorized
	case CodeForbidden, CodeCountryBlocked:
		return 403 // http.StatusForbidden
	case CodeNotFound:
		return 404 // http.StatusNotFound
	case CodeConflict:
		return 409 // http.StatusConflict
	case CodePayloadTooLarge:
		return 413 // http.StatusRequestEntityTooLarge
	case CodeRateLimited:
		return 429 // http.StatusTooManyRequests
	default:
		return 500 // http.StatusInternalServerError
	}
}

// Error is an API error: a [Code] and a human-readable message. It is what
// the server puts into an HTTP error body or a WebSocket error frame.
type Error struct {
	// Code is the machine-readable error code.
	Code Code
	// Message is a short human-readable explanation. It must not contain
	// secrets or personal data of other users.
	Message string
	// RetryAfter is how long the client should wait before retrying. It is
	// only meaningful with [CodeRateLimited]; zero means unknown.
	RetryAfter time.Duration
}

// Error returns "<code>: <message>".
func (e *Error) Error() string {
	if e.Message == "" {
		return string(e.Code)
	}
	return string(e.Code) + ": " + e.Message
}

// Errorf returns an [*Error] with the given code and a message formatted
// as by [fmt.Sprintf].
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// CloseCode is a WebSocket close code sent by the server.
type CloseCode int

// WebSocket close codes. The 44xx codes mirror the HTTP statuses of the
// matching error codes.
const (
	// CloseNormal is a normal closure (RFC 6455), e.g. a client logging
	// out.
	CloseNormal CloseCode = 1000
	// CloseGoingAway: the server is shutting down or restarting.
	CloseGoingAway CloseCode = 1001
	// CloseMalformed: three invalid_request frames in a row.
	CloseMalformed CloseCode = 4400
	// CloseUnauthorized: the credential is bad or has been revoked.
	CloseUnauthorized CloseCode = 4401
	// CloseCountryBlocked: the connection comes from a country the account
	// does not allow.
	CloseCountryBlocked CloseCode = 4403
	// CloseAuthTimeout: no auth frame arrived in time.
	CloseAuthTimeout CloseCode = 4408
	// CloseReplaced: newer sockets of the same device (or user) took this
	// one's place; the device has more open than the server allows.
	CloseReplaced CloseCode = 4409
	// CloseTooLarge: a frame exceeded [MaxFrameSize].
	CloseTooLarge CloseCode = 4413
	// CloseTooSlow: the client read too slowly (its queue overflowed) or
	// exceeded a rate limit. It recovers missed messages through sync.
	CloseTooSlow CloseCode = 4429
)

// String returns a short snake_case reason for c, such as "going_away" or
// "too_slow". It is used as WebSocket close text and as a metric label, so
// the set of results is fixed: codes not listed above give "unknown".
func (c CloseCode) String() string {
	switch c {
	case CloseNormal:
		return "normal"
	case CloseGoingAway:
		return "going_away"
	case CloseMalformed:
		return "malformed"
	case CloseUnauthorized:
		return "unauthorized"
	case CloseCountryBlocked:
		return "country_blocked"
	case CloseAuthTimeout:
		return "auth_timeout"
	case CloseReplaced:
		return "replaced"
	case CloseTooLarge:
		return "too_large"
	case CloseTooSlow:
		return "too_slow"
	default:
		return "unknown"
	}
}

// AppendErrorBody appends the HTTP error body
// {"error":{"code":…,"message":…}} to dst.
func AppendErrorBody(dst []byte, code Code, msg string) []byte {
	dst = append(dst, `{"error":{"code":`...)
	dst = appendString(dst, string(code))
	dst = append(dst, `,"message":`...)
	dst = appendString(dst, msg)
	return append(dst, "}}"...)
}

// RetryAfterSeconds returns e.RetryAfter as the value of an HTTP
// Retry-After header: whole seconds, rounded up, at least 1.
func (e *Error) RetryAfterSeconds() string {
	s := (e.RetryAfter + time.Second - 1) / time.Second
	if s < 1 {
		s = 1
	}
	return strconv.FormatInt(int64(s), 10)
}
