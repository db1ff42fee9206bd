package storage

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"runtime/debug"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Backup writes a consistent copy of the database to w, one that holds
// every message acknowledged before it began: it moves the logged
// messages into the B+tree first (a checkpoint), then copies the file in
// one read transaction (bbolt's Tx.WriteTo), while reads and writes go on.
// The copy is a complete database file: OpenBolt opens it as it is.
func (b *Bolt) Backup(ctx context.Context, w io.Writer) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := b.checkpoint(); err != nil {
		return 0, err
	}
	var n int64
	err := b.db.View(func(tx *bolt.Tx) error {
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	return n, err
}

// ErrNotDatabase: a file is not a readable Klassenfunk database.
var ErrNotDatabase = errors.New("not a readable Klassenfunk database")

// CheckDatabaseFile reports whether path is a whole Klassenfunk database
// (a backup, before a restore puts it in place): a bbolt file that passes
// bbolt's consistency check, holds this store's buckets, and whose
// messages and school, user, credential and conversation records all
// decode (checkRecords). It opens the file read-only and changes nothing. A file that is locked by a running
// server is reported as such.
//
// The check runs in a child process (checkchild.go): bbolt reads the
// pages of a damaged file in goroutines of its own too, where a panic or
// a memory fault would end the process that asked.
func CheckDatabaseFile(path string) error {
	_, err := checkInChild(path, true)
	return err
}

// TombstonesInFile returns the tombstones of the database file at path,
// checked as CheckDatabaseFile does but for the records (a restore reads
// them from the database it replaces, which may be replaced for damage
// of that kind), read-only: the database and its message log stay as
// they are (the log holds messages, no erasures).
func TombstonesInFile(path string) ([]Tombstone, error) { return checkInChild(path, false) }

// readDatabaseFile checks the file at path (and its records) and reads its
// tombstones, in this process: a damaged file can end it
// (CheckDatabaseFile).
func readDatabaseFile(path string, records bool) (ts []Tombstone, err error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() || fi.Size() == 0 {
		return nil, fmt.Errorf("%s: %w (an empty file, or not a file)", path, ErrNotDatabase)
	}
	// A page past the end of a file cut short would be a memory fault in
	// a goroutine of bbolt's own (it scans the free pages on open): the
	// size is checked against the meta pages first.
	if err := checkBoltSize(path, fi.Size()); err != nil {
		return nil, err
	}
	// bbolt panics on damaged pages: where it does so on this goroutine,
	// that becomes this error too.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			ts, err = nil, fmt.Errorf("%s: %w (damaged: %v)", path, ErrNotDatabase, r)
		}
	}()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: lockTimeout})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("%s: database is locked by another process (is the server running?): %w", path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w (%v)", path, ErrNotDatabase, err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bktSys, bktSchools, bktUsers, bktMsgs} {
			if tx.Bucket(name) == nil {
				return fmt.Errorf("%s: %w (no %s bucket)", path, ErrNotDatabase, name)
			}
		}
		// Before the restore puts it in place: this binary could not open
		// a file of another schema afterwards.
		if err := checkSchema(tx.Bucket(bktSys).Get(keyVersion)); err != nil {
			return fmt.Errorf("%s: %w (%v)", path, ErrNotDatabase, err)
		}
		var first error
		for cerr := range tx.Check() { // read to the end: the checker stops only then
			if first == nil {
				first = fmt.Errorf("%s: %w (damaged: %v)", path, ErrNotDatabase, cerr)
			}
		}
		if first != nil {
			return first
		}
		if records {
			if err := checkRecords(tx); err != nil {
				return fmt.Errorf("%s: %w (damaged: %v)", path, ErrNotDatabase, err)
			}
		}
		var err error
		if ts, err = tombstonesIn(tx); err != nil {
			return fmt.Errorf("%s: %w (%v)", path, ErrNotDatabase, err)
		}
		return nil
	})
	return ts, err
}

// bbolt's meta page (its file format, version 2; go.etcd.io/bbolt
// internal/common/meta.go): a 16-byte page header, then magic, version,
// page size and flags (4 bytes each), the root bucket (8+8), the freelist
// page, the high-water page id and the transaction id (8 each), and an
// FNV-1a checksum of those 56 bytes. Little-endian, as on the machines
// that write it.
const (
	boltMagic      = 0xED0CDAED
	boltMetaOffset = 16
	boltMetaSize   = 56 // up to the checksum
)

