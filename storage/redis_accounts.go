package storage

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Schools: one hash in one slot; there are few.

// CreateSchool implements Accounts.
func (r *Redis) CreateSchool(ctx context.Context, s School) error {
	if err := r.check(ctx); err != nil {
		return err
	}
	if err := checkID("school", s.ID); err != nil {
		return err
	}
	v, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("storage: encode school: %w", err)
	}
	ok, err := r.c.HSetNX(ctx, r.schoolsKey(), s.ID, v).Result()
	if err != nil {
		return err
	}
	if !ok {
		return ErrConflict
	}
	return nil
}

// School implements Accounts.
func (r *Redis) School(ctx context.Context, id string) (School, error) {
	var s School
	if err := r.check(ctx); err != nil {
		return s, err
	}
	v, err := r.c.HGet(ctx, r.schoolsKey(), id).Result()
	if isNil(err) {
		return s, ErrNotFound
	}
	if err != nil {
		return s, err
	}
	err = decode([]byte(v), &s, "school")
	return s, err
}

// Schools implements Accounts.
func (r *Redis) Schools(ctx context.Context) ([]School, error) {
	if err := r.check(ctx); err != nil {
		return nil, err
	}
	all, err := r.c.HGetAll(ctx, r.schoolsKey()).Result()
	if err != nil {
		return nil, err
	}
	out := make([]School, 0, len(all))
	for _, v := range all {
		var s School
		if err := decode([]byte(v), &s, "school"); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b School) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), strings.Compare(a.ID, b.ID))
	})
	return out, nil
}

