package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"klassenfunk/server"
	"klassenfunk/storage"
)

// Tombstones: "a deleted account stays deleted after a restore" (MISSION
// D4). export-tombstones saves the list of erased accounts (user id and
// time, nothing else) to a file kept apart from the backups;
// reapply-erasures erases them again in a restored database. See
// docs/data-rights.md.

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
	if *out == "" {
		b, err := json.MarshalIndent(server.TombstoneFile{Format: server.TombstoneFormat, ExportedAt: time.Now().UTC(), Tombstones: ts}, "", "  ")
		if err != nil {
			return err
		}
		_, err = env.stdout.Write(append(b, '\n'))
		return err
	}
	if err := server.WriteTombstones(*out, ts, time.Now()); err != nil {
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
	ts, err := server.DecodeTombstones(r, *file)
	if err != nil {
		return err
	}
	to, ok := ops.(tombstoneOps)
	if !ok {
		return errors.New("reapply-erasures: not supported here")
	}
	removed, err := to.reapplyErasures(ctx, ts)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "%d erasures reapplied; %d credentials removed\n", len(ts), removed)
	return nil
}
