package messenger

import (
	"io"
	"math"
	"os"
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
// cannot be sent. The connection ends anyway (writeFailed), and counts as
// too_slow; a write that fails without a decided close counts nothing.
func TestStuckReaderCountsAsTooSlow(t *testing.T) {
	n := catchUpNode(t, &catchUpStore{}, time.Now())
	counted := func() float64 {
		var m dto.Metric
		n.metrics.closes.WithLabelValues(proto.CloseTooSlow.String()).Write(&m)
		return m.GetCounter().GetValue()
	}
	_, srv := catchUpPair(t)
	c := &conn{n: n, ws: srv, userID: "u1", deviceID: "d1", deviceKey: "u1/d1"}
	c.writeFailed(io.ErrClosedPipe) // the client went away
	if got := counted(); got != 0 {
		t.Fatalf("closes{too_slow} = %v after a failed write with no close due, want 0", got)
	}

	_, srv = catchUpPair(t)
	c = &conn{n: n, ws: srv, userID: "u1", deviceID: "d1", deviceKey: "u1/d1"}
	c.closeCode, c.closeWhy = proto.CloseTooSlow, proto.CloseTooSlow.String() // what enqueue decides on a full queue
	c.writeFailed(os.ErrDeadlineExceeded)                                     // then the writer's blocked write fails
	if got := counted(); got != 1 {
		t.Fatalf("closes{too_slow} = %v after the stuck reader's connection ended, want 1", got)
	}
}
