package storage

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is the cluster backend: every record in Redis, a single node or a
// Redis Cluster.
//
// # Durability
//
// A write is durable on return exactly as far as the Redis server makes it
// so. With `appendonly yes` and `appendfsync always` (recommended, and what
// the tests run), Redis writes and fsyncs the append-only file before it
// sends the reply, so a write this package reports as done survives a crash
// or kill -9 of redis-server; concurrent clients share fsyncs, because Redis
// fsyncs once per event-loop round for every write of that round. With
// `appendfsync everysec` up to about a second of acknowledged writes can be
// lost in a crash; with `appendonly no` everything since the last snapshot.
// CheckDurability reports a configuration weaker than always.
//
// Replication is asynchronous and the package sends no WAIT: after a
// failover the new master may lack the last writes the old master
// acknowledged, a "sent" message among them. Durable on return therefore
// means "on the disk of the master that answered". Deployments that cannot
// accept that window run each master with its own append-only file and
// without automatic failover, and move masters with CLUSTER FAILOVER
// (which waits for the replica to catch up). WAIT (or WAITAOF, Redis 7.2)
// after each write would close the window at the cost of a replica round
// trip per write; it is not done.
//
// # Key layout
//
// P is RedisOptions.KeyPrefix ("kf:"). Every key starts with a hash tag
// {…}, so that the keys of one conversation, one user, … share a hash slot
// and multi-key scripts work on Redis Cluster. H(t) is the 24 lowercase hex
// digits of the sortable time encoding of Bolt (bytewise order = time
// order, nanosecond precision); ms(t) is t in Unix milliseconds, rounded
// down.
//
//	{P x:sc}             hash  school id → School (JSON)
//	{P x:meta}           hash  meta key → value
//	{P x:us}             set   user ids (CountUsers)
//	{P u:<user>}         string User (JSON)
//	{P u:<user>}f        string failed logins since the last success
//	{P u:<user>}l        list  login events, newest first: "<failed before>:<JSON>"
//	{P u:<user>}c        set   credential ids
//	{P u:<user>}v        set   conversation ids
//	{P u:<user>}k        hash  device id → public key
//	{P u:<user>}a        zset  ids of attachments the user uploaded, score ms(ExpiresAt)
//	{P l:<lower(login)>} string "<user id>\x00<claim time, Unix ms>"
//	{P t:<hex token hash>} hash i=id r=Credential (JSON) u=LastUsedAt e=ExpiresAt k=Kind
//	{P k:<credential>}   string hex token hashes, comma-separated, current first
//	{P x:s}              zset  session credential id, score ms(ExpiresAt), a lower bound
//	{P c:<conv>}         string Conversation (JSON)
//	{P c:<conv>}s        string last seq
//	{P c:<conv>}m<seq>   string H(ExpiresAt) + Message (JSON, Seq 0)
//	{P c:<conv>}q        zset  seqs of stored messages (score = member = seq)
//	{P c:<conv>}i        hash  message id → "<seq>:<client key>"
//	{P c:<conv>}k        hash  client key → seq (idempotent client ids)
//	{P d:<school>\0<a>\0<b>} string the direct conversation of users a < b (JSON)
//	{P x:m}i             hash  message id → conversation id (Message, CountMessages)
//	{P x:m}e             zset  H(ExpiresAt)+conv+\0+id, score ms(ExpiresAt)
//	{P a:<attachment>}   string H(ExpiresAt) + Attachment (JSON, without Conversations)
//	{P a:<attachment>}c  set   conversation ids of the attachment
//	{P x:a}              zset  H(ExpiresAt)+id+\0+uploader, score ms(ExpiresAt)
//	{P x:push}           hash  push outbox (redis_push.go)
//	{P pc:<cred>}<msg>   string claim of a push: owner id (a lease) or done (redis_push.go)
//	{P b:<name>:<hash>}  zset  brute-force counter (redis_limiter.go)
//
// The client key of a message is sender user + \0 + len(device) + ":" +
// device + client id, so device and client ids may hold any bytes. The
// global keys ({P x:…}) each live in one slot: on a cluster the node that
// holds {P x:m} sees one extra command per AppendMessage. Record IDs must be
// non-empty and must not contain NUL (as for Bolt); KeyPrefix must not hold
// braces.
//
// # Atomicity and operations that span slots
//
// Everything inside one slot is atomic: a Lua script (EVALSHA) or a single
// command. AppendMessage allocates the seq, checks and records the client id
// (an earlier match counts only while it has not expired, judged at
// m.SentAt) and stores the message in one script in the conversation's
// slot. Writes that span slots are ordered so that a crash between two
// steps leaves only entries that readers ignore and later writes or sweeps
// repair, never a visible record that breaks the contract:
//
//   - CreateUser claims the login (SET NX) before it writes the user, and
//     releases the claim when the ID is taken. A claim whose user never got
//     written (a crash) is taken over by a later CreateUser after a minute.
//   - Conversation membership indexes ({P u:…}v) are added before the
//     conversation record and removed after it; readers check the record's
//     Members, so the index may hold extra entries but never misses one.
//     CreateDirect claims the pair with the whole conversation (SET NX GET)
//     first; whoever finds a claim without a record completes it.
//   - AppendMessage reserves the message id and the expiry-index entry in
//     {P x:m} before the conversation script runs, and withdraws them when
//     the script stores nothing. On a single node (a *redis.Client) one
//     script does both, atomically and in one round trip. The attachments'
//     conversation sets are updated after the message is stored; a retry
//     of the same client id (which is what a sender does when
//     AppendMessage failed) links them again.
//   - A credential's indexes (user set, id → hash, session index) are
//     written before the record under the token hash and removed after it,
//     so a usable token can always be found by ID, listed and revoked.
//     The session index is a lower bound of ExpiresAt: touches that move it
//     later leave it alone, the sweep moves it on. (Only an ExpiresAt moved
//     earlier while a sweep re-scores the same entry can leave the entry
//     late, by at most the difference.)
//   - Sweeps delete the record first and the index entry after it.
//
// # Retention
//
// Reads take now from the caller and filter by it, as Bolt does. The
// sweeps (DeleteExpiredMessages, DeleteExpiredAttachments,
// DeleteExpiredSessions) walk the expiry indexes by score and check the
// exact time. As a backstop, message and attachment keys also get a Redis
// expiry (PEXPIREAT at ExpiresAt + RedisOptions.ExpiryBackstop, judged by
// the Redis server's clock) unless that time has passed already; index
// entries left behind by such an expiry are skipped by readers and removed
// by the next sweep.
//
// # Choices the interface leaves open
//
// Redis makes the same choices as Bolt (see there): unknown conversation on
// AppendMessage is ErrNotFound, a message or attachment ID that is taken is
// ErrConflict, unknown attachments are skipped, an empty ClientID is never
// deduplicated, list results are never nil, a User's empty Countries stays
// empty. The fn of UpdateX may run more than once when a concurrent write
// got in between (optimistic compare-and-set); it must not have side
// effects beyond the record.
type Redis struct {
	c     redis.UniversalClient
	p     string // key prefix
	owned bool   // Close closes c
	// local is set for a single node (*redis.Client), where scripts may
	// use keys of several slots: AppendMessage is then one script.
	local bool
	o     RedisOptions

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

var (
	_ Store       = (*Redis)(nil)
	_ RevAppender = (*Redis)(nil)
)

// RedisOptions configures OpenRedis. The zero value (or nil) is the
// production setting.
type RedisOptions struct {
	// KeyPrefix starts every key (inside the hash tag), so that several
	// stores can share a Redis. Zero means "kf:". It must not contain
	// '{' or '}'.
	KeyPrefix string
	// ExpiryBackstop is how long after a message's or attachment's
	// ExpiresAt Redis itself deletes the record (PEXPIREAT by the
	// server's clock), should the sweeps stop running. Zero means one
	// hour; a negative value sets no Redis expiry.
	ExpiryBackstop time.Duration
}

// Defaults of RedisOptions and limits.
const (
	defaultKeyPrefix      = "kf:"
	defaultExpiryBackstop = time.Hour
	// loginClaimGrace is how old a login claim without a user must be
	// before CreateUser takes it over.
	loginClaimGrace = time.Minute
	// casAttempts bounds the optimistic retries of an UpdateX.
	casAttempts = 100
	// pipeChunk is how many commands one pipeline of a bulk read holds.
	pipeChunk = 512
)

// OpenRedis returns a store on client, which may be a *redis.Client, a
// *redis.ClusterClient or any other UniversalClient; it pings it first.
// nil opt means the defaults. The caller owns client: Close does not close
// it.
//
// Writes are durable on return as far as the server's persistence
// settings make them (see Redis, "Durability"): run Redis with
// `appendonly yes` and `appendfsync always`.
func OpenRedis(ctx context.Context, client redis.UniversalClient, opt *RedisOptions) (*Redis, error) {
	var o RedisOptions
	if opt != nil {
		o = *opt
	}
	if o.KeyPrefix == "" {
		o.KeyPrefix = defaultKeyPrefix
	}
	if strings.ContainsAny(o.KeyPrefix, "{}") {
		return nil, fmt.Errorf("storage: redis key prefix %q: must not contain braces", o.KeyPrefix)
	}
	if o.ExpiryBackstop == 0 {
		o.ExpiryBackstop = defaultExpiryBackstop
	}
	if err := client.Ping(ctx).Err(); err != nil {
		return nil, fmt.Errorf("storage: redis ping: %w", err)
	}
	// The scripts use PEXPIRETIME and SET NX GET: Redis 7.0 or later.
	if info, err := client.Info(ctx, "server").Result(); err == nil {
		if v, ok := infoValue(info, "redis_version"); ok {
			if major, _, _ := strings.Cut(v, "."); atoi(major) < 7 {
				return nil, fmt.Errorf("storage: redis %s: need Redis 7.0 or later", v)
			}
		}
	}
	_, local := client.(*redis.Client)
	return &Redis{c: client, p: o.KeyPrefix, o: o, local: local}, nil
}

// OpenRedisURL connects to the Redis at rawURL and opens a store on it;
// the store owns that client and Close closes it.
//
//   - redis://[user:pass@]host:port[/db][?options] (or rediss:// for TLS,
//     unix:// for a socket) is a single node (redis.ParseURL).
//   - redis+cluster://host:port[,host:port…][?options] (or
//     rediss+cluster://), or a redis:// URL whose host part is a
//     comma-separated list, is a Redis Cluster: the addresses are the seed
//     nodes, options are those of redis.ParseClusterURL (?addr=host:port
//     adds seeds too).
func OpenRedisURL(ctx context.Context, rawURL string, opt *RedisOptions) (*Redis, error) {
	client, err := newRedisClient(rawURL)
	if err != nil {
		return nil, err
	}
	r, err := OpenRedis(ctx, client, opt)
	if err != nil {
		_ = client.Close()
		return nil, err
	}
	r.owned = true
	return r, nil
}

// newRedisClient makes a client for rawURL (OpenRedisURL names the forms).
// It honours its callers' deadlines (ContextTimeoutEnabled): a
// readiness check or a send with a deadline gets its error when the
// deadline passes, not after the library's own timeouts and retries (a
// Redis that hangs took 5-12 s).
func newRedisClient(rawURL string) (redis.UniversalClient, error) {
	cluster := false
	s := rawURL
	for _, scheme := range []string{"redis", "rediss"} {
		if rest, ok := strings.CutPrefix(s, scheme+"+cluster://"); ok {
			s, cluster = scheme+"://"+rest, true
		}
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("storage: redis URL: %w", redactURLErr(err))
	}
	hosts := strings.Split(u.Host, ",")
	if len(hosts) > 1 {
		cluster = true
	}
	if !cluster {
		o, err := redis.ParseURL(s)
		if err != nil {
			return nil, fmt.Errorf("storage: redis URL: %w", redactURLErr(err))
		}
		o.ContextTimeoutEnabled = true
		return redis.NewClient(o), nil
	}
	u.Host = hosts[0]
	q := u.Query()
	for _, h := range hosts[1:] {
		if h != "" {
			q.Add("addr", h)
		}
	}
	u.RawQuery = q.Encode()
	u.Path = ""
	o, err := redis.ParseClusterURL(u.String())
	if err != nil {
		return nil, fmt.Errorf("storage: redis cluster URL: %w", redactURLErr(err))
	}
	o.ContextTimeoutEnabled = true
	return redis.NewClusterClient(o), nil
}

// redactURLErr keeps a password in the URL out of error messages.
func redactURLErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if u, perr := url.Parse(ue.URL); perr == nil {
			ue.URL = u.Redacted()
		} else {
			ue.URL = "(redacted)"
		}
	}
	return err
}

