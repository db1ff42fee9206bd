package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// A message is {P c:<conv>}m<seq>, holding H(ExpiresAt) followed by its
// JSON with Seq 0, in its conversation's slot together with the seq
// counter and the indexes (see scriptAppend). The expiry prefix lets the
// scripts skip expired messages without decoding them.

// msgClientKey returns the client key of m, "" for an empty ClientID. The
// device id is length-prefixed, so device and client ids may hold any
// bytes.
func msgClientKey(m *Message) string {
	if m.ClientID == "" {
		return ""
	}
	return m.SenderUser + "\x00" + strconv.Itoa(len(m.SenderDevice)) + ":" + m.SenderDevice + m.ClientID
}

// msgIdxMember is the entry of a message in {P x:m}e.
func msgIdxMember(expHex, conv, id string) string { return expHex + conv + "\x00" + id }

// decodeStoredMsg decodes a message value stored under seq.
func decodeStoredMsg(seq, v string) (Message, error) {
	var m Message
	if len(v) < 2*timeKeyLen {
		return m, fmt.Errorf("storage: corrupt message record (seq %s)", seq)
	}
	if err := decode([]byte(v[2*timeKeyLen:]), &m, "message"); err != nil {
		return m, err
	}
	n, err := strconv.ParseUint(seq, 10, 64)
	if err != nil {
		return m, fmt.Errorf("storage: corrupt message seq %q", seq)
	}
	m.Seq = n
	return m, nil
}

func (r *Redis) convScriptKeys(conv string, suffixes ...string) []string {
	ck := r.convKey(conv)
	keys := make([]string, 0, 1+len(suffixes))
	keys = append(keys, ck)
	for _, s := range suffixes {
		keys = append(keys, ck+s)
	}
	return keys
}

// AppendMessage implements Messages.
//
// Three steps: reserve the message id and its expiry-index entry in
// {P x:m} (ErrConflict when another conversation holds the id), run
// scriptAppend in the conversation's slot (client-id check, seq, message,
// indexes: atomic), then add the conversation to the attachments. When the
// script stores nothing, the reservation is withdrawn. A crash after the
// first step leaves a reservation that names no message, which the sweep
// removes when its time comes; a crash after the second leaves
// attachments unlinked until the sender's retry (same client id) links
// them.
func (r *Redis) AppendMessage(ctx context.Context, m Message) (Message, bool, error) {
	return r.AppendMessageRev(ctx, m, "")
}

// AppendMessageRev implements RevAppender: AppendMessage whose script
// first compares the conversation record with rev (empty: any).
func (r *Redis) AppendMessageRev(ctx context.Context, m Message, rev string) (Message, bool, error) {
	if err := r.check(ctx); err != nil {
		return Message{}, false, err
	}
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
	body, err := json.Marshal(m)
	if err != nil {
		return Message{}, false, fmt.Errorf("storage: encode message: %w", err)
	}
	expHex := hexTime(m.ExpiresAt)
	member := msgIdxMember(expHex, m.Conversation, m.ID)
	gkeys := []string{r.msgIDsKey(), r.msgIdxKey()}
	if r.local {
		return r.appendLocal(ctx, m, body, expHex, member, rev, gkeys)
	}
	n, err := scriptReserveMsg.Run(ctx, r.c, gkeys, m.ID, m.Conversation, msScore(m.ExpiresAt), member).Int()
	if err != nil {
		return Message{}, false, err
	}
	if n == 0 {
		return Message{}, false, ErrConflict
	}
	res, err := scriptAppend.Run(ctx, r.c, r.convScriptKeys(m.Conversation, "s", "q", "i", "k"),
		m.ID, msgClientKey(&m), expHex, body, hexTime(m.SentAt), r.backstop(m.ExpiresAt), rev).Slice()
	if err != nil {
		return Message{}, false, err
	}
	unreserve := func(drop bool) error {
		d := "0"
		if drop {
			d = "1"
		}
		return scriptUnreserveMsg.Run(ctx, r.c, gkeys, m.ID, m.Conversation, member, d).Err()
	}
	kind, _ := str(res[0])
	switch kind {
	case "ok":
		seq, ok := res[1].(int64)
		if !ok {
			return Message{}, false, fmt.Errorf("storage: append: unexpected reply %v", res)
		}
		m.Seq = uint64(seq)
		if err := r.linkAttachments(ctx, m.Attachments, m.Conversation); err != nil {
			return Message{}, false, err
		}
		return m, true, nil
	case "nf", "stale":
		if err := unreserve(true); err != nil {
			return Message{}, false, err
		}
		if kind == "stale" {
			return Message{}, false, ErrStale
		}
		return Message{}, false, ErrNotFound
	case "conflict":
		if stored, _ := str(res[1]); stored != expHex {
			if err := unreserve(false); err != nil {
				return Message{}, false, err
			}
		}
		return Message{}, false, ErrConflict
	case "dup":
		seq, _ := str(res[1])
		v, _ := str(res[2])
		idTaken, _ := res[3].(int64)
		prev, err := decodeStoredMsg(seq, v)
		if err != nil {
			return Message{}, false, err
		}
		if idTaken == 0 {
			if err := unreserve(true); err != nil {
				return Message{}, false, err
			}
		}
		// Repairs a link that a crash after the earlier append missed.
		if err := r.linkAttachments(ctx, prev.Attachments, prev.Conversation); err != nil {
			return Message{}, false, err
		}
		return prev, false, nil
	}
	return Message{}, false, fmt.Errorf("storage: append: unexpected reply %v", res)
}

