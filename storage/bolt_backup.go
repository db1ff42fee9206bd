package storage

import (
	"context"
	"io"

	bolt "go.etcd.io/bbolt"
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
