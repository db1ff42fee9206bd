package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"time"

	"klassenfunk/server"
	"klassenfunk/storage"
)

// backup is `admin backup`: through the running server (POST
// /api/v1/admin/backup), or with --offline on the stopped server's data
// directory. Either writes into the configured backup directory.
func backup(ctx context.Context, ops adminOps, env adminEnv, args []string) error {
	if len(args) != 0 {
		return errors.New("usage: klassenfunk admin backup")
	}
	switch o := ops.(type) {
	case *offlineOps:
		b, linked, _, err := server.BackupAndPrune(ctx, o.store, &o.cfg, time.Now())
		if b.Path == "" {
			return err
		}
		if err != nil {
			return fmt.Errorf("%s written, but removing old backups failed: %w", b.Path, err)
		}
		if !linked {
			fmt.Fprintln(env.stderr, "the backup holds no attachments: the backup directory is on another file system")
		}
		fmt.Fprintln(env.stdout, b.Path)
		return nil
	case *apiOps:
		var out struct {
			File string `json:"file"`
		}
		if err := o.call(ctx, "POST", "/admin/backup", nil, &out); err != nil {
			return err
		}
		fmt.Fprintln(env.stdout, out.File)
		return nil
	}
	return errors.New("backup: not supported here")
}

// restore is `admin --offline restore [--tombstones FILE] BACKUP`.
func restore(env adminEnv, args []string) error {
	fs := flag.NewFlagSet("restore", flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	file := fs.String("tombstones", "", "a tombstone file kept apart from the backups (export-tombstones), on top of those the restore finds itself")
	ignore := fs.Bool("ignore-current", false, "restore although the database being replaced cannot be read (its erasures are then lost: give --tombstones)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if !env.offline || fs.NArg() != 1 {
		return errors.New("usage: klassenfunk admin --offline restore [--tombstones FILE] [--ignore-current] BACKUP (the server must be stopped)")
	}
	cfg, err := offlineConfig(env)
	if err != nil {
		return err
	}
	var extra []storage.Tombstone
	if *file != "" {
		if extra, err = server.ReadTombstones(*file); err != nil {
			return err
		}
	}
	res, err := server.Restore(context.Background(), cfg.DataDir, fs.Arg(0), server.RestoreOptions{Tombstones: extra, IgnoreCurrent: *ignore})
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "restored %s into %s; %d erasures applied again\n", fs.Arg(0), cfg.DataDir, res.Erasures)
	if res.KeptAttachments {
		fmt.Fprintf(env.stdout, "the backup has no attachment directory beside it (%s: a backup written to another file system has none, or it was not copied with the backup): the node's own attachments stay in place\n",
			server.Backup{Path: fs.Arg(0)}.Attachments())
	}
	if res.NoCurrent && *file == "" {
		fmt.Fprintln(env.stderr, "warning: no database was replaced and no --tombstones given, so only the tombstones.json beside the backup (if any) was applied: "+
			"accounts erased after it was written are back. Run `klassenfunk admin --offline reapply-erasures --tombstones FILE` with the newest tombstone export now (docs/data-rights.md)")
	}
	if res.Aside != "" {
		fmt.Fprintf(env.stdout, "the replaced data is in %s: delete it once the server runs well\n", res.Aside)
	}
	return nil
}