// appendLocal is AppendMessage on a single Redis node: one script does
// it all, atomically.
func (r *Redis) appendLocal(ctx context.Context, m Message, body []byte, expHex, member, rev string, gkeys []string) (Message, bool, error) {
	keys := append(gkeys, r.convScriptKeys(m.Conversation, "s", "q", "i", "k")...)
	res, err := scriptAppendLocal.Run(ctx, r.c, keys,
		m.ID, msgClientKey(&m), expHex, body, hexTime(m.SentAt), r.backstop(m.ExpiresAt),
		m.Conversation, msScore(m.ExpiresAt), member, rev).Slice()
	if err != nil {
		return Message{}, false, err
	}
	kind, _ := str(res[0])
	switch kind {
	case "ok":
		seq, ok := res[1].(int64)
		if !ok {
			return Message{}, false, fmt.Errorf("storage: append: unexpected reply %v", res)
		}
		m.Seq = uint64(seq)
		if err := r.linkAttachments(ctx, m.Attachments, m.Conversation); err != nil {
			return Message{}, false, err
		}
		return m, true, nil
	case "nf":
		return Message{}, false, ErrNotFound
	case "stale":
		return Message{}, false, ErrStale
	case "conflict":
		return Message{}, false, ErrConflict
	case "dup":
		seq, _ := str(res[1])
		v, _ := str(res[2])
		prev, err := decodeStoredMsg(seq, v)
		if err != nil {
			return Message{}, false, err
		}
		if err := r.linkAttachments(ctx, prev.Attachments, prev.Conversation); err != nil {
			return Message{}, false, err
		}
		return prev, false, nil
	}
	return Message{}, false, fmt.Errorf("storage: append: unexpected reply %v", res)
}

// linkAttachments adds conv to the conversations of each existing
// attachment in ids.
func (r *Redis) linkAttachments(ctx context.Context, ids []string, conv string) error {
	ids = slices.DeleteFunc(slices.Compact(slices.Sorted(slices.Values(ids))), func(id string) bool { return !validID(id) })
	if len(ids) == 0 {
		return nil
	}
	_, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, id := range ids {
			ak := r.attKey(id)
			scriptLinkAtt.Eval(ctx, p, []string{ak, ak + "c"}, conv)
		}
		return nil
	})
	return err
}

// Message implements Messages: the conversation from {P x:m}i, then the
// message from its slot.
func (r *Redis) Message(ctx context.Context, id string, now time.Time) (Message, error) {
	if err := r.check(ctx); err != nil {
		return Message{}, err
	}
	if !validID(id) {
		return Message{}, ErrNotFound
	}
	conv, err := r.c.HGet(ctx, r.msgIDsKey(), id).Result()
	if isNil(err) {
		return Message{}, ErrNotFound
	}
	if err != nil {
		return Message{}, err
	}
	res, err := scriptGetMsg.Run(ctx, r.c, r.convScriptKeys(conv, "i"), id, hexTime(now)).StringSlice()
	if isNil(err) {
		return Message{}, ErrNotFound
	}
	if err != nil {
		return Message{}, err
	}
	if len(res) != 2 {
		return Message{}, fmt.Errorf("storage: message: unexpected reply %q", res)
	}
	return decodeStoredMsg(res[0], res[1])
}

