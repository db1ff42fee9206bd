package storage

import (
	"cmp"
	"context"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// A credential lives in the hash {P t:<hex token hash>}, so that
// CredentialByHash is one HMGET. Its fields: i (ID), r (the Credential as
// JSON, without the token hash), u (LastUsedAt) and e (ExpiresAt, "" for
// zero) as RFC 3339 with nanoseconds, which TouchCredential sets without
// rewriting r, and k (Kind). {P k:<id>} lists the record's token hashes,
// current first; it holds more than one only while PutCredential replaces
// the hash, so that a crash in between leaves every usable token
// reachable by ID (and revocable).

// credState is a credential as read, with the raw fields for
// compare-and-set.
type credState struct {
	hex     string
	c       Credential
	r, u, e string
}

func encodeCredFields(c Credential) (r, u, e string, err error) {
	v, err := encodeCred(c)
	if err != nil {
		return "", "", "", err
	}
	ub, err := c.LastUsedAt.MarshalText()
	if err != nil {
		return "", "", "", fmt.Errorf("storage: encode credential: %w", err)
	}
	if !c.ExpiresAt.IsZero() {
		eb, err := c.ExpiresAt.MarshalText()
		if err != nil {
			return "", "", "", fmt.Errorf("storage: encode credential: %w", err)
		}
		e = string(eb)
	}
	return string(v), string(ub), e, nil
}

// decodeCredFields decodes the fields of the record under the hex token
// hash h.
func decodeCredFields(h, r, u, e string) (Credential, error) {
	var rec credRec
	if err := decode([]byte(r), &rec, "credential"); err != nil {
		return Credential{}, err
	}
	c := rec.Credential
	if n, err := hex.Decode(c.TokenHash[:], []byte(h)); err != nil || n != len(c.TokenHash) {
		return Credential{}, fmt.Errorf("storage: corrupt credential key %q", h)
	}
	if u != "" {
		if err := c.LastUsedAt.UnmarshalText([]byte(u)); err != nil {
			return Credential{}, fmt.Errorf("storage: decode credential: %w", err)
		}
	}
	c.ExpiresAt = time.Time{}
	if e != "" {
		if err := c.ExpiresAt.UnmarshalText([]byte(e)); err != nil {
			return Credential{}, fmt.Errorf("storage: decode credential: %w", err)
		}
	}
	return c, nil
}

func splitHashes(v string) []string {
	if v == "" {
		return nil
	}
	return strings.Split(v, ",")
}

// readCreds reads the records under the hex token hashes hs; an element is
// nil when its key is missing or holds another credential than ids[i]
// (ids nil: any).
func (r *Redis) readCreds(ctx context.Context, hs, ids []string) ([]*credState, error) {
	out := make([]*credState, len(hs))
	for lo := 0; lo < len(hs); lo += pipeChunk {
		hi := min(lo+pipeChunk, len(hs))
		cmds := make([]*redis.SliceCmd, hi-lo)
		_, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i := lo; i < hi; i++ {
				cmds[i-lo] = p.HMGet(ctx, r.credKey(hs[i]), "i", "r", "u", "e")
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		for j, cmd := range cmds {
			i := lo + j
			f := cmd.Val()
			id, ok := str(f[0])
			if !ok || (ids != nil && id != ids[i]) {
				continue
			}
			rr, _ := str(f[1])
			u, _ := str(f[2])
			e, _ := str(f[3])
			c, err := decodeCredFields(hs[i], rr, u, e)
			if err != nil {
				return nil, err
			}
			out[i] = &credState{hex: hs[i], c: c, r: rr, u: u, e: e}
		}
	}
	return out, nil
}

// credByID returns the current record of credential id (nil when there is
// none), its token hashes and the raw value of {P k:<id>}.
func (r *Redis) credByID(ctx context.Context, id string) (*credState, []string, string, error) {
	raw, err := r.c.Get(ctx, r.credIDKey(id)).Result()
	if isNil(err) {
		return nil, nil, "", nil
	}
	if err != nil {
		return nil, nil, "", err
	}
	hs := splitHashes(raw)
	ids := make([]string, len(hs))
	for i := range ids {
		ids[i] = id
	}
	states, err := r.readCreds(ctx, hs, ids)
	if err != nil {
		return nil, nil, "", err
	}
	for _, st := range states {
		if st != nil {
			return st, hs, raw, nil
		}
	}
	return nil, hs, raw, nil
}

// PutCredential implements Credentials. ErrConflict when another
// credential has the same token hash.
//
// Order: the indexes first (user set, session index, ID → hashes with the
// new hash in front), then the record under the new hash, then the record
// under a replaced hash and the leftovers of the indexes.
func (r *Redis) PutCredential(ctx context.Context, c Credential) error {
	if err := r.check(ctx); err != nil {
		return err
	}
	if err := checkID("credential", c.ID); err != nil {
		return err
	}
	if err := checkID("user", c.UserID); err != nil {
		return err
	}
	rr, u, e, err := encodeCredFields(c)
	if err != nil {
		return err
	}
	hnew := hex.EncodeToString(c.TokenHash[:])
	owner, err := r.c.HGet(ctx, r.credKey(hnew), "i").Result()
	if err != nil && !isNil(err) {
		return err
	}
	if err == nil && owner != c.ID {
		return ErrConflict
	}
	old, hs, raw, err := r.credByID(ctx, c.ID)
	if err != nil {
		return err
	}

	var added *redis.IntCmd
	_, err = r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		added = p.SAdd(ctx, r.userKey(c.UserID)+"c", c.ID)
		if c.Kind == CredSession {
			p.ZAddArgs(ctx, r.sessIdxKey(), redis.ZAddArgs{LT: true, Members: []redis.Z{{Score: float64(c.ExpiresAt.UnixMilli()), Member: c.ID}}})
		}
		return nil
	})
	if err != nil {
		return err
	}
	others := slices.DeleteFunc(slices.Clone(hs), func(h string) bool { return h == hnew })
	newRaw := strings.Join(append([]string{hnew}, others...), ",")
	idk := r.credIDKey(c.ID)
	if newRaw != raw {
		if err := r.c.Set(ctx, idk, newRaw, 0).Err(); err != nil {
			return err
		}
	}
	ok, err := scriptPutCred.Run(ctx, r.c, []string{r.credKey(hnew)}, c.ID, rr, u, e, string(c.Kind)).Int()
	if err != nil {
		return err
	}
	if ok == 0 {
		// Another credential took the hash in between: undo.
		_, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			if newRaw != raw {
				if raw == "" {
					scriptDelIfEqual.Eval(ctx, p, []string{idk}, newRaw)
				} else {
					scriptCASString.Eval(ctx, p, []string{idk}, newRaw, raw)
				}
			}
			if added.Val() == 1 {
				p.SRem(ctx, r.userKey(c.UserID)+"c", c.ID)
			}
			return nil
		})
		if err != nil {
			return err
		}
		return ErrConflict
	}
	_, err = r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, h := range others {
			scriptDelIfID.Eval(ctx, p, []string{r.credKey(h)}, c.ID)
		}
		if len(others) > 0 {
			scriptCASString.Eval(ctx, p, []string{idk}, newRaw, hnew)
		}
		if old != nil && old.c.UserID != c.UserID {
			p.SRem(ctx, r.userKey(old.c.UserID)+"c", c.ID)
		}
		if c.Kind != CredSession {
			p.ZRem(ctx, r.sessIdxKey(), c.ID)
		}
		return nil
	})
	return err
}

