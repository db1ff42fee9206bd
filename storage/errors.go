package storage

import "errors"

var (
	// ErrNotFound is returned when a record does not exist (or has expired).
	ErrNotFound = errors.New("storage: not found")

	// ErrConflict is returned when a unique value (a login, a school name) is
	// taken already.
	ErrConflict = errors.New("storage: conflict")

	// ErrClosed is returned by a backend after Close.
	ErrClosed = errors.New("storage: closed")

	// ErrStale is returned by RevAppender.AppendMessageRev when the
	// conversation has changed since the read that gave its revision.
	ErrStale = errors.New("storage: conversation changed")
)
