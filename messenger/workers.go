package messenger

import (
	"sync"
	"sync/atomic"
	"time"
)

// workers runs fn for connections on goroutines that it keeps between
// them: a connection goes to a free worker, or to a new one when none is
// free. Free workers beyond minFree end every idle (minFreeWorkers and
// workerIdle), and all of them once stop is called.
//
// A kept goroutine has no start and exit, and its stack has already grown:
// a writer goroutine started for each delivered message grew its stack
// while encoding the frame every time (1.3 % of the server's CPU at
// 15,000 msgs/s). The hand-over costs about as much (1.8 %): for the
// writers the pool is about even (docs/performance.md).
type workers struct {
	fn      func(*conn)
	minFree int32
	idle    time.Duration
	work    chan *conn // unbuffered: free workers wait on it; nil (or its close) ends one
	free    atomic.Int32

	mu      sync.RWMutex  // held to send on work: stop closes it
	stopped bool          // guarded by mu; work is closed
	done    chan struct{} // closed by stop: ends trim
	trimmer sync.WaitGroup
}

const (
	workerIdle     = 10 * time.Second
	minFreeWorkers = 128
)

func newWorkers(fn func(*conn)) *workers {
	return newWorkersTrimmed(fn, minFreeWorkers, workerIdle)
}

func newWorkersTrimmed(fn func(*conn), minFree int32, idle time.Duration) *workers {
	w := &workers{fn: fn, minFree: minFree, idle: idle, work: make(chan *conn), done: make(chan struct{})}
	w.trimmer.Add(1)
	go w.trim()
	return w
}

// run has fn(c) run on a free worker, or on a new one. It never blocks.
func (w *workers) run(c *conn) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.stopped {
		go w.fn(c)
		return
	}
	select {
	case w.work <- c:
	default:
		go w.loop(c)
	}
}

// loop serves connections until it gets nil. A plain receive: a select
// on work and done cost more (2.6 % of the server's CPU at 15,000
// msgs/s) than the goroutine it saves.
func (w *workers) loop(c *conn) {
	for c != nil {
		w.fn(c)
		w.free.Add(1)
		c = <-w.work
		w.free.Add(-1)
	}
}

// trim ends the free workers beyond minFree every idle.
func (w *workers) trim() {
	defer w.trimmer.Done()
	t := time.NewTicker(w.idle)
	defer t.Stop()
	for {
		select {
		case <-w.done:
			return
		case <-t.C:
		}
		w.mu.RLock()
		if !w.stopped {
			// The excess counted once: a worker ended counts as free
			// until it has woken up.
			for n := w.free.Load() - w.minFree; n > 0; n-- {
				select {
				case w.work <- nil:
					continue
				default:
				}
				break
			}
		}
		w.mu.RUnlock()
	}
}

// stop ends the free workers; busy ones end once their connection is
// served. run still works after stop: on a goroutine of its own. Safe to
// call twice.
func (w *workers) stop() {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		return
	}
	w.stopped = true
	close(w.work)
	w.mu.Unlock()
	close(w.done)
	w.trimmer.Wait()
}
