package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"runtime"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// CrashBolt closes b like a crash would: the message log is neither
// checkpointed nor deleted.
func CrashBolt(b *Bolt) error {
	l := b.log
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	close(l.stop)
	<-l.done
	l.cks.building.Wait()
	l.writers.Wait()
	if err := l.f.Close(); err != nil {
		return err
	}
	b.closeOnce.Do(func() { b.closeErr = b.db.Close() })
	return b.closeErr
}

// BreakMessageLog makes the next log writes fail, like a full or failing
// disk.
func BreakMessageLog(b *Bolt) error {
	l := b.log
	l.wmu.Lock()
	defer l.wmu.Unlock()
	f, err := os.Open(l.path(l.gen)) // read-only: writes fail
	if err != nil {
		return err
	}
	l.mu.Lock()
	old := l.f
	l.f = f
	l.mu.Unlock()
	return old.Close()
}

// FailNextLogWrite makes the next write to the message log write half of
// its bytes and then fail with err, like a disk that fills up mid-write.
func FailNextLogWrite(b *Bolt, err error) {
	l := b.log
	l.wmu.Lock()
	defer l.wmu.Unlock()
	l.write = func(f *os.File, p []byte) (int, error) {
		l.write = (*os.File).Write // owned by the wmu holder, which calls this
		n, werr := f.Write(p[:len(p)/2])
		if werr != nil {
			return n, werr
		}
		return n, err
	}
}

// CheckpointPaced runs a checkpoint that writes the msgs bucket in
// several transactions spread over pace.
func CheckpointPaced(b *Bolt, pace time.Duration) error { return b.checkpointPaced(pace) }

// FailCheckpointStep makes the next paced checkpoint fail before its
// transaction at, counted from its first transaction of the indexes if
// indexes, else of the msgs bucket: like a crash there.
func FailCheckpointStep(b *Bolt, at int, indexes bool) {
	b.log.ckMu.Lock()
	defer b.log.ckMu.Unlock()
	b.log.beforeStep = func(i, parts int) error {
		if indexes {
			i -= parts
		}
		if i != at {
			return nil
		}
		b.log.beforeStep = nil // under ckMu, which the checkpoint holds
		return errors.New("injected failure between checkpoint transactions")
	}
}

// WaitClientKeyFilter waits until the client-key filter is built, so that
// appends consult it.
func WaitClientKeyFilter(b *Bolt) {
	b.log.cks.building.Wait()
}

// OnLogSync makes the log writer call fn with the number of records before
// each write and fsync.
func OnLogSync(b *Bolt, fn func(n int)) {
	b.log.wmu.Lock()
	defer b.log.wmu.Unlock()
	b.log.onSync = fn
}

// WaitLogPending waits until at least n records wait for the log writer.
func WaitLogPending(b *Bolt, n int) {
	for {
		b.log.mu.Lock()
		k := len(b.log.pending)
		b.log.mu.Unlock()
		if k >= n {
			return
		}
		runtime.Gosched()
	}
}

// PutLegacyClientEntry writes the client-id entry that files from before
// 2026-11 hold for m (stored already): clientKey → message id.
func PutLegacyClientEntry(b *Bolt, m Message) error {
	return b.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bktMsgs).Put(clientKey(m.Conversation, m.SenderUser, m.SenderDevice, m.ClientID), []byte(m.ID))
	})
}

// HasLegacyClientEntry reports whether the client-id entry of m is there.
func HasLegacyClientEntry(b *Bolt, m Message) (found bool, err error) {
	err = b.db.View(func(tx *bolt.Tx) error {
		found = tx.Bucket(bktMsgs).Get(clientKey(m.Conversation, m.SenderUser, m.SenderDevice, m.ClientID)) != nil
		return nil
	})
	return found, err
}

// UploadIndex returns the keys of the uploader index as uploader/id.
func UploadIndex(b *Bolt) ([]string, error) {
	out := []string{}
	err := b.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bktAttUp).ForEach(func(k, _ []byte) error {
			out = append(out, strings.Replace(string(k), "\x00", "/", 1))
			return nil
		})
	})
	return out, err
}

// DropUploadIndex deletes the uploader index, as in a file written before
// it existed.
func DropUploadIndex(b *Bolt) error {
	return b.db.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket(bktAttUp) })
}

// PutV2Message stores m (its Seq set) as a file of schema version 2 held
// it: in msgs under conversation+\0+BE(seq), with the conversation's
// counter there, msgids pointing to it and its msgexp entry.
func PutV2Message(b *Bolt, m Message) error {
	exp := timeKey(m.ExpiresAt)
	val, err := appendMessageValue(append([]byte(nil), exp[:]...), &m)
	if err != nil {
		return err
	}
	return b.db.Update(func(tx *bolt.Tx) error {
		msgs := tx.Bucket(bktMsgs)
		loc := seqKey(m.Conversation, m.Seq)
		if err := msgs.Put(loc, val); err != nil {
			return err
		}
		if v := msgs.Get(counterKey(m.Conversation)); len(v) != 8 || binary.BigEndian.Uint64(v) < m.Seq {
			if err := msgs.Put(counterKey(m.Conversation), be64(m.Seq)); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bktMsgIDs).Put([]byte(m.ID), loc); err != nil {
			return err
		}
		return tx.Bucket(bktMsgExp).Put(expKey(m.ExpiresAt, m.ID), nil)
	})
}

// SetSchemaVersion writes v as the file's schema version.
func SetSchemaVersion(b *Bolt, v uint64) error {
	return b.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bktSys).Put(keyVersion, be64(v)) })
}

// SchemaVersion reads the file's schema version.
func SchemaVersion(b *Bolt) (v uint64, err error) {
	err = b.db.View(func(tx *bolt.Tx) error {
		v = binary.BigEndian.Uint64(tx.Bucket(bktSys).Get(keyVersion))
		return nil
	})
	return v, err
}

// LastMsgData returns the conversation and seq of the last key in msgdata.
func LastMsgData(b *Bolt) (conv string, seq uint64, err error) {
	err = b.db.View(func(tx *bolt.Tx) error {
		k, _ := tx.Bucket(bktMsgData).Cursor().Last()
		_, c, s, ok := parseGenKey(k)
		if !ok {
			return errors.New("no message in msgdata")
		}
		conv, seq = string(c), s
		return nil
	})
	return conv, seq, err
}

// MsgDataCount returns the number of messages in msgdata, and in msgs.
func MsgDataCount(b *Bolt) (data, legacy int, err error) {
	err = b.db.View(func(tx *bolt.Tx) error {
		data = tx.Bucket(bktMsgData).Stats().KeyN
		return tx.Bucket(bktMsgs).ForEach(func(k, _ []byte) error {
			if i := bytes.IndexByte(k, 0); i >= 0 && len(k) == i+9 {
				legacy++
			}
			return nil
		})
	})
	return data, legacy, err
}

// RunCount returns how many runs the store keeps in memory.
func RunCount(b *Bolt) int { return b.runs.count() }

// HoldCheckpointStep makes the next paced checkpoint wait before its
// transaction at (counted from the first of the msgs bucket): reached is
// closed once it waits there, and it goes on once release is closed.
func HoldCheckpointStep(b *Bolt, at int) (reached, release chan struct{}) {
	reached, release = make(chan struct{}), make(chan struct{})
	b.log.ckMu.Lock()
	defer b.log.ckMu.Unlock()
	b.log.beforeStep = func(i, _ int) error {
		if i != at {
			return nil
		}
		b.log.beforeStep = nil // under ckMu, which the checkpoint holds
		close(reached)
		<-release
		return nil
	}
	return reached, release
}