// MessageByClientID implements Messages: the conversation's client-id
// hash, then the message it names.
func (r *Redis) MessageByClientID(ctx context.Context, conv, user, device, clientID string, now time.Time) (Message, error) {
	if err := r.check(ctx); err != nil {
		return Message{}, err
	}
	if clientID == "" || !validID(conv) {
		return Message{}, ErrNotFound
	}
	ck := r.convKey(conv)
	seq, err := r.c.HGet(ctx, ck+"k", msgClientKey(&Message{SenderUser: user, SenderDevice: device, ClientID: clientID})).Result()
	if isNil(err) {
		return Message{}, ErrNotFound
	}
	if err != nil {
		return Message{}, err
	}
	v, err := r.c.Get(ctx, ck+"m"+seq).Result()
	if isNil(err) {
		return Message{}, ErrNotFound
	}
	if err != nil {
		return Message{}, err
	}
	if len(v) < 24 || v[:24] <= hexTime(now) { // expired (the order of scriptAppend's gt)
		return Message{}, ErrNotFound
	}
	return decodeStoredMsg(seq, v)
}

// MessagesAfter implements Messages: one script that walks the seqs after
// afterSeq and skips expired messages. A limit of zero or less returns no
// messages and reports in more whether any follow.
func (r *Redis) MessagesAfter(ctx context.Context, conv string, afterSeq uint64, limit int, now time.Time) ([]Message, bool, error) {
	if err := r.check(ctx); err != nil {
		return nil, false, err
	}
	out := []Message{}
	if !validID(conv) || afterSeq == math.MaxUint64 {
		return out, false, nil
	}
	res, err := scriptMsgsAfter.Run(ctx, r.c, r.convScriptKeys(conv, "q"),
		strconv.FormatUint(afterSeq, 10), limit, hexTime(now)).Slice()
	if err != nil {
		return nil, false, err
	}
	more, _ := res[0].(int64)
	for i := 1; i+1 < len(res); i += 2 {
		seq, _ := str(res[i])
		v, _ := str(res[i+1])
		m, err := decodeStoredMsg(seq, v)
		if err != nil {
			return nil, false, err
		}
		out = append(out, m)
	}
	return out, more == 1, nil
}

// expiredEntry is an entry of an expiry index that is due.
type expiredEntry struct {
	member, exp, id string
	owner           string // a message's conversation, an attachment's uploader
}

// dueEntries returns up to max entries of the expiry index key whose time
// is not after now, oldest first. Members are H(ExpiresAt)+rest; split
// parses rest.
func (r *Redis) dueEntries(ctx context.Context, key string, now time.Time, max int, split func(rest string) (owner, id string)) ([]expiredEntry, error) {
	ms, err := r.c.ZRangeByScore(ctx, key, &redis.ZRangeBy{Min: "-inf", Max: msScore(now), Count: int64(max)}).Result()
	if err != nil {
		return nil, err
	}
	nowHex := hexTime(now)
	var out []expiredEntry
	for _, mem := range ms {
		// The score has millisecond precision; the member's H(t) prefix
		// orders entries of the same millisecond exactly.
		if !hexNotAfter(mem, nowHex) {
			break
		}
		owner, id := split(mem[2*timeKeyLen:])
		out = append(out, expiredEntry{member: mem, exp: mem[:2*timeKeyLen], owner: owner, id: id})
	}
	return out, nil
}