// UpdateSchool implements Accounts with compare-and-set; fn may run more
// than once.
func (r *Redis) UpdateSchool(ctx context.Context, id string, fn func(*School) error) error {
	for range casAttempts {
		if err := r.check(ctx); err != nil {
			return err
		}
		old, err := r.c.HGet(ctx, r.schoolsKey(), id).Result()
		if isNil(err) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		var sc School
		if err := decode([]byte(old), &sc, "school"); err != nil {
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
		ok, err := scriptCASHash.Run(ctx, r.c, []string{r.schoolsKey()}, id, old, nv).Int()
		if err != nil {
			return err
		}
		if ok == 1 {
			return nil
		}
	}
	return fmt.Errorf("storage: UpdateSchool %q: too many concurrent updates", id)
}

// Users.

// loginClaim is the value of a login key: the user id and when it was
// claimed.
func loginClaim(userID string, at time.Time) string {
	return userID + "\x00" + strconv.FormatInt(at.UnixMilli(), 10)
}

func parseLoginClaim(v string) (userID string, at time.Time) {
	id, ms, _ := strings.Cut(v, "\x00")
	n, _ := strconv.ParseInt(ms, 10, 64)
	return id, time.UnixMilli(n)
}

// CreateUser implements Accounts.
//
// The login index and the user record live in different slots. The login
// is claimed first (SET NX), then the user is written (SET NX); when the
// ID turns out to be taken, the claim is released. A claim whose user was
// never written (the writer crashed in between) blocks the login until it
// is loginClaimGrace old; then CreateUser takes it over and checks after
// writing its user that the claim is still its own. A claim that names a
// user with another login (a crash before the release) is taken over at
// once.
func (r *Redis) CreateUser(ctx context.Context, u User) error {
	if err := r.check(ctx); err != nil {
		return err
	}
	if err := checkID("user", u.ID); err != nil {
		return err
	}
	v, err := encodeUser(u)
	if err != nil {
		return err
	}
	uk, lk := r.userKey(u.ID), r.loginKey(u.Login)
	if n, err := r.c.Exists(ctx, uk).Result(); err != nil {
		return err
	} else if n > 0 {
		return ErrConflict
	}
	claim, own, err := r.claimLogin(ctx, lk, u.ID, u.Login)
	if err != nil {
		return err
	}
	if err := r.c.SAdd(ctx, r.usersKey(), u.ID).Err(); err != nil {
		return err
	}
	ok, err := r.c.SetNX(ctx, uk, v, 0).Result()
	if err != nil {
		return err
	}
	if !ok {
		// The ID is taken. Give the claim back, unless the taken ID is a
		// concurrent creation of this very user, whose login it is.
		if own && !r.userHasLogin(ctx, uk, u.Login) {
			if err := scriptDelIfEqual.Run(ctx, r.c, []string{lk}, claim).Err(); err != nil {
				return err
			}
		}
		return ErrConflict
	}
	// Only after a takeover race can the claim have changed hands.
	cur, err := r.c.Get(ctx, lk).Result()
	if err != nil && !isNil(err) {
		return err
	}
	if cur != claim {
		if err := scriptDelIfEqual.Run(ctx, r.c, []string{uk}, v).Err(); err != nil {
			return err
		}
		return ErrConflict
	}
	return nil
}

// userHasLogin reports whether the user record at uk has login (compared
// case-insensitively). Errors count as no.
func (r *Redis) userHasLogin(ctx context.Context, uk, login string) bool {
	v, err := r.c.Get(ctx, uk).Result()
	if err != nil {
		return false
	}
	var ou struct {
		Login string `json:"login"`
	}
	return decode([]byte(v), &ou, "user") == nil && strings.EqualFold(ou.Login, login)
}

// claimLogin claims the login key lk for a new user with userID and login
// and returns the claim, or ErrConflict. own is false when the claim was
// there already, made by an earlier or concurrent CreateUser of the same
// user: then it is not this call's to release.
func (r *Redis) claimLogin(ctx context.Context, lk, userID, login string) (claim string, own bool, err error) {
	for range casAttempts {
		claim := loginClaim(userID, time.Now())
		ok, err := r.c.SetNX(ctx, lk, claim, 0).Result()
		if err != nil {
			return "", false, err
		}
		if ok {
			return claim, true, nil
		}
		cur, err := r.c.Get(ctx, lk).Result()
		if isNil(err) {
			continue // released meanwhile
		}
		if err != nil {
			return "", false, err
		}
		owner, at := parseLoginClaim(cur)
		v, err := r.c.Get(ctx, r.userKey(owner)).Result()
		if err != nil && !isNil(err) {
			return "", false, err
		}
		stale := false
		switch {
		case err == nil:
			// A claim counts when its user has this login; a claim that
			// names a user with another login is left over.
			var ou struct {
				Login string `json:"login"`
			}
			if err := decode([]byte(v), &ou, "user"); err != nil {
				return "", false, err
			}
			if strings.ToLower(ou.Login) != strings.ToLower(login) {
				stale = true
			} else if owner == userID {
				return cur, false, nil // the user exists: SET NX will say so
			}
		case owner == userID:
			return cur, false, nil // an earlier or concurrent attempt of this user
		default:
			// No user yet: its writer is at it, or crashed.
			stale = time.Since(at) >= loginClaimGrace
		}
		if !stale {
			return "", false, ErrConflict
		}
		n, err := scriptCASString.Run(ctx, r.c, []string{lk}, cur, claim).Int()
		if err != nil {
			return "", false, err
		}
		if n == 1 {
			return claim, true, nil
		}
	}
	return "", false, errors.New("storage: CreateUser: login claim contended")
}

// User implements Accounts.
func (r *Redis) User(ctx context.Context, id string) (User, error) {
	if err := r.check(ctx); err != nil {
		return User{}, err
	}
	v, err := r.c.Get(ctx, r.userKey(id)).Result()
	if isNil(err) {
		return User{}, ErrNotFound
	}
	if err != nil {
		return User{}, err
	}
	return decodeUser([]byte(v))
}

// UserByLogin implements Accounts. A login claim without its user (see
// CreateUser) is not found.
func (r *Redis) UserByLogin(ctx context.Context, login string) (User, error) {
	if err := r.check(ctx); err != nil {
		return User{}, err
	}
	claim, err := r.c.Get(ctx, r.loginKey(login)).Result()
	if isNil(err) {
		return User{}, ErrNotFound
	}
	if err != nil {
		return User{}, err
	}
	id, _ := parseLoginClaim(claim)
	u, err := r.User(ctx, id)
	if err != nil {
		return User{}, err
	}
	if strings.ToLower(u.Login) != strings.ToLower(login) {
		return User{}, ErrNotFound
	}
	return u, nil
}

// UpdateUser implements Accounts with compare-and-set; fn may run more
// than once.
func (r *Redis) UpdateUser(ctx context.Context, id string, fn func(*User) error) error {
	uk := r.userKey(id)
	for range casAttempts {
		if err := r.check(ctx); err != nil {
			return err
		}
		old, err := r.c.Get(ctx, uk).Result()
		if isNil(err) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		nv, err := updatedUser(id, []byte(old), fn)
		if err != nil {
			return err
		}
		ok, err := scriptCASString.Run(ctx, r.c, []string{uk}, old, nv).Int()
		if err != nil {
			return err
		}
		if ok == 1 {
			return nil
		}
	}
	return fmt.Errorf("storage: UpdateUser %q: too many concurrent updates", id)
}

// CountUsers implements Accounts: it reads every user listed in {P x:us}
// (IDs whose record is missing, left by a failed CreateUser, are skipped).
func (r *Redis) CountUsers(ctx context.Context) (map[Role]int, map[string]int, error) {
	byRole, byStatus := map[Role]int{}, map[string]int{}
	err := r.forEachUser(ctx, func(v []byte) error { return countUser(v, byRole, byStatus) })
	if err != nil {
		return nil, nil, err
	}
	return byRole, byStatus, nil
}

// UsersOfSchool implements Accounts.
func (r *Redis) UsersOfSchool(ctx context.Context, school string) ([]User, error) {
	out := []User{}
	err := r.forEachUser(ctx, func(v []byte) error {
		u, err := decodeUser(v)
		if err == nil && u.School == school {
			out = append(out, u)
		}
		return err
	})
	slices.SortFunc(out, func(a, b User) int { return strings.Compare(a.ID, b.ID) })
	return out, err
}

// forEachUser calls fn with the record of every user, fetched in pipelined
// chunks.
func (r *Redis) forEachUser(ctx context.Context, fn func(v []byte) error) error {
	if err := r.check(ctx); err != nil {
		return err
	}
	ids, err := r.c.SMembers(ctx, r.usersKey()).Result()
	if err != nil {
		return err
	}
	return chunks(ids, pipeChunk, func(ids []string) error {
		cmds := make([]*redis.StringCmd, len(ids))
		_, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, id := range ids {
				cmds[i] = p.Get(ctx, r.userKey(id))
			}
			return nil
		})
		if err != nil && !isNil(err) {
			return err
		}
		for _, cmd := range cmds {
			v, err := cmd.Result()
			if isNil(err) {
				continue
			}
			if err != nil {
				return err
			}
			if err := fn([]byte(v)); err != nil {
				return err
			}
		}
		return nil
	})
}

