package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"klassenfunk/internal/httpapi"
	"klassenfunk/proto"
	"klassenfunk/storage"
)

// Backups (MISSION D4: daily, kept 14 days; a weekly copy kept 3 months).
// In embedded mode the node writes them itself, into backup.dir:
//
//	klassenfunk-20261127T023000Z.db             the database (a complete bbolt file)
//	klassenfunk-20261127T023000Z.attachments/   the attachment files then (hard links)
//	tombstones.json                             every erasure so far (docs/data-rights.md)
//
// Copy the directory off the machine (rsync) as well: a backup on the
// same disk does not survive the disk. Cluster mode backs up Redis
// instead (docs/data-rights.md).

// BackupConfig configures the node's own backups (embedded mode).
type BackupConfig struct {
	// Off turns them off (back the data directory up otherwise).
	Off bool `yaml:"off"`
	// Dir holds them. Default <data_dir>/backups.
	Dir string `yaml:"dir"`
	// Daily is for how many days (with a backup) the newest backup of
	// each day is kept. Default 14.
	Daily int `yaml:"daily"`
	// Weekly is for how many weeks the newest backup of each week is kept.
	// Default 13 (three months). Prune names all the rules.
	Weekly int `yaml:"weekly"`
}

const (
	backupEvery      = 24 * time.Hour
	backupFirstDelay = time.Hour // after a start without any backup yet
	backupPrefix     = "klassenfunk-"
	backupTimeFormat = "20060102T150405Z"
	// TombstoneFormat names the tombstone file format.
	TombstoneFormat = "klassenfunk-tombstones/1"
)

// TombstoneFile is the file of erased accounts that restores apply again.
type TombstoneFile struct {
	Format     string              `json:"format"`
	ExportedAt time.Time           `json:"exported_at"`
	Tombstones []storage.Tombstone `json:"tombstones"`
}

// Backup is one backup in a backup directory.
type Backup struct {
	Path  string    // the database file
	Taken time.Time // from its name
}

// Attachments is the directory of the backup's attachment files.
func (b Backup) Attachments() string { return strings.TrimSuffix(b.Path, ".db") + ".attachments" }

// ListBackups returns the backups in dir, oldest first.
func ListBackups(dir string) ([]Backup, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Backup
	for _, e := range entries {
		name := e.Name()
		stamp, ok := strings.CutPrefix(name, backupPrefix)
		if !ok || e.IsDir() {
			continue
		}
		stamp, ok = strings.CutSuffix(stamp, ".db")
		if !ok {
			continue
		}
		t, err := time.Parse(backupTimeFormat, stamp)
		if err != nil {
			continue
		}
		out = append(out, Backup{Path: filepath.Join(dir, name), Taken: t})
	}
	slices.SortFunc(out, func(a, b Backup) int { return a.Taken.Compare(b.Taken) })
	return out, nil
}

// WriteBackup writes a backup of db, with the attachment files of
// attachmentDir, into dir, and the tombstone file beside it. It returns
// the backup and whether its attachments could be linked (they cannot
// across file systems; then only the database is in it).
func WriteBackup(ctx context.Context, db *storage.Bolt, attachmentDir, dir string, now time.Time) (Backup, bool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Backup{}, false, err
	}
	b := Backup{Path: filepath.Join(dir, backupPrefix+now.UTC().Format(backupTimeFormat)+".db"), Taken: now.UTC().Truncate(time.Second)}
	err := writeAtomic(b.Path, func(w io.Writer) error {
		_, err := db.Backup(ctx, w)
		return err
	})
	if err != nil {
		return Backup{}, false, fmt.Errorf("backup: %w", err)
	}
	// A backup of the same second replaced the database file just now:
	// its attachment links go too.
	if err := os.RemoveAll(b.Attachments()); err != nil {
		return b, false, fmt.Errorf("backup: attachments: %w", err)
	}
	linked, err := linkTree(attachmentDir, b.Attachments())
	if err != nil {
		return b, false, fmt.Errorf("backup: attachments: %w", err)
	}
	ts, err := db.Tombstones(ctx)
	if err == nil {
		err = WriteTombstones(filepath.Join(dir, "tombstones.json"), ts, now)
	}
	if err != nil {
		return b, linked, fmt.Errorf("backup: tombstones: %w", err)
	}
	return b, linked, syncDir(dir)
}

// BackupAndPrune writes a backup of db into cfg's backup directory (with
// the attachment files of its data directory) and then prunes the old ones
// there. A backup that was written but whose pruning failed is returned
// with the pruning's error; a failed backup is the zero Backup.
func BackupAndPrune(ctx context.Context, db *storage.Bolt, cfg *Config, now time.Time) (b Backup, linked bool, gone []Backup, err error) {
	b, linked, err = WriteBackup(ctx, db, cfg.attachmentDir(), cfg.backupDir(), now)
	if err != nil {
		return Backup{}, false, nil, err
	}
	gone, err = Prune(cfg.backupDir(), cfg.Backup.Daily, cfg.Backup.Weekly, now)
	return b, linked, gone, err
}

