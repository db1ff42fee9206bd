package storage

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Erasure, notices and credential counts:
//
//	{P x:tomb}           hash  user id → ErasedAt (RFC 3339 with nanoseconds)
//	{P u:<user>}n        list  notices (JSON), newest first
//
// EraseUser spans slots, so it is a sequence of steps, each atomic, ordered
// so that the account stops working first and a crash at any point leaves
// the tombstone, which makes the next EraseUser of the same ID (the
// operator's reapply-erasures, or the user's retry) finish the job:
//
//  1. the tombstone (HSETNX: an earlier time stays);
//  2. the user record: from here on no login and no token of the user
//     works (Authenticate reads the user);
//  3. the login claim, when it still names the user (the login is free
//     again), and the entry of {P x:us};
//  4. the credentials listed in {P u:<user>}c, each as DeleteCredential
//     does, repeated until the set is empty (a login that passed its
//     password check just before step 2 may add one), then their pending
//     pushes;
//  5. the memberships listed in {P u:<user>}v, each as
//     UpdateConversation does, and the pair index of a direct
//     conversation;
//  6. everything else in the user's slot in one DEL.
//
// A rerun after a crash between steps 2 and 3 finds no user record and so
// no login: that claim is left, and CreateUser takes it over after
// loginClaimGrace (a claim without its user).

var (
	_ Erasure = (*Redis)(nil)
	_ Notices = (*Redis)(nil)
)

func (r *Redis) tombKey() string { return r.gkey("tomb") }

// scriptDelClaimOf: KEYS[1] login key; ARGV user id. Deletes the claim when
// it names the user.
var scriptDelClaimOf = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, #ARGV[1] + 1) == ARGV[1] .. '\0' then
  return redis.call('DEL', KEYS[1])
end
return 0`)

// scriptAddNotice: KEYS user, notices; ARGV JSON, keep. 0 for an unknown
// user.
var scriptAddNotice = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local keep = tonumber(ARGV[2])
if keep <= 0 then
  redis.call('DEL', KEYS[2])
  return 1
end
redis.call('LPUSH', KEYS[2], ARGV[1])
redis.call('LTRIM', KEYS[2], 0, keep - 1)
return 1`)

// eraseRounds bounds step 4's repetitions.
const eraseRounds = 10

// errNotMember aborts an UpdateConversation that has nothing to do.
var errNotMember = errors.New("storage: not a member")

// EraseUser implements Erasure; see the steps above.
func (r *Redis) EraseUser(ctx context.Context, userID string, at time.Time) ([]Credential, error) {
	if err := r.check(ctx); err != nil {
		return nil, err
	}
	if err := checkID("user", userID); err != nil {
		return nil, err
	}
	atText, err := at.UTC().MarshalText()
	if err != nil {
		return nil, fmt.Errorf("storage: encode erasure time: %w", err)
	}
	uk := r.userKey(userID)

	// 1, 2, 3.
	if err := r.c.HSetNX(ctx, r.tombKey(), userID, atText).Err(); err != nil {
		return nil, err
	}
	v, err := r.c.Get(ctx, uk).Result()
	if err != nil && !isNil(err) {
		return nil, err
	}
	if err == nil {
		var u struct {
			Login string `json:"login"`
		}
		if err := decode([]byte(v), &u, "user"); err != nil {
			return nil, err
		}
		if err := r.c.Del(ctx, uk).Err(); err != nil {
			return nil, err
		}
		if err := scriptDelClaimOf.Run(ctx, r.c, []string{r.loginKey(u.Login)}, userID).Err(); err != nil {
			return nil, err
		}
	}
	if err := r.c.SRem(ctx, r.usersKey(), userID).Err(); err != nil {
		return nil, err
	}

	// 4.
	removed := []Credential{}
	for round := 0; ; round++ {
		ids, err := r.c.SMembers(ctx, uk+"c").Result()
		if err != nil {
			return nil, err
		}
		if len(ids) == 0 {
			break
		}
		if round == eraseRounds {
			return nil, fmt.Errorf("storage: EraseUser %q: credentials keep appearing", userID)
		}
		for _, id := range ids {
			c, ok, err := r.eraseCred(ctx, userID, id)
			if err != nil {
				return nil, err
			}
			if ok {
				removed = append(removed, c)
			}
		}
	}
	if len(removed) > 0 {
		done := make([]PushDone, len(removed))
		for i, c := range removed {
			done[i] = PushDone{CredID: c.ID}
		}
		if err := r.DonePushes(ctx, done); err != nil {
			return nil, err
		}
	}

	// 5.
	convs, err := r.c.SMembers(ctx, uk+"v").Result()
	if err != nil {
		return nil, err
	}
	slices.Sort(convs)
	for _, id := range convs {
		if err := r.leaveConv(ctx, userID, id); err != nil {
			return nil, err
		}
	}

	// 6.
	if err := r.c.Del(ctx, uk, uk+"f", uk+"l", uk+"c", uk+"v", uk+"k", uk+"n", uk+"a").Err(); err != nil {
		return nil, err
	}
	slices.SortFunc(removed, func(a, b Credential) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.ID, b.ID))
	})
	return removed, nil
}