// Login history: a counter and a list in the user's slot.

// RecordLoginFailure implements LoginHistory. ErrNotFound for an unknown
// user.
func (r *Redis) RecordLoginFailure(ctx context.Context, userID string) error {
	if err := r.check(ctx); err != nil {
		return err
	}
	if !validID(userID) {
		return ErrNotFound
	}
	uk := r.userKey(userID)
	n, err := scriptLoginFailure.Run(ctx, r.c, []string{uk, uk + "f"}).Int()
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// RecordLoginSuccess implements LoginHistory. ErrNotFound for an unknown
// user; keep < 0 counts as 0.
func (r *Redis) RecordLoginSuccess(ctx context.Context, userID string, ev LoginEvent, keep int) error {
	if err := r.check(ctx); err != nil {
		return err
	}
	if !validID(userID) {
		return ErrNotFound
	}
	ev.FailedBefore = 0
	v, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("storage: encode login event: %w", err)
	}
	uk := r.userKey(userID)
	n, err := scriptLoginSuccess.Run(ctx, r.c, []string{uk, uk + "f", uk + "l"}, v, max(keep, 0)).Int()
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// Logins implements LoginHistory.
func (r *Redis) Logins(ctx context.Context, userID string) ([]LoginEvent, error) {
	if err := r.check(ctx); err != nil {
		return nil, err
	}
	out := []LoginEvent{}
	if !validID(userID) {
		return out, nil
	}
	vs, err := r.c.LRange(ctx, r.userKey(userID)+"l", 0, -1).Result()
	if err != nil {
		return nil, err
	}
	for _, v := range vs {
		f, js, ok := strings.Cut(v, ":")
		n, err := strconv.Atoi(f)
		if !ok || err != nil {
			return nil, fmt.Errorf("storage: corrupt login event %q", v)
		}
		var ev LoginEvent
		if err := decode([]byte(js), &ev, "login event"); err != nil {
			return nil, err
		}
		ev.FailedBefore = n
		out = append(out, ev)
	}
	return out, nil
}

// ForgetLoginsBefore implements LoginHistory. The list is newest first,
// so the events to remove are its tail: each is popped only while it is
// still the tail (scriptPopIfTail), so that a login recorded meanwhile,
// which may have pushed the tail out already, never costs another event.
func (r *Redis) ForgetLoginsBefore(ctx context.Context, userID string, cutoff time.Time) (int, error) {
	if err := r.check(ctx); err != nil {
		return 0, err
	}
	if !validID(userID) {
		return 0, nil
	}
	key := r.userKey(userID) + "l"
	removed := 0
	for {
		v, err := r.c.LIndex(ctx, key, -1).Result()
		if isNil(err) {
			return removed, nil
		}
		if err != nil {
			return removed, err
		}
		_, js, ok := strings.Cut(v, ":")
		var ev LoginEvent
		if !ok {
			return removed, fmt.Errorf("storage: corrupt login event %q", v)
		}
		if err := decode([]byte(js), &ev, "login event"); err != nil {
			return removed, err
		}
		if !ev.At.Before(cutoff) {
			return removed, nil
		}
		n, err := scriptPopIfTail.Run(ctx, r.c, []string{key}, v).Int()
		if err != nil {
			return removed, err
		}
		removed += n
	}
}

// Meta.

// GetMeta implements Meta.
func (r *Redis) GetMeta(ctx context.Context, key string) ([]byte, error) {
	if err := r.check(ctx); err != nil {
		return nil, err
	}
	v, err := r.c.HGet(ctx, r.metaKey(), key).Bytes()
	if isNil(err) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	if v == nil {
		v = []byte{}
	}
	return v, nil
}

// PutMeta implements Meta.
func (r *Redis) PutMeta(ctx context.Context, key string, value []byte) error {
	if err := r.check(ctx); err != nil {
		return err
	}
	if key == "" {
		return errors.New("storage: empty meta key")
	}
	return r.c.HSet(ctx, r.metaKey(), key, value).Err()
}

// Device keys: a hash per user.

// PutDeviceKey implements DeviceKeys.
func (r *Redis) PutDeviceKey(ctx context.Context, k DeviceKey) error {
	if err := r.check(ctx); err != nil {
		return err
	}
	if err := checkID("user", k.UserID); err != nil {
		return err
	}
	return r.c.HSet(ctx, r.userKey(k.UserID)+"k", k.DeviceID, k.PublicKey).Err()
}

// DeviceKeysOf implements DeviceKeys.
func (r *Redis) DeviceKeysOf(ctx context.Context, userIDs []string) ([]DeviceKey, error) {
	if err := r.check(ctx); err != nil {
		return nil, err
	}
	ids := slices.DeleteFunc(slices.Compact(slices.Sorted(slices.Values(userIDs))), func(id string) bool { return !validID(id) })
	out := []DeviceKey{}
	err := chunks(ids, pipeChunk, func(ids []string) error {
		cmds := make([]*redis.MapStringStringCmd, len(ids))
		_, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, id := range ids {
				cmds[i] = p.HGetAll(ctx, r.userKey(id)+"k")
			}
			return nil
		})
		if err != nil {
			return err
		}
		for i, cmd := range cmds {
			devs := cmd.Val()
			for _, d := range slices.Sorted(maps.Keys(devs)) {
				out = append(out, DeviceKey{UserID: ids[i], DeviceID: d, PublicKey: []byte(devs[d])})
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
func (r *Redis) DeleteDeviceKey(ctx context.Context, userID, deviceID string) error {
	if err := r.check(ctx); err != nil {
		return err
	}
	if !validID(userID) {
		return nil
	}
	return r.c.HDel(ctx, r.userKey(userID)+"k", deviceID).Err()
}
