package storage

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// A message is stored under BE(log generation)+conversation+\0+BE(seq)
// in msgdata (conversation+\0+BE(seq) in msgs, in a file of schema
// version 2) as T(ExpiresAt) followed by the message without its seq (the seq is in the key) in the
// binary form of msgcodec.go (JSON where that cannot carry it, and in
// files written before it). The expiry prefix lets reads skip expired
// messages without decoding them, and leaving the seq out lets
// AppendMessage encode the record before the seq is allocated.

// decodeMsg decodes a msgdata or msgs value stored under key loc.
func decodeMsg(loc, v []byte) (Message, error) {
	var m Message
	if len(v) < timeKeyLen || len(loc) < 8 {
		return m, fmt.Errorf("storage: corrupt message record %x", loc)
	}
	if err := decodeMessageValue(v[timeKeyLen:], &m); err != nil {
		return m, fmt.Errorf("storage: decode message %x: %w", loc, err)
	}
	m.Seq = binary.BigEndian.Uint64(loc[len(loc)-8:])
	return m, nil
}

// msgBucket returns the bucket that holds the message under loc (a msgids
// value): msgdata, or msgs in a file of schema version 2.
func msgBucket(tx *bolt.Tx, loc []byte) *bolt.Bucket {
	if isGenKey(loc) {
		return tx.Bucket(bktMsgData)
	}
	return tx.Bucket(bktMsgs)
}

// AppendMessage implements Messages. It writes through the message log
// (bolt_msglog.go): concurrent appends share one log write and fsync.
//
// Whether an earlier message with the same sender and client id has expired
// is judged against m.SentAt, which the caller sets to the current time. An
// empty ClientID is never deduplicated. ErrNotFound when the conversation
// does not exist; ErrConflict when m.ID is taken by another message.
// Attachments that do not exist are skipped.
func (b *Bolt) AppendMessage(ctx context.Context, m Message) (Message, bool, error) {
	if err := checkID("message", m.ID); err != nil {
		return Message{}, false, err
	}
	if err := checkID("conversation", m.Conversation); err != nil {
		return Message{}, false, err
	}
	if err := checkID("user", m.SenderUser); err != nil {
		return Message{}, false, err
	}
	m.Seq = 0
	exp := timeKey(m.ExpiresAt)
	val := make([]byte, 0, timeKeyLen+valueSize(&m))
	val, err := appendMessageValue(append(val, exp[:]...), &m)
	if err != nil {
		return Message{}, false, fmt.Errorf("storage: encode message: %w", err)
	}
	sentAt := timeKey(m.SentAt)
	var ck []byte
	if m.ClientID != "" {
		ck = clientKey(m.Conversation, m.SenderUser, m.SenderDevice, m.ClientID)
	}
	attIDs := slices.Compact(slices.Sorted(slices.Values(m.Attachments)))

	if err := ctx.Err(); err != nil {
		return Message{}, false, err
	}
	return b.appendLogged(ctx, m, val, ck, &sentAt, attIDs)
}

// linkAttachments adds conv to the Conversations of each existing
// attachment in ids.
func linkAttachments(tx *bolt.Tx, ids []string, conv string) error {
	bk := tx.Bucket(bktAttachments)
	for _, id := range ids {
		v := bk.Get([]byte(id))
		if v == nil {
			continue
		}
		var a Attachment
		if err := decode(v, &a, "attachment"); err != nil {
			return err
		}
		if slices.Contains(a.Conversations, conv) {
			continue
		}
		a.Conversations = append(a.Conversations, conv)
		nv, err := json.Marshal(a)
		if err != nil {
			return fmt.Errorf("storage: encode attachment: %w", err)
		}
		if err := bk.Put([]byte(id), nv); err != nil {
			return err
		}
	}
	return nil
}

// Message implements Messages.
func (b *Bolt) Message(ctx context.Context, id string, now time.Time) (Message, error) {
	if m, ok, err := b.log.memMessage(id); ok || err != nil {
		if err == nil && !m.ExpiresAt.After(now) {
			return Message{}, ErrNotFound
		}
		return m, err
	}
	var m Message
	nowKey := timeKey(now)
	err := b.view(ctx, func(tx *bolt.Tx) error {
		loc := tx.Bucket(bktMsgIDs).Get([]byte(id))
		if loc == nil {
			return ErrNotFound
		}
		v := msgBucket(tx, loc).Get(loc)
		if v == nil || len(v) < timeKeyLen || expiredAt(v, &nowKey) {
			return ErrNotFound
		}
		var err error
		m, err = decodeMsg(loc, v)
		return err
	})
	return m, err
}

