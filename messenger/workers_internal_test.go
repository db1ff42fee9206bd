package messenger

import (
	"testing"
	"time"
)

// freeWorkers waits until w has want free workers (the count changes just
// after fn returns, so it is polled, as testenv.Eventually does; testenv
// imports this package).
func freeWorkers(t *testing.T, w *workers, want int32) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for w.free.Load() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%d free workers, want %d", w.free.Load(), want)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestWorkersReuse: a connection goes to a free worker when there is one
// and to a new worker when all are busy; stop ends the free ones, and run
// still works after it.
func TestWorkersReuse(t *testing.T) {
	served := make(chan *conn, 8)
	hold := make(chan struct{})
	w := newWorkersTrimmed(func(c *conn) {
		if c.closeWhy == "hold" {
			<-hold
		}
		served <- c
	}, 100, time.Hour)
	defer w.stop()
	frees := func(want int32) { t.Helper(); freeWorkers(t, w, want) }
	want := func(c *conn) {
		t.Helper()
		select {
		case got := <-served:
			if got != c {
				t.Fatalf("served %p, want %p", got, c)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("not served")
		}
	}

	a, b := &conn{}, &conn{}
	w.run(a)
	want(a)
	frees(1)
	w.run(b) // to the free worker: still one after it
	want(b)
	frees(1)

	h1, h2 := &conn{closeWhy: "hold"}, &conn{closeWhy: "hold"}
	w.run(h1) // takes the free worker
	frees(0)
	w.run(h2) // none free: a second worker, serving at the same time
	close(hold)
	want2 := map[*conn]bool{<-served: true, <-served: true}
	if !want2[h1] || !want2[h2] {
		t.Fatal("the held connections were not both served")
	}
	frees(2)

	w.stop()
	frees(0)
	w.run(a)
	want(a)
	frees(0)
}

// TestWorkersTrim: free workers beyond minFree end.
func TestWorkersTrim(t *testing.T) {
	hold := make(chan struct{})
	started := make(chan struct{}, 4)
	w := newWorkersTrimmed(func(*conn) { started <- struct{}{}; <-hold }, 1, 10*time.Millisecond)
	defer w.stop()
	for range 4 {
		w.run(&conn{})
	}
	for range 4 {
		<-started
	}
	close(hold)
	freeWorkers(t, w, 1)
}
