package storage

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Conversations live in convs (without LastSeq, which is the counter in
// msgctr, or in msgs in a file of schema version 2).
// userconvs is the membership index; directs maps a pair of users to their
// direct conversation.

func lastSeq(tx *bolt.Tx, conv string) uint64 {
	var n uint64
	if v := tx.Bucket(bktMsgCtr).Get([]byte(conv)); len(v) == 8 {
		n = binary.BigEndian.Uint64(v)
	}
	if v := tx.Bucket(bktMsgs).Get(counterKey(conv)); len(v) == 8 {
		n = max(n, binary.BigEndian.Uint64(v))
	}
	return n
}

// getConv returns the conversation with LastSeq filled, or ok=false.
func getConv(tx *bolt.Tx, id string) (c Conversation, ok bool, err error) {
	v := tx.Bucket(bktConvs).Get([]byte(id))
	if v == nil {
		return c, false, nil
	}
	if err := decode(v, &c, "conversation"); err != nil {
		return c, false, err
	}
	c.LastSeq = lastSeq(tx, id)
	return c, true, nil
}

// putConv stores c and drops it from the memo when the transaction
// commits.
func (b *Bolt) putConv(tx *bolt.Tx, c Conversation) error {
	v, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("storage: encode conversation: %w", err)
	}
	id := c.ID
	tx.OnCommit(func() { b.convs.forget(id) })
	return tx.Bucket(bktConvs).Put([]byte(c.ID), v)
}

// memberSet returns the distinct user IDs of members.
func memberSet(members []Member) map[string]bool {
	s := make(map[string]bool, len(members))
	for _, m := range members {
		s[m.UserID] = true
	}
	return s
}

// checkDirect checks c for CreateDirect: of kind ConvDirect, with two
// distinct members. It returns their user ids in order, the key of the
// pair.
func checkDirect(c Conversation) (lo, hi string, err error) {
	if err := checkID("conversation", c.ID); err != nil {
		return "", "", err
	}
	if c.Kind != ConvDirect {
		return "", "", fmt.Errorf("storage: CreateDirect: kind %q, want %q", c.Kind, ConvDirect)
	}
	if len(c.Members) != 2 || c.Members[0].UserID == c.Members[1].UserID {
		return "", "", errors.New("storage: CreateDirect: need two distinct members")
	}
	if err := checkMembers(c.Members); err != nil {
		return "", "", err
	}
	if err := checkID("school", c.School); err != nil {
		return "", "", err
	}
	lo, hi = c.Members[0].UserID, c.Members[1].UserID
	if hi < lo {
		lo, hi = hi, lo
	}
	return lo, hi, nil
}

func checkMembers(members []Member) error {
	for _, m := range members {
		if err := checkID("member", m.UserID); err != nil {
			return err
		}
	}
	return nil
}

