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
	Erasures int    // tombstones applied again
	Aside    string // where the replaced data went ("" when there was none)
}

// Restore puts the backup file (a database written by WriteBackup) in
// place in dataDir, for a stopped server. The data it replaces (the
// database, its message-log files, the attachments) is moved into a
// directory "replaced-<time>" beside it, not deleted; the message log
// must go, or its records would be replayed into the older database. The
// backup's attachment files come with it when it has them.
//
// Every erasure known is applied again (MISSION D4: a deleted account
// stays deleted after a restore): those in the database being replaced,
// those in the tombstones.json beside the backup, and extra (a tombstone
// file kept elsewhere).
func Restore(ctx context.Context, dataDir, backupFile string, extra []storage.Tombstone) (RestoreResult, error) {
	var res RestoreResult
	if _, err := os.Stat(backupFile); err != nil {
		return res, err
	}
	dbPath := filepath.Join(dataDir, "klassenfunk.db")
	ts := slices.Clone(extra)
	if side, err := ReadTombstones(filepath.Join(filepath.Dir(backupFile), "tombstones.json")); err == nil {
		ts = append(ts, side...)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return res, err
	}
	if _, err := os.Stat(dbPath); err == nil {
		cur, err := storage.OpenBolt(dbPath, nil)
		if err != nil {
			return res, fmt.Errorf("%w (is the server running? stop it first)", err)
		}
		now, err := cur.Tombstones(ctx)
		cerr := cur.Close()
		if err = errors.Join(err, cerr); err != nil {
			return res, err
		}
		ts = append(ts, now...)
	}

	// Move what is replaced aside.
	var replaced []string
	for _, pattern := range []string{"klassenfunk.db", "klassenfunk.db.msglog.*", "attachments"} {
		m, err := filepath.Glob(filepath.Join(dataDir, pattern))
		if err != nil {
			return res, err
		}
		replaced = append(replaced, m...)
	}
	if len(replaced) > 0 {
		res.Aside = filepath.Join(dataDir, "replaced-"+time.Now().UTC().Format(backupTimeFormat))
		if err := os.Mkdir(res.Aside, 0o700); err != nil {
			return res, err
		}
		for _, p := range replaced {
			if err := os.Rename(p, filepath.Join(res.Aside, filepath.Base(p))); err != nil {
				return res, err
			}
		}
	}

	if err := copyFile(backupFile, dbPath); err != nil {
		return res, fmt.Errorf("restore: %w", err)
	}
	b := Backup{Path: backupFile}
	if _, err := os.Stat(b.Attachments()); err == nil {
		dst := filepath.Join(dataDir, "attachments")
		ok, err := linkTree(b.Attachments(), dst)
		if err == nil && !ok {
			err = copyTree(b.Attachments(), dst)
		}
		if err != nil {
			return res, fmt.Errorf("restore: attachments: %w", err)
		}
	}

	st, err := storage.OpenBolt(dbPath, nil)
	if err != nil {
		return res, fmt.Errorf("restore: open the restored database: %w", err)
	}
	defer st.Close()
	a, err := auth.New(auth.Config{Store: st})
	if err != nil {
		return res, err
	}
	if _, err := a.ReapplyErasures(ctx, ts); err != nil {
		return res, fmt.Errorf("restore: apply the erasures again: %w", err)
	}
	res.Erasures = len(ts)
	return res, st.Close()
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

// copyFile copies src to the new file dst (synced, renamed into place).
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	f, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	_, err = io.Copy(f, in)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

// copyTree copies the regular files of src into dst (linkTree across file
// systems).
func copyTree(src, dst string) error { return eachFile(src, dst, copyFile) }
