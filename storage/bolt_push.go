package storage

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The push outbox lives in its own bucket, created on the first write (so
// that opening an existing file needs no migration):
//
//	pushout      credential id → uvarint(len(message id))+message id+PushEntry (JSON, without CredID)
//
// The message id up front lets DonePushes compare without decoding JSON.
// Puts and deletes go through the group commit: the relay's batches share
// transactions and fsyncs with message appends.

var bktPushOut = []byte("pushout")

var _ PushOutbox = (*Bolt)(nil)

// PutPushes implements PushOutbox.
func (b *Bolt) PutPushes(ctx context.Context, entries []PushEntry) error {
	if len(entries) == 0 {
		return nil
	}
	keys := make([][]byte, len(entries))
	vals := make([][]byte, len(entries))
	for i, e := range entries {
		if err := checkID("credential", e.CredID); err != nil {
			return err
		}
		j, err := json.Marshal(e)
		if err != nil {
			return fmt.Errorf("storage: encode push entry: %w", err)
		}
		v := make([]byte, 0, binary.MaxVarintLen64+len(e.MessageID)+len(j))
		v = binary.AppendUvarint(v, uint64(len(e.MessageID)))
		v = append(v, e.MessageID...)
		keys[i], vals[i] = []byte(e.CredID), append(v, j...)
	}
	return b.batch(ctx, func(tx *bolt.Tx) error {
		bk, err := tx.CreateBucketIfNotExists(bktPushOut)
		if err != nil {
			return err
		}
		for i := range keys {
			if err := bk.Put(keys[i], vals[i]); err != nil {
				return err
			}
		}
		return nil
	})
}

// PendingPushes implements PushOutbox.
func (b *Bolt) PendingPushes(ctx context.Context) ([]PushEntry, error) {
	out := []PushEntry{}
	err := b.view(ctx, func(tx *bolt.Tx) error {
		out = out[:0]
		bk := tx.Bucket(bktPushOut)
		if bk == nil {
			return nil
		}
		return bk.ForEach(func(k, v []byte) error {
			_, j, err := splitPushValue(v)
			if err != nil {
				return err
			}
			var e PushEntry
			if err := decode(j, &e, "push entry"); err != nil {
				return err
			}
			e.CredID = string(k)
			out = append(out, e)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// DonePushes implements PushOutbox.
func (b *Bolt) DonePushes(ctx context.Context, done []PushDone) error {
	if len(done) == 0 {
		return nil
	}
	return b.batch(ctx, func(tx *bolt.Tx) error {
		bk := tx.Bucket(bktPushOut)
		if bk == nil {
			return nil
		}
		for _, d := range done {
			k := []byte(d.CredID)
			v := bk.Get(k)
			if v == nil {
				continue
			}
			if d.MessageID != "" {
				msg, _, err := splitPushValue(v)
				if err != nil {
					return err
				}
				if string(msg) != d.MessageID {
					continue
				}
			}
			if err := bk.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

// splitPushValue splits a stored entry into its message id and JSON.
func splitPushValue(v []byte) (msg, j []byte, err error) {
	n, k := binary.Uvarint(v)
	if k <= 0 || uint64(len(v)-k) < n {
		return nil, nil, fmt.Errorf("storage: corrupt push entry")
	}
	return v[k : k+int(n)], v[k+int(n):], nil
}

// CountRegistrations implements PushOutbox. It reads every credential.
func (b *Bolt) CountRegistrations(ctx context.Context) (map[string]int, error) {
	out := map[string]int{}
	err := b.view(ctx, func(tx *bolt.Tx) error {
		clear(out)
		return tx.Bucket(bktCreds).ForEach(func(_, v []byte) error {
			var c struct {
				Push *struct {
					Provider string `json:"provider"`
				} `json:"push"`
			}
			if err := decode(v, &c, "credential"); err != nil {
				return err
			}
			if c.Push != nil {
				out[c.Push.Provider]++
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ClaimPush implements PushOutbox. A bbolt file is opened by one process
// only, so there is nobody to share the outbox with: every claim holds.
func (b *Bolt) ClaimPush(ctx context.Context, credID, messageID, owner string, until time.Time) (ClaimState, error) {
	return ClaimHeld, ctx.Err()
}

// FinishPush implements PushOutbox: nothing to tell anybody.
func (b *Bolt) FinishPush(ctx context.Context, credID, messageID string, until time.Time) error {
	return ctx.Err()
}
