package server

import (
	"errors"
	"fmt"
	"syscall"
	"testing"
)

func TestRedisStarting(t *testing.T) {
	for err, want := range map[error]bool{
		fmt.Errorf("storage: redis ping: %w", errors.New("LOADING Redis is loading the dataset in memory")): true,
		fmt.Errorf("storage: redis ping: dial tcp 127.0.0.1:6379: %w", syscall.ECONNREFUSED):                true,
		errors.New("storage: redis ping: NOAUTH Authentication required."):                                  false,
		errors.New("storage: redis 6.2.0: need Redis 7.0 or later"):                                         false,
		fmt.Errorf("dial tcp: lookup redis.invalid: %w", errors.New("no such host")):                        false,
	} {
		if got := redisStarting(err); got != want {
			t.Errorf("redisStarting(%q) = %v, want %v", err, got, want)
		}
	}
}
