package storage

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// A conversation is {P c:<id>} (JSON without LastSeq) and {P c:<id>}s (the
// last seq), one MGET. The membership index {P u:<user>}v lives in the
// members' slots: entries are added before the record shows the member and
// removed after it no longer does, and readers only trust the record.

func encodeConv(c Conversation) (string, error) {
	v, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("storage: encode conversation: %w", err)
	}
	return string(v), nil
}

// decodeConvVals decodes the reply of MGET record, seq; ok is false when
// the record is missing.
func decodeConvVals(vals []any) (c Conversation, raw string, ok bool, err error) {
	raw, ok = str(vals[0])
	if !ok {
		return c, "", false, nil
	}
	if err := decode([]byte(raw), &c, "conversation"); err != nil {
		return c, "", false, err
	}
	c.Rev = convRev(raw)
	if s, ok := str(vals[1]); ok {
		if c.LastSeq, err = strconv.ParseUint(s, 10, 64); err != nil {
			return c, "", false, fmt.Errorf("storage: corrupt seq of %q: %w", c.ID, err)
		}
	}
	return c, raw, true, nil
}

// convRev is the revision of a conversation record: the SHA-1 of its JSON
// in hex, which scriptAppend compares with redis.sha1hex (the only digest
// Redis's Lua has). It tells versions of one record apart; it guards
// nothing against an adversary, who could only keep a node's own cached
// copy of a record valid.
func convRev(raw string) string {
	sum := sha1.Sum([]byte(raw))
	return hex.EncodeToString(sum[:])
}

func (r *Redis) getConv(ctx context.Context, id string) (c Conversation, raw string, ok bool, err error) {
	ck := r.convKey(id)
	vals, err := r.c.MGet(ctx, ck, ck+"s").Result()
	if err != nil {
		return c, "", false, err
	}
	return decodeConvVals(vals)
}

// indexMembers adds conv to the membership index of users and returns the
// users whose index did not hold it yet.
func (r *Redis) indexMembers(ctx context.Context, conv string, users []string) ([]string, error) {
	if len(users) == 0 {
		return nil, nil
	}
	cmds := make([]*redis.IntCmd, len(users))
	_, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, u := range users {
			cmds[i] = p.SAdd(ctx, r.userKey(u)+"v", conv)
		}
		return nil
	})
	var added []string
	for i, cmd := range cmds {
		if cmd.Val() == 1 {
			added = append(added, users[i])
		}
	}
	return added, err
}

// unindexMembers removes conv from the membership index of users.
func (r *Redis) unindexMembers(ctx context.Context, conv string, users []string) error {
	if len(users) == 0 {
		return nil
	}
	_, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, u := range users {
			p.SRem(ctx, r.userKey(u)+"v", conv)
		}
		return nil
	})
	return err
}

func memberIDs(members []Member) []string {
	return slices.Sorted(func(yield func(string) bool) {
		for u := range memberSet(members) {
			if !yield(u) {
				return
			}
		}
	})
}

// CreateConversation implements Conversations. Kind must be ConvGroup.
func (r *Redis) CreateConversation(ctx context.Context, c Conversation) error {
	if err := r.check(ctx); err != nil {
		return err
	}
	if err := checkID("conversation", c.ID); err != nil {
		return err
	}
	if c.Kind != ConvGroup {
		return fmt.Errorf("storage: CreateConversation: kind %q, want %q", c.Kind, ConvGroup)
	}
	if err := checkMembers(c.Members); err != nil {
		return err
	}
	v, err := encodeConv(c)
	if err != nil {
		return err
	}
	ck := r.convKey(c.ID)
	if n, err := r.c.Exists(ctx, ck).Result(); err != nil {
		return err
	} else if n > 0 {
		return ErrConflict
	}
	added, err := r.indexMembers(ctx, c.ID, memberIDs(c.Members))
	if err != nil {
		return err
	}
	ok, err := r.c.SetNX(ctx, ck, v, 0).Result()
	if err != nil {
		return err
	}
	if !ok {
		if err := r.unindexMembers(ctx, c.ID, added); err != nil {
			return err
		}
		return ErrConflict
	}
	return nil
}

