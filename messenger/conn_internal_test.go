package messenger

import (
	"math"
	"testing"
	"time"

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
