package storage_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"klassenfunk/storage"
)

// TestCheckDatabaseFile: a backup passes; an empty file, random bytes,
// overwritten meta pages, garbage over any one page and a file cut short
// at every eighth of its length either pass as a whole database or are
// ErrNotDatabase, without a panic or a fault.
func TestCheckDatabaseFile(t *testing.T) {
	t.Setenv("GORACE", "atexit_sleep_ms=0") // the file checks' child processes: no second's wait at exit under -race
	dir := t.TempDir()
	db, err := storage.OpenBolt(filepath.Join(dir, "live.db"), &storage.BoltOptions{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	for i := range 3000 { // pages enough that a cut file misses some
		if err := db.CreateSchool(ctx, storage.School{ID: fmt.Sprintf("school-%04d", i), Name: strings.Repeat("Schule ", 20)}); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if _, err := db.Backup(ctx, &buf); err != nil {
		t.Fatal(err)
	}
	good := buf.Bytes()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if err := storage.CheckDatabaseFile(write("good.db", good)); err != nil {
		t.Fatalf("a backup: %v", err)
	}
	meta := bytes.Clone(good)
	copy(meta, bytes.Repeat([]byte{0xAB}, 2*16384))
	if err := storage.CheckDatabaseFile(""); !errors.Is(err, storage.ErrNotDatabase) {
		t.Errorf("no file named: %v, want ErrNotDatabase", err)
	}
	for name, b := range map[string][]byte{"empty": nil, "random": bytes.Repeat([]byte("not bbolt "), 4000), "meta": meta} {
		if err := storage.CheckDatabaseFile(write(name+".db", b)); !errors.Is(err, storage.ErrNotDatabase) {
			t.Errorf("%s: %v, want ErrNotDatabase", name, err)
		}
	}
	// Garbage over 4 KiB at 24 places past the meta pages: bbolt panics
	// on such pages, in its checker's own goroutine too, where no recover
	// reaches. Some of them are free pages, which no check reads.
	refused := 0
	for i := range 24 {
		off := 2*16384 + (len(good)-2*16384)*i/24/4096*4096
		bad := bytes.Clone(good)
		copy(bad[off:], bytes.Repeat([]byte{0x5A, 0x00, 0xFF, 0x13}, 1024))
		err := storage.CheckDatabaseFile(write("garbage.db", bad))
		if err != nil && !errors.Is(err, storage.ErrNotDatabase) {
			t.Errorf("garbage at %d: %v", off, err)
		}
		if err != nil {
			refused++
		}
	}
	if refused == 0 {
		t.Error("no file with garbage in it was refused")
	}
	for i := 1; i < 8; i++ {
		err := storage.CheckDatabaseFile(write("cut.db", good[:len(good)*i/8]))
		if err != nil && !errors.Is(err, storage.ErrNotDatabase) {
			t.Errorf("cut at %d/8: %v", i, err)
		}
	}
}

// TestCheckDatabaseFileRecords: garbage inside a stored message or a JSON
// record passes bbolt's own check (it keeps no checksums); the file check
// decodes them and refuses the file.
func TestCheckDatabaseFileRecords(t *testing.T) {
	t.Setenv("GORACE", "atexit_sleep_ms=0") // the file checks' child processes: no second's wait at exit under -race
	b, _ := openSeeded(t, &storage.BoltOptions{NoSync: true})
	defer b.Close()
	ctx := t.Context()
	const id = "message-to-be-damaged"
	if _, _, err := b.AppendMessage(ctx, storage.Message{ID: id, Conversation: "g1", SenderUser: "u1", SenderDevice: "phone",
		SentAt: logBase, ExpiresAt: logBase.Add(720 * time.Hour), Ciphertext: []byte("sealed"), Keys: map[string][]byte{"u1/phone": []byte("key")}}); err != nil {
		t.Fatal(err)
	}
	if err := storage.CheckpointPaced(b, 0); err != nil { // into the B+tree
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := b.Backup(ctx, &buf); err != nil {
		t.Fatal(err)
	}
	good := buf.Bytes()
	dir := t.TempDir()
	check := func(name string, file []byte) error {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, file, 0o600); err != nil {
			t.Fatal(err)
		}
		return storage.CheckDatabaseFile(p)
	}
	if err := check("good.db", good); err != nil {
		t.Fatalf("the backup: %v", err)
	}
	// The message's value: its id follows its length (one byte).
	msg := bytes.Clone(good)
	damaged := 0
	for off := 0; ; {
		i := bytes.Index(msg[off:], []byte(id))
		if i < 0 {
			break
		}
		if at := off + i - 1; msg[at] == byte(len(id)) {
			msg[at] = 0xFF // a length that runs past the value
			damaged++
		}
		off += i + len(id)
	}
	if damaged == 0 {
		t.Fatal("the message's id is not in the backup")
	}
	if err := check("message.db", msg); !errors.Is(err, storage.ErrNotDatabase) || !strings.Contains(err.Error(), "message 1 of conversation g1") {
		t.Errorf("a damaged message: %v, want ErrNotDatabase naming it", err)
	}
	// The user's record (every copy: free pages may hold older ones).
	user := bytes.ReplaceAll(good, []byte(`{"id":"u1"`), []byte(`["id":"u1"`))
	if bytes.Equal(user, good) {
		t.Fatal("the user record is not in the backup")
	}
	if err := check("user.db", user); !errors.Is(err, storage.ErrNotDatabase) || !strings.Contains(err.Error(), "user u1") {
		t.Errorf("a damaged user record: %v, want ErrNotDatabase naming it", err)
	}
}
