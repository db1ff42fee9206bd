package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"klassenfunk/auth"
	"klassenfunk/storage"
)

// RestoreResult says what Restore did.
type RestoreResult struct {
	Erasures int    // accounts erased again
	Aside    string // where the replaced data went ("" when there was none)
	// KeptAttachments: the backup has no attachment directory beside it
	// (written to another file system, or not copied with it), so the
	// node's own stayed.
	KeptAttachments bool
	// NoCurrent: there was no database to replace, so none of its
	// erasures could be applied again (only the tombstones beside the
	// backup and those given).
	NoCurrent bool
}

// RestoreOptions are Restore's choices.
type RestoreOptions struct {
	// Tombstones are erasures to apply again on top of those Restore finds
	// itself (a tombstone file kept apart from the backups).
	Tombstones []storage.Tombstone
	// IgnoreCurrent restores although the database being replaced cannot
	// be read, so that the erasures recorded only there are lost.
	IgnoreCurrent bool
}

// Restore puts the backup file (a database written by WriteBackup) in
// place in dataDir, for a stopped server. Nothing is touched before the
// backup has been checked (a whole Klassenfunk database) and copied next
// to its place. The data it replaces (the database, its message-log
// files, the attachments) is then moved into a directory
// "replaced-<time>" beside it (with "-2", "-3", … for a second restore in
// the same second), not deleted; the message log must go, or
// its records would be replayed into the older database. The backup's
// attachment files come with it when it has them.
//
// Every erasure known is applied again (MISSION D4: a deleted account
// stays deleted after a restore): those in the database being replaced,
// those in the tombstones.json beside the backup, and opt.Tombstones. A
// database being replaced that cannot be read stops the restore unless
// opt.IgnoreCurrent: its erasures would otherwise be lost unnoticed.
func Restore(ctx context.Context, dataDir, backupFile string, opt RestoreOptions) (RestoreResult, error) {
	var res RestoreResult
	if err := storage.CheckDatabaseFile(backupFile); err != nil {
		return res, fmt.Errorf("restore: the backup: %w", err)
	}
	dbPath := filepath.Join(dataDir, "klassenfunk.db")
	if same, _ := sameFile(backupFile, dbPath); same {
		return res, errors.New("restore: that is the data directory's own database, not a backup")
	}
	ts := slices.Clone(opt.Tombstones)
	if side, err := ReadTombstones(filepath.Join(filepath.Dir(backupFile), "tombstones.json")); err == nil {
		ts = append(ts, side...)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return res, err
	}
	_, err := os.Stat(dbPath)
	res.NoCurrent = err != nil
	if err == nil {
		current, err := currentTombstones(dbPath)
		switch {
		case err == nil:
			ts = append(ts, current...)
		case errors.Is(err, storage.ErrNotDatabase) && opt.IgnoreCurrent:
		case errors.Is(err, storage.ErrNotDatabase):
			return res, fmt.Errorf("restore: the database being replaced cannot be read, so the erasures recorded in it cannot be applied again: %w. "+
				"Give the newest tombstone export with --tombstones and add --ignore-current (or only --ignore-current if there is none: "+
				"erasures since the backup are then lost). Nothing was changed", err)
		default:
			return res, fmt.Errorf("restore: %w. Nothing was changed", err)
		}
	}
	ts = uniqueTombstones(ts)

	// The backup next to its place first, then the swap.
	tmp, err := copyToTemp(backupFile, dataDir)
	if err != nil {
		return res, fmt.Errorf("restore: copy the backup: %w. Nothing was changed", err)
	}
	defer os.Remove(tmp) // after the rename: nothing
	b := Backup{Path: backupFile}
	_, err = os.Stat(b.Attachments())
	withAttachments := err == nil
	res.KeptAttachments = !withAttachments
	patterns := []string{"klassenfunk.db", "klassenfunk.db.msglog.*"}
	if withAttachments {
		patterns = append(patterns, "attachments")
	}
	var replaced []string
	for _, pattern := range patterns {
		m, err := filepath.Glob(filepath.Join(dataDir, pattern))
		if err != nil {
			return res, err
		}
		replaced = append(replaced, m...)
	}
	if len(replaced) > 0 {
		aside, err := mkdirAside(dataDir, "replaced-"+time.Now().UTC().Format(backupTimeFormat))
		if err != nil {
			return res, fmt.Errorf("restore: %w. Nothing was changed", err)
		}
		res.Aside = aside
		for _, p := range replaced {
			if err := os.Rename(p, filepath.Join(res.Aside, filepath.Base(p))); err != nil {
				return res, fmt.Errorf("restore: move %s aside: %w (what was moved is in %s: move it back)", p, err, res.Aside)
			}
		}
	}
	undo := func(err error) error {
		if err == nil || res.Aside == "" {
			return err
		}
		return fmt.Errorf("%w (the replaced data is in %s: to undo, move its files back into %s)", err, res.Aside, dataDir)
	}
	if err := os.Rename(tmp, dbPath); err != nil {
		return res, undo(fmt.Errorf("restore: %w", err))
	}
	if withAttachments {
		dst := filepath.Join(dataDir, "attachments")
		ok, err := linkTree(b.Attachments(), dst)
		if err == nil && !ok {
			err = copyTree(b.Attachments(), dst)
		}
		if err != nil {
			return res, undo(fmt.Errorf("restore: attachments: %w", err))
		}
	}

	st, err := storage.OpenBolt(dbPath, nil)
	if err != nil {
		return res, undo(fmt.Errorf("restore: open the restored database: %w", err))
	}
	defer st.Close()
	a, err := auth.New(auth.Config{Store: st})
	if err != nil {
		return res, undo(err)
	}
	if _, err := a.ReapplyErasures(ctx, ts); err != nil {
		return res, undo(fmt.Errorf("restore: apply the erasures again: %w", err))
	}
	res.Erasures = len(ts)
	return res, undo(st.Close())
}

