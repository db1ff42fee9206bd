package storage

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Erasure, notices and credential counts. Two buckets, created on the first
// write (so that opening an existing file needs no migration):
//
//	tombstones   user id → ErasedAt (RFC 3339 with nanoseconds)
//	notices      user id → []Notice (JSON, newest first)
//
// EraseUser is one transaction: every record of the user goes, or none.

var (
	bktTombstones = []byte("tombstones")
	bktNotices    = []byte("notices")
)

var (
	_ Erasure = (*Bolt)(nil)
	_ Notices = (*Bolt)(nil)
)

// EraseUser implements Erasure in one transaction. The pending pushes of the
// removed credentials leave the push outbox in the same transaction.
func (b *Bolt) EraseUser(ctx context.Context, userID string, at time.Time) ([]Credential, error) {
	if err := checkID("user", userID); err != nil {
		return nil, err
	}
	atText, err := at.UTC().MarshalText()
	if err != nil {
		return nil, fmt.Errorf("storage: encode erasure time: %w", err)
	}
	id := []byte(userID)
	var removed []Credential
	err = b.update(ctx, func(tx *bolt.Tx) error {
		removed = []Credential{}
		tombs, err := tx.CreateBucketIfNotExists(bktTombstones)
		if err != nil {
			return err
		}
		if tombs.Get(id) == nil {
			if err := tombs.Put(id, atText); err != nil {
				return err
			}
		}

		// The user and its login.
		users := tx.Bucket(bktUsers)
		if v := users.Get(id); v != nil {
			var u struct {
				Login string `json:"login"`
			}
			if err := decode(v, &u, "user"); err != nil {
				return err
			}
			logins := tx.Bucket(bktLogins)
			if lk := loginKey(u.Login); bytes.Equal(logins.Get(lk), id) {
				if err := logins.Delete(lk); err != nil {
					return err
				}
			}
			if err := users.Delete(id); err != nil {
				return err
			}
		}

		// Credentials, with their pending pushes.
		p := prefix(userID)
		for _, k := range keysWithPrefix(tx.Bucket(bktUserCreds), p) {
			c, ok, err := getCred(tx, string(k[len(p):]))
			if err != nil {
				return err
			}
			if !ok {
				if err := tx.Bucket(bktUserCreds).Delete(k); err != nil {
					return err
				}
				continue
			}
			if err := deleteCred(tx, c); err != nil {
				return err
			}
			removed = append(removed, c)
		}
		if out := tx.Bucket(bktPushOut); out != nil {
			for _, c := range removed {
				if err := out.Delete([]byte(c.ID)); err != nil {
					return err
				}
			}
		}

		// Memberships.
		for _, k := range keysWithPrefix(tx.Bucket(bktUserConvs), p) {
			if err := b.leaveConv(tx, userID, string(k[len(p):])); err != nil {
				return err
			}
			if err := tx.Bucket(bktUserConvs).Delete(k); err != nil {
				return err
			}
		}

		// Device keys, the uploader index (the attachments stay until
		// they expire, see docs/data-rights.md), login history, notices.
		for _, bk := range []*bolt.Bucket{tx.Bucket(bktDevKeys), tx.Bucket(bktAttUp)} {
			for _, k := range keysWithPrefix(bk, p) {
				if err := bk.Delete(k); err != nil {
					return err
				}
			}
		}
		if err := tx.Bucket(bktLoginHist).Delete(id); err != nil {
			return err
		}
		if nb := tx.Bucket(bktNotices); nb != nil {
			if err := nb.Delete(id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(removed, func(a, b Credential) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.ID, b.ID))
	})
	return removed, nil
}

// leaveConv removes userID from the members of conversation convID (the
// membership index entry is the caller's). A direct conversation also loses
// its pair index entry: the pair cannot meet again.
func (b *Bolt) leaveConv(tx *bolt.Tx, userID, convID string) error {
	c, ok, err := getConv(tx, convID)
	if err != nil || !ok {
		return err
	}
	if _, member := c.Member(userID); !member {
		return nil
	}
	if c.Kind == ConvDirect && len(c.Members) == 2 {
		lo, hi := c.Members[0].UserID, c.Members[1].UserID
		if hi < lo {
			lo, hi = hi, lo
		}
		directs := tx.Bucket(bktDirects)
		dk := pair(c.School, lo+"\x00"+hi)
		if string(directs.Get(dk)) == convID {
			if err := directs.Delete(dk); err != nil {
				return err
			}
		}
	}
	c.Members = slices.DeleteFunc(c.Members, func(m Member) bool { return m.UserID == userID })
	return b.putConv(tx, c)
}

// keysWithPrefix returns copies of the keys of bk that start with p, so
// that the caller may delete them.
func keysWithPrefix(bk *bolt.Bucket, p []byte) [][]byte {
	var out [][]byte
	scanPrefix(bk, p, func(k, _ []byte) error {
		out = append(out, bytes.Clone(k))
		return nil
	})
	return out
}

// tombstonesIn reads the tombstones bucket of tx (none: empty).
func tombstonesIn(tx *bolt.Tx) ([]Tombstone, error) {
	out := []Tombstone{}
	bk := tx.Bucket(bktTombstones)
	if bk == nil {
		return out, nil
	}
	err := bk.ForEach(func(k, v []byte) error {
		ts := Tombstone{UserID: string(k)}
		if err := ts.ErasedAt.UnmarshalText(v); err != nil {
			return fmt.Errorf("storage: decode tombstone %q: %w", k, err)
		}
		out = append(out, ts)
		return nil
	})
	return out, err
}

// Tombstones implements Erasure.
func (b *Bolt) Tombstones(ctx context.Context) ([]Tombstone, error) {
	var out []Tombstone
	err := b.view(ctx, func(tx *bolt.Tx) error {
		var err error
		out, err = tombstonesIn(tx)
		return err
	})
	if err != nil {
		return nil, err
	}
	sortTombstones(out)
	return out, nil
}

func sortTombstones(ts []Tombstone) {
	slices.SortFunc(ts, func(a, b Tombstone) int {
		return cmp.Or(a.ErasedAt.Compare(b.ErasedAt), strings.Compare(a.UserID, b.UserID))
	})
}

// AddNotice implements Notices.
func (b *Bolt) AddNotice(ctx context.Context, userID string, n Notice, keep int) error {
	return b.update(ctx, func(tx *bolt.Tx) error {
		if !validID(userID) || tx.Bucket(bktUsers).Get([]byte(userID)) == nil {
			return ErrNotFound
		}
		bk, err := tx.CreateBucketIfNotExists(bktNotices)
		if err != nil {
			return err
		}
		var list []Notice
		if v := bk.Get([]byte(userID)); v != nil {
			if err := decode(v, &list, "notices"); err != nil {
				return err
			}
		}
		list = append([]Notice{n}, list...)
		list = list[:min(len(list), max(keep, 0))]
		v, err := json.Marshal(list)
		if err != nil {
			return fmt.Errorf("storage: encode notices: %w", err)
		}
		return bk.Put([]byte(userID), v)
	})
}

// Notices implements Notices.
func (b *Bolt) Notices(ctx context.Context, userID string) ([]Notice, error) {
	out := []Notice{}
	err := b.view(ctx, func(tx *bolt.Tx) error {
		bk := tx.Bucket(bktNotices)
		if bk == nil || !validID(userID) {
			return nil
		}
		if v := bk.Get([]byte(userID)); v != nil {
			return decode(v, &out, "notices")
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if out == nil {
		out = []Notice{}
	}
	return out, nil
}

// CountCredentials implements Credentials. It reads every credential.
func (b *Bolt) CountCredentials(ctx context.Context) (map[CredKind]int, error) {
	out := map[CredKind]int{}
	err := b.view(ctx, func(tx *bolt.Tx) error {
		clear(out)
		return tx.Bucket(bktCreds).ForEach(func(_, v []byte) error {
			var c struct {
				Kind CredKind `json:"kind"`
			}
			if err := decode(v, &c, "credential"); err != nil {
				return err
			}
			out[c.Kind]++
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