// eraseCred deletes credential id of userID as DeleteCredential does and
// removes it from the user's set also when its record is gone already.
func (r *Redis) eraseCred(ctx context.Context, userID, id string) (Credential, bool, error) {
	if !validID(id) {
		return Credential{}, false, r.c.SRem(ctx, r.userKey(userID)+"c", id).Err()
	}
	st, hs, raw, err := r.credByID(ctx, id)
	if err != nil {
		return Credential{}, false, err
	}
	if st != nil && st.c.UserID == userID {
		c, ok, err := r.deleteCred(ctx, st, hs, raw)
		if err != nil || ok {
			return c, ok, err
		}
	}
	// No record (or another user's: a corrupt set): only the leftovers.
	_, err = r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		if st == nil {
			for _, h := range hs {
				scriptDelIfID.Eval(ctx, p, []string{r.credKey(h)}, id)
			}
			if raw != "" {
				scriptDelIfEqual.Eval(ctx, p, []string{r.credIDKey(id)}, raw)
			}
		}
		p.SRem(ctx, r.userKey(userID)+"c", id)
		return nil
	})
	if err != nil && !isNil(err) {
		return Credential{}, false, err
	}
	return Credential{}, false, nil
}

// leaveConv removes userID from the members of conversation convID with
// UpdateConversation (which keeps the membership indexes), and drops the
// pair index of a direct conversation.
func (r *Redis) leaveConv(ctx context.Context, userID, convID string) error {
	var direct *Conversation
	err := r.UpdateConversation(ctx, convID, func(c *Conversation) error {
		direct = nil
		if _, member := c.Member(userID); !member {
			return errNotMember
		}
		if c.Kind == ConvDirect && len(c.Members) == 2 {
			d := *c
			d.Members = slices.Clone(c.Members)
			direct = &d
		}
		c.Members = slices.DeleteFunc(c.Members, func(m Member) bool { return m.UserID == userID })
		return nil
	})
	switch {
	case errors.Is(err, ErrNotFound), errors.Is(err, errNotMember):
		return r.c.SRem(ctx, r.userKey(userID)+"v", convID).Err()
	case err != nil:
		return err
	}
	if direct == nil {
		return nil
	}
	lo, hi := direct.Members[0].UserID, direct.Members[1].UserID
	if hi < lo {
		lo, hi = hi, lo
	}
	dk := r.directKey(direct.School, lo, hi)
	v, err := r.c.Get(ctx, dk).Result()
	if isNil(err) {
		return nil
	}
	if err != nil {
		return err
	}
	var claimed struct {
		ID string `json:"id"`
	}
	if err := decode([]byte(v), &claimed, "direct conversation"); err != nil {
		return err
	}
	if claimed.ID != convID {
		return nil
	}
	return scriptDelIfEqual.Run(ctx, r.c, []string{dk}, v).Err()
}