// WriteTombstones writes the tombstone file path atomically.
func WriteTombstones(path string, ts []storage.Tombstone, now time.Time) error {
	if ts == nil {
		ts = []storage.Tombstone{}
	}
	b, err := json.MarshalIndent(TombstoneFile{Format: TombstoneFormat, ExportedAt: now.UTC(), Tombstones: ts}, "", "  ")
	if err != nil {
		return err
	}
	return WriteFileAtomic(path, append(b, '\n'))
}

// WriteFileAtomic writes b to path atomically (writeAtomic).
func WriteFileAtomic(path string, b []byte) error {
	return writeAtomic(path, func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	})
}

// writeAtomic writes path through a temporary file in the same directory
// that fill writes, synced and renamed, so that a reader never sees half
// a file.
func writeAtomic(path string, fill func(io.Writer) error) error {
	tmp, err := writeTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp", fill)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// writeTemp creates a new file in dir (os.CreateTemp's pattern) that fill
// writes, syncs it and returns its path; on an error nothing is left.
func writeTemp(dir, pattern string, fill func(io.Writer) error) (string, error) {
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return "", err
	}
	err = fill(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// linkTree hard-links the regular files of src (not its hidden ones:
// temporary uploads, probes) into the new directory dst. A missing src
// is an empty one. It reports false, having removed dst, when src is on
// another file system than dst.
func linkTree(src, dst string) (bool, error) {
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return false, err
	}
	err := eachFile(src, dst, func(from, to string) error {
		err := os.Link(from, to)
		if errors.Is(err, fs.ErrNotExist) {
			return nil // expired and deleted meanwhile
		}
		return err
	})
	if errors.Is(err, syscall.EXDEV) {
		return false, os.RemoveAll(dst)
	}
	return err == nil, err
}

// eachFile calls put for every regular file below src that is not hidden
// (nor in a hidden directory), with its path below dst, whose directory
// it makes first. A missing src has no files.
func eachFile(src, dst string, put func(from, to string) error) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) && p == src {
			return filepath.SkipAll
		}
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), ".") && p != src {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o700)
		case d.Type().IsRegular():
			return put(p, target)
		}
		return nil
	})
}

// writable reports why dir (made if missing) cannot take a new file.
func writable(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".probe-*")
	if err != nil {
		return err
	}
	f.Close()
	return os.Remove(f.Name())
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Prune deletes the backups in dir that no rule keeps: every backup of
// the last 24 hours (a manual one before an upgrade survives the next
// scheduled one), the newest of each of the daily newest days with a
// backup, and the newest of each of the weekly newest weeks (ISO) with
// one. Days and weeks are UTC. The daily rule keeps nothing older than
// daily days, the weekly one nothing older than weekly weeks (MISSION D4:
// 14 days, 3 months), also when no backups were made since (a node that
// was off over the holidays). It returns those deleted.
func Prune(dir string, daily, weekly int, now time.Time) ([]Backup, error) {
	all, err := ListBackups(dir)
	if err != nil {
		return nil, err
	}
	keep := map[string]bool{}
	days, weeks := map[string]bool{}, map[[2]int]bool{}
	for i := len(all) - 1; i >= 0; i-- { // newest first
		b := all[i]
		if now.Sub(b.Taken) < 24*time.Hour {
			keep[b.Path] = true
		}
		age := now.Sub(b.Taken)
		if day := b.Taken.Format("2006-01-02"); !days[day] && len(days) < daily && age < time.Duration(daily)*24*time.Hour {
			days[day] = true
			keep[b.Path] = true
		}
		y, w := b.Taken.ISOWeek()
		if wk := [2]int{y, w}; !weeks[wk] && len(weeks) < weekly && age < time.Duration(weekly)*7*24*time.Hour {
			weeks[wk] = true
			keep[b.Path] = true
		}
	}
	var gone []Backup
	for _, b := range all {
		if keep[b.Path] {
			continue
		}
		if err := os.RemoveAll(b.Attachments()); err != nil {
			return gone, err
		}
		if err := os.Remove(b.Path); err != nil {
			return gone, err
		}
		gone = append(gone, b)
	}
	return gone, nil
}

// backups runs the node's scheduled backups (embedded mode, unless off).
type backups struct {
	mu       sync.Mutex // one backup at a time
	s        *Server
	db       *storage.Bolt
	dir      string
	total    *prometheus.CounterVec
	lastGood prometheus.Gauge
}