// MessageByClientID implements Messages: the memtable, then (unless the
// Bloom filter rules the key out) bbolt, as AppendMessage looks.
func (b *Bolt) MessageByClientID(ctx context.Context, conv, user, device, clientID string, now time.Time) (Message, error) {
	if clientID == "" || !validID(conv) {
		return Message{}, ErrNotFound
	}
	ck := clientKey(conv, user, device, clientID)
	nowKey := timeKey(now)
	l := b.log
	l.mu.Lock()
	e := l.clients[string(ck)]
	inBolt := l.cks.mayHold(ck)
	l.mu.Unlock()
	if e != nil && !expiredAt(e.val, &nowKey) {
		<-e.done
		if e.err != nil {
			return Message{}, ErrNotFound // never stored
		}
		return e.message()
	}
	if !inBolt {
		return Message{}, ErrNotFound
	}
	var found *Message
	err := b.view(ctx, func(tx *bolt.Tx) error {
		var err error
		found, err = b.findClientID(tx, &Message{Conversation: conv, SenderUser: user, SenderDevice: device, ClientID: clientID}, &nowKey)
		return err
	})
	switch {
	case err != nil:
		return Message{}, err
	case found == nil:
		return Message{}, ErrNotFound
	}
	return *found, nil
}

// MessagesAfter implements Messages. A limit of zero or less returns no
// messages and reports in more whether any follow. The memtable is read
// first: bbolt then has every message below the memtable's lowest seq,
// even if a checkpoint runs in between.
func (b *Bolt) MessagesAfter(ctx context.Context, conv string, afterSeq uint64, limit int, now time.Time) ([]Message, bool, error) {
	out := []Message{}
	want := max(limit, 0) + 1 // one more tells whether more follow
	err := b.scanAfter(ctx, conv, afterSeq, want, now, func(seq uint64, body []byte) error {
		var m Message
		if err := decodeMessageValue(body, &m); err != nil {
			return fmt.Errorf("storage: decode message %d of %s: %w", seq, conv, err)
		}
		m.Seq = seq
		out = append(out, m)
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	if len(out) > max(limit, 0) {
		return out[:max(limit, 0)], true, nil
	}
	return out, false, nil
}

// FirstSentAfter implements SentAtReader.
func (b *Bolt) FirstSentAfter(ctx context.Context, conv string, afterSeq uint64, now time.Time) (seq uint64, sentAt time.Time, ok bool, err error) {
	err = b.scanAfter(ctx, conv, afterSeq, 1, now, func(s uint64, body []byte) error {
		t, err := sentAtOf(body)
		if err != nil {
			return fmt.Errorf("storage: decode message %d of %s: %w", s, conv, err)
		}
		seq, sentAt, ok = s, t, true
		return nil
	})
	return seq, sentAt, ok, err
}

// scanAfter calls visit with the seq and the encoded message (without its
// expiry key) of up to want unexpired messages of conv with seq > afterSeq,
// ascending. The memtable is read first: bbolt then has every message
// below the memtable's lowest seq, even if a checkpoint runs in between.
func (b *Bolt) scanAfter(ctx context.Context, conv string, afterSeq uint64, want int, now time.Time, visit func(seq uint64, body []byte) error) error {
	if !validID(conv) || afterSeq == math.MaxUint64 {
		return nil
	}
	mem, memFirst := b.log.memAfter(conv, afterSeq, want, now)
	// After the memtable: a checkpoint adds its runs before its messages
	// leave the memtable.
	runs := b.runs.after(conv, afterSeq)
	nowKey := timeKey(now)
	n := 0
	err := b.view(ctx, func(tx *bolt.Tx) error {
		// A file of schema version 2 holds a conversation's older
		// messages in msgs, then msgdata the newer ones, run by run;
		// each read starts after the last seq visited.
		at, inMem := afterSeq, false
		scan := func(c *bolt.Cursor, p, from []byte) error {
			for k, v := c.Seek(from); k != nil && bytes.HasPrefix(k, p) && n < want && !inMem; k, v = c.Next() {
				if len(k) != len(p)+8 {
					continue
				}
				seq := binary.BigEndian.Uint64(k[len(p):])
				if memFirst != 0 && seq >= memFirst {
					inMem = true // the memtable has the rest
					break
				}
				if len(v) < timeKeyLen || expiredAt(v, &nowKey) {
					continue
				}
				if err := visit(seq, v[timeKeyLen:]); err != nil {
					return err
				}
				at = seq
				n++
			}
			return nil
		}
		if err := scan(tx.Bucket(bktMsgs).Cursor(), prefix(conv), seqKey(conv, afterSeq+1)); err != nil {
			return err
		}
		data := tx.Bucket(bktMsgData).Cursor()
		for r := range runs {
			if n >= want || inMem {
				break
			}
			if err := scan(data, genPrefix(r.gen, conv), genKey(r.gen, conv, max(at+1, r.first))); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, e := range mem[:min(len(mem), want-n)] {
		if err := visit(e.seq, e.val[timeKeyLen:]); err != nil {
			return err
		}
	}
	return nil
}

// DeleteExpiredMessages implements Messages. It removes the message and
// its entries in msgids, msgexp and (when it still names this message) the
// client-id index. The conversation's LastSeq stays. Messages still in the
// message log are checkpointed first if any of them has expired (with a
// retention of days, only a moved clock does that); otherwise the sweep
// leaves the log alone, so that it adds no burst of its own.
func (b *Bolt) DeleteExpiredMessages(ctx context.Context, now time.Time, max int) (int, error) {
	if b.log.holdsExpired(now) {
		if err := b.checkpoint(); err != nil {
			return 0, err
		}
	}
	var n int
	var emptied []convGen // the runs the sweep removed the last message of
	// A checkpoint's transaction waits (runsMu): the runs the sweep
	// empties go from msgruns in its transaction and from memory after
	// it. Between a paced checkpoint's transactions the sweep goes on: it
	// deletes only expired messages, and none of those is in the memtable
	// (holdsExpired), so none is in the generation being moved.
	b.log.runsMu.Lock()
	defer b.log.runsMu.Unlock()
	err := b.update(ctx, func(tx *bolt.Tx) error {
		n = 0
		touched := make(map[convGen]bool)
		exp, msgIDs, msgs := tx.Bucket(bktMsgExp), tx.Bucket(bktMsgIDs), tx.Bucket(bktMsgs)
		// Client-id entries are in msgs only in a file of schema version 2
		// (and its replayed log); a file without them needs no decoding.
		legacy, _ := msgs.Cursor().First()
		// Cursors, so that each key is searched for once: a Get and a
		// Delete searched twice.
		ids, data := msgIDs.Cursor(), tx.Bucket(bktMsgData).Cursor()
		for _, k := range collectExpired(exp, now, max) {
			id := k[timeKeyLen:]
			if kk, loc := ids.Seek(id); bytes.Equal(kk, id) {
				loc = bytes.Clone(loc)
				c := data
				if !isGenKey(loc) {
					c = msgs.Cursor()
				}
				if kk, v := c.Seek(loc); bytes.Equal(kk, loc) {
					if len(v) < timeKeyLen {
						return fmt.Errorf("storage: corrupt message record %x", loc)
					}
					var ck []byte
					if legacy != nil {
						if _, _, _, err := senderFields(v[timeKeyLen:]); err != nil {
							return fmt.Errorf("storage: decode message %x: %w", loc, err)
						}
						ck = messageClientKey(loc, v, !isGenKey(loc))
					}
					// The message goes before its client-id entry: a
					// delete through msgs would shift the leaf that c
					// points into.
					if err := c.Delete(); err != nil {
						return err
					}
					if ck != nil && bytes.Equal(msgs.Get(ck), id) {
						if err := msgs.Delete(ck); err != nil {
							return err
						}
					}
					if gen, conv, _, ok := parseGenKey(loc); ok && isGenKey(loc) {
						touched[convGen{string(conv), gen}] = true
					}
				}
				if err := ids.Delete(); err != nil {
					return err
				}
			}
			if err := exp.Delete(k); err != nil {
				return err
			}
			n++
		}
		var err error
		emptied, err = deleteEmptyRuns(tx, touched)
		return err
	})
	if err != nil {
		return 0, err
	}
	b.runs.drop(emptied)
	return n, nil
}

// CountMessages implements Messages. Expired messages count until the
// sweep removes them.
func (b *Bolt) CountMessages(ctx context.Context) (int, error) {
	if err := b.checkpoint(); err != nil {
		return 0, err
	}
	var n int
	err := b.view(ctx, func(tx *bolt.Tx) error {
		n = tx.Bucket(bktMsgIDs).Stats().KeyN
		return nil
	})
	return n, err
}

// Attachments.

// PutAttachment implements Attachments.
func (b *Bolt) PutAttachment(ctx context.Context, a Attachment) error {
	if err := checkID("attachment", a.ID); err != nil {
		return err
	}
	v, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("storage: encode attachment: %w", err)
	}
	return b.update(ctx, func(tx *bolt.Tx) error {
		bk := tx.Bucket(bktAttachments)
		if bk.Get([]byte(a.ID)) != nil {
			return ErrConflict
		}
		if err := bk.Put([]byte(a.ID), v); err != nil {
			return err
		}
		if err := tx.Bucket(bktAttUp).Put(pair(a.Uploader, a.ID), nil); err != nil {
			return err
		}
		return tx.Bucket(bktAttExp).Put(expKey(a.ExpiresAt, a.ID), nil)
	})
}

// indexUploads fills the uploader index from the attachments (a file
// written before it existed).
func indexUploads(tx *bolt.Tx) error {
	up := tx.Bucket(bktAttUp)
	return tx.Bucket(bktAttachments).ForEach(func(k, v []byte) error {
		var a Attachment
		if err := decode(v, &a, "attachment"); err != nil {
			return err
		}
		return up.Put(pair(a.Uploader, string(k)), nil)
	})
}

// AttachmentsOf implements Attachments.
func (b *Bolt) AttachmentsOf(ctx context.Context, uploader string, now time.Time) ([]Attachment, error) {
	var out []Attachment
	err := b.view(ctx, func(tx *bolt.Tx) error {
		out = []Attachment{}
		atts := tx.Bucket(bktAttachments)
		p := prefix(uploader)
		return scanPrefix(tx.Bucket(bktAttUp), p, func(k, _ []byte) error {
			v := atts.Get(k[len(p):])
			if v == nil {
				return nil
			}
			var a Attachment
			if err := decode(v, &a, "attachment"); err != nil {
				return err
			}
			if a.Uploader == uploader && a.ExpiresAt.After(now) {
				out = append(out, a)
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	sortAttachments(out)
	return out, nil
}

// sortAttachments orders as AttachmentsOf returns them.
func sortAttachments(as []Attachment) {
	slices.SortFunc(as, func(a, b Attachment) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.ID, b.ID))
	})
}

// Attachment implements Attachments.
func (b *Bolt) Attachment(ctx context.Context, id string, now time.Time) (Attachment, error) {
	var a Attachment
	err := b.view(ctx, func(tx *bolt.Tx) error {
		v := tx.Bucket(bktAttachments).Get([]byte(id))
		if v == nil {
			return ErrNotFound
		}
		if err := decode(v, &a, "attachment"); err != nil {
			return err
		}
		if !a.ExpiresAt.After(now) {
			a = Attachment{}
			return ErrNotFound
		}
		return nil
	})
	return a, err
}

// DeleteExpiredAttachments implements Attachments.
func (b *Bolt) DeleteExpiredAttachments(ctx context.Context, now time.Time, max int) ([]string, error) {
	var ids []string
	err := b.update(ctx, func(tx *bolt.Tx) error {
		ids = []string{}
		exp, atts := tx.Bucket(bktAttExp), tx.Bucket(bktAttachments)
		up := tx.Bucket(bktAttUp)
		for _, k := range collectExpired(exp, now, max) {
			id := k[timeKeyLen:]
			if v := atts.Get(id); v != nil {
				var a Attachment
				if err := decode(v, &a, "attachment"); err != nil {
					return err
				}
				if err := up.Delete(pair(a.Uploader, string(id))); err != nil {
					return err
				}
			}
			if err := atts.Delete(id); err != nil {
				return err
			}
			if err := exp.Delete(k); err != nil {
				return err
			}
			ids = append(ids, string(id))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return ids, nil
}