// CredentialByHash implements Credentials: one HMGET.
func (r *Redis) CredentialByHash(ctx context.Context, h TokenHash) (Credential, error) {
	if err := r.check(ctx); err != nil {
		return Credential{}, err
	}
	hx := hex.EncodeToString(h[:])
	f, err := r.c.HMGet(ctx, r.credKey(hx), "i", "r", "u", "e").Result()
	if err != nil {
		return Credential{}, err
	}
	if _, ok := str(f[0]); !ok {
		return Credential{}, ErrNotFound
	}
	rr, _ := str(f[1])
	u, _ := str(f[2])
	e, _ := str(f[3])
	return decodeCredFields(hx, rr, u, e)
}

// Credential implements Credentials.
func (r *Redis) Credential(ctx context.Context, id string) (Credential, error) {
	if err := r.check(ctx); err != nil {
		return Credential{}, err
	}
	if !validID(id) {
		return Credential{}, ErrNotFound
	}
	st, _, _, err := r.credByID(ctx, id)
	if err != nil {
		return Credential{}, err
	}
	if st == nil {
		return Credential{}, ErrNotFound
	}
	return st.c, nil
}

// CredentialsOf implements Credentials.
func (r *Redis) CredentialsOf(ctx context.Context, userID string) ([]Credential, error) {
	if err := r.check(ctx); err != nil {
		return nil, err
	}
	out := []Credential{}
	if !validID(userID) {
		return out, nil
	}
	ids, err := r.c.SMembers(ctx, r.userKey(userID)+"c").Result()
	if err != nil {
		return nil, err
	}
	err = chunks(ids, pipeChunk, func(ids []string) error {
		cmds := make([]*redis.StringCmd, len(ids))
		_, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, id := range ids {
				cmds[i] = p.Get(ctx, r.credIDKey(id))
			}
			return nil
		})
		if err != nil && !isNil(err) {
			return err
		}
		var hs, owners []string
		for i, cmd := range cmds {
			for _, h := range splitHashes(cmd.Val()) {
				hs, owners = append(hs, h), append(owners, ids[i])
			}
		}
		states, err := r.readCreds(ctx, hs, owners)
		if err != nil {
			return err
		}
		seen := map[string]bool{}
		for _, st := range states {
			if st != nil && st.c.UserID == userID && !seen[st.c.ID] {
				seen[st.c.ID] = true
				out = append(out, st.c)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b Credential) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.ID, b.ID))
	})
	return out, nil
}