func (s *Server) newBackups() (*backups, error) {
	db, ok := s.store.(*storage.Bolt)
	if !ok || s.cfg.Backup.Off {
		return nil, nil
	}
	b := &backups{
		s: s, db: db, dir: s.cfg.backupDir(),
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "klassenfunk_backups_total", Help: "Backups the node wrote, by outcome (ok, failed)."}, []string{"outcome"}),
		lastGood: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "klassenfunk_backup_last_success_timestamp_seconds", Help: "When the newest backup in the backup directory was taken (unix seconds; 0: none)."}),
	}
	b.total.WithLabelValues("ok")
	b.total.WithLabelValues("failed")
	for _, c := range []prometheus.Collector{b.total, b.lastGood} {
		if err := s.reg.Register(c); err != nil {
			return nil, err
		}
	}
	if err := writable(b.dir); err != nil {
		s.log.Error("the backup directory cannot be written: no backups until it can (backup.dir)", "dir", b.dir, "err", err)
	}
	return b, nil
}

// next returns when the next backup is due: a day after the newest one,
// or backupFirstDelay after now when there is none. A backup dated in the
// future (the clock was wrong once) does not count: it would put off
// every backup, and the alert on the newest one, until that date.
func (b *backups) next(now time.Time) time.Time {
	all, err := ListBackups(b.dir)
	var newest time.Time
	for _, bk := range all {
		if bk.Taken.After(now.Add(time.Minute)) {
			b.s.log.Warn("a backup is dated in the future; it is kept, but does not count as the newest", "file", bk.Path)
			continue
		}
		newest = bk.Taken
	}
	if err != nil || newest.IsZero() {
		return now.Add(backupFirstDelay)
	}
	b.lastGood.Set(float64(newest.Unix()))
	return newest.Add(backupEvery)
}

// run takes a backup whenever one is due, until stop.
func (b *backups) run(stop <-chan struct{}) {
	for {
		wait := time.Until(b.next(time.Now()))
		select {
		case <-stop:
			return
		case <-time.After(max(wait, time.Minute)):
		}
		if _, err := b.take(context.Background()); err != nil {
			b.s.log.Error("backup failed; trying again in an hour", "err", err)
			select {
			case <-stop:
				return
			case <-time.After(time.Hour):
			}
		}
	}
}

// take writes one backup and prunes the old ones. Calls wait for each
// other; one that comes within the second of the backup before it gets
// that one.
func (b *backups) take(ctx context.Context) (Backup, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	start := time.Now()
	if all, err := ListBackups(b.dir); err == nil && len(all) > 0 && all[len(all)-1].Taken.Equal(start.UTC().Truncate(time.Second)) {
		return all[len(all)-1], nil
	}
	bk, linked, gone, err := BackupAndPrune(ctx, b.db, &b.s.cfg, start)
	if bk.Path == "" {
		b.total.WithLabelValues("failed").Inc()
		return bk, err
	}
	b.total.WithLabelValues("ok").Inc()
	b.lastGood.Set(float64(bk.Taken.Unix()))
	if !linked {
		b.s.log.Warn("backup holds no attachments: the backup directory is on another file system than the data directory", "dir", b.dir)
	}
	if err != nil {
		b.s.log.Error("backup: removing old backups", "err", err)
	}
	b.s.log.Info("backup written", "file", bk.Path, "took", time.Since(start).Round(time.Millisecond), "removed_old", len(gone))
	return bk, nil
}

// errNoBackups: this node writes no backups.
var errNoBackups = errors.New("no backups on this node")

// BackupNow writes a backup at once (embedded mode): before an upgrade,
// or from the operator API. It fails in cluster mode, where Redis holds
// the data.
func (s *Server) BackupNow(ctx context.Context) (Backup, error) {
	if s.backups == nil {
		if _, ok := s.store.(*storage.Bolt); !ok {
			return Backup{}, fmt.Errorf("%w: cluster mode keeps the data in Redis; back Redis up (docs/data-rights.md)", errNoBackups)
		}
		return Backup{}, fmt.Errorf("%w: backups are off (backup.off)", errNoBackups)
	}
	return s.backups.take(ctx)
}

// backupHandler is POST /api/v1/admin/backup (operator): a backup at once,
// in the node's backup directory. → 201 {file, taken}. In cluster mode
// or with backups off: 409 conflict.
func (s *Server) backupHandler(w http.ResponseWriter, r *http.Request) {
	b, err := s.BackupNow(r.Context())
	if errors.Is(err, errNoBackups) {
		httpapi.WriteError(w, nil, proto.Errorf(proto.CodeConflict, "%v", err))
		return
	}
	if err != nil {
		httpapi.WriteError(w, s.log, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusCreated, map[string]any{"file": b.Path, "taken": b.Taken})
}
