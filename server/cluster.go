package server

import (
	"context"
	"errors"
	"fmt"
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

// openCluster connects to Redis. A node refuses to start when Redis cannot
// be reached: serving with half its state would be worse.
func (s *Server) openCluster(ctx context.Context) error {
	client, err := storage.NewRedisClient(s.cfg.RedisURL)
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	store, err := storage.OpenRedis(pctx, client, &storage.RedisOptions{KeyPrefix: redisPrefix})
	if err != nil {
		client.Close()
		return fmt.Errorf("cluster mode: Redis at the configured URL is unreachable: %w", err)
	}
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