// Ping implements Store: it pings Redis (on a cluster, one node).
func (r *Redis) Ping(ctx context.Context) error {
	if err := r.check(ctx); err != nil {
		return err
	}
	return r.c.Ping(ctx).Err()
}

// Close marks the store closed: later calls return ErrClosed. It closes
// the client only when OpenRedisURL made it. Safe to call twice.
func (r *Redis) Close() error {
	r.closeOnce.Do(func() {
		r.closed.Store(true)
		if r.owned {
			r.closeErr = r.c.Close()
		}
	})
	return r.closeErr
}

// CheckDurability reports an error when a master runs without
// `appendonly yes` and `appendfsync always`, which the promise "durable on
// return" relies on, or when CONFIG GET is not allowed (some managed
// services). The caller decides whether to refuse to start or to log.
func (r *Redis) CheckDurability(ctx context.Context) error {
	if err := r.check(ctx); err != nil {
		return err
	}
	checkNode := func(ctx context.Context, c *redis.Client) error {
		cfg, err := c.ConfigGet(ctx, "append*").Result()
		if err != nil {
			return fmt.Errorf("storage: redis %s: CONFIG GET: %w", c.Options().Addr, err)
		}
		if cfg["appendonly"] != "yes" || cfg["appendfsync"] != "always" {
			return fmt.Errorf("storage: redis %s: appendonly %q, appendfsync %q: acknowledged writes can be lost in a crash (want appendonly yes, appendfsync always)",
				c.Options().Addr, cfg["appendonly"], cfg["appendfsync"])
		}
		return nil
	}
	switch c := r.c.(type) {
	case *redis.ClusterClient:
		return c.ForEachMaster(ctx, checkNode)
	case *redis.Client:
		return checkNode(ctx, c)
	}
	return fmt.Errorf("storage: redis: CheckDurability does not support %T", r.c)
}