// currentTombstones reads the erasures of the database at path, which a
// restore is about to replace, read-only: a refused restore leaves it and
// its message log as they were. A file that is not a readable database is
// storage.ErrNotDatabase.
func currentTombstones(path string) ([]storage.Tombstone, error) {
	return storage.TombstonesInFile(path)
}

// uniqueTombstones keeps one tombstone per user, the earliest.
func uniqueTombstones(ts []storage.Tombstone) []storage.Tombstone {
	first := map[string]int{}
	var out []storage.Tombstone
	for _, t := range ts {
		if i, ok := first[t.UserID]; ok {
			if t.ErasedAt.Before(out[i].ErasedAt) {
				out[i] = t
			}
			continue
		}
		first[t.UserID] = len(out)
		out = append(out, t)
	}
	return out
}

func sameFile(a, b string) (bool, error) {
	fa, err := os.Stat(a)
	if err != nil {
		return false, err
	}
	fb, err := os.Stat(b)
	if err != nil {
		return false, err
	}
	return os.SameFile(fa, fb), nil
}

// copyToTemp copies src to a new hidden file in dir (synced) and returns
// its path.
func copyToTemp(src, dir string) (string, error) {
	return writeTemp(dir, ".restore-*.tmp", copyFrom(src))
}

// copyFrom is a fill for writeTemp and writeAtomic: the bytes of src.
func copyFrom(src string) func(io.Writer) error {
	return func(w io.Writer) error {
		in, err := os.Open(src)
		if err != nil {
			return err
		}
		defer in.Close()
		_, err = io.Copy(w, in)
		return err
	}
}

// ReadTombstones reads a tombstone file (WriteTombstones, export-tombstones).
func ReadTombstones(path string) ([]storage.Tombstone, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return DecodeTombstones(f, path)
}

// DecodeTombstones reads a tombstone file from r; name is for errors.
func DecodeTombstones(r io.Reader, name string) ([]storage.Tombstone, error) {
	var tf TombstoneFile
	if err := json.NewDecoder(r).Decode(&tf); err != nil {
		return nil, fmt.Errorf("tombstone file %s: %w", name, err)
	}
	if tf.Format != TombstoneFormat {
		return nil, fmt.Errorf("tombstone file %s: format %q, want %q", name, tf.Format, TombstoneFormat)
	}
	for i, t := range tf.Tombstones {
		if t.UserID == "" || t.ErasedAt.IsZero() {
			return nil, fmt.Errorf("tombstone file %s: entry %d needs user_id and erased_at", name, i)
		}
	}
	return tf.Tombstones, nil
}

// copyFile copies src to the new file dst (writeAtomic).
func copyFile(src, dst string) error { return writeAtomic(dst, copyFrom(src)) }

// copyTree copies the regular files of src into dst (linkTree across file
// systems).
func copyTree(src, dst string) error { return eachFile(src, dst, copyFile) }

// mkdirAside makes the directory name in dir, or name-2, name-3, … when
// that exists (a second restore within the same second), and returns it.
func mkdirAside(dir, name string) (string, error) {
	for i := 1; ; i++ {
		p := filepath.Join(dir, name)
		if i > 1 {
			p = fmt.Sprintf("%s-%d", p, i)
		}
		err := os.Mkdir(p, 0o700)
		if !errors.Is(err, fs.ErrExist) || i == 100 {
			return p, err
		}
	}
}
