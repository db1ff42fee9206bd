package storage

import (
	"bytes"
	"sync"

	"github.com/bits-and-blooms/bloom/v3"
	bolt "go.etcd.io/bbolt"
)

// ckFilter is a Bloom filter of the client keys (clientKey) of the
// messages in bbolt's msgs bucket. An append whose client key the filter
// rules out needs no bbolt lookup for it (findClientID, which reads the
// conversation); with a fresh message id and a known conversation it
// needs no read transaction at all (one per send was 5% of the server's
// CPU at saturation).
//
// The filter holds every client key bbolt has and, because of false
// positives and keys of swept messages, a few it has not: it can only
// send an append to bbolt in vain, never skip a key that is there. It is
// built in the background from a scan of the msgs bucket when the store
// opens, and built again, twice as large, when more keys were added than
// it was sized for; until the first build is done every append asks
// bbolt. Checkpoints add their keys to the filter in use and to the one
// being built, before the messages leave the memtable (where appends find
// them until then). All fields are guarded by msgLog.mu.
type ckFilter struct {
	cur       *bloom.BloomFilter // in use; nil until the first build is done
	next      *bloom.BloomFilter // being built
	capacity  uint               // what cur was sized for
	added     uint               // keys in cur
	nextAdded uint               // keys checkpoints added to next
	building  sync.WaitGroup     // the builder goroutine
}

const (
	ckFilterMin = 1 << 20 // keys the filter is sized for at least (1.8 MB)
	ckFilterFP  = 0.001   // a false positive reads the whole conversation
)

// mayHold reports whether bbolt may hold client key ck.
func (f *ckFilter) mayHold(ck []byte) bool { return f.cur == nil || f.cur.Test(ck) }

func (f *ckFilter) add(ck []byte) {
	if f.cur != nil {
		f.cur.Add(ck)
		f.added++
	}
	if f.next != nil {
		f.next.Add(ck)
		f.nextAdded++
	}
}

// full reports whether cur holds more keys than it was sized for (and no
// build runs).
func (f *ckFilter) full() bool { return f.cur != nil && f.next == nil && f.added > f.capacity }

// messageClientKey returns the client key of the msgdata entry k, v (or
// the msgs entry, legacy), nil if it is not a message (ids hold no byte
// below \x20: a msgs message key is conversation id+\0+BE(seq)), has no
// client id or cannot be read.
func messageClientKey(k, v []byte, legacy bool) []byte {
	var conv []byte
	if legacy {
		i := bytes.IndexFunc(k, func(r rune) bool { return r < 0x20 })
		if i < 0 || k[i] != 0 || len(k) != i+9 {
			return nil
		}
		conv = k[:i]
	} else {
		var ok bool
		if _, conv, _, ok = parseGenKey(k); !ok {
			return nil
		}
	}
	if len(v) < timeKeyLen {
		return nil
	}
	user, device, client, err := senderFields(v[timeKeyLen:])
	if err != nil || len(client) == 0 {
		return nil
	}
	return clientKey(string(conv), string(user), string(device), string(client))
}

// buildCKFilter starts building a filter in the background. l.mu is held.
func (b *Bolt) buildCKFilter() {
	l := b.log
	f := &l.cks
	if f.next != nil || l.closed {
		return
	}
	capacity := max(ckFilterMin, 2*f.added)
	next := bloom.NewWithEstimates(capacity, ckFilterFP)
	f.next, f.nextAdded = next, 0 // checkpoints from now on add to it
	f.building.Add(1)
	go func() {
		defer f.building.Done()
		n, err := b.scanClientKeys(next)
		l.mu.Lock()
		defer l.mu.Unlock()
		f.next = nil
		if err == nil {
			f.cur, f.capacity, f.added = next, capacity, n+f.nextAdded
		}
	}()
}

// scanClientKeys adds every client key in msgdata and msgs to next. It
// reads in short transactions (a long one would hold off the checkpoints'
// file growth) and gives up when the store closes. A key a checkpoint adds
// between two transactions is added to next by the checkpoint.
func (b *Bolt) scanClientKeys(next *bloom.BloomFilter) (uint, error) {
	var n uint
	for _, bkt := range [][]byte{bktMsgData, bktMsgs} {
		m, err := b.scanBucketClientKeys(next, bkt)
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (b *Bolt) scanBucketClientKeys(next *bloom.BloomFilter, bkt []byte) (uint, error) {
	l := b.log
	legacy := bytes.Equal(bkt, bktMsgs)
	var (
		n     uint
		after []byte // the last key read; nil: start at the first
		keys  [][]byte
	)
	for {
		keys = keys[:0]
		done := false
		err := b.db.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(bkt).Cursor()
			k, v := c.First()
			if after != nil {
				k, v = c.Seek(after)
				if bytes.Equal(k, after) {
					k, v = c.Next()
				}
			}
			var last []byte
			for read := 0; k != nil && read < 65536; read++ {
				// A corrupt value adds nothing: reads report it, and
				// no append can be a retry of it.
				if ck := messageClientKey(k, v, legacy); ck != nil {
					keys = append(keys, ck)
				}
				last = k
				k, v = c.Next()
			}
			if last != nil {
				after = bytes.Clone(last) // valid only inside the transaction
			}
			done = k == nil
			return nil
		})
		if err != nil {
			return n, mapErr(err)
		}
		l.mu.Lock()
		for _, k := range keys {
			next.Add(k)
		}
		l.mu.Unlock()
		n += uint(len(keys))
		if done {
			return n, nil
		}
		select {
		case <-l.stop:
			return n, ErrClosed
		default:
		}
	}
}