// check returns ErrClosed after Close and the context's error.
func (r *Redis) check(ctx context.Context) error {
	if r.closed.Load() {
		return ErrClosed
	}
	return ctx.Err()
}

// Keys. See the layout in the doc comment of Redis.

func (r *Redis) gkey(name string) string { return "{" + r.p + "x:" + name + "}" }

func (r *Redis) schoolsKey() string { return r.gkey("sc") }
func (r *Redis) metaKey() string    { return r.gkey("meta") }
func (r *Redis) usersKey() string   { return r.gkey("us") }
func (r *Redis) sessIdxKey() string { return r.gkey("s") }
func (r *Redis) attIdxKey() string  { return r.gkey("a") }
func (r *Redis) msgIDsKey() string  { return r.gkey("m") + "i" }
func (r *Redis) msgIdxKey() string  { return r.gkey("m") + "e" }

func (r *Redis) userKey(id string) string { return "{" + r.p + "u:" + id + "}" }
func (r *Redis) loginKey(login string) string {
	return "{" + r.p + "l:" + strings.ToLower(login) + "}"
}
func (r *Redis) credKey(h string) string    { return "{" + r.p + "t:" + h + "}" }
func (r *Redis) credIDKey(id string) string { return "{" + r.p + "k:" + id + "}" }
func (r *Redis) convKey(id string) string   { return "{" + r.p + "c:" + id + "}" }
func (r *Redis) attKey(id string) string    { return "{" + r.p + "a:" + id + "}" }
func (r *Redis) directKey(school, lo, hi string) string {
	return "{" + r.p + "d:" + school + "\x00" + lo + "\x00" + hi + "}"
}

