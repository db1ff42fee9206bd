package storage

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Credentials are stored under their token hash, so that CredentialByHash,
// which runs on every authenticated request, is a single Get. credids maps
// the ID to the hash, usercreds lists a user's credentials and sessions
// holds the idle deadline of every session for DeleteExpiredSessions.

// credRec is how a Credential is stored: without its token hash, which is
// the record's key.
type credRec struct {
	Credential
	TokenHash *struct{} `json:"token_hash,omitempty"`
}

func encodeCred(c Credential) ([]byte, error) {
	v, err := json.Marshal(credRec{Credential: c})
	if err != nil {
		return nil, fmt.Errorf("storage: encode credential: %w", err)
	}
	return v, nil
}

// decodeCred decodes the record v stored under the token hash h.
func decodeCred(h, v []byte) (Credential, error) {
	var r credRec
	if len(h) != len(r.Credential.TokenHash) {
		return Credential{}, fmt.Errorf("storage: corrupt credential key %x", h)
	}
	if err := decode(v, &r, "credential"); err != nil {
		return Credential{}, err
	}
	copy(r.Credential.TokenHash[:], h)
	return r.Credential, nil
}

// getCred returns the credential with the given ID, or ok=false.
func getCred(tx *bolt.Tx, id string) (c Credential, ok bool, err error) {
	h := tx.Bucket(bktCredIDs).Get([]byte(id))
	if h == nil {
		return c, false, nil
	}
	v := tx.Bucket(bktCreds).Get(h)
	if v == nil {
		return c, false, fmt.Errorf("storage: credential index names missing hash of %q", id)
	}
	c, err = decodeCred(h, v)
	return c, err == nil, err
}

// putCred stores c and keeps every index in step; old is the record it
// replaces, if any.
func putCred(tx *bolt.Tx, c Credential, old *Credential) error {
	v, err := encodeCred(c)
	if err != nil {
		return err
	}
	creds := tx.Bucket(bktCreds)
	if old != nil && old.TokenHash != c.TokenHash {
		if err := creds.Delete(old.TokenHash[:]); err != nil {
			return err
		}
	}
	if old != nil && old.UserID != c.UserID {
		if err := tx.Bucket(bktUserCreds).Delete(pair(old.UserID, old.ID)); err != nil {
			return err
		}
	}
	h := c.TokenHash
	if err := creds.Put(h[:], v); err != nil {
		return err
	}
	if err := tx.Bucket(bktCredIDs).Put([]byte(c.ID), h[:]); err != nil {
		return err
	}
	if err := tx.Bucket(bktUserCreds).Put(pair(c.UserID, c.ID), nil); err != nil {
		return err
	}
	sessions := tx.Bucket(bktSessions)
	if c.Kind == CredSession {
		exp := timeKey(c.ExpiresAt)
		return sessions.Put([]byte(c.ID), exp[:])
	}
	return sessions.Delete([]byte(c.ID))
}

func deleteCred(tx *bolt.Tx, c Credential) error {
	for _, del := range []struct {
		bkt []byte
		key []byte
	}{
		{bktCreds, c.TokenHash[:]},
		{bktCredIDs, []byte(c.ID)},
		{bktUserCreds, pair(c.UserID, c.ID)},
		{bktSessions, []byte(c.ID)},
	} {
		if err := tx.Bucket(del.bkt).Delete(del.key); err != nil {
			return err
		}
	}
	return nil
}

// PutCredential implements Credentials. ErrConflict when another credential
// has the same token hash.
func (b *Bolt) PutCredential(ctx context.Context, c Credential) error {
	if err := checkID("credential", c.ID); err != nil {
		return err
	}
	if err := checkID("user", c.UserID); err != nil {
		return err
	}
	return b.update(ctx, func(tx *bolt.Tx) error {
		if v := tx.Bucket(bktCreds).Get(c.TokenHash[:]); v != nil {
			other, err := decodeCred(c.TokenHash[:], v)
			if err != nil {
				return err
			}
			if other.ID != c.ID {
				return ErrConflict
			}
		}
		old, ok, err := getCred(tx, c.ID)
		if err != nil {
			return err
		}
		if ok {
			return putCred(tx, c, &old)
		}
		return putCred(tx, c, nil)
	})
}

// CredentialByHash implements Credentials: one View, one Get.
func (b *Bolt) CredentialByHash(ctx context.Context, h TokenHash) (Credential, error) {
	var c Credential
	err := b.view(ctx, func(tx *bolt.Tx) error {
		v := tx.Bucket(bktCreds).Get(h[:])
		if v == nil {
			return ErrNotFound
		}
		var err error
		c, err = b.credCache.get(h[:], v, func(v []byte) (Credential, error) { return decodeCred(h[:], v) }, cloneCredential)
		return err
	})
	return c, err
}