// syncMembers updates userconvs from the members of old (nil: none) to
// those of c.
func syncMembers(tx *bolt.Tx, c Conversation, old []Member) error {
	bk := tx.Bucket(bktUserConvs)
	now, before := memberSet(c.Members), memberSet(old)
	for u := range before {
		if !now[u] {
			if err := bk.Delete(pair(u, c.ID)); err != nil {
				return err
			}
		}
	}
	for u := range now {
		if !before[u] {
			if err := bk.Put(pair(u, c.ID), nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// CreateConversation implements Conversations. Kind must be ConvGroup.
func (b *Bolt) CreateConversation(ctx context.Context, c Conversation) error {
	if err := checkID("conversation", c.ID); err != nil {
		return err
	}
	if c.Kind != ConvGroup {
		return fmt.Errorf("storage: CreateConversation: kind %q, want %q", c.Kind, ConvGroup)
	}
	if err := checkMembers(c.Members); err != nil {
		return err
	}
	return b.update(ctx, func(tx *bolt.Tx) error {
		if tx.Bucket(bktConvs).Get([]byte(c.ID)) != nil {
			return ErrConflict
		}
		if err := b.putConv(tx, c); err != nil {
			return err
		}
		return syncMembers(tx, c, nil)
	})
}

// CreateDirect implements Conversations. c must be of kind ConvDirect with
// two distinct members. ErrConflict when the pair has no conversation yet
// but c.ID is taken.
func (b *Bolt) CreateDirect(ctx context.Context, c Conversation) (Conversation, bool, error) {
	lo, hi, err := checkDirect(c)
	if err != nil {
		return Conversation{}, false, err
	}
	dk := pair(c.School, lo+"\x00"+hi)

	var (
		out     Conversation
		created bool
	)
	err = b.update(ctx, func(tx *bolt.Tx) error {
		directs := tx.Bucket(bktDirects)
		if id := directs.Get(dk); id != nil {
			var ok bool
			var err error
			out, ok, err = getConv(tx, string(id))
			if err == nil && !ok {
				err = fmt.Errorf("storage: direct index names missing conversation %q", id)
			}
			out.LastSeq = max(out.LastSeq, b.log.seqOf(out.ID))
			created = false
			return err
		}
		if tx.Bucket(bktConvs).Get([]byte(c.ID)) != nil {
			return ErrConflict
		}
		c.LastSeq = 0
		if err := b.putConv(tx, c); err != nil {
			return err
		}
		if err := syncMembers(tx, c, nil); err != nil {
			return err
		}
		out, created = c, true
		return directs.Put(dk, []byte(c.ID))
	})
	if err != nil {
		return Conversation{}, false, err
	}
	return out, created, nil
}

// Conversation implements Conversations. It is served from memory after
// the first read (the memo, and the message log's seqs).
func (b *Bolt) Conversation(ctx context.Context, id string) (Conversation, error) {
	if err := ctx.Err(); err != nil {
		return Conversation{}, err
	}
	memo, ok, gen := b.convs.get(id)
	seq, seqKnown := b.log.seq(id)
	if !ok || !seqKnown {
		missed := !ok
		var counter uint64
		err := b.view(ctx, func(tx *bolt.Tx) error {
			v := tx.Bucket(bktConvs).Get([]byte(id))
			if v == nil {
				return ErrNotFound
			}
			counter = lastSeq(tx, id)
			if memo != nil {
				return nil
			}
			c, err := decodeConv(v)
			memo = &c
			return err
		})
		if err != nil {
			return Conversation{}, err
		}
		if missed {
			b.convs.put(id, memo, gen)
		}
		seq = b.log.learnSeq(id, counter)
	}
	c := cloneConversation(*memo)
	c.LastSeq = seq
	return c, nil
}

func decodeConv(v []byte) (Conversation, error) {
	var c Conversation
	err := decode(v, &c, "conversation")
	return c, err
}

// ConversationsOf implements Conversations.
func (b *Bolt) ConversationsOf(ctx context.Context, userID string) ([]Conversation, error) {
	out := []Conversation{}
	if !validID(userID) {
		return out, nil
	}
	err := b.view(ctx, func(tx *bolt.Tx) error {
		p := prefix(userID)
		return scanPrefix(tx.Bucket(bktUserConvs), p, func(k, _ []byte) error {
			c, ok, err := getConv(tx, string(k[len(p):]))
			if err != nil {
				return err
			}
			if ok {
				c.LastSeq = max(c.LastSeq, b.log.seqOf(c.ID))
				out = append(out, c)
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// UpdateConversation implements Conversations. The membership index
// follows Members in the same transaction.
func (b *Bolt) UpdateConversation(ctx context.Context, id string, fn func(*Conversation) error) error {
	return b.update(ctx, func(tx *bolt.Tx) error {
		c, ok, err := getConv(tx, id)
		if err != nil {
			return err
		}
		if !ok {
			return ErrNotFound
		}
		c.LastSeq = max(c.LastSeq, b.log.seqOf(id))
		old := c
		old.Members = append([]Member(nil), c.Members...)
		if err := fn(&c); err != nil {
			return err
		}
		if c.ID != old.ID || c.School != old.School || c.Kind != old.Kind {
			return fmt.Errorf("storage: UpdateConversation %q: fn changed ID, School or Kind", id)
		}
		if err := checkMembers(c.Members); err != nil {
			return err
		}
		if err := b.putConv(tx, c); err != nil {
			return err
		}
		return syncMembers(tx, c, old.Members)
	})
}