// TouchCredential implements Credentials: a script on the record that sets
// u and e only. The session index stays as it is (a lower bound) unless
// the touch moves ExpiresAt back.
func (r *Redis) TouchCredential(ctx context.Context, id string, lastUsed, expiresAt time.Time) error {
	if err := r.check(ctx); err != nil {
		return err
	}
	if !validID(id) {
		return ErrNotFound
	}
	ub, err := lastUsed.MarshalText()
	if err != nil {
		return fmt.Errorf("storage: encode credential: %w", err)
	}
	var e []byte
	if !expiresAt.IsZero() {
		if e, err = expiresAt.MarshalText(); err != nil {
			return fmt.Errorf("storage: encode credential: %w", err)
		}
	}
	raw, err := r.c.Get(ctx, r.credIDKey(id)).Result()
	if isNil(err) {
		return ErrNotFound
	}
	if err != nil {
		return err
	}
	for _, h := range splitHashes(raw) {
		res, err := scriptTouchCred.Run(ctx, r.c, []string{r.credKey(h)}, id, ub, e).StringSlice()
		if isNil(err) {
			continue
		}
		if err != nil {
			return err
		}
		if len(res) == 2 && CredKind(res[1]) == CredSession && e != nil {
			var old time.Time
			if res[0] == "" || old.UnmarshalText([]byte(res[0])) != nil || expiresAt.Before(old) {
				return r.c.ZAddArgs(ctx, r.sessIdxKey(), redis.ZAddArgs{LT: true, Members: []redis.Z{{Score: float64(expiresAt.UnixMilli()), Member: id}}}).Err()
			}
		}
		return nil
	}
	return ErrNotFound
}

