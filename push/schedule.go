package push

import (
	"container/heap"
	"context"
	"errors"
	"sync"
	"time"

	"klassenfunk/internal/ctxtime"
	"klassenfunk/storage"
)

// device is the scheduler's state of one device (trust credential). Owned
// by the scheduler goroutine; a worker reads only the job it is given.
type device struct {
	cred string
	// entry is the pending push (the newest message); nil while the device
	// only waits for its coalesce window to end after a push.
	entry *storage.PushEntry
	// next arrived while entry was being sent.
	next     *storage.PushEntry
	due      time.Time // real time
	attempt  int       // failed attempts of entry so far
	inFlight bool
	forgot   bool // Forget was called while in flight
	adopted  bool // found by a rescan, not notified here
	cancel   context.CancelFunc
	idx      int   // heap index in lane; -1 when not in the heap
	lane     *lane // its provider's, from the device's first entry
}

// job is one send, handed to a worker and back.
type job struct {
	dev   *device
	entry storage.PushEntry
	ctx   context.Context
	// Set by the worker.
	outcome    Outcome
	retryAfter time.Duration
	counted    bool // a retry already counted under another outcome (a claim taken elsewhere)
	taken      bool // another node's live claim holds the entry
}

// lane is one provider's part of the scheduler: its devices' due times
// and its own workers. A provider that answers slowly (or not at all, until
// SendTimeout) occupies only its own workers: the other provider's pushes
// go on.
type lane struct {
	heap dueHeap
	work chan *job // scheduler → this lane's workers
}

// schedule is the scheduler goroutine. It owns the device states and, per
// provider, a heap of due times; it dispatches due pushes to the
// provider's workers without ever blocking (a lane's work channel is
// bounded; when it is full that lane waits for a result), applies the
// workers' results (ack, retry with backoff, coalesce window) and hands
// acknowledgements to the acker.
func (r *Relay) schedule(initial []storage.PushEntry) {
	defer close(r.scheduled)
	s := &scheduler{r: r, devs: map[string]*device{}}
	for i := range initial {
		s.upsert(initial[i], time.Now())
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	stop, resolved := r.stop, r.resolved
	stopping := false
	for {
		now := time.Now()
		var wake time.Time
		if !stopping {
			wake = s.dispatch(now)
		} else if resolved == nil && s.inFlight == 0 {
			for _, l := range r.lanes {
				close(l.work)
			}
			r.acks.close()
			return
		}
		r.m.depth.Set(float64(s.pending))
		r.m.inFlight.Set(float64(s.inFlight))
		// A lane whose workers are all busy is woken by its next result.
		if !wake.IsZero() {
			timer.Reset(max(wake.Sub(now), 0))
		} else {
			timer.Stop()
		}
		select {
		case a := <-r.added:
			now := time.Now()
			for _, e := range a.entries {
				s.upsert(e, now)
			}
			r.m.depth.Set(float64(s.pending))
			r.unresolved.Add(-int64(a.events))
		case es := <-r.adopt:
			now := time.Now()
			// An entry younger than a lease and a coalesce window may be in
			// its node's window or in flight there; what this node holds,
			// it handles itself.
			old := r.now().Add(-r.cfg.Tuning.ClaimLease - max(r.cfg.Tuning.CoalesceWindow, 0))
			for _, e := range es {
				if s.devs[e.CredID] == nil && e.EnqueuedAt.Before(old) {
					s.upsert(e, now)
					s.devs[e.CredID].adopted = true
				}
			}
		case j := <-r.results:
			s.result(j, time.Now(), stopping)
		case id := <-r.forget:
			s.forget(id)
		case <-timer.C:
		case <-stop:
			stop, stopping = nil, true
		case <-resolved:
			resolved = nil
		}
	}
}

// rescan hands the scheduler the outbox every interval until Close.
func (r *Relay) rescan(interval time.Duration) {
	defer r.rescans.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	ctx, cancel := ctxtime.Until(r.stop)
	defer cancel()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
		}
		rctx, rcancel := context.WithTimeout(ctx, interval)
		pending, err := r.store.PendingPushes(rctx)
		rcancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			r.log.Warn("push: rescan outbox", "err", err)
			continue
		}
		select {
		case r.adopt <- pending:
		case <-r.stop:
			return
		}
	}
}

type scheduler struct {
	r        *Relay
	devs     map[string]*device
	pending  int // devices with entry != nil
	inFlight int
}

