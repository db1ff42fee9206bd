//go:build !unix

package messenger

import "errors"

// socketCapsFrom: a system without an open-files limit (Windows, where
// the server runs only for development) gets the cap of a very large
// one.
func socketCapsFrom() int { return 1 << 30 / 4 * 3 }

func socketsCrowdedFrom() int { return 1 << 30 / 8 * 7 }

// readFD is never called without the poller, which is Linux only.
func readFD(uintptr, []byte) (int, error) {
	return 0, errors.ErrUnsupported
}

// directWrites: writeText goes through gorilla here.
const directWrites = false

// writeFD is never called without directWrites.
func writeFD(uintptr, []byte) (int, error) {
	return 0, errors.ErrUnsupported
}
