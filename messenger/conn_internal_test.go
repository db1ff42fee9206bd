package messenger

import (
	"math"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"klassenfunk/internal/ids"
	"klassenfunk/proto"
)

// The longest sent frame without a ref fits the capacity its writer
// allocates, so that it is built in one allocation.
func TestSentFrameSize(t *testing.T) {
	at := time.Date(2026, 11, 26, 14, 35, 3, 123456789, time.UTC)
	id := ids.NewSortable(at)
	frame := proto.AppendSent(nil, "", id, math.MaxUint64, at)
	if max := sentFrameSize + len(id); len(frame) > max {
		t.Fatalf("sent frame is %d bytes, the writer allocates %d: %s", len(frame), max, frame)
	}
}

// A reader that reads nothing at all fills the network buffers: the write
// blocks until its deadline, and the 4429 that the full queue decided
// cannot be sent. The connection ends anyway, and counts as too_slow.
func TestStuckReaderCountsAsTooSlow(t *testing.T) {
	n := catchUpNode(t, &catchUpStore{}, time.Now())
	n.cfg.Gateway.SendQueue, n.cfg.Gateway.WriteTimeout = 4, 2*time.Second
	_, srv := catchUpPair(t) // the client never reads
	c := &conn{n: n, ws: srv, userID: "u1", deviceID: "d1", deviceKey: "u1/d1"}
	queued := func() int {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.queue)
	}
	// The writer takes each frame at once, until the buffers are full and
	// a write blocks: then a frame stays queued.
	big := make([]byte, 1<<20)
	for i := 0; ; i++ {
		if i == 200 {
			t.Fatal("200 MiB written to a client that reads nothing")
		}
		c.enqueue(outItem{frame: big})
		taken := false
		for deadline := time.Now().Add(300 * time.Millisecond); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			if queued() == 0 {
				taken = true
				break
			}
		}
		if !taken {
			break
		}
	}
	for !c.closing() {
		c.enqueue(outItem{frame: big})
	}
	counted := func() float64 {
		var m dto.Metric
		n.metrics.closes.WithLabelValues(proto.CloseTooSlow.String()).Write(&m)
		return m.GetCounter().GetValue()
	}
	for deadline := time.Now().Add(10 * time.Second); counted() != 1; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("closes{too_slow} = %v after 10 s, want 1", counted())
		}
	}
}