// push puts d into its lane's heap.
func (s *scheduler) push(d *device) { heap.Push(&d.lane.heap, d) }

// upsert adds a pending push or makes it the newest of its device. A
// device inside its coalesce window or backoff keeps its due time.
func (s *scheduler) upsert(e storage.PushEntry, now time.Time) {
	d := s.devs[e.CredID]
	if d != nil {
		d.adopted = false // notified here now
	}
	switch {
	case d == nil:
		d = &device{cred: e.CredID, entry: &e, due: now, idx: -1, lane: s.r.laneOf(e.Provider)}
		s.devs[e.CredID] = d
		s.pending++
		s.push(d)
	case d.inFlight:
		d.next = &e
	default:
		if d.entry == nil {
			s.pending++
			d.attempt = 0
		}
		d.entry = &e
	}
}

// dispatch hands every due push to its lane's workers while the lane's
// work channel has room (the scheduler is its only sender). It returns
// when the loop should look again: the earliest due time in a lane with
// room, or zero when there is none (a full lane waits for a result).
func (s *scheduler) dispatch(now time.Time) (wake time.Time) {
	for _, l := range s.r.lanes {
		if next, ok := s.dispatchLane(l, now); ok && (wake.IsZero() || next.Before(wake)) {
			wake = next
		}
	}
	return wake
}

func (s *scheduler) dispatchLane(l *lane, now time.Time) (next time.Time, ok bool) {
	for len(l.heap) > 0 {
		d := l.heap[0]
		if d.due.After(now) {
			return d.due, true
		}
		if d.entry == nil { // coalesce window over, nothing pending
			heap.Pop(&l.heap)
			delete(s.devs, d.cred)
			continue
		}
		if len(l.work) == cap(l.work) {
			return time.Time{}, false
		}
		heap.Pop(&l.heap)
		ctx, cancel := context.WithCancel(s.r.sends)
		l.work <- &job{dev: d, entry: *d.entry, ctx: ctx}
		d.inFlight, d.cancel = true, cancel
		s.inFlight++
	}
	return time.Time{}, false
}

// result applies a worker's outcome.
func (s *scheduler) result(j *job, now time.Time, stopping bool) {
	d := j.dev
	s.inFlight--
	d.inFlight = false
	d.cancel()
	d.cancel = nil
	if d.forgot {
		return // state already gone; Forget removed the outbox entry
	}
	r := s.r
	switch j.outcome {
	case OutcomeRetried:
		switch {
		case stopping:
			// The entry stays in the outbox for the next start.
			s.remove(d)
			return
		case j.taken && d.next != nil:
			// The live claim elsewhere is on the older message; the newer
			// one, which replaced it in the outbox, is this node's to send
			// now.
			d.entry, d.next, d.attempt, d.due = d.next, nil, 0, now
			s.push(d)
			return
		case j.taken && d.adopted:
			// Left to the live node that claimed it; the next rescan
			// looks again.
			s.remove(d)
			return
		}
		if d.next != nil {
			d.entry, d.next = d.next, nil
		}
		d.attempt++
		delay := max(r.backoff(d.attempt), j.retryAfter)
		if !r.now().Add(delay).Before(d.entry.ExpiresAt) {
			r.m.count(d.entry.Provider, OutcomeDroppedTTL)
			r.acks.add(storage.PushDone{CredID: d.cred, MessageID: d.entry.MessageID})
			s.remove(d)
			return
		}
		if !j.counted {
			r.m.count(d.entry.Provider, OutcomeRetried)
		}
		d.due = now.Add(delay)
		s.push(d)
		return
	case OutcomeClaimedElsewhere:
		// Done by another node, which may have died before acknowledging
		// it: the acknowledgement removes the entry only if it still names
		// this message.
		r.acks.add(storage.PushDone{CredID: d.cred, MessageID: j.entry.MessageID})
		d.due = now
	case OutcomeSent:
		r.acks.add(storage.PushDone{CredID: d.cred, MessageID: j.entry.MessageID})
		// The window starts now: what arrives within it waits for its end.
		d.due = now.Add(r.cfg.Tuning.CoalesceWindow)
	default: // dropped, dead, failed: nothing was delivered
		r.acks.add(storage.PushDone{CredID: d.cred, MessageID: j.entry.MessageID})
		d.due = now
	}
	d.attempt = 0
	if d.next != nil {
		d.entry, d.next = d.next, nil
	} else {
		d.entry = nil
		s.pending--
		if j.outcome != OutcomeSent || r.cfg.Tuning.CoalesceWindow == 0 {
			delete(s.devs, d.cred)
			return
		}
	}
	if stopping {
		return
	}
	s.push(d)
}