// DeleteExpiredMessages implements Messages. It takes up to max due
// entries of {P x:m}e, deletes the messages conversation by conversation
// (a message whose id now names one with another expiry stays), then the
// index entries. The conversations' LastSeq stays.
func (r *Redis) DeleteExpiredMessages(ctx context.Context, now time.Time, max int) (int, error) {
	if err := r.check(ctx); err != nil {
		return 0, err
	}
	if max <= 0 {
		return 0, nil
	}
	due, err := r.dueEntries(ctx, r.msgIdxKey(), now, max, func(rest string) (string, string) {
		conv, id, _ := strings.Cut(rest, "\x00")
		return conv, id
	})
	if err != nil || len(due) == 0 {
		return 0, err
	}
	byConv := map[string][]int{}
	var convs []string
	for i, e := range due {
		if _, ok := byConv[e.owner]; !ok {
			convs = append(convs, e.owner)
		}
		byConv[e.owner] = append(byConv[e.owner], i)
	}
	gone := make([]bool, len(due))
	for _, part := range slices.Collect(slices.Chunk(convs, pipeChunk)) {
		cmds := make([]*redis.Cmd, len(part))
		_, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for j, conv := range part {
				args := make([]any, 0, 2*len(byConv[conv]))
				for _, i := range byConv[conv] {
					args = append(args, due[i].id, due[i].exp)
				}
				cmds[j] = scriptDelMsgs.Eval(ctx, p, r.convScriptKeys(conv, "q", "i", "k"), args...)
			}
			return nil
		})
		if err != nil {
			return 0, err
		}
		for j, conv := range part {
			res, err := cmds[j].Int64Slice()
			if err != nil {
				return 0, err
			}
			for k, i := range byConv[conv] {
				gone[i] = k < len(res) && res[k] == 1
			}
		}
	}
	args := make([]any, 0, 4*len(due))
	for i, e := range due {
		g := "0"
		if gone[i] {
			g = "1"
		}
		args = append(args, e.member, e.id, e.owner, g)
	}
	if err := scriptUnindexMsgs.Run(ctx, r.c, []string{r.msgIDsKey(), r.msgIdxKey()}, args...).Err(); err != nil {
		return 0, err
	}
	return len(due), nil
}

// CountMessages implements Messages: the size of the message id index.
// Expired messages count until the sweep removes them, as do
// reservations of appends in flight.
func (r *Redis) CountMessages(ctx context.Context) (int, error) {
	if err := r.check(ctx); err != nil {
		return 0, err
	}
	n, err := r.c.HLen(ctx, r.msgIDsKey()).Result()
	return int(n), err
}

// Attachments: {P a:<id>} holds H(ExpiresAt) + the JSON without
// Conversations, {P a:<id>}c the conversations, {P u:<user>}a the
// uploader's index. An expiry-index entry names the uploader, so that the
// sweep removes an attachment from both indexes (an entry written before
// the uploader index has none).

// PutAttachment implements Attachments. The expiry-index entry is written
// first.
func (r *Redis) PutAttachment(ctx context.Context, a Attachment) error {
	if err := r.check(ctx); err != nil {
		return err
	}
	if err := checkID("attachment", a.ID); err != nil {
		return err
	}
	rec := a
	rec.Conversations = nil
	v, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("storage: encode attachment: %w", err)
	}
	expHex := hexTime(a.ExpiresAt)
	member := expHex + a.ID + "\x00" + a.Uploader
	score := float64(a.ExpiresAt.UnixMilli())
	if err := r.c.ZAdd(ctx, r.attIdxKey(), redis.Z{Score: score, Member: member}).Err(); err != nil {
		return err
	}
	if err := r.c.ZAdd(ctx, r.uploadsKey(a.Uploader), redis.Z{Score: score, Member: a.ID}).Err(); err != nil {
		return err
	}
	ak := r.attKey(a.ID)
	args := []any{expHex + string(v), r.backstop(a.ExpiresAt)}
	for _, c := range a.Conversations {
		args = append(args, c)
	}
	res, err := scriptPutAtt.Run(ctx, r.c, []string{ak, ak + "c"}, args...).Result()
	if err != nil {
		return err
	}
	if stored, ok := res.(string); ok {
		if stored != expHex { // another attachment: take back both entries
			if err := r.c.ZRem(ctx, r.attIdxKey(), member).Err(); err != nil {
				return err
			}
			if err := r.c.ZRem(ctx, r.uploadsKey(a.Uploader), a.ID).Err(); err != nil {
				return err
			}
		}
		return ErrConflict
	}
	return nil
}

// uploadsKey is the uploader index of user.
func (r *Redis) uploadsKey(user string) string { return r.userKey(user) + "a" }

