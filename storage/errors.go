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
)
