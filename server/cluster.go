package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"klassenfunk/auth"
	"klassenfunk/internal/ids"
	"klassenfunk/messenger"
	"klassenfunk/storage"
)

// clusterParts are what a node shares with the others through Redis.
type clusterParts struct {
	client   redis.UniversalClient
	broker   *messenger.RedisBroker
	presence *messenger.RedisPresence
}

// redisPrefix starts every key and channel of Klassenfunk in Redis.
const redisPrefix = "kf:"

// schoolSwitchTTL is how long a node's send path uses a school's
// student_direct switch once read: in cluster mode a read is a round trip
// to Redis for every message of a student; bbolt keeps schools in memory.
func (s *Server) schoolSwitchTTL() time.Duration {
	if s.cfg.RedisURL == "" {
		return 0
	}
	return time.Second
}

// sendTimeout is the messenger's Gateway.SendTimeout: in cluster mode a
// send frame waits for Redis at most this long, so that a Redis that hangs
// gets the client an error frame as HTTP gets a 500, not a wait as long as
// the hang.
func (s *Server) sendTimeout() time.Duration {
	switch {
	case s.cfg.RedisURL == "":
		return 0
	case s.cfg.Messenger.SendTimeout > 0:
		return s.cfg.Messenger.SendTimeout
	}
	return 5 * time.Second
}

// openCluster connects to Redis. A node refuses to start when Redis cannot
// be reached: serving with half its state would be worse.
func (s *Server) openCluster(ctx context.Context) error {
	redis.SetLogger(redisLog{s.log.With("component", "redis")})
	client, err := storage.NewRedisClient(s.cfg.RedisURL)
	if err != nil {
		return err
	}
	store, err := s.openRedisStore(ctx, client)
	if err != nil {
		client.Close()
		return fmt.Errorf("cluster mode: Redis at the configured URL is unreachable: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s.store = store
	if err := store.CheckDurability(pctx); err != nil {
		// Serve anyway (managed Redis may hide its settings), but say that
		// "sent" may then not survive a Redis crash.
		s.log.Warn("Redis is not set up so that an acknowledged message survives a crash: use appendonly yes and appendfsync always", "err", err)
	}
	node := ids.New()
	log := s.log.With("component", "cluster", "node", node)
	s.cluster = &clusterParts{
		client:   client,
		broker:   messenger.NewRedisBroker(client, redisPrefix, log),
		presence: messenger.NewRedisPresence(client, redisPrefix, node, 0, log),
	}
	return nil
}

// redisStartWait is how long a starting node waits for a Redis that is
// not up yet (refuses connections, or is still loading its data): when a
// whole machine or cluster restarts, the nodes may come up first.
const redisStartWait = 60 * time.Second

// openRedisStore opens the store over client, waiting up to redisStartWait
// while Redis refuses connections or loads its data set. Any other error
// (a wrong password, an old Redis) ends the start at once.
func (s *Server) openRedisStore(ctx context.Context, client redis.UniversalClient) (*storage.Redis, error) {
	giveUp := time.Now().Add(s.redisStartWait())
	for warned := false; ; {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		store, err := storage.OpenRedis(pctx, client, &storage.RedisOptions{KeyPrefix: redisPrefix})
		cancel()
		if err == nil || !redisStarting(err) || time.Now().After(giveUp) {
			return store, err
		}
		if !warned {
			s.log.Warn("waiting for Redis to come up", "err", err, "at_most", s.redisStartWait())
			warned = true
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second): // the Redis client logs each failed dial
		}
	}
}

func (s *Server) redisStartWait() time.Duration {
	if s.cfg.RedisStartWait > 0 {
		return s.cfg.RedisStartWait
	}
	return redisStartWait
}

// redisStarting reports whether err says that Redis is not up yet: it
// refuses connections, or it is loading its data set (LOADING).
func redisStarting(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || strings.Contains(err.Error(), "LOADING ")
}

// redisLog sends the Redis client's own messages (a failed dial, a
// connection dropped from the pool) to the node's log, so that they come
// as JSON like every other line, not as text of their own on stderr. The
// library has one logger per process: the last node opened wins.
type redisLog struct{ log *slog.Logger }

func (l redisLog) Printf(ctx context.Context, format string, v ...any) {
	l.log.WarnContext(ctx, strings.TrimSpace(fmt.Sprintf(format, v...)))
}

// checkSharedAttachments logs an error when this node's attachments
// directory is not the one the other nodes use. Attachments are files, and
// a node that cannot see another's upload answers 404 for it. Each node
// that starts leaves a probe file there and puts its name in Redis,
// looking first for the probe of the node that started before it.
func (s *Server) checkSharedAttachments(ctx context.Context, dir string) {
	name := ".probe-" + ids.New()
	err := os.MkdirAll(dir, 0o700)
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, name), nil, 0o600)
	}
	if err != nil {
		s.log.Warn("attachments: cannot write a probe to check the shared directory", "dir", dir, "err", err)
		return
	}
	prev, err := s.cluster.client.GetSet(ctx, redisPrefix+"attachments-probe", name).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return // the first node
	case err != nil:
		s.log.Warn("attachments: cannot check the shared directory", "err", err)
		return
	}
	p := filepath.Join(dir, filepath.Base(prev))
	if _, err := os.Stat(p); err != nil {
		s.log.Error("attachments: this node's directory is not shared with the other nodes: give every node the same data_dir (a shared file system), or attachments uploaded on one node are 404 on the others", "dir", dir)
		return
	}
	os.Remove(p) // only the newest probe is needed
}

// limiter returns the brute-force counters: shared through Redis in a
// cluster, so that a lock holds on every node; nil (in memory) otherwise.
func (s *Server) limiter() func(name string, limit int, window time.Duration) auth.Limiter {
	r, ok := s.store.(*storage.Redis)
	if s.cluster == nil || !ok {
		return nil
	}
	return func(name string, limit int, window time.Duration) auth.Limiter { return r.Limiter(name, limit, window) }
}

func (s *Server) broker() messenger.Broker {
	if s.cluster == nil {
		return nil // in-process
	}
	return s.cluster.broker
}

func (s *Server) presence() messenger.Presence {
	if s.cluster == nil {
		return nil
	}
	return s.cluster.presence
}

// closeStores closes the record store and, in cluster mode, the broker,
// presence and Redis client.
func (s *Server) closeStores() error {
	var errs []error
	if s.cluster != nil {
		s.cluster.broker.Close()
		s.cluster.presence.Close()
	}
	if s.store != nil {
		if err := s.store.Close(); err != nil && !errors.Is(err, storage.ErrClosed) {
			errs = append(errs, err)
		}
	}
	if s.cluster != nil {
		if err := s.cluster.client.Close(); err != nil && !errors.Is(err, redis.ErrClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