// Time encodings.

// hexTime is H(t): the 24 hex digits of timeKey(t).
func hexTime(t time.Time) string {
	k := timeKey(t)
	return hex.EncodeToString(k[:])
}

// msScore is ms(t), the score of the expiry indexes.
func msScore(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }

// expiresBefore reports whether the H(t) prefix of v is not after nowHex.
func hexNotAfter(v, nowHex string) bool {
	return len(v) >= 2*timeKeyLen && v[:2*timeKeyLen] <= nowHex
}

// backstop returns the PEXPIREAT argument for a record that expires at
// exp, or "" for none. The scripts skip times that have passed.
func (r *Redis) backstop(exp time.Time) string {
	if r.o.ExpiryBackstop < 0 || exp.IsZero() {
		return ""
	}
	return strconv.FormatInt(exp.Add(r.o.ExpiryBackstop).UnixMilli(), 10)
}

// Small helpers.

// atoi returns the number in s, or 0.
func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// infoValue returns the value of "name:value" in an INFO reply.
func infoValue(info, name string) (string, bool) {
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return v, true
		}
	}
	return "", false
}

func isNil(err error) bool { return errors.Is(err, redis.Nil) }

// str returns v as a string when it is one (a reply element).
func str(v any) (string, bool) {
	s, ok := v.(string)
	return s, ok
}

// chunks calls fn for consecutive pieces of at most n elements of s.
func chunks[T any](s []T, n int, fn func([]T) error) error {
	for len(s) > 0 {
		k := min(n, len(s))
		if err := fn(s[:k]); err != nil {
			return err
		}
		s = s[k:]
	}
	return nil
}