// forget drops a device's state and its outbox entry, and cancels its send.
func (s *scheduler) forget(id string) {
	s.r.acks.add(storage.PushDone{CredID: id})
	d := s.devs[id]
	if d == nil {
		return
	}
	if d.inFlight {
		d.forgot = true
		d.cancel()
		if d.entry != nil {
			s.pending--
		}
		delete(s.devs, id)
		return
	}
	s.remove(d)
}

// remove deletes a device that is not in flight.
func (s *scheduler) remove(d *device) {
	if d.idx >= 0 {
		heap.Remove(&d.lane.heap, d.idx)
	}
	if d.entry != nil {
		s.pending--
	}
	delete(s.devs, d.cred)
}

// dueHeap orders devices by due time.
type dueHeap []*device

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h dueHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx = i
	h[j].idx = j
}
func (h *dueHeap) Push(x any) {
	d := x.(*device)
	d.idx = len(*h)
	*h = append(*h, d)
}
func (h *dueHeap) Pop() any {
	old := *h
	d := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	d.idx = -1
	return d
}

// worker sends the jobs of its lane until the lane's work channel closes.
func (r *Relay) worker(work <-chan *job) {
	defer r.workers.Done()
	for j := range work {
		r.deliver(j)
		r.results <- j
	}
}

// deliver sends one push after re-checking, right before the send, that
// the message has not expired, that the registration still exists and that
// the device is still offline. It sets j.outcome.
func (r *Relay) deliver(j *job) {
	e := &j.entry
	provider := e.Provider
	done := func(o Outcome) {
		j.outcome = o
		if o != OutcomeRetried {
			r.m.count(provider, o)
		}
	}
	if !r.now().Before(e.ExpiresAt) {
		done(OutcomeDroppedTTL)
		return
	}
	ctx, cancel := context.WithTimeout(j.ctx, r.cfg.Tuning.SendTimeout)
	defer cancel()
	storeErr := func(what string, err error) {
		if j.ctx.Err() == nil { // not Close cancelling the send
			r.sometimes("store", func() { r.log.Error(what, "err", err) })
		}
	}
	c, err := r.store.Credential(ctx, e.CredID)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		done(OutcomeUnregistered)
		return
	case err != nil:
		storeErr("push: read registration", err)
		done(OutcomeRetried)
		return
	case c.Kind != storage.CredTrust || c.Push == nil:
		done(OutcomeUnregistered)
		return
	}
	provider = c.Push.Provider
	snd := r.senders[provider]
	if snd == nil { // re-registered with a provider that is off
		done(OutcomeProviderOff)
		return
	}
	if r.isOnline(ctx, c.UserID, c.DeviceID) {
		done(OutcomeSkippedOnline)
		return
	}
	// Nodes sharing the outbox (cluster mode) may all hold this entry, e.g.
	// after one restarted: the one that claims it sends, and marks it done
	// for the others. A claim is a lease: if its owner dies before the
	// send, another node holding the entry sends it once the lease is out.
	lease := r.cfg.Tuning.ClaimLease
	switch st, err := r.store.ClaimPush(ctx, e.CredID, e.MessageID, r.id, minTime(r.now().Add(lease), e.ExpiresAt)); {
	case err != nil:
		storeErr("push: claim", err)
		done(OutcomeRetried)
		return
	case st == storage.ClaimTaken:
		// Counted once, as claimed elsewhere; asked again after the lease.
		r.m.count(provider, OutcomeClaimedElsewhere)
		j.retryAfter, j.counted, j.taken = lease, true, true
		done(OutcomeRetried)
		return
	case st == storage.ClaimDone:
		done(OutcomeClaimedElsewhere)
		return
	}
	blob, err := Seal(c.Push.Secret, c.ServiceID, Payload{T: "message", C: e.Conversation, M: e.MessageID, S: e.Seq})
	if err != nil {
		r.log.Error("push: seal", "trust", c.ID, "err", err)
		done(OutcomeFailed)
		return
	}
	if err := j.ctx.Err(); err != nil { // forgotten meanwhile
		done(OutcomeUnregistered)
		return
	}
	a := r.sendOne(ctx, &c, snd, blob, e.ExpiresAt)
	j.retryAfter = a.retryAfter
	if a.outcome != OutcomeRetried {
		// Sent or given up: the other nodes drop their copies. They ask
		// again within a lease plus a backoff, so the mark need not live
		// as long as the message.
		keep := max(claimDoneKeep, 2*(r.cfg.Tuning.RetryMax+lease))
		fctx, cancel := context.WithTimeout(context.WithoutCancel(j.ctx), 5*time.Second)
		if err := r.store.FinishPush(fctx, e.CredID, e.MessageID, minTime(r.now().Add(keep), e.ExpiresAt)); err != nil {
			r.sometimes("store", func() { r.log.Error("push: finish claim", "err", err) })
		}
		cancel()
	}
	done(a.outcome)
}