// AttachmentsOf implements Attachments.
func (r *Redis) AttachmentsOf(ctx context.Context, uploader string, now time.Time) ([]Attachment, error) {
	if err := r.check(ctx); err != nil {
		return nil, err
	}
	ids, err := r.c.ZRangeByScore(ctx, r.uploadsKey(uploader), &redis.ZRangeBy{Min: msScore(now), Max: "+inf"}).Result()
	if err != nil {
		return nil, err
	}
	out := []Attachment{}
	// The records in pipelines of attPipeline ids (split by node in a
	// Redis Cluster), not one round trip each.
	for chunk := range slices.Chunk(ids, attPipeline) {
		reads := make([]attReads, len(chunk))
		_, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, id := range chunk {
				if validID(id) {
					reads[i] = r.queueAttachment(ctx, p, id)
				}
			}
			return nil
		})
		if err != nil && !isNil(err) {
			return nil, err
		}
		for i, id := range chunk {
			if reads[i].get == nil {
				continue
			}
			a, err := reads[i].attachment(id, now)
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, err
			}
			if a.Uploader == uploader {
				out = append(out, a)
			}
		}
	}
	sortAttachments(out)
	return out, nil
}

// attPipeline is how many attachment records AttachmentsOf reads per
// pipeline.
const attPipeline = 256

// Attachment implements Attachments.
func (r *Redis) Attachment(ctx context.Context, id string, now time.Time) (Attachment, error) {
	if err := r.check(ctx); err != nil {
		return Attachment{}, err
	}
	if !validID(id) {
		return Attachment{}, ErrNotFound
	}
	var q attReads
	_, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		q = r.queueAttachment(ctx, p, id)
		return nil
	})
	if err != nil && !isNil(err) {
		return Attachment{}, err
	}
	return q.attachment(id, now)
}

// attReads are the queued reads of one attachment: its record and the
// conversations it is shared in.
type attReads struct {
	get   *redis.StringCmd
	convs *redis.StringSliceCmd
}

func (r *Redis) queueAttachment(ctx context.Context, p redis.Pipeliner, id string) attReads {
	ak := r.attKey(id)
	return attReads{get: p.Get(ctx, ak), convs: p.SMembers(ctx, ak+"c")}
}

// attachment is the attachment q read, or ErrNotFound when it is gone or
// has expired at now.
func (q attReads) attachment(id string, now time.Time) (Attachment, error) {
	v, err := q.get.Result()
	if isNil(err) {
		return Attachment{}, ErrNotFound
	}
	if err != nil {
		return Attachment{}, err
	}
	if len(v) < 2*timeKeyLen {
		return Attachment{}, fmt.Errorf("storage: corrupt attachment record %q", id)
	}
	var a Attachment
	if err := decode([]byte(v[2*timeKeyLen:]), &a, "attachment"); err != nil {
		return Attachment{}, err
	}
	if !a.ExpiresAt.After(now) {
		return Attachment{}, ErrNotFound
	}
	if err := q.convs.Err(); err != nil {
		return Attachment{}, err
	}
	if cs := q.convs.Val(); len(cs) > 0 {
		slices.Sort(cs)
		a.Conversations = cs
	}
	return a, nil
}

// DeleteExpiredAttachments implements Attachments. An index entry whose
// attachment now has another expiry (its ID was reused) removes nothing
// and is not reported.
func (r *Redis) DeleteExpiredAttachments(ctx context.Context, now time.Time, max int) ([]string, error) {
	if err := r.check(ctx); err != nil {
		return nil, err
	}
	ids := []string{}
	if max <= 0 {
		return ids, nil
	}
	due, err := r.dueEntries(ctx, r.attIdxKey(), now, max, func(rest string) (string, string) {
		id, uploader, _ := strings.Cut(rest, "\x00")
		return uploader, id
	})
	if err != nil || len(due) == 0 {
		return ids, err
	}
	cmds := make([]*redis.Cmd, len(due))
	_, err = r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, e := range due {
			ak := r.attKey(e.id)
			cmds[i] = scriptDelAtt.Eval(ctx, p, []string{ak, ak + "c"}, e.exp)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	members := make([]any, 0, len(due))
	_, err = r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, e := range due {
			if n, _ := cmds[i].Int(); n == 1 {
				ids = append(ids, e.id)
				if e.owner != "" {
					p.ZRem(ctx, r.uploadsKey(e.owner), e.id)
				}
			}
			members = append(members, e.member)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := r.c.ZRem(ctx, r.attIdxKey(), members...).Err(); err != nil {
		return nil, err
	}
	return ids, nil
}
