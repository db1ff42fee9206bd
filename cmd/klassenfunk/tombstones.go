package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"klassenfunk/storage"
)

// Tombstones: "a deleted account stays deleted after a restore" (MISSION
// D4). export-tombstones saves the list of erased accounts (user id and
// time, nothing else) to a file kept apart from the backups;
// reapply-erasures erases them again in a restored database. See
// docs/data-rights.md.

// tombstoneFormat names the file format.
const tombstoneFormat = "klassenfunk-tombstones/1"

// tombstoneFile is the file export-tombstones writes.
type tombstoneFile struct {
	Format     string              `json:"format"`
	ExportedAt time.Time           `json:"exported_at"`
	Tombstones []storage.Tombstone `json:"tombstones"`
}

// reapplyChunk is how many tombstones one online request carries (the API
// caps bodies at 1 MiB).
const reapplyChunk = 2000

func (o *offlineOps) tombstones(ctx context.Context) ([]storage.Tombstone, error) {
	return o.store.Tombstones(ctx)
}

func (o *offlineOps) reapplyErasures(ctx context.Context, ts []storage.Tombstone) (int, error) {
	return o.auth.ReapplyErasures(ctx, ts)
}

func (a *apiOps) tombstones(ctx context.Context) ([]storage.Tombstone, error) {
	var out []storage.Tombstone
	err := a.call(ctx, "GET", "/admin/tombstones", nil, &out)
	return out, err
}

func (a *apiOps) reapplyErasures(ctx context.Context, ts []storage.Tombstone) (int, error) {
	removed := 0
	for part := range chunkTombstones(ts) {
		var out struct {
			Removed int `json:"removed_credentials"`
		}
		if err := a.call(ctx, "POST", "/admin/tombstones", map[string]any{"tombstones": part}, &out); err != nil {
			return removed, err
		}
		removed += out.Removed
	}
	return removed, nil
}

func chunkTombstones(ts []storage.Tombstone) func(func([]storage.Tombstone) bool) {
	return func(yield func([]storage.Tombstone) bool) {
		for len(ts) > 0 {
			n := min(reapplyChunk, len(ts))
			if !yield(ts[:n]) {
				return
			}
			ts = ts[n:]
		}
	}
}

// tombstoneOps is what both kinds of adminOps offer for tombstones.
type tombstoneOps interface {
	tombstones(ctx context.Context) ([]storage.Tombstone, error)
	reapplyErasures(ctx context.Context, ts []storage.Tombstone) (removedCreds int, err error)
}

// exportTombstones is `admin export-tombstones [--out FILE]`.
func exportTombstones(ctx context.Context, ops adminOps, env adminEnv, args []string) error {
	fs := flag.NewFlagSet("export-tombstones", flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	out := fs.String("out", "", "file to write (replaced atomically); default: standard output")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return errors.New("usage: klassenfunk admin export-tombstones [--out FILE]")
	}
	to, ok := ops.(tombstoneOps)
	if !ok {
		return errors.New("export-tombstones: not supported here")
	}
	ts, err := to.tombstones(ctx)
	if err != nil {
		return err
	}
	if ts == nil {
		ts = []storage.Tombstone{}
	}
	b, err := json.MarshalIndent(tombstoneFile{Format: tombstoneFormat, ExportedAt: time.Now().UTC(), Tombstones: ts}, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if *out == "" {
		_, err := env.stdout.Write(b)
		return err
	}
	if err := writeFileAtomic(*out, b); err != nil {
		return err
	}
	fmt.Fprintf(env.stderr, "%d tombstones written to %s\n", len(ts), *out)
	return nil
}

// reapplyErasures is `admin reapply-erasures --tombstones FILE`.
func reapplyErasures(ctx context.Context, ops adminOps, env adminEnv, args []string) error {
	fs := flag.NewFlagSet("reapply-erasures", flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	file := fs.String("tombstones", "", "tombstone file written by export-tombstones (- for standard input)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *file == "" || fs.NArg() > 0 {
		return errors.New("usage: klassenfunk admin reapply-erasures --tombstones FILE")
	}
	var r io.Reader = env.stdin
	if *file != "-" {
		f, err := os.Open(*file)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	var tf tombstoneFile
	dec := json.NewDecoder(r)
	if err := dec.Decode(&tf); err != nil {
		return fmt.Errorf("tombstone file %s: %w", *file, err)
	}
	if tf.Format != tombstoneFormat {
		return fmt.Errorf("tombstone file %s: format %q, want %q", *file, tf.Format, tombstoneFormat)
	}
	for i, t := range tf.Tombstones {
		if t.UserID == "" || t.ErasedAt.IsZero() {
			return fmt.Errorf("tombstone file %s: entry %d needs user_id and erased_at", *file, i)
		}
	}
	to, ok := ops.(tombstoneOps)
	if !ok {
		return errors.New("reapply-erasures: not supported here")
	}
	removed, err := to.reapplyErasures(ctx, tf.Tombstones)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "%d erasures reapplied (exported %s); %d credentials removed\n",
		len(tf.Tombstones), tf.ExportedAt.Format(time.RFC3339), removed)
	return nil
}

// writeFileAtomic writes b to path through a temporary file in the same
// directory, synced and renamed, so that a reader never sees half a file.
func writeFileAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}
