package server

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestNextBackup: the next backup is due a day after the newest one; one
// dated in the future (a clock that was wrong once) does not count.
func TestNextBackup(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	b := &backups{s: &Server{log: slog.New(slog.DiscardHandler)}, dir: dir,
		lastGood: prometheus.NewGauge(prometheus.GaugeOpts{Name: "x"})}
	if got := b.next(now); !got.Equal(now.Add(backupFirstDelay)) {
		t.Fatalf("without backups: %v, want %v", got, now.Add(backupFirstDelay))
	}
	for _, taken := range []time.Time{now.Add(-30 * time.Hour), now.AddDate(2, 0, 0)} {
		p := filepath.Join(dir, backupPrefix+taken.Format(backupTimeFormat)+".db")
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := b.next(now), now.Add(-30*time.Hour+backupEvery); !got.Equal(want) {
		t.Fatalf("next backup %v, want %v (a day after the newest one not in the future)", got, want)
	}
}
