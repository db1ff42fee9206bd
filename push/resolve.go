package push

import (
	"context"
	"errors"
	"time"

	"klassenfunk/storage"
)

// maxResolveBatch bounds the events one resolver round handles, and so the
// size of one outbox write.
const maxResolveBatch = 256

// resolve is the resolver goroutine: it turns new-message events into
// outbox entries, one durable write per batch, and hands them to the
// scheduler. On stop it empties the intake first.
func (r *Relay) resolve() {
	defer close(r.resolved)
	batch := make([]notice, 0, maxResolveBatch)
	for {
		select {
		case n := <-r.intake:
			batch = append(batch[:0], n)
		drain:
			for len(batch) < maxResolveBatch {
				select {
				case n := <-r.intake:
					batch = append(batch, n)
				default:
					break drain
				}
			}
			r.resolveBatch(batch)
		case <-r.stop:
			for {
				batch = batch[:0]
			rest:
				for len(batch) < maxResolveBatch {
					select {
					case n := <-r.intake:
						batch = append(batch, n)
					default:
						break rest
					}
				}
				if len(batch) == 0 {
					return
				}
				r.resolveBatch(batch)
			}
		}
	}
}

// resolveBatch finds the devices to wake for a batch of messages: every
// member's trust credentials with a registration for an enabled provider,
// except the sending device and devices that are online. A device named by
// several messages gets one entry, for the newest.
func (r *Relay) resolveBatch(batch []notice) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	creds := map[string][]storage.Credential{}
	online := map[string]bool{}
	byCred := map[string]int{}
	var entries []storage.PushEntry
	enqueued := r.now().UTC()
	for i := range batch {
		n := &batch[i]
		for _, u := range n.members {
			cs, ok := creds[u]
			if !ok {
				var err error
				cs, err = r.store.CredentialsOf(ctx, u)
				if err != nil {
					r.log.Error("push: list credentials", "err", err)
				}
				creds[u] = cs
			}
			for j := range cs {
				c := &cs[j]
				if c.Kind != storage.CredTrust || c.Push == nil {
					continue
				}
				if c.UserID == n.senderUser && c.DeviceID == n.senderDevice {
					continue
				}
				key := c.UserID + "\x00" + c.DeviceID
				on, ok := online[key]
				if !ok {
					on = r.isOnline(ctx, c.UserID, c.DeviceID)
					online[key] = on
				}
				if on {
					r.m.count(c.Push.Provider, OutcomeSkippedOnline)
					continue
				}
				if r.senders[c.Push.Provider] == nil {
					r.m.count(c.Push.Provider, OutcomeProviderOff)
					continue
				}
				e := storage.PushEntry{
					CredID: c.ID, UserID: c.UserID, DeviceID: c.DeviceID, Provider: c.Push.Provider,
					Conversation: n.conv, MessageID: n.msgID, Seq: n.seq, ExpiresAt: n.expiresAt,
					EnqueuedAt: enqueued,
				}
				r.m.queued.Inc()
				if k, ok := byCred[c.ID]; ok {
					entries[k] = e
				} else {
					byCred[c.ID] = len(entries)
					entries = append(entries, e)
				}
			}
		}
	}
	if len(entries) == 0 {
		r.unresolved.Add(-int64(len(batch)))
		return
	}
	if err := r.store.PutPushes(ctx, entries); err != nil {
		// Not accepted for sending: the apps still sync when opened.
		r.log.Error("push: write outbox", "entries", len(entries), "err", err)
		r.unresolved.Add(-int64(len(batch)))
		return
	}
	r.added <- added{entries: entries, events: len(batch)}
}

// added is a resolver round's result: entries now in the outbox, for
// events new-message events.
type added struct {
	entries []storage.PushEntry
	events  int
}

// isOnline asks the presence; when it cannot answer, the device counts as
// offline (one push too many is harmless, one too few is not).
func (r *Relay) isOnline(ctx context.Context, userID, deviceID string) bool {
	on, err := r.presence.Online(ctx, userID, deviceID)
	if err != nil && !errors.Is(err, context.Canceled) {
		r.sometimes("presence", func() { r.log.Warn("push: presence unavailable; treating device as offline", "err", err) })
	}
	return on && err == nil
}
