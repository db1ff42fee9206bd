package storage

import "github.com/redis/go-redis/v9"

// NewRedisClient makes a client for rawURL as OpenRedisURL does (a
// redis:// URL is one node; redis+cluster:// or a comma-separated host list
// is a Redis Cluster), so that the broker and presence of a node share the
// store's client.
func NewRedisClient(rawURL string) (redis.UniversalClient, error) { return newRedisClient(rawURL) }