// Credential implements Credentials.
func (b *Bolt) Credential(ctx context.Context, id string) (Credential, error) {
	var c Credential
	err := b.view(ctx, func(tx *bolt.Tx) error {
		var ok bool
		var err error
		c, ok, err = getCred(tx, id)
		if err == nil && !ok {
			err = ErrNotFound
		}
		return err
	})
	return c, err
}

// CredentialsOf implements Credentials.
func (b *Bolt) CredentialsOf(ctx context.Context, userID string) ([]Credential, error) {
	out := []Credential{}
	if !validID(userID) {
		return out, nil
	}
	err := b.view(ctx, func(tx *bolt.Tx) error {
		p := prefix(userID)
		return scanPrefix(tx.Bucket(bktUserCreds), p, func(k, _ []byte) error {
			c, ok, err := getCred(tx, string(k[len(p):]))
			if err != nil {
				return err
			}
			if ok {
				out = append(out, c)
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b Credential) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.ID, b.ID))
	})
	return out, nil
}

// TouchCredential implements Credentials. It is batched.
func (b *Bolt) TouchCredential(ctx context.Context, id string, lastUsed, expiresAt time.Time) error {
	var notFound bool
	err := b.batch(ctx, func(tx *bolt.Tx) error {
		notFound = false
		c, ok, err := getCred(tx, id)
		if err != nil {
			return err
		}
		if !ok {
			notFound = true
			return nil
		}
		old := c
		c.LastUsedAt = lastUsed
		if !expiresAt.IsZero() {
			c.ExpiresAt = expiresAt
		}
		return putCred(tx, c, &old)
	})
	if err == nil && notFound {
		err = ErrNotFound
	}
	return err
}

// UpdateCredential implements Credentials.
func (b *Bolt) UpdateCredential(ctx context.Context, id string, fn func(*Credential) error) error {
	return b.update(ctx, func(tx *bolt.Tx) error {
		c, ok, err := getCred(tx, id)
		if err != nil {
			return err
		}
		if !ok {
			return ErrNotFound
		}
		old := c
		if old.Push != nil {
			p := *old.Push
			old.Push = &p
		}
		if err := fn(&c); err != nil {
			return err
		}
		if c.ID != old.ID || c.TokenHash != old.TokenHash || c.UserID != old.UserID {
			return fmt.Errorf("storage: UpdateCredential %q: fn changed ID, TokenHash or UserID", id)
		}
		return putCred(tx, c, &old)
	})
}

// DeleteCredential implements Credentials.
func (b *Bolt) DeleteCredential(ctx context.Context, id string) (Credential, error) {
	var c Credential
	err := b.update(ctx, func(tx *bolt.Tx) error {
		var ok bool
		var err error
		c, ok, err = getCred(tx, id)
		if err != nil {
			return err
		}
		if !ok {
			return ErrNotFound
		}
		return deleteCred(tx, c)
	})
	if err != nil {
		return Credential{}, err
	}
	return c, nil
}

// DeleteExpiredSessions implements Credentials.
// It runs every few seconds: a read transaction finds whether any session
// has expired, and only then does a write transaction (a commit) follow.
func (b *Bolt) DeleteExpiredSessions(ctx context.Context, now time.Time) ([]Credential, error) {
	nowKey := timeKey(now)
	expired := func(tx *bolt.Tx) (ids []string, err error) {
		err = tx.Bucket(bktSessions).ForEach(func(k, v []byte) error {
			if len(v) == timeKeyLen && expiredAt(v, &nowKey) {
				ids = append(ids, string(k))
			}
			return nil
		})
		return ids, err
	}
	var found []string
	if err := mapErr(b.db.View(func(tx *bolt.Tx) (err error) { found, err = expired(tx); return err })); err != nil {
		return nil, err
	}
	out := []Credential{}
	if len(found) == 0 {
		return out, nil
	}
	err := b.update(ctx, func(tx *bolt.Tx) error {
		out = []Credential{}
		ids, err := expired(tx)
		if err != nil {
			return err
		}
		for _, id := range ids {
			c, ok, err := getCred(tx, id)
			if err != nil {
				return err
			}
			if !ok {
				if err := tx.Bucket(bktSessions).Delete([]byte(id)); err != nil {
					return err
				}
				continue
			}
			if err := deleteCred(tx, c); err != nil {
				return err
			}
			out = append(out, c)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