// checkBoltSize reads the newest valid meta page of the bbolt file at path
// and reports ErrNotDatabase when none is valid or the file is shorter
// than the pages it claims.
func checkBoltSize(path string, size int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	head := make([]byte, boltMetaOffset+boltMetaSize+8)
	var best struct {
		txid, pgid uint64
		pageSize   uint32
		ok         bool
	}
	// The second meta page is at the page size, which the first names;
	// try the sizes bbolt uses when the first is damaged.
	offsets := []int64{0}
	if n, _ := f.ReadAt(head, 0); n == len(head) && binary.LittleEndian.Uint32(head[boltMetaOffset:]) == boltMagic {
		offsets = append(offsets, int64(binary.LittleEndian.Uint32(head[boltMetaOffset+8:])))
	} else {
		offsets = append(offsets, 4096, 16384, 65536)
	}
	for _, off := range offsets {
		if n, _ := f.ReadAt(head, off); n != len(head) {
			continue
		}
		m := head[boltMetaOffset:]
		h := fnv.New64a()
		h.Write(m[:boltMetaSize])
		if binary.LittleEndian.Uint32(m) != boltMagic || h.Sum64() != binary.LittleEndian.Uint64(m[boltMetaSize:]) {
			continue
		}
		txid := binary.LittleEndian.Uint64(m[48:])
		if !best.ok || txid > best.txid {
			best.txid, best.pgid, best.pageSize, best.ok = txid, binary.LittleEndian.Uint64(m[40:]), binary.LittleEndian.Uint32(m[8:]), true
		}
	}
	switch {
	case !best.ok:
		return fmt.Errorf("%s: %w (no valid meta page)", path, ErrNotDatabase)
	case best.pageSize == 0 || best.pgid > uint64(size)/uint64(best.pageSize):
		return fmt.Errorf("%s: %w (cut short: %d bytes of the %d its pages need)", path, ErrNotDatabase, size, best.pgid*uint64(best.pageSize))
	}
	return nil
}

// checkRecords decodes every stored message and every school, user,
// credential and conversation record: bbolt keeps no checksums, so garbage
// inside a value passes its check, and a restored node would answer 500
// for whatever holds it (a conversation's history, a user's every
// request).
func checkRecords(tx *bolt.Tx) error {
	if data := tx.Bucket(bktMsgData); data != nil { // a file of schema version 2 has none
		err := data.ForEach(func(k, v []byte) error {
			_, conv, seq, ok := parseGenKey(k)
			if !ok {
				return fmt.Errorf("msgdata: malformed key %x", k)
			}
			if len(v) < timeKeyLen {
				return fmt.Errorf("message %d of conversation %s: cut short", seq, conv)
			}
			var m Message
			if err := decodeMessageValue(v[timeKeyLen:], &m); err != nil {
				return fmt.Errorf("message %d of conversation %s: %w", seq, conv, err)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	err := tx.Bucket(bktMsgs).ForEach(func(k, v []byte) error {
		i := bytes.IndexAny(k, "\x00\x01")
		if i < 0 || k[i] != 0 || len(k) != i+9 {
			return nil // a client-id entry (conversation\x01…)
		}
		var m Message
		if len(v) < timeKeyLen {
			return fmt.Errorf("message %d of conversation %s: cut short", binary.BigEndian.Uint64(k[i+1:]), k[:i])
		}
		if err := decodeMessageValue(v[timeKeyLen:], &m); err != nil {
			return fmt.Errorf("message %d of conversation %s: %w", binary.BigEndian.Uint64(k[i+1:]), k[:i], err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, b := range []struct {
		name   []byte
		decode func(k, v []byte) error
	}{
		{bktSchools, func(k, v []byte) error { return decode(v, new(School), "school "+string(k)) }},
		{bktUsers, func(k, v []byte) error { return decode(v, new(User), "user "+string(k)) }},
		{bktCreds, func(k, v []byte) error { _, err := decodeCred(k, v); return err }}, // keys: token hashes
		{bktConvs, func(k, v []byte) error { return decode(v, new(Conversation), "conversation "+string(k)) }},
	} {
		bk := tx.Bucket(b.name)
		if bk == nil {
			continue
		}
		err := bk.ForEach(func(k, v []byte) error {
			if v == nil {
				return nil // a nested bucket
			}
			if err := b.decode(k, v); err != nil {
				return fmt.Errorf("%s: %w", b.name, err)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}
