package storage_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"

	"klassenfunk/storage"
)

// What a start does with damaged files: a crash can cut short only the
// last write to the newest message log file, which was never
// acknowledged; that is dropped with a warning. Any other damage may hide
// acknowledged messages, so the start refuses with an error that says
// where, and leaves the files as they are.

// crashedLog appends n messages (logMsg) to a new store, crashes it and
// returns the database's path, its one log file and the offset of each
// record in that file.
func crashedLog(t *testing.T, n int) (path, file string, offs []int) {
	t.Helper()
	b, path := openSeeded(t, nil)
	for i := range n {
		if _, _, err := b.AppendMessage(t.Context(), logMsg(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := storage.CrashBolt(b); err != nil {
		t.Fatal(err)
	}
	files := logFiles(t, path)
	if len(files) != 1 {
		t.Fatalf("log files after the crash: %v, want one", files)
	}
	data := readFile(t, files[0])
	// A record is LE32(len(payload)) LE32(crc) payload (bolt_msglog.go).
	for off := 0; off < len(data); off += 8 + int(binary.LittleEndian.Uint32(data[off:])) {
		offs = append(offs, off)
	}
	if len(offs) != n {
		t.Fatalf("%d records in the log, want %d", len(offs), n)
	}
	return path, files[0], offs
}

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func truncate(t *testing.T, name string, size int64) {
	t.Helper()
	if err := os.Truncate(name, size); err != nil {
		t.Fatal(err)
	}
}

// openLogged opens the database at path and returns what the open
// logged (OpenBolt logs only before it returns).
func openLogged(t *testing.T, path string) (*storage.Bolt, *bytes.Buffer, error) {
	t.Helper()
	logs := new(bytes.Buffer)
	b, err := storage.OpenBolt(path, &storage.BoltOptions{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err == nil {
		t.Cleanup(func() { b.Close() })
	}
	return b, logs, err
}

// TestMessageLogCutShort: the last record of the newest file cut short by
// a crash is dropped with a warning; the records before it are replayed,
// and its seq goes to the next message (it was never acknowledged, so no
// client knows it).
func TestMessageLogCutShort(t *testing.T) {
	const n = 20
	path, file, offs := crashedLog(t, n)
	size := int64(len(readFile(t, file)))
	truncate(t, file, size-3)

	b, logs, err := openLogged(t, path)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	checkHistory(t, b, n-1)
	for _, want := range []string{
		`level=INFO msg="message log: replaying the files of the last run (it did not close cleanly)" files=1 records=19`,
		fmt.Sprintf(`level=WARN msg="message log: dropped an unfinished write at the end (a crash during a write; it was never acknowledged)" file=%s offset=%d bytes=%d reason="a record cut short"`, file, offs[n-1], size-3-int64(offs[n-1])),
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("the log lacks %s; it is:\n%s", want, logs)
		}
	}
	next, _, err := b.AppendMessage(t.Context(), logMsg(n))
	if err != nil || next.Seq != n {
		t.Fatalf("append after the replay: seq %d, %v; want %d", next.Seq, err, n)
	}
}

// TestMessageLogDamagedRefused: a record that fails its checksum with
// intact records after it, or damage in a log file that a newer one
// follows, stops the start with an error naming the file and the byte;
// nothing is replayed or deleted. Cut where the error says, the file
// starts with the records before the damage.
func TestMessageLogDamagedRefused(t *testing.T) {
	t.Run("checksum", func(t *testing.T) {
		const n, bad = 20, 5
		path, file, offs := crashedLog(t, n)
		data := readFile(t, file)
		data[offs[bad]+12] ^= 0x40 // inside record 5's payload
		if err := os.WriteFile(file, data, 0o600); err != nil {
			t.Fatal(err)
		}
		_, _, err := openLogged(t, path)
		cut := fmt.Sprintf("truncate -s %d %s", offs[bad], file)
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("message log %s is damaged at byte %d of %d (a record checksum mismatch)", file, offs[bad], len(data))) || !strings.Contains(err.Error(), cut) {
			t.Fatalf("open with a damaged record in the middle: %v; want the file, the byte and %q", err, cut)
		}
		if got := readFile(t, file); !bytes.Equal(got, data) || len(logFiles(t, path)) != 1 {
			t.Fatalf("the refused start changed the log: %d bytes (want %d), files %v", len(got), len(data), logFiles(t, path))
		}
		truncate(t, file, int64(offs[bad]))
		b, _, err := openLogged(t, path)
		if err != nil {
			t.Fatalf("open after the cut: %v", err)
		}
		checkHistory(t, b, bad)
	})
	t.Run("length", func(t *testing.T) {
		// A length that points past the file's end, with whole records
		// behind it: not a write cut short.
		path, file, offs := crashedLog(t, 20)
		data := readFile(t, file)
		binary.LittleEndian.PutUint32(data[offs[2]:], uint32(len(data)))
		if err := os.WriteFile(file, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, _, err := openLogged(t, path); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("is damaged at byte %d of %d (a record cut short)", offs[2], len(data))) {
			t.Fatalf("open with a damaged length: %v", err)
		}
	})
	t.Run("older file", func(t *testing.T) {
		path, file, offs := crashedLog(t, 20)
		size := int64(len(readFile(t, file)))
		truncate(t, file, size-3)
		// A newer generation follows: the older file was complete when
		// the log moved on, so its cut end is damage.
		gen := strings.TrimPrefix(file, path+".msglog.")
		var g uint64
		if _, err := fmt.Sscanf(gen, "%x", &g); err != nil {
			t.Fatal(err)
		}
		newer := fmt.Sprintf("%s.msglog.%016x", path, g+1)
		if err := os.WriteFile(newer, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, _, err := openLogged(t, path); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("message log %s is damaged at byte %d of %d (a record cut short)", file, offs[19], size-3)) {
			t.Fatalf("open with the older of two files cut short: %v", err)
		}
		if len(logFiles(t, path)) != 2 {
			t.Fatalf("log files after the refused start: %v, want both", logFiles(t, path))
		}
	})
}

// TestBoltFileCutShort: a database file shorter than its meta page says
// (a partial copy) is refused with an error, not a SIGBUS inside bbolt.
func TestBoltFileCutShort(t *testing.T) {
	b, path := openSeeded(t, nil)
	for i := range 300 {
		m := logMsg(i)
		m.ID, m.ClientID = fmt.Sprintf("m%04d", i), fmt.Sprintf("c%04d", i)
		m.Ciphertext = bytes.Repeat([]byte{byte(i)}, 1000)
		if _, _, err := b.AppendMessage(t.Context(), m); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	truncate(t, path, 3*16384)
	_, _, err := openLogged(t, path)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "is 49152 bytes, but its pages reach to byte") || !strings.Contains(err.Error(), "cut short") {
		t.Fatalf("open of a file cut short: %v", err)
	}
}
