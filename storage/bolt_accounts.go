package storage

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Schools.

// CreateSchool implements Accounts.
func (b *Bolt) CreateSchool(ctx context.Context, s School) error {
	if err := checkID("school", s.ID); err != nil {
		return err
	}
	v, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("storage: encode school: %w", err)
	}
	return b.update(ctx, func(tx *bolt.Tx) error {
		bk := tx.Bucket(bktSchools)
		if bk.Get([]byte(s.ID)) != nil {
			return ErrConflict
		}
		tx.OnCommit(func() { b.schools.forget(s.ID) })
		return bk.Put([]byte(s.ID), v)
	})
}

// School implements Accounts.
func (b *Bolt) School(ctx context.Context, id string) (School, error) {
	s, ok, gen := b.schools.get(id)
	if ok {
		return s, ctx.Err()
	}
	err := b.view(ctx, func(tx *bolt.Tx) error {
		v := tx.Bucket(bktSchools).Get([]byte(id))
		if v == nil {
			return ErrNotFound
		}
		return decode(v, &s, "school")
	})
	if err == nil {
		b.schools.put(id, s, gen)
	}
	return s, err
}

// UpdateSchool implements Accounts.
func (b *Bolt) UpdateSchool(ctx context.Context, id string, fn func(*School) error) error {
	return b.update(ctx, func(tx *bolt.Tx) error {
		bk := tx.Bucket(bktSchools)
		v := bk.Get([]byte(id))
		if v == nil {
			return ErrNotFound
		}
		var sc School
		if err := decode(v, &sc, "school"); err != nil {
			return err
		}
		if err := fn(&sc); err != nil {
			return err
		}
		if sc.ID != id {
			return fmt.Errorf("storage: UpdateSchool %q: fn changed ID", id)
		}
		nv, err := json.Marshal(sc)
		if err != nil {
			return err
		}
		tx.OnCommit(func() { b.schools.forget(id) })
		return bk.Put([]byte(id), nv)
	})
}

// Schools implements Accounts.
func (b *Bolt) Schools(ctx context.Context) ([]School, error) {
	out := []School{}
	err := b.view(ctx, func(tx *bolt.Tx) error {
		return tx.Bucket(bktSchools).ForEach(func(_, v []byte) error {
			var s School
			if err := decode(v, &s, "school"); err != nil {
				return err
			}
			out = append(out, s)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b School) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), strings.Compare(a.ID, b.ID))
	})
	return out, nil
}

// Users.

// userRec is how a User is stored. Countries is a pointer so that an empty
// list (no country allowed) does not come back as nil (no restriction).
type userRec struct {
	User
	Countries *[]string `json:"countries,omitempty"`
}

func encodeUser(u User) ([]byte, error) {
	r := userRec{User: u}
	r.User.Countries = nil
	if u.Countries != nil {
		r.Countries = &u.Countries
	}
	v, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("storage: encode user: %w", err)
	}
	return v, nil
}

func decodeUser(v []byte) (User, error) {
	var r userRec
	if err := decode(v, &r, "user"); err != nil {
		return User{}, err
	}
	u := r.User
	u.Countries = nil
	if r.Countries != nil {
		u.Countries = *r.Countries
		if u.Countries == nil {
			u.Countries = []string{}
		}
	}
	return u, nil
}

func loginKey(login string) []byte { return []byte(strings.ToLower(login)) }

// CreateUser implements Accounts.
func (b *Bolt) CreateUser(ctx context.Context, u User) error {
	if err := checkID("user", u.ID); err != nil {
		return err
	}
	v, err := encodeUser(u)
	if err != nil {
		return err
	}
	return b.update(ctx, func(tx *bolt.Tx) error {
		users, logins := tx.Bucket(bktUsers), tx.Bucket(bktLogins)
		lk := loginKey(u.Login)
		if users.Get([]byte(u.ID)) != nil || logins.Get(lk) != nil {
			return ErrConflict
		}
		if err := logins.Put(lk, []byte(u.ID)); err != nil {
			return err
		}
		return users.Put([]byte(u.ID), v)
	})
}

// User implements Accounts.
func (b *Bolt) User(ctx context.Context, id string) (User, error) {
	var u User
	err := b.view(ctx, func(tx *bolt.Tx) error {
		v := tx.Bucket(bktUsers).Get([]byte(id))
		if v == nil {
			return ErrNotFound
		}
		var err error
		u, err = b.userCache.get([]byte(id), v, decodeUser, cloneUser)
		return err
	})
	return u, err
}