// CreateDirect implements Conversations. c must be of kind ConvDirect with
// two distinct members. ErrConflict when the pair has no conversation yet
// but c.ID is taken.
//
// The pair's key is claimed first with the whole conversation (SET NX
// GET); then the members are indexed and the record is written (SET NX).
// A caller that finds a claim whose record is missing (its creator is
// still at it, or crashed) completes the record from the claim, so every
// caller returns a conversation that exists.
func (r *Redis) CreateDirect(ctx context.Context, c Conversation) (Conversation, bool, error) {
	if err := r.check(ctx); err != nil {
		return Conversation{}, false, err
	}
	lo, hi, err := checkDirect(c)
	if err != nil {
		return Conversation{}, false, err
	}
	dk := r.directKey(c.School, lo, hi)
	c.LastSeq = 0
	v, err := encodeConv(c)
	if err != nil {
		return Conversation{}, false, err
	}
	prev, err := r.c.SetArgs(ctx, dk, v, redis.SetArgs{Mode: "NX", Get: true}).Result()
	switch {
	case isNil(err):
		// Ours.
		same, err := r.completeDirect(ctx, c, v)
		if err != nil {
			return Conversation{}, false, err
		}
		if !same {
			if err := scriptDelIfEqual.Run(ctx, r.c, []string{dk}, v).Err(); err != nil {
				return Conversation{}, false, err
			}
			return Conversation{}, false, ErrConflict
		}
		return c, true, nil
	case err != nil:
		return Conversation{}, false, err
	}
	var claimed Conversation
	if err := decode([]byte(prev), &claimed, "direct conversation"); err != nil {
		return Conversation{}, false, err
	}
	got, _, ok, err := r.getConv(ctx, claimed.ID)
	if err != nil {
		return Conversation{}, false, err
	}
	if ok {
		return got, false, nil
	}
	same, err := r.completeDirect(ctx, claimed, prev)
	if err != nil {
		return Conversation{}, false, err
	}
	if !same {
		return Conversation{}, false, fmt.Errorf("storage: direct index names conversation %q, which is another conversation", claimed.ID)
	}
	got, _, ok, err = r.getConv(ctx, claimed.ID)
	if err == nil && !ok {
		err = fmt.Errorf("storage: direct conversation %q vanished", claimed.ID)
	}
	return got, false, err
}

// completeDirect indexes the members of c and writes its record v unless
// the ID exists. same reports whether the stored record is this direct
// conversation (false: the ID belongs to another conversation).
func (r *Redis) completeDirect(ctx context.Context, c Conversation, v string) (same bool, err error) {
	ck := r.convKey(c.ID)
	if n, err := r.c.Exists(ctx, ck).Result(); err != nil {
		return false, err
	} else if n == 0 {
		added, err := r.indexMembers(ctx, c.ID, memberIDs(c.Members))
		if err != nil {
			return false, err
		}
		ok, err := r.c.SetNX(ctx, ck, v, 0).Result()
		if err != nil {
			return false, err
		}
		if ok {
			return true, nil
		}
		defer func() {
			if !same && err == nil {
				err = r.unindexMembers(ctx, c.ID, added)
			}
		}()
	}
	got, _, ok, err := r.getConv(ctx, c.ID)
	if err != nil || !ok {
		return false, err
	}
	return got.Kind == ConvDirect && got.School == c.School &&
		slices.Equal(memberIDs(got.Members), memberIDs(c.Members)), nil
}

// Conversation implements Conversations.
func (r *Redis) Conversation(ctx context.Context, id string) (Conversation, error) {
	if err := r.check(ctx); err != nil {
		return Conversation{}, err
	}
	if !validID(id) {
		return Conversation{}, ErrNotFound
	}
	c, _, ok, err := r.getConv(ctx, id)
	if err != nil {
		return Conversation{}, err
	}
	if !ok {
		return Conversation{}, ErrNotFound
	}
	return c, nil
}

