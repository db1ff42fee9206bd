package messenger

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// sendLimits is the send rate of a device (GatewayConfig.SendRate and
// SendBurst): one bucket per credential on this node, shared by the
// WebSocket `send` frames of all its sockets and its POST …/messages, so
// that neither a second socket, nor reconnecting, nor HTTP is a way around
// it. A bucket that has filled up again is dropped, in a pass over all of
// them at most once a minute: what is kept is the credentials that sent in
// the last burst/rate seconds.
type sendLimits struct {
	limit rate.Limit
	burst int

	mu      sync.Mutex
	buckets map[string]*rate.Limiter // by credential id
	swept   time.Time
}

func newSendLimits(perSecond float64, burst int) *sendLimits {
	return &sendLimits{limit: rate.Limit(perSecond), burst: burst, buckets: make(map[string]*rate.Limiter)}
}

// allow takes a token from key's bucket, or reports how long until there
// is one.
func (h *sendLimits) allow(key string, now time.Time) (wait time.Duration, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if now.Sub(h.swept) >= time.Minute {
		for k, l := range h.buckets {
			if l.TokensAt(now) >= float64(h.burst) {
				delete(h.buckets, k)
			}
		}
		h.swept = now
	}
	l := h.buckets[key]
	if l == nil {
		l = rate.NewLimiter(h.limit, h.burst)
		h.buckets[key] = l
	}
	if l.AllowN(now, 1) {
		return 0, true
	}
	return time.Duration((1 - l.TokensAt(now)) / float64(h.limit) * float64(time.Second)), false
}