// UpdateCredential implements Credentials with compare-and-set; fn may run
// more than once.
func (r *Redis) UpdateCredential(ctx context.Context, id string, fn func(*Credential) error) error {
	if !validID(id) {
		if err := r.check(ctx); err != nil {
			return err
		}
		return ErrNotFound
	}
	for range casAttempts {
		if err := r.check(ctx); err != nil {
			return err
		}
		st, _, _, err := r.credByID(ctx, id)
		if err != nil {
			return err
		}
		if st == nil {
			return ErrNotFound
		}
		c, old := st.c, st.c
		if old.Push != nil {
			p := *old.Push
			p.Secret = slices.Clone(p.Secret)
			c.Push = &p
		}
		if err := fn(&c); err != nil {
			return err
		}
		if c.ID != old.ID || c.TokenHash != old.TokenHash || c.UserID != old.UserID {
			return fmt.Errorf("storage: UpdateCredential %q: fn changed ID, TokenHash or UserID", id)
		}
		rr, u, e, err := encodeCredFields(c)
		if err != nil {
			return err
		}
		if c.Kind == CredSession && (old.Kind != CredSession || c.ExpiresAt.Before(old.ExpiresAt)) {
			err := r.c.ZAddArgs(ctx, r.sessIdxKey(), redis.ZAddArgs{LT: true, Members: []redis.Z{{Score: float64(c.ExpiresAt.UnixMilli()), Member: id}}}).Err()
			if err != nil {
				return err
			}
		}
		ok, err := scriptCASCred.Run(ctx, r.c, []string{r.credKey(st.hex)}, id, st.r, st.u, st.e, rr, u, e, string(c.Kind)).Int()
		if err != nil {
			return err
		}
		if ok == 0 {
			continue
		}
		if c.Kind != CredSession && old.Kind == CredSession {
			return r.c.ZRem(ctx, r.sessIdxKey(), id).Err()
		}
		return nil
	}
	return fmt.Errorf("storage: UpdateCredential %q: too many concurrent updates", id)
}

// DeleteCredential implements Credentials. The record goes first (the
// token stops working), the indexes after it.
func (r *Redis) DeleteCredential(ctx context.Context, id string) (Credential, error) {
	if err := r.check(ctx); err != nil {
		return Credential{}, err
	}
	if !validID(id) {
		return Credential{}, ErrNotFound
	}
	st, hs, raw, err := r.credByID(ctx, id)
	if err != nil {
		return Credential{}, err
	}
	if st == nil {
		return Credential{}, ErrNotFound
	}
	c, ok, err := r.deleteCred(ctx, st, hs, raw)
	if err != nil {
		return Credential{}, err
	}
	if !ok {
		return Credential{}, ErrNotFound
	}
	return c, nil
}

// deleteCred deletes the record of st (any ExpiresAt) and then its index
// entries. ok is false when the record was gone.
func (r *Redis) deleteCred(ctx context.Context, st *credState, hs []string, raw string) (Credential, bool, error) {
	f, err := scriptDelCred.Run(ctx, r.c, []string{r.credKey(st.hex)}, st.c.ID, "0", "").StringSlice()
	if isNil(err) {
		return Credential{}, false, nil
	}
	if err != nil {
		return Credential{}, false, err
	}
	c, err := decodeDeleted(st.hex, f)
	if err != nil {
		return Credential{}, false, err
	}
	_, err = r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		r.unindexCred(ctx, p, c, st.hex, hs, raw, "")
		return nil
	})
	if err != nil {
		return Credential{}, false, err
	}
	return c, true, nil
}

// decodeDeleted decodes the reply of scriptDelCred.
func decodeDeleted(h string, f []string) (Credential, error) {
	if len(f) != 3 {
		return Credential{}, fmt.Errorf("storage: delete credential: unexpected reply %q", f)
	}
	return decodeCredFields(h, f[0], f[1], f[2])
}

