package server_test

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"klassenfunk/internal/testenv"
	"klassenfunk/proto"
	"klassenfunk/server"
	"klassenfunk/storage"
)

// TestBackupAndRestore: a backup taken through the operator API holds
// every message acknowledged before it and the attachment files; the
// restore puts it in place, moves the replaced data (a crashed run's
// message log included) aside instead of replaying it, and erases again
// an account erased after the backup (MISSION D4).
func TestBackupAndRestore(t *testing.T) {
	t.Setenv("GORACE", "atexit_sleep_ms=0") // the file checks' child processes: no second's wait at exit under -race
	dir := t.TempDir()
	onDir := func(c *server.Config) { c.DataDir = dir }
	w := newRightsWorld(t, onDir)
	env := w.env
	keys := rightsKeys(keyName(w.anna, "anna-phone"), keyName(w.ben, "ben-phone"))
	before := rightsSend(t, env, w.annaTok, w.direct, "before", "vor dem Backup", keys)
	att := rightsUpload(t, env, w.annaTok, 300)
	env.JSON("POST", "/api/v1/conversations/"+w.direct+"/messages", w.annaTok, map[string]any{
		"client_id": "with-att", "ciphertext": "QQ==", "keys": keys, "attachments": []string{att},
	}, http.StatusCreated, nil)

	var bk struct {
		File  string
		Taken time.Time
	}
	env.JSON("POST", "/api/v1/admin/backup", testenv.OperatorToken, nil, http.StatusCreated, &bk)
	if filepath.Dir(bk.File) != filepath.Join(dir, "backups") {
		t.Fatalf("backup written to %s, want the data directory's backups/", bk.File)
	}
	authWantError(t, authCall(t, env, "POST", "/api/v1/admin/backup", w.annaTok, nil, nil), http.StatusForbidden, "forbidden")

	// After the backup: another message, and ben erases his account.
	after := rightsSend(t, env, w.annaTok, w.direct, "after", "nach dem Backup", keys)
	env.JSON("POST", "/api/v1/me/erase", w.benTok, map[string]string{"client_hash": testenv.ClientHash(testenv.Password("ben"))}, http.StatusNoContent, nil)
	// The message log holds "after" until the next checkpoint: keep a
	// copy, and put it back once the server has stopped, as a crash
	// would have left it. Its records belong to the replaced database
	// and must not be replayed into the restored one.
	logs, err := filepath.Glob(filepath.Join(dir, "klassenfunk.db.msglog.*"))
	if err != nil || len(logs) == 0 {
		t.Fatalf("no message log (%v)", err)
	}
	saved := map[string][]byte{}
	for _, p := range logs {
		if saved[p], err = os.ReadFile(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := env.Srv.Close(); err != nil {
		t.Fatal(err)
	}
	for p, b := range saved {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	res, err := server.Restore(t.Context(), dir, bk.File, server.RestoreOptions{})
	if err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if res.Erasures != 1 {
		t.Errorf("%d erasures applied again, want ben's", res.Erasures)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "klassenfunk.db.msglog.*")); len(left) > 0 {
		t.Errorf("message log files of the replaced database are still there: %v", left)
	}
	for _, moved := range []string{"klassenfunk.db", "attachments"} {
		if _, err := os.Stat(filepath.Join(res.Aside, moved)); err != nil {
			t.Errorf("%s was not moved aside: %v", moved, err)
		}
	}

	env2 := testenv.New(t, onDir)
	var page struct{ Messages []proto.Message }
	env2.JSON("GET", "/api/v1/conversations/"+w.direct+"/messages", w.annaTok, nil, http.StatusOK, &page)
	var got []string
	for _, m := range page.Messages {
		got = append(got, m.ID)
	}
	if len(got) != 2 || got[0] != before.ID || slices.Contains(got, after.ID) {
		t.Fatalf("history after the restore %v, want the two messages from before the backup (first %s), not %s", got, before.ID, after.ID)
	}
	r := env2.Do("GET", "/api/v1/attachments/"+att, w.annaTok, nil)
	if r.Status != http.StatusOK || !bytes.Equal(r.Body, bytes.Repeat([]byte{9}, 300)) {
		t.Fatalf("the attachment after the restore: %d, %d bytes", r.Status, len(r.Body))
	}
	env2.JSON("POST", "/api/v1/login", "", testenv.LoginBody("ben", "ben-phone", true), http.StatusUnauthorized, nil)
	env2.JSON("GET", "/api/v1/me", w.benTok, nil, http.StatusUnauthorized, nil)

	// A second restore within the same second moves the data aside too.
	if err := env2.Srv.Close(); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	for d := range 5 {
		if err := os.MkdirAll(filepath.Join(dir, "replaced-"+now.Add(time.Duration(d)*time.Second).Format("20060102T150405Z")), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	res, err = server.Restore(t.Context(), dir, bk.File, server.RestoreOptions{})
	if err != nil || !strings.HasSuffix(res.Aside, "-2") {
		t.Fatalf("a restore in the same second: %v, aside in %q", err, res.Aside)
	}
}

// TestPruneBackupsByAge: after a gap (a node off over the holidays) the
// daily rule keeps nothing older than its days and the weekly one nothing
// older than its weeks, however few backups there are.
func TestPruneBackupsByAge(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 11, 27, 2, 30, 0, 0, time.UTC)
	for _, age := range []time.Duration{200 * 24 * time.Hour, 100 * 24 * time.Hour, 60 * 24 * time.Hour, 10 * 24 * time.Hour, time.Hour} {
		p := filepath.Join(dir, "klassenfunk-"+now.Add(-age).Format("20060102T150405Z")+".db")
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	gone, err := server.Prune(dir, 14, 13, now)
	if err != nil {
		t.Fatal(err)
	}
	left, err := server.ListBackups(dir)
	if err != nil {
		t.Fatal(err)
	}
	var ages []string
	for _, b := range left {
		ages = append(ages, fmt.Sprint(int(now.Sub(b.Taken).Round(24*time.Hour)/(24*time.Hour))))
	}
	// 60 days: the weekly rule (13 weeks, 91 days); 10: the daily rule
	// (14 days); 0: the last 24 hours.
	if want := []string{"60", "10", "0"}; !slices.Equal(ages, want) || len(gone) != 2 {
		t.Fatalf("kept backups aged %v days (%d deleted), want %v (2 deleted)", ages, len(gone), want)
	}
}

// TestPruneBackups keeps the newest daily backups and the newest backup
// of each of the newest weekly weeks, and deletes the rest with their
// attachment directories.
func TestPruneBackups(t *testing.T) {
	dir := t.TempDir()
	start := time.Date(2026, 9, 1, 2, 30, 0, 0, time.UTC) // a Tuesday
	var all []string
	for day := range 40 {
		p := filepath.Join(dir, "klassenfunk-"+start.AddDate(0, 0, day).Format("20060102T150405Z")+".db")
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(server.Backup{Path: p}.Attachments(), 0o700); err != nil {
			t.Fatal(err)
		}
		all = append(all, p)
	}
	os.WriteFile(filepath.Join(dir, "tombstones.json"), nil, 0o600)
	// Three more on the last day, taken by hand: they are all younger
	// than a day, and that day counts once for the daily rule.
	last := start.AddDate(0, 0, 39)
	for h := 1; h <= 3; h++ {
		p := filepath.Join(dir, "klassenfunk-"+last.Add(time.Duration(h)*time.Hour).Format("20060102T150405Z")+".db")
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := server.Prune(dir, 3, 2, last.Add(4*time.Hour)); err != nil {
		t.Fatal(err)
	}
	left, err := server.ListBackups(dir)
	if err != nil {
		t.Fatal(err)
	}
	var days []string
	for _, b := range left {
		days = append(days, b.Taken.Format("Jan 2 15h"))
		if b.Taken.Hour() == 2 { // the daily ones have attachment directories
			if _, err := os.Stat(b.Attachments()); err != nil {
				t.Errorf("%s lost its attachments: %v", b.Path, err)
			}
		}
	}
	// Days 0-39 are Sep 1 to Oct 10; Oct 10 is a Saturday. Kept: the four
	// of the last 24 hours (Oct 10), the newest of the three newest days
	// (Oct 10 05h, Oct 9, Oct 8), and the newest of this week (Oct 10) and
	// of the week before (Sunday Oct 4).
	if want := []string{"Oct 4 02h", "Oct 8 02h", "Oct 9 02h", "Oct 10 02h", "Oct 10 03h", "Oct 10 04h", "Oct 10 05h"}; !slices.Equal(days, want) {
		t.Fatalf("kept %v, want %v", days, want)
	}
	for _, p := range all[:5] {
		if _, err := os.Stat(server.Backup{Path: p}.Attachments()); !os.IsNotExist(err) {
			t.Errorf("%s's attachments are still there (%v)", p, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "tombstones.json")); err != nil {
		t.Errorf("the tombstone file went with the backups: %v", err)
	}
}

// TestRestoreRefuses: a restore that cannot be done whole changes
// nothing: a backup that is no database (empty, random bytes, the live
// file itself), or a database being replaced that cannot be read (its
// erasures would be lost) unless the operator says so.
func TestRestoreRefuses(t *testing.T) {
	t.Setenv("GORACE", "atexit_sleep_ms=0") // the file checks' child processes: no second's wait at exit under -race
	dir := t.TempDir()
	onDir := func(c *server.Config) { c.DataDir = dir }
	env := testenv.New(t, onDir)
	school := env.CreateSchool("Schule")
	ben := env.CreateUser(school, "ben", "student")
	var bk struct{ File string }
	env.JSON("POST", "/api/v1/admin/backup", testenv.OperatorToken, nil, http.StatusCreated, &bk)
	if err := env.Srv.Close(); err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(dir, "klassenfunk.db")
	live, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	unchanged := func(what string) {
		t.Helper()
		now, err := os.ReadFile(db)
		if err != nil || !bytes.Equal(now, live) {
			t.Fatalf("%s: the live database changed (%v)", what, err)
		}
		if aside, _ := filepath.Glob(filepath.Join(dir, "replaced-*")); len(aside) > 0 {
			t.Fatalf("%s: data was moved aside: %v", what, aside)
		}
	}
	empty := filepath.Join(t.TempDir(), "empty.db")
	random := filepath.Join(t.TempDir(), "random.db")
	os.WriteFile(empty, nil, 0o600)
	os.WriteFile(random, bytes.Repeat([]byte("not bbolt "), 5000), 0o600)
	for name, file := range map[string]string{"empty file": empty, "random bytes": random, "the live database": db, "a directory": dir} {
		if _, err := server.Restore(t.Context(), dir, file, server.RestoreOptions{}); err == nil {
			t.Errorf("restore of %s succeeded", name)
		}
		unchanged(name)
	}

	// The database being replaced is damaged (both meta pages overwritten):
	// its erasures cannot be read.
	damaged := bytes.Clone(live)
	copy(damaged, bytes.Repeat([]byte{0xAB}, min(len(damaged), 2*16384)))
	if err := os.WriteFile(db, damaged, 0o600); err != nil {
		t.Fatal(err)
	}
	live = damaged
	if _, err := server.Restore(t.Context(), dir, bk.File, server.RestoreOptions{}); err == nil || !strings.Contains(err.Error(), "--ignore-current") {
		t.Fatalf("restore over a damaged database: %v, want a refusal that names --ignore-current", err)
	}
	unchanged("a damaged database being replaced")
	// With the newest tombstone export and --ignore-current it goes on,
	// and the export's erasure (given twice) holds once.
	tomb := []storage.Tombstone{{UserID: ben, ErasedAt: time.Date(2026, 9, 2, 0, 0, 0, 0, time.UTC)}}
	res, err := server.Restore(t.Context(), dir, bk.File, server.RestoreOptions{Tombstones: append(tomb, tomb...), IgnoreCurrent: true})
	if err != nil {
		t.Fatalf("restore with --ignore-current: %v", err)
	}
	if res.Erasures != 1 {
		t.Errorf("%d erasures applied, want ben's once", res.Erasures)
	}
	env2 := testenv.New(t, onDir)
	env2.JSON("POST", "/api/v1/login", "", testenv.LoginBody("ben", "ben-phone", true), http.StatusUnauthorized, nil)
}

// TestConcurrentBackups: backups asked for at the same moment wait for
// each other; within one second they are the same backup.
func TestConcurrentBackups(t *testing.T) {
	env := testenv.New(t)
	school := env.CreateSchool("Schule")
	env.CreateUser(school, "tina", "teacher")
	tok, _ := env.Login("tina", "phone", true)
	rightsUpload(t, env, tok, 100) // a file for each backup to link
	a, err := env.Srv.BackupNow(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	b, err := env.Srv.BackupNow(t.Context())
	if err != nil {
		t.Fatalf("a second backup right after the first: %v", err)
	}
	if a.Taken.Equal(b.Taken) && a.Path != b.Path {
		t.Fatalf("two backups of the same second: %s and %s", a.Path, b.Path)
	}
	errs := make(chan error, 3)
	for range 3 {
		go func() {
			_, err := env.Srv.BackupNow(t.Context())
			errs <- err
		}()
	}
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatalf("a concurrent backup failed: %v", err)
		}
	}
}
