package storage

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// The push outbox is one hash in one slot, so that a batch of puts or
// deletes is one atomic, durable command:
//
//	{P x:push}   hash  credential id → MessageID + \0 + PushEntry (JSON, without CredID)

var _ PushOutbox = (*Redis)(nil)

// scriptDonePushes: KEYS[1] outbox; ARGV pairs of credential id, message
// id (empty: remove whatever the entry names).
var scriptDonePushes = redis.NewScript(`
for j = 1, #ARGV, 2 do
  local v = redis.call('HGET', KEYS[1], ARGV[j])
  if v and (ARGV[j + 1] == '' or string.sub(v, 1, #ARGV[j + 1] + 1) == ARGV[j + 1] .. '\0') then
    redis.call('HDEL', KEYS[1], ARGV[j])
  end
end
return 1`)

func (r *Redis) pushKey() string { return r.gkey("push") }

// PutPushes implements PushOutbox: one HSET.
func (r *Redis) PutPushes(ctx context.Context, entries []PushEntry) error {
	if err := r.check(ctx); err != nil {
		return err
	}
	if len(entries) == 0 {
		return nil
	}
	args := make([]any, 0, 2*len(entries))
	for _, e := range entries {
		if err := checkID("credential", e.CredID); err != nil {
			return err
		}
		if strings.IndexByte(e.MessageID, 0) >= 0 {
			return fmt.Errorf("storage: push entry: message id %q contains NUL", e.MessageID)
		}
		v, err := json.Marshal(e)
		if err != nil {
			return fmt.Errorf("storage: encode push entry: %w", err)
		}
		args = append(args, e.CredID, e.MessageID+"\x00"+string(v))
	}
	return r.c.HSet(ctx, r.pushKey(), args...).Err()
}

// PendingPushes implements PushOutbox.
func (r *Redis) PendingPushes(ctx context.Context) ([]PushEntry, error) {
	if err := r.check(ctx); err != nil {
		return nil, err
	}
	all, err := r.c.HGetAll(ctx, r.pushKey()).Result()
	if err != nil {
		return nil, err
	}
	out := make([]PushEntry, 0, len(all))
	for id, v := range all {
		_, js, ok := strings.Cut(v, "\x00")
		if !ok {
			return nil, fmt.Errorf("storage: corrupt push entry of %q", id)
		}
		var e PushEntry
		if err := decode([]byte(js), &e, "push entry"); err != nil {
			return nil, err
		}
		e.CredID = id
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b PushEntry) int { return cmp.Compare(a.CredID, b.CredID) })
	return out, nil
}

// DonePushes implements PushOutbox: one script.
func (r *Redis) DonePushes(ctx context.Context, done []PushDone) error {
	if err := r.check(ctx); err != nil {
		return err
	}
	if len(done) == 0 {
		return nil
	}
	args := make([]any, 0, 2*len(done))
	for _, d := range done {
		args = append(args, d.CredID, d.MessageID)
	}
	return scriptDonePushes.Run(ctx, r.c, []string{r.pushKey()}, args...).Err()
}

// CountRegistrations implements PushOutbox. It scans every credential key
// (SCAN on every master): an operator's statistic, not a hot path.
func (r *Redis) CountRegistrations(ctx context.Context) (map[string]int, error) {
	if err := r.check(ctx); err != nil {
		return nil, err
	}
	var keys []string
	scan := func(ctx context.Context, c redis.UniversalClient) ([]string, error) {
		var out []string
		it := c.Scan(ctx, 0, globEscape("{"+r.p+"t:")+"*", 1000).Iterator()
		for it.Next(ctx) {
			out = append(out, it.Val())
		}
		return out, it.Err()
	}
	switch c := r.c.(type) {
	case *redis.ClusterClient:
		var mu sync.Mutex
		err := c.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
			ks, err := scan(ctx, n)
			mu.Lock()
			keys = append(keys, ks...)
			mu.Unlock()
			return err
		})
		if err != nil {
			return nil, err
		}
	default:
		ks, err := scan(ctx, r.c)
		if err != nil {
			return nil, err
		}
		keys = ks
	}
	out := map[string]int{}
	err := chunks(keys, pipeChunk, func(keys []string) error {
		cmds := make([]*redis.StringCmd, len(keys))
		_, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, k := range keys {
				cmds[i] = p.HGet(ctx, k, "r")
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
			var c struct {
				Push *struct {
					Provider string `json:"provider"`
				} `json:"push"`
			}
			if err := decode([]byte(v), &c, "credential"); err != nil {
				return err
			}
			if c.Push != nil {
				out[c.Push.Provider]++
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// globEscape escapes the pattern characters of SCAN MATCH.
func globEscape(s string) string {
	var b strings.Builder
	for _, c := range s {
		if strings.ContainsRune(`*?[]\`, c) {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// Claims of pushes (cluster mode), in the credential's slot:
//
//	{P pc:<credential>}<message id>  string  the owner's id (a lease), or claimDone
const claimDone = "\x00done"

// scriptClaimPush: KEYS[1] the claim; ARGV owner, until (Unix ms), done
// marker. Returns 0 (held: new or renewed), 1 (taken), 2 (done): the
// values of ClaimState. (SET … PXAT would need Redis 6.2.)
var scriptClaimPush = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if not cur then
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('PEXPIREAT', KEYS[1], ARGV[2])
  return 0
end
if cur == ARGV[3] then return 2 end
if cur == ARGV[1] then
  redis.call('PEXPIREAT', KEYS[1], ARGV[2])
  return 0
end
return 1`)

func (r *Redis) claimKey(credID, messageID string) string {
	return "{" + r.p + "pc:" + credID + "}" + messageID
}

// claimUntil keeps a claim's expiry in the future, so that its key lives
// long enough to be read.
func claimUntil(until time.Time) int64 {
	if now := time.Now(); !until.After(now) {
		until = now.Add(time.Minute)
	}
	return until.UnixMilli()
}

// ClaimPush implements PushOutbox: one script in the credential's slot.
func (r *Redis) ClaimPush(ctx context.Context, credID, messageID, owner string, until time.Time) (ClaimState, error) {
	if err := r.check(ctx); err != nil {
		return 0, err
	}
	st, err := scriptClaimPush.Run(ctx, r.c, []string{r.claimKey(credID, messageID)}, owner, claimUntil(until), claimDone).Int()
	if err != nil {
		return 0, err
	}
	return ClaimState(st), nil
}

// FinishPush implements PushOutbox.
func (r *Redis) FinishPush(ctx context.Context, credID, messageID string, until time.Time) error {
	if err := r.check(ctx); err != nil {
		return err
	}
	return r.c.Set(ctx, r.claimKey(credID, messageID), claimDone, time.Until(time.UnixMilli(claimUntil(until)))).Err()
}
