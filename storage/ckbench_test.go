package storage_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"klassenfunk/internal/ids"
	"klassenfunk/storage"
)

// BenchmarkCheckpoint measures moving logged messages into the B+tree:
// 5,000 conversations, each with earlier messages, get about 6.5 new
// messages each per checkpoint (the 15k msgs/s load run); or one
// conversation gets them all. One op is one message moved.
func BenchmarkCheckpoint(b *testing.B) {
	for _, convs := range []int{5000, 1} {
		b.Run(fmt.Sprintf("convs=%d", convs), func(b *testing.B) { benchCheckpoint(b, convs) })
	}
}

// openBenchBolt opens a new store (fsync off) with convs conversations;
// checkpoints are the benchmark's to call.
func openBenchBolt(b *testing.B, convs int) *storage.Bolt {
	b.Helper()
	db, err := storage.OpenBolt(filepath.Join(b.TempDir(), "bench.db"), &storage.BoltOptions{NoSync: true, CheckpointSize: 1 << 20, CheckpointInterval: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	createBenchConvs(b, db, convs)
	return db
}

func benchCheckpoint(b *testing.B, convs int) {
	const batch = 32768
	db := openBenchBolt(b, convs)
	ctx := context.Background()
	ciphertext, key := make([]byte, 200), make([]byte, 48)
	base := time.Now().UTC()
	n := 0
	fill := func(count int) {
		var wg sync.WaitGroup
		for w := range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < count; i += 64 {
					c := (n + i) % convs
					_, _, err := db.AppendMessage(ctx, storage.Message{
						ID: ids.NewSortable(time.Now()), Conversation: fmt.Sprintf("conv-%04d", c),
						SenderUser: "u1", SenderDevice: "device-1", ClientID: ids.New(),
						SentAt: base, ExpiresAt: base.Add(720 * time.Hour),
						Ciphertext: ciphertext, Keys: map[string][]byte{"u1/device-1": key, "u2/device-2": key},
					})
					if err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		n += count
	}
	for range 6 { // about 40 messages per conversation already stored
		fill(batch)
		if err := storage.CheckpointPaced(db, 0); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for moved := 0; moved < b.N; moved += batch {
		b.StopTimer()
		fill(batch)
		b.StartTimer()
		if err := storage.CheckpointPaced(db, 0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSweep measures the retention sweep at a steady state: messages
// expire in the order they were sent, 5,000 conversations, as the load run
// writes them, and the sweep deletes them in batches of 1,000 (the
// messenger's sweepBatch). One op is one message deleted.
func BenchmarkSweep(b *testing.B) {
	const batch, convs = 32768, 5000
	db := openBenchBolt(b, convs)
	ctx := context.Background()
	ciphertext, key := make([]byte, 200), make([]byte, 48)
	base := time.Now().UTC()
	var seq int
	fill := func(count int) {
		for range count {
			seq++
			at := base.Add(time.Duration(seq) * time.Millisecond)
			_, _, err := db.AppendMessage(ctx, storage.Message{
				ID: ids.NewSortable(at), Conversation: fmt.Sprintf("conv-%04d", seq%convs),
				SenderUser: "u1", SenderDevice: "device-1", ClientID: ids.New(),
				SentAt: at, ExpiresAt: at.Add(time.Hour),
				Ciphertext: ciphertext, Keys: map[string][]byte{"u1/device-1": key, "u2/device-2": key},
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		if err := storage.CheckpointPaced(db, 0); err != nil {
			b.Fatal(err)
		}
	}
	for range 4 { // messages behind the ones swept, as in a month's store
		fill(batch)
	}
	swept := 0
	b.ReportAllocs()
	b.ResetTimer()
	for swept < b.N {
		b.StopTimer()
		fill(batch)
		// The oldest batch messages (after the earlier iterations' ones).
		now := base.Add(time.Hour + time.Duration(swept+batch)*time.Millisecond + time.Millisecond/2)
		b.StartTimer()
		for {
			k, err := db.DeleteExpiredMessages(ctx, now, 1000)
			if err != nil {
				b.Fatal(err)
			}
			swept += k
			if k < 1000 {
				break
			}
		}
	}
}