// UserByLogin implements Accounts.
func (b *Bolt) UserByLogin(ctx context.Context, login string) (User, error) {
	var u User
	err := b.view(ctx, func(tx *bolt.Tx) error {
		id := tx.Bucket(bktLogins).Get(loginKey(login))
		if id == nil {
			return ErrNotFound
		}
		v := tx.Bucket(bktUsers).Get(id)
		if v == nil {
			return fmt.Errorf("storage: login index names missing user %q", id)
		}
		var err error
		u, err = decodeUser(v)
		return err
	})
	return u, err
}

// UpdateUser implements Accounts.
func (b *Bolt) UpdateUser(ctx context.Context, id string, fn func(*User) error) error {
	return b.update(ctx, func(tx *bolt.Tx) error {
		bk := tx.Bucket(bktUsers)
		v := bk.Get([]byte(id))
		if v == nil {
			return ErrNotFound
		}
		nv, err := updatedUser(id, v, fn)
		if err != nil {
			return err
		}
		return bk.Put([]byte(id), nv)
	})
}

// updatedUser returns the encoded record old (of user id) as fn changes
// it. fn may change neither the id nor the login (the login index).
func updatedUser(id string, old []byte, fn func(*User) error) ([]byte, error) {
	u, err := decodeUser(old)
	if err != nil {
		return nil, err
	}
	login := u.Login
	if err := fn(&u); err != nil {
		return nil, err
	}
	if u.ID != id || u.Login != login {
		return nil, fmt.Errorf("storage: UpdateUser %q: fn changed ID or Login", id)
	}
	return encodeUser(u)
}

// UsersOfSchool implements Accounts. It scans every user: a directory is
// read rarely (an app caches it), and schools are small.
func (b *Bolt) UsersOfSchool(ctx context.Context, school string) ([]User, error) {
	out := []User{}
	err := b.view(ctx, func(tx *bolt.Tx) error {
		return tx.Bucket(bktUsers).ForEach(func(_, v []byte) error {
			var probe struct {
				School string `json:"school"`
			}
			if err := decode(v, &probe, "user"); err != nil || probe.School != school {
				return err
			}
			u, err := decodeUser(v)
			if err == nil {
				out = append(out, u)
			}
			return err
		})
	})
	return out, err
}

// CountUsers implements Accounts.
func (b *Bolt) CountUsers(ctx context.Context) (map[Role]int, map[string]int, error) {
	byRole, byStatus := map[Role]int{}, map[string]int{}
	err := b.view(ctx, func(tx *bolt.Tx) error {
		return tx.Bucket(bktUsers).ForEach(func(_, v []byte) error {
			return countUser(v, byRole, byStatus)
		})
	})
	if err != nil {
		return nil, nil, err
	}
	return byRole, byStatus, nil
}

// countUser adds the user record v to the counts of CountUsers (every
// backend counts the same way).
func countUser(v []byte, byRole map[Role]int, byStatus map[string]int) error {
	var u struct {
		Role     Role `json:"role"`
		Disabled bool `json:"disabled"`
	}
	if err := decode(v, &u, "user"); err != nil {
		return err
	}
	byRole[u.Role]++
	if u.Disabled {
		byStatus["disabled"]++
	} else {
		byStatus["active"]++
	}
	return nil
}

// Login history.

type loginHist struct {
	Failed int          `json:"failed"`
	Events []LoginEvent `json:"events"`
}

func getLoginHist(tx *bolt.Tx, userID string) (loginHist, error) {
	var h loginHist
	if v := tx.Bucket(bktLoginHist).Get([]byte(userID)); v != nil {
		if err := decode(v, &h, "login history"); err != nil {
			return h, err
		}
	}
	return h, nil
}

func putLoginHist(tx *bolt.Tx, userID string, h loginHist) error {
	v, err := json.Marshal(h)
	if err != nil {
		return fmt.Errorf("storage: encode login history: %w", err)
	}
	return tx.Bucket(bktLoginHist).Put([]byte(userID), v)
}

// RecordLoginFailure implements LoginHistory. It is batched; ErrNotFound
// for an unknown user.
func (b *Bolt) RecordLoginFailure(ctx context.Context, userID string) error {
	var notFound bool
	err := b.batch(ctx, func(tx *bolt.Tx) error {
		notFound = false
		if !validID(userID) || tx.Bucket(bktUsers).Get([]byte(userID)) == nil {
			notFound = true
			return nil
		}
		h, err := getLoginHist(tx, userID)
		if err != nil {
			return err
		}
		h.Failed++
		return putLoginHist(tx, userID, h)
	})
	if err == nil && notFound {
		err = ErrNotFound
	}
	return err
}