// ConversationsOf implements Conversations. Index entries whose record is
// missing or no longer names the user are skipped.
func (r *Redis) ConversationsOf(ctx context.Context, userID string) ([]Conversation, error) {
	if err := r.check(ctx); err != nil {
		return nil, err
	}
	out := []Conversation{}
	if !validID(userID) {
		return out, nil
	}
	ids, err := r.c.SMembers(ctx, r.userKey(userID)+"v").Result()
	if err != nil {
		return nil, err
	}
	slices.Sort(ids)
	err = chunks(ids, pipeChunk, func(ids []string) error {
		cmds := make([]*redis.SliceCmd, len(ids))
		_, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, id := range ids {
				ck := r.convKey(id)
				cmds[i] = p.MGet(ctx, ck, ck+"s")
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, cmd := range cmds {
			c, _, ok, err := decodeConvVals(cmd.Val())
			if err != nil {
				return err
			}
			if _, member := c.Member(userID); ok && member {
				out = append(out, c)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// UpdateConversation implements Conversations with compare-and-set; fn may
// run more than once. New members are indexed before the record is
// written, removed ones after it (see settleMembers).
func (r *Redis) UpdateConversation(ctx context.Context, id string, fn func(*Conversation) error) (err error) {
	if err := r.check(ctx); err != nil {
		return err
	}
	if !validID(id) {
		return ErrNotFound
	}
	// Users whose index entry an attempt added; on the way out those
	// that are not members (of an aborted or lost attempt) lose it again.
	addedByUs := map[string]bool{}
	var final map[string]bool
	defer func() {
		var drop []string
		for u := range addedByUs {
			if !final[u] {
				drop = append(drop, u)
			}
		}
		if uerr := r.settleMembers(context.WithoutCancel(ctx), id, nil, drop); err == nil {
			err = uerr
		}
	}()
	for range casAttempts {
		if err := r.check(ctx); err != nil {
			return err
		}
		c, raw, ok, err := r.getConv(ctx, id)
		if err != nil {
			return err
		}
		if !ok {
			return ErrNotFound
		}
		old := c
		old.Members = slices.Clone(c.Members)
		if err := fn(&c); err != nil {
			return err
		}
		if c.ID != old.ID || c.School != old.School || c.Kind != old.Kind {
			return fmt.Errorf("storage: UpdateConversation %q: fn changed ID, School or Kind", id)
		}
		if err := checkMembers(c.Members); err != nil {
			return err
		}
		v, err := encodeConv(c)
		if err != nil {
			return err
		}
		now, before := memberSet(c.Members), memberSet(old.Members)
		var add, remove []string
		for u := range now {
			if !before[u] {
				add = append(add, u)
			}
		}
		for u := range before {
			if !now[u] {
				remove = append(remove, u)
			}
		}
		added, err := r.indexMembers(ctx, id, add)
		for _, u := range added {
			addedByUs[u] = true
		}
		if err != nil {
			return err
		}
		n, err := scriptCASString.Run(ctx, r.c, []string{r.convKey(id)}, raw, v).Int()
		if err != nil {
			return err
		}
		if n == 1 {
			final = now
			return r.settleMembers(ctx, id, add, remove)
		}
	}
	return fmt.Errorf("storage: UpdateConversation %q: too many concurrent updates", id)
}

// settleMembers finishes a membership change that has been written: it
// indexes the added users again and unindexes the removed ones, then
// re-indexes those of them that a concurrent update has made members
// again. With both steps, two concurrent updates that add and remove the
// same user cannot leave a member without its index entry: the adder's
// second SADD comes after its write, the remover's check after its SREM.
func (r *Redis) settleMembers(ctx context.Context, id string, add, remove []string) error {
	if _, err := r.indexMembers(ctx, id, add); err != nil {
		return err
	}
	if len(remove) == 0 {
		return nil
	}
	if err := r.unindexMembers(ctx, id, remove); err != nil {
		return err
	}
	c, _, ok, err := r.getConv(ctx, id)
	if err != nil || !ok {
		return err
	}
	var again []string
	for _, u := range remove {
		if _, member := c.Member(u); member {
			again = append(again, u)
		}
	}
	_, err = r.indexMembers(ctx, id, again)
	return err
}
