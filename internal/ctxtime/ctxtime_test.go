package ctxtime_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"klassenfunk/internal/ctxtime"
)

func TestSleep(t *testing.T) {
	start := time.Now()
	if err := ctxtime.Sleep(context.Background(), 20*time.Millisecond); err != nil || time.Since(start) < 20*time.Millisecond {
		t.Fatalf("Sleep returned %v after %v, want nil after 20ms", err, time.Since(start))
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := ctxtime.Sleep(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Fatalf("Sleep on an ended context: %v, want context.Canceled", err)
	}
}

func TestUntil(t *testing.T) {
	stop := make(chan struct{})
	ctx, cancel := ctxtime.Until(stop)
	defer cancel()
	if ctx.Err() != nil {
		t.Fatal("ended before stop")
	}
	close(stop)
	<-ctx.Done() // the test times out if stop does not end it

	ctx2, cancel2 := ctxtime.Until(make(chan struct{}))
	cancel2()
	if !errors.Is(ctx2.Err(), context.Canceled) {
		t.Fatalf("after cancel: %v", ctx2.Err())
	}
}