// claimDoneKeep is how long a finished claim is kept at least: beyond a
// lease plus the longest backoff, within which another node holding the
// entry asks again.
const claimDoneKeep = time.Hour

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// sent is the result of sendOne.
type sent struct {
	outcome    Outcome
	retryAfter time.Duration
	detail     string
}

// sendOne sends one sealed blob to c's registration, counts the send's
// duration, deletes the registration when the token is dead and logs
// failures (rate-limited, never with the token, secret or blob).
func (r *Relay) sendOne(ctx context.Context, c *storage.Credential, snd sender, blob string, expiresAt time.Time) sent {
	provider := c.Push.Provider
	start := time.Now()
	a := snd.send(ctx, &delivery{reg: c.Push, serviceID: c.ServiceID, blob: blob, expiresAt: expiresAt, now: r.now()})
	var o Outcome
	switch a.verdict {
	case verdictSent:
		o = OutcomeSent
	case verdictRetry:
		o = OutcomeRetried
		r.sometimes(provider+"/retry", func() {
			r.log.Warn("push: provider busy or unreachable; will retry", "provider", provider, "detail", a.detail)
		})
	case verdictDead:
		o = OutcomeDeadToken
		r.dropRegistration(c.ID, c.Push.Token)
		r.log.Info("push: token dead, registration deleted", "provider", provider, "trust", c.ID,
			"tok", fingerprint(c.Push.Token), "detail", a.detail)
	default:
		o = OutcomeFailed
		r.sometimes(provider+"/failed", func() {
			r.log.Error("push: provider refused the push", "provider", provider, "trust", c.ID, "detail", a.detail)
		})
	}
	r.m.duration.WithLabelValues(provider, string(o)).Observe(time.Since(start).Seconds())
	return sent{outcome: o, retryAfter: a.retryAfter, detail: a.detail}
}

// dropRegistration deletes a registration whose token is dead, unless the
// device registered a new token meanwhile.
func (r *Relay) dropRegistration(credID, token string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := r.store.UpdateCredential(ctx, credID, func(c *storage.Credential) error {
		if c.Push != nil && c.Push.Token == token {
			c.Push = nil
		}
		return nil
	})
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		r.log.Error("push: delete dead registration", "trust", credID, "err", err)
	}
}

// ackQueue collects outbox deletions for the acker. add never blocks.
type ackQueue struct {
	mu     sync.Mutex
	done   []storage.PushDone // guarded by mu
	closed bool               // guarded by mu
	signal chan struct{}      // capacity 1
}

func (q *ackQueue) add(d storage.PushDone) {
	q.mu.Lock()
	q.done = append(q.done, d)
	q.mu.Unlock()
	select {
	case q.signal <- struct{}{}:
	default:
	}
}

func (q *ackQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	select {
	case q.signal <- struct{}{}:
	default:
	}
}

// take returns what is queued and whether the queue is closed.
func (q *ackQueue) take() ([]storage.PushDone, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	d := q.done
	q.done = nil
	return d, q.closed
}

// ackLoop removes sent (or dropped) pushes from the outbox, one durable
// write for everything that gathered during the previous one. A push is
// acknowledged only after the provider took it; Close flushes what is
// left, so a restart does not send it again.
func (r *Relay) ackLoop() {
	defer close(r.acked)
	for range r.acks.signal {
		for {
			batch, closed := r.acks.take()
			if len(batch) == 0 {
				if closed {
					return
				}
				break
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			if err := r.store.DonePushes(ctx, batch); err != nil {
				r.log.Error("push: acknowledge in outbox", "entries", len(batch), "err", err)
			}
			cancel()
		}
	}
}