// RecordLoginSuccess implements LoginHistory. ErrNotFound for an unknown
// user; keep < 0 counts as 0.
func (b *Bolt) RecordLoginSuccess(ctx context.Context, userID string, ev LoginEvent, keep int) error {
	return b.update(ctx, func(tx *bolt.Tx) error {
		if tx.Bucket(bktUsers).Get([]byte(userID)) == nil {
			return ErrNotFound
		}
		h, err := getLoginHist(tx, userID)
		if err != nil {
			return err
		}
		ev.FailedBefore = h.Failed
		h.Failed = 0
		h.Events = append([]LoginEvent{ev}, h.Events...)
		h.Events = h.Events[:min(len(h.Events), max(keep, 0))]
		return putLoginHist(tx, userID, h)
	})
}

// Logins implements LoginHistory.
func (b *Bolt) Logins(ctx context.Context, userID string) ([]LoginEvent, error) {
	var h loginHist
	err := b.view(ctx, func(tx *bolt.Tx) error {
		var err error
		h, err = getLoginHist(tx, userID)
		return err
	})
	if err != nil {
		return nil, err
	}
	if h.Events == nil {
		h.Events = []LoginEvent{}
	}
	return h.Events, nil
}

// ForgetLoginsBefore implements LoginHistory. It writes only when there
// is something to remove.
func (b *Bolt) ForgetLoginsBefore(ctx context.Context, userID string, cutoff time.Time) (int, error) {
	old := false
	err := b.view(ctx, func(tx *bolt.Tx) error {
		h, err := getLoginHist(tx, userID)
		if err == nil && len(h.Events) > 0 {
			old = h.Events[len(h.Events)-1].At.Before(cutoff) // newest first
		}
		return err
	})
	if err != nil || !old {
		return 0, err
	}
	removed := 0
	err = b.update(ctx, func(tx *bolt.Tx) error {
		removed = 0
		if tx.Bucket(bktLoginHist).Get([]byte(userID)) == nil {
			return nil
		}
		h, err := getLoginHist(tx, userID)
		if err != nil {
			return err
		}
		kept := h.Events[:0]
		for _, ev := range h.Events {
			if ev.At.Before(cutoff) {
				removed++
			} else {
				kept = append(kept, ev)
			}
		}
		if removed == 0 {
			return nil
		}
		h.Events = kept
		return putLoginHist(tx, userID, h)
	})
	return removed, err
}

// Meta.

// GetMeta implements Meta.
func (b *Bolt) GetMeta(ctx context.Context, key string) ([]byte, error) {
	var out []byte
	err := b.view(ctx, func(tx *bolt.Tx) error {
		v := tx.Bucket(bktMeta).Get([]byte(key))
		if v == nil {
			return ErrNotFound
		}
		out = append([]byte{}, v...)
		return nil
	})
	return out, err
}

// PutMeta implements Meta.
func (b *Bolt) PutMeta(ctx context.Context, key string, value []byte) error {
	if key == "" {
		return errors.New("storage: empty meta key")
	}
	v := append([]byte{}, value...)
	return b.update(ctx, func(tx *bolt.Tx) error {
		return tx.Bucket(bktMeta).Put([]byte(key), v)
	})
}

// Device keys.

// PutDeviceKey implements DeviceKeys.
func (b *Bolt) PutDeviceKey(ctx context.Context, k DeviceKey) error {
	if err := checkID("user", k.UserID); err != nil {
		return err
	}
	v := append([]byte{}, k.PublicKey...)
	return b.update(ctx, func(tx *bolt.Tx) error {
		return tx.Bucket(bktDevKeys).Put(pair(k.UserID, k.DeviceID), v)
	})
}

// DeviceKeysOf implements DeviceKeys.
func (b *Bolt) DeviceKeysOf(ctx context.Context, userIDs []string) ([]DeviceKey, error) {
	ids := slices.Clone(userIDs)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	out := []DeviceKey{}
	err := b.view(ctx, func(tx *bolt.Tx) error {
		bk := tx.Bucket(bktDevKeys)
		for _, id := range ids {
			if !validID(id) {
				continue
			}
			p := prefix(id)
			err := scanPrefix(bk, p, func(k, v []byte) error {
				out = append(out, DeviceKey{
					UserID:    id,
					DeviceID:  string(k[len(p):]),
					PublicKey: bytes.Clone(v),
				})
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// DeleteDeviceKey implements DeviceKeys.
func (b *Bolt) DeleteDeviceKey(ctx context.Context, userID, deviceID string) error {
	if !validID(userID) {
		return nil
	}
	return b.update(ctx, func(tx *bolt.Tx) error {
		return tx.Bucket(bktDevKeys).Delete(pair(userID, deviceID))
	})
}

// decode unmarshals a stored record; a failure means a corrupt file.
func decode(v []byte, into any, what string) error {
	if err := json.Unmarshal(v, into); err != nil {
		return fmt.Errorf("storage: decode %s: %w", what, err)
	}
	return nil
}
