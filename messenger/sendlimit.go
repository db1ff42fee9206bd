package messenger

import (
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// sendLimits is the send rate of a device (GatewayConfig.SendRate and
// SendBurst; a second one, Node.reads, its read rate): one bucket per
// device (user id and device id) on this node,
// shared by the WebSocket `send` frames of all its sockets and its POST
// …/messages, so that neither a second socket, nor reconnecting, nor
// logging in again, nor HTTP is a way around it. A bucket that has filled
// up again is dropped, in a pass over all of them at most once a minute:
// what is kept is the devices that sent in the last burst/rate seconds.
type sendLimits struct {
	limit rate.Limit
	burst int

	mu      sync.Mutex
	buckets map[string]*sendBucket // by device key (proto.KeyName)
	swept   time.Time
}

// sendBucket is one device's bucket. A socket keeps the one it drew
// on last (no lookup per send) until the sweep drops it.
type sendBucket struct {
	lim     *rate.Limiter
	dropped atomic.Bool // swept from sendLimits: look the device up again
}

func newSendLimits(perSecond float64, burst int) *sendLimits {
	return &sendLimits{limit: rate.Limit(perSecond), burst: burst, buckets: make(map[string]*sendBucket)}
}

// bucket returns key's bucket, dropping full ones at most once a minute.
func (h *sendLimits) bucket(key string, now time.Time) *sendBucket {
	h.mu.Lock()
	defer h.mu.Unlock()
	if now.Sub(h.swept) >= time.Minute {
		for k, b := range h.buckets {
			if b.lim.TokensAt(now) >= float64(h.burst) {
				b.dropped.Store(true)
				delete(h.buckets, k)
			}
		}
		h.swept = now
	}
	b := h.buckets[key]
	if b == nil {
		b = &sendBucket{lim: rate.NewLimiter(h.limit, h.burst)}
		h.buckets[key] = b
	}
	return b
}

// allow takes a token from key's bucket, or reports how long until there
// is one. held, when not nil, is the caller's bucket of key from an
// earlier call (updated).
func (h *sendLimits) allow(key string, now time.Time, held **sendBucket) (wait time.Duration, ok bool) {
	return h.allowN(key, now, 1, held)
}

// allowN is allow for n tokens (at most the burst: more would never be
// there).
func (h *sendLimits) allowN(key string, now time.Time, n int, held **sendBucket) (wait time.Duration, ok bool) {
	n = max(min(n, h.burst), 1)
	var b *sendBucket
	if held != nil {
		b = *held
	}
	if b == nil || b.dropped.Load() {
		b = h.bucket(key, now)
		if held != nil {
			*held = b
		}
	}
	if b.lim.AllowN(now, n) {
		return 0, true
	}
	return time.Duration((float64(n) - b.lim.TokensAt(now)) / float64(h.limit) * float64(time.Second)), false
}

// charge takes n tokens (at most the burst) from key's bucket whether or
// not they are there: what is missing, later requests wait for. For a
// cost known only once the work is done.
func (h *sendLimits) charge(key string, now time.Time, n int) {
	if n = min(n, h.burst); n > 0 {
		h.bucket(key, now).lim.ReserveN(now, n)
	}
}
