package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Backup writes a consistent copy of the database to w, one that holds
// every message acknowledged before it began: it moves the logged
// messages into the B+tree first (a checkpoint), then copies the file in
// one read transaction (bbolt's Tx.WriteTo), while reads and writes go on.
// The copy is a complete database file: OpenBolt opens it as it is.
func (b *Bolt) Backup(ctx context.Context, w io.Writer) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := b.checkpoint(); err != nil {
		return 0, err
	}
	var n int64
	err := b.db.View(func(tx *bolt.Tx) error {
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	return n, err
}

// ErrNotDatabase: a file is not a readable Klassenfunk database.
var ErrNotDatabase = errors.New("not a readable Klassenfunk database")

// CheckDatabaseFile reports whether path is a whole Klassenfunk database
// (a backup, before a restore puts it in place): a bbolt file that passes
// bbolt's consistency check and holds this store's buckets. It opens the
// file read-only and changes nothing. A file that is locked by a running
// server is reported as such.
func CheckDatabaseFile(path string) (err error) {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() || fi.Size() == 0 {
		return fmt.Errorf("%s: %w (an empty file, or not a file)", path, ErrNotDatabase)
	}
	defer func() { // bbolt panics on some damaged pages
		if r := recover(); r != nil {
			err = fmt.Errorf("%s: %w (damaged: %v)", path, ErrNotDatabase, r)
		}
	}()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: lockTimeout})
	if errors.Is(err, berrors.ErrTimeout) {
		return fmt.Errorf("%s: database is locked by another process (is the server running?): %w", path, err)
	}
	if err != nil {
		return fmt.Errorf("%s: %w (%v)", path, ErrNotDatabase, err)
	}
	defer db.Close()
	return db.View(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bktSys, bktSchools, bktUsers, bktMsgs} {
			if tx.Bucket(name) == nil {
				return fmt.Errorf("%s: %w (no %s bucket)", path, ErrNotDatabase, name)
			}
		}
		var first error
		for cerr := range tx.Check() { // read to the end: the checker stops only then
			if first == nil {
				first = fmt.Errorf("%s: %w (damaged: %v)", path, ErrNotDatabase, cerr)
			}
		}
		return first
	})
}
