package storage

import (
	"errors"
	"os"
	"syscall"
)

// datasync makes f's written data durable: fdatasync, which skips the
// metadata that reading the data back does not need (times).
func datasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}