// Tombstones implements Erasure.
func (r *Redis) Tombstones(ctx context.Context) ([]Tombstone, error) {
	if err := r.check(ctx); err != nil {
		return nil, err
	}
	all, err := r.c.HGetAll(ctx, r.tombKey()).Result()
	if err != nil {
		return nil, err
	}
	out := make([]Tombstone, 0, len(all))
	for id, v := range all {
		ts := Tombstone{UserID: id}
		if err := ts.ErasedAt.UnmarshalText([]byte(v)); err != nil {
			return nil, fmt.Errorf("storage: decode tombstone %q: %w", id, err)
		}
		out = append(out, ts)
	}
	sortTombstones(out)
	return out, nil
}

// AddNotice implements Notices: one script in the user's slot.
func (r *Redis) AddNotice(ctx context.Context, userID string, n Notice, keep int) error {
	if err := r.check(ctx); err != nil {
		return err
	}
	if !validID(userID) {
		return ErrNotFound
	}
	v, err := json.Marshal(n)
	if err != nil {
		return fmt.Errorf("storage: encode notice: %w", err)
	}
	uk := r.userKey(userID)
	ok, err := scriptAddNotice.Run(ctx, r.c, []string{uk, uk + "n"}, v, max(keep, 0)).Int()
	if err != nil {
		return err
	}
	if ok == 0 {
		return ErrNotFound
	}
	return nil
}

// Notices implements Notices.
func (r *Redis) Notices(ctx context.Context, userID string) ([]Notice, error) {
	if err := r.check(ctx); err != nil {
		return nil, err
	}
	out := []Notice{}
	if !validID(userID) {
		return out, nil
	}
	vs, err := r.c.LRange(ctx, r.userKey(userID)+"n", 0, -1).Result()
	if err != nil {
		return nil, err
	}
	for _, v := range vs {
		var n Notice
		if err := decode([]byte(v), &n, "notice"); err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

// CountCredentials implements Credentials. It scans every credential key
// (SCAN on every master): an operator's statistic, not a hot path.
func (r *Redis) CountCredentials(ctx context.Context) (map[CredKind]int, error) {
	if err := r.check(ctx); err != nil {
		return nil, err
	}
	keys, err := r.scanAll(ctx, globEscape("{"+r.p+"t:")+"*")
	if err != nil {
		return nil, err
	}
	out := map[CredKind]int{}
	err = chunks(keys, pipeChunk, func(keys []string) error {
		cmds := make([]*redis.StringCmd, len(keys))
		_, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, k := range keys {
				cmds[i] = p.HGet(ctx, k, "k")
			}
			return nil
		})
		if err != nil && !isNil(err) {
			return err
		}
		for _, cmd := range cmds {
			k, err := cmd.Result()
			if isNil(err) {
				continue // deleted meanwhile
			}
			if err != nil {
				return err
			}
			out[CredKind(k)]++
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// scanAll returns the keys matching pattern, on every master of a cluster.
func (r *Redis) scanAll(ctx context.Context, pattern string) ([]string, error) {
	scan := func(ctx context.Context, c redis.UniversalClient) ([]string, error) {
		var out []string
		it := c.Scan(ctx, 0, pattern, 1000).Iterator()
		for it.Next(ctx) {
			out = append(out, it.Val())
		}
		return out, it.Err()
	}
	cc, ok := r.c.(*redis.ClusterClient)
	if !ok {
		return scan(ctx, r.c)
	}
	var (
		mu   sync.Mutex
		keys []string
	)
	err := cc.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
		ks, err := scan(ctx, n)
		mu.Lock()
		keys = append(keys, ks...)
		mu.Unlock()
		return err
	})
	return keys, err
}