// unindexCred queues the removal of the index entries of the deleted
// credential c (current hash h, all hashes hs, raw value of its ID key).
// seen is the session-index score the caller saw; "" removes the entry
// whatever its score.
func (r *Redis) unindexCred(ctx context.Context, p redis.Pipeliner, c Credential, h string, hs []string, raw, seen string) {
	for _, o := range hs {
		if o != h {
			scriptDelIfID.Eval(ctx, p, []string{r.credKey(o)}, c.ID)
		}
	}
	scriptDelIfEqual.Eval(ctx, p, []string{r.credIDKey(c.ID)}, raw)
	p.SRem(ctx, r.userKey(c.UserID)+"c", c.ID)
	if seen == "" {
		p.ZRem(ctx, r.sessIdxKey(), c.ID)
	} else {
		scriptZSetIf.Eval(ctx, p, []string{r.sessIdxKey()}, c.ID, seen, "")
	}
}

// DeleteExpiredSessions implements Credentials. It walks the session index
// up to ms(now), a few hundred entries per round of pipelines: entries
// whose session is still alive (touched since) move to its ExpiresAt,
// entries without a session go, expired sessions are deleted (only if not
// touched in between), then their index entries.
func (r *Redis) DeleteExpiredSessions(ctx context.Context, now time.Time) ([]Credential, error) {
	if err := r.check(ctx); err != nil {
		return nil, err
	}
	out := []Credential{}
	zs, err := r.c.ZRangeByScoreWithScores(ctx, r.sessIdxKey(), &redis.ZRangeBy{Min: "-inf", Max: msScore(now)}).Result()
	if err != nil {
		return nil, err
	}
	for part := range slices.Chunk(zs, pipeChunk) {
		ids := make([]string, len(part))
		raws := make([]*redis.StringCmd, len(part))
		_, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, z := range part {
				ids[i], _ = str(z.Member)
				raws[i] = p.Get(ctx, r.credIDKey(ids[i]))
			}
			return nil
		})
		if err != nil && !isNil(err) {
			return nil, err
		}
		var hs, owners []string
		for i, cmd := range raws {
			for _, h := range splitHashes(cmd.Val()) {
				hs, owners = append(hs, h), append(owners, ids[i])
			}
		}
		states, err := r.readCreds(ctx, hs, owners)
		if err != nil {
			return nil, err
		}
		cur := map[string]*credState{}
		for _, st := range states {
			if st != nil && cur[st.c.ID] == nil {
				cur[st.c.ID] = st
			}
		}
		dels := make([]*redis.Cmd, len(part))
		_, err = r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, z := range part {
				seen := strconv.FormatFloat(z.Score, 'f', -1, 64)
				switch st := cur[ids[i]]; {
				case st == nil || st.c.Kind != CredSession:
					scriptZSetIf.Eval(ctx, p, []string{r.sessIdxKey()}, ids[i], seen, "")
				case st.c.ExpiresAt.After(now):
					scriptZSetIf.Eval(ctx, p, []string{r.sessIdxKey()}, ids[i], seen, msScore(st.c.ExpiresAt))
				default:
					dels[i] = scriptDelCred.Eval(ctx, p, []string{r.credKey(st.hex)}, ids[i], "1", st.e)
				}
			}
			return nil
		})
		if err != nil && !isNil(err) {
			return nil, err
		}
		var gone []Credential
		var goneAt []int
		for i, cmd := range dels {
			if cmd == nil {
				continue
			}
			f, err := cmd.StringSlice()
			if isNil(err) {
				continue // touched or deleted meanwhile
			}
			if err != nil {
				return nil, err
			}
			c, err := decodeDeleted(cur[ids[i]].hex, f)
			if err != nil {
				return nil, err
			}
			gone, goneAt = append(gone, c), append(goneAt, i)
		}
		if len(gone) == 0 {
			continue
		}
		_, err = r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for k, c := range gone {
				i := goneAt[k]
				seen := strconv.FormatFloat(part[i].Score, 'f', -1, 64)
				r.unindexCred(ctx, p, c, cur[ids[i]].hex, splitHashes(raws[i].Val()), raws[i].Val(), seen)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		out = append(out, gone...)
	}
	return out, nil
}
