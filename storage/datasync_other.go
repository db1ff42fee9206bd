//go:build !linux

package storage

import "os"

// datasync makes f's written data durable. Outside Linux (a developer's
// macOS or Windows machine) it is a full fsync: on macOS, Go's Sync asks
// for F_FULLFSYNC, which reaches the disk's platter or flash.
func datasync(f *os.File) error { return f.Sync() }
