package messenger

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"klassenfunk/auth"
	"klassenfunk/internal/ids"
	"klassenfunk/proto"
	"klassenfunk/storage"
)

var (
	errNotFound  = proto.Errorf(proto.CodeNotFound, "not found")
	errForbidden = proto.Errorf(proto.CodeForbidden, "not allowed")
	// errStudentDirectOff answers a start of, or a write in, a direct
	// conversation between two students while their school forbids them.
	errStudentDirectOff = proto.Errorf(proto.CodeForbidden, "this school does not allow direct conversations between students")
)

// MaxGroupMembers caps a group's size (every member device needs a wrapped
// key in each message, and a send holds at most proto.MaxKeys keys).
const MaxGroupMembers = 500

// asProtoError maps store errors to API errors; other errors are logged
// and become internal.
func asProtoError(n *Node, err error) *proto.Error {
	var pe *proto.Error
	switch {
	case errors.As(err, &pe):
		return pe
	case errors.Is(err, storage.ErrNotFound):
		return errNotFound
	case errors.Is(err, storage.ErrConflict):
		return proto.Errorf(proto.CodeConflict, "conflict")
	case errors.Is(err, storage.ErrStale):
		// maxSendAttempts appends in a row met a membership change (a
		// conversation changed hundreds of times a second).
		return proto.Errorf(proto.CodeConflict, "the conversation kept changing; send again")
	}
	n.log.Error("internal error", "err", err)
	return proto.Errorf(proto.CodeInternal, "internal error")
}

// conversationFor returns the conversation when p is a member, else 404.
func (n *Node) conversationFor(ctx context.Context, p auth.Principal, id string) (storage.Conversation, storage.Member, error) {
	c, err := n.store.Conversation(ctx, id)
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return c, storage.Member{}, errNotFound
		}
		return c, storage.Member{}, err
	}
	m, ok := c.Member(p.User.ID)
	if !ok || c.School != p.User.School {
		return c, storage.Member{}, errNotFound
	}
	return c, m, nil
}

// schoolUser returns a user of p's school, else 404.
func (n *Node) schoolUser(ctx context.Context, p auth.Principal, id string) (storage.User, error) {
	u, err := n.store.User(ctx, id)
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return u, errNotFound
		}
		return u, err
	}
	if u.School != p.User.School {
		return u, errNotFound
	}
	return u, nil
}

// CreateDirect returns the direct conversation of p and peer, creating it
// when needed.
func (n *Node) CreateDirect(ctx context.Context, p auth.Principal, peerID string) (storage.Conversation, bool, error) {
	if peerID == "" {
		return storage.Conversation{}, false, proto.Errorf(proto.CodeInvalidRequest, "peer is required")
	}
	if peerID == p.User.ID {
		return storage.Conversation{}, false, proto.Errorf(proto.CodeInvalidRequest, "a direct conversation needs another user")
	}
	peer, err := n.schoolUser(ctx, p, peerID)
	if err != nil {
		return storage.Conversation{}, false, err
	}
	if p.User.Role == storage.RoleStudent && peer.Role == storage.RoleStudent {
		if err := n.studentDirectAllowed(ctx, p.User.School, false); err != nil {
			return storage.Conversation{}, false, err
		}
	}
	c := storage.Conversation{
		ID:      ids.New(),
		School:  p.User.School,
		Kind:    storage.ConvDirect,
		Creator: p.User.ID,
		Members: []storage.Member{
			{UserID: p.User.ID, CanWrite: true},
			{UserID: peer.ID, CanWrite: true},
		},
		CreatedAt: n.now().UTC(),
	}
	got, created, err := n.store.CreateDirect(ctx, c)
	if err != nil || created || len(got.Members) == 2 {
		return got, created, err
	}
	// One of the two has left it (RemoveMember): starting it again brings
	// both back.
	err = n.store.UpdateConversation(ctx, got.ID, func(cv *storage.Conversation) error {
		for _, id := range []string{p.User.ID, peer.ID} {
			if _, ok := cv.Member(id); !ok {
				cv.Members = append(cv.Members, storage.Member{UserID: id, CanWrite: true})
			}
		}
		return nil
	})
	if err != nil {
		return storage.Conversation{}, false, err
	}
	got, err = n.store.Conversation(ctx, got.ID)
	return got, false, err
}

// studentDirectAllowed returns errStudentDirectOff if school has switched
// off direct conversations between students.
// With cached, a switch read less than SchoolSwitchTTL ago serves.
func (n *Node) studentDirectAllowed(ctx context.Context, school string, cached bool) error {
	ttl := n.cfg.SchoolSwitchTTL
	on, ok := false, false
	if cached && ttl > 0 {
		on, ok = n.switches.get(school, time.Now(), ttl)
	}
	if !ok {
		read := time.Now()
		s, err := n.store.School(ctx, school)
		if err != nil {
			return err
		}
		on = !s.NoStudentDirect
		if ttl > 0 {
			n.switches.put(school, on, read)
		}
	}
	if !on {
		return errStudentDirectOff
	}
	return nil
}

// studentPair reports whether c is a direct conversation of two students,
// which the school's switch concerns. Roles never change, and a direct
// conversation only ever has its pair as members, so the answer is
// remembered (a conversation whose member was erased later keeps its
// answer; nobody writes to it any more).
func (n *Node) studentPair(ctx context.Context, c *storage.Conversation) (bool, error) {
	if c.Kind != storage.ConvDirect || len(c.Members) != 2 {
		return false, nil // a group, or one has left: nobody to write to
	}
	if pair, ok := n.pairs.get(c.ID); ok {
		return pair, nil
	}
	pair := true
	for _, m := range c.Members {
		u, err := n.store.User(ctx, m.UserID)
		if errors.Is(err, storage.ErrNotFound) {
			pair = false // erased
			break
		}
		if err != nil {
			return false, err
		}
		if u.Role != storage.RoleStudent {
			pair = false
			break
		}
	}
	n.pairs.put(c.ID, pair)
	return pair, nil
}

// pairMemo remembers studentPair's answers, at most pairMemoSize; when
// full it forgets an arbitrary one.
type pairMemo struct {
	mu sync.RWMutex
	m  map[string]bool
}

const pairMemoSize = 1 << 17

func (p *pairMemo) get(conv string) (pair, ok bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	pair, ok = p.m[conv]
	return pair, ok
}

func (p *pairMemo) put(conv string, pair bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = make(map[string]bool)
	}
	if len(p.m) >= pairMemoSize {
		for k := range p.m {
			delete(p.m, k)
			break
		}
	}
	p.m[conv] = pair
}

// NewMember is one entry of a new group's member list. Both fields are
// required.
type NewMember struct {
	UserID   string `json:"user_id"`
	CanWrite *bool  `json:"can_write"`
}

// CreateGroup creates a group conversation. Teachers and admins only; the
// creator is always a member with can_write.
func (n *Node) CreateGroup(ctx context.Context, p auth.Principal, title string, members []NewMember) (storage.Conversation, error) {
	if p.User.Role != storage.RoleTeacher && p.User.Role != storage.RoleAdmin {
		return storage.Conversation{}, proto.Errorf(proto.CodeForbidden, "only teachers and admins create groups")
	}
	title = strings.TrimSpace(title)
	if !proto.ValidName(title, 200) {
		return storage.Conversation{}, proto.Errorf(proto.CodeInvalidRequest, "title must be 1 to 200 characters, no control characters")
	}
	list := []storage.Member{{UserID: p.User.ID, CanWrite: true}}
	seen := map[string]bool{p.User.ID: true} // user → can_write
	for _, m := range members {
		if m.UserID == "" {
			return storage.Conversation{}, proto.Errorf(proto.CodeInvalidRequest, "members[].user_id is required")
		}
		if m.CanWrite == nil {
			return storage.Conversation{}, proto.Errorf(proto.CodeInvalidRequest, "members[].can_write is required")
		}
		if w, dup := seen[m.UserID]; dup {
			if m.UserID != p.User.ID && w != *m.CanWrite {
				return storage.Conversation{}, proto.Errorf(proto.CodeInvalidRequest, "members lists user %s twice with different can_write", m.UserID)
			}
			continue
		}
		seen[m.UserID] = *m.CanWrite
		// The creator counts; duplicates do not.
		if len(list) >= MaxGroupMembers {
			return storage.Conversation{}, proto.Errorf(proto.CodeInvalidRequest, "a group has at most %d members", MaxGroupMembers)
		}
		if _, err := n.schoolUser(ctx, p, m.UserID); err != nil {
			return storage.Conversation{}, err
		}
		list = append(list, storage.Member{UserID: m.UserID, CanWrite: *m.CanWrite})
	}
	c := storage.Conversation{
		ID: ids.New(), School: p.User.School, Kind: storage.ConvGroup, Title: title,
		Creator: p.User.ID, Members: list, CreatedAt: n.now().UTC(),
	}
	if err := n.store.CreateConversation(ctx, c); err != nil {
		return storage.Conversation{}, err
	}
	return c, nil
}

// Conversations lists p's conversations. While p's school forbids direct
// conversations between students, both members of such a conversation
// are listed without can_write, so that an app can grey out its composer.
func (n *Node) Conversations(ctx context.Context, p auth.Principal) ([]storage.Conversation, error) {
	cs, err := n.store.ConversationsOf(ctx, p.User.ID)
	if err != nil || p.User.Role != storage.RoleStudent {
		return cs, err // only a student can be in a student pair
	}
	switch err := n.studentDirectAllowed(ctx, p.User.School, false); {
	case errors.Is(err, errStudentDirectOff):
	case err != nil:
		return nil, err
	default:
		return cs, nil
	}
	for i := range cs {
		pair, err := n.studentPair(ctx, &cs[i])
		if err != nil {
			return nil, err
		}
		if pair {
			ms := slices.Clone(cs[i].Members) // a store may share them with its cache
			for j := range ms {
				ms[j].CanWrite = false
			}
			cs[i].Members = ms
		}
	}
	return cs, nil
}

// manageable returns a group p may manage: its creator or an admin of its
// school. Others get 404 if they cannot see it, 403 if they can.
func (n *Node) manageable(ctx context.Context, p auth.Principal, id string) (storage.Conversation, error) {
	c, err := n.store.Conversation(ctx, id)
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return c, errNotFound
		}
		return c, err
	}
	if c.School != p.User.School {
		return c, errNotFound
	}
	_, member := c.Member(p.User.ID)
	isAdmin := p.User.Role == storage.RoleAdmin
	if !member && !isAdmin {
		return c, errNotFound
	}
	if c.Kind != storage.ConvGroup {
		return c, proto.Errorf(proto.CodeForbidden, "members of a direct conversation cannot change")
	}
	if c.Creator != p.User.ID && !isAdmin {
		return c, errForbidden
	}
	return c, nil
}

// SetMember adds a member to a group or changes its right.
func (n *Node) SetMember(ctx context.Context, p auth.Principal, convID, userID string, canWrite bool) error {
	if _, err := n.manageable(ctx, p, convID); err != nil {
		return err
	}
	if _, err := n.schoolUser(ctx, p, userID); err != nil {
		return err
	}
	return n.store.UpdateConversation(ctx, convID, func(c *storage.Conversation) error {
		for i := range c.Members {
			if c.Members[i].UserID == userID {
				c.Members[i].CanWrite = canWrite
				return nil
			}
		}
		if len(c.Members) >= MaxGroupMembers {
			return proto.Errorf(proto.CodeConflict, "the group is full (%d members)", MaxGroupMembers)
		}
		c.Members = append(c.Members, storage.Member{UserID: userID, CanWrite: canWrite})
		return nil
	})
}

// RemoveMember removes a member from a group: its creator, a school admin
// or the member itself may. A member may also leave a direct conversation
// (nobody else may remove it); starting the conversation again
// (CreateDirect) brings it back.
func (n *Node) RemoveMember(ctx context.Context, p auth.Principal, convID, userID string) error {
	if userID == p.User.ID {
		if _, _, err := n.conversationFor(ctx, p, convID); err != nil {
			return err
		}
	} else if _, err := n.manageable(ctx, p, convID); err != nil {
		return err
	}
	return n.store.UpdateConversation(ctx, convID, func(c *storage.Conversation) error {
		i := slices.IndexFunc(c.Members, func(m storage.Member) bool { return m.UserID == userID })
		if i < 0 {
			return errNotFound
		}
		c.Members = slices.Delete(c.Members, i, i+1)
		return nil
	})
}

// PutKey sets the public key of the caller's device.
func (n *Node) PutKey(ctx context.Context, p auth.Principal, pub []byte) error {
	if len(pub) != 32 {
		return proto.Errorf(proto.CodeInvalidRequest, "public_key must be a 32-byte X25519 key in padded standard base64, without line breaks")
	}
	if p.Cred.Kind == storage.CredSession {
		if err := n.sessionMayPutKey(ctx, p, pub); err != nil {
			return err
		}
	}
	return n.store.PutDeviceKey(ctx, storage.DeviceKey{UserID: p.User.ID, DeviceID: p.Cred.DeviceID, PublicKey: pub})
}

// sessionMayPutKey refuses (409) a session's key for a device that has a
// trust relationship, unless the device has that very key. A device's key
// serves every credential of the user on that device id; a session there
// would otherwise outlive itself in the key (also one it puts before the
// trusted device has put any), and senders would wrap keys that the
// trusted device cannot open. The same installation sends the same key,
// which passes; a trusted device sets and changes its own key with its
// trust credential.
func (n *Node) sessionMayPutKey(ctx context.Context, p auth.Principal, pub []byte) error {
	creds, err := n.store.CredentialsOf(ctx, p.User.ID)
	if err != nil {
		return err
	}
	trusted := slices.ContainsFunc(creds, func(c storage.Credential) bool {
		return c.Kind == storage.CredTrust && c.DeviceID == p.Cred.DeviceID
	})
	if !trusted {
		return nil
	}
	keys, err := n.store.DeviceKeysOf(ctx, []string{p.User.ID})
	if err != nil {
		return err
	}
	for _, k := range keys {
		if k.DeviceID == p.Cred.DeviceID && bytes.Equal(k.PublicKey, pub) {
			return nil
		}
	}
	return proto.Errorf(proto.CodeConflict, "this device id has a trust relationship: only its own key may be put with a session (log in with another device id)")
}

// Devices lists the keys of every member device of a conversation.
func (n *Node) Devices(ctx context.Context, p auth.Principal, convID string) ([]storage.DeviceKey, error) {
	c, _, err := n.conversationFor(ctx, p, convID)
	if err != nil {
		return nil, err
	}
	users := make([]string, len(c.Members))
	for i, m := range c.Members {
		users[i] = m.UserID
	}
	return n.store.DeviceKeysOf(ctx, users)
}

// Send stores a message and publishes it: the one code path behind the
// send frame and POST /conversations/{id}/messages. created is false for a
// repeated client_id: the stored message is returned, nothing is stored
// again, and it is published again (publish).
func (n *Node) Send(ctx context.Context, p auth.Principal, s *proto.Send) (storage.Message, bool, error) {
	start := time.Now()
	if err := s.Validate(true); err != nil {
		return storage.Message{}, false, err
	}
	ra := n.revs
	cached := ra != nil
	for attempt := 1; ; attempt++ {
		c, prev, err := n.sendConversation(ctx, p, s, cached)
		if err != nil {
			return storage.Message{}, false, err
		}
		if prev != nil {
			return *prev, false, nil
		}
		now := n.now().UTC()
		for _, a := range s.Attachments {
			if err := n.attachmentUsable(ctx, p, a, now); err != nil {
				return storage.Message{}, false, err
			}
		}
		m := storage.Message{
			ID:           ids.NewSortable(now),
			Conversation: c.ID,
			SenderUser:   p.User.ID,
			SenderDevice: p.Cred.DeviceID,
			ClientID:     s.ClientID,
			SentAt:       now,
			ExpiresAt:    now.Add(n.cfg.MessageRetention),
			Ciphertext:   s.Ciphertext,
			Keys:         s.Keys,
			Attachments:  s.Attachments,
		}
		var stored storage.Message
		var created bool
		if ra != nil {
			stored, created, err = ra.AppendMessageRev(ctx, m, c.Rev)
			// The conversation changed since it was read (or, for a
			// cached copy, is gone): judge the send again on a fresh read.
			if (errors.Is(err, storage.ErrStale) || cached && errors.Is(err, storage.ErrNotFound)) && attempt < maxSendAttempts {
				n.convs.drop(c.ID)
				cached = false
				continue
			}
			if errors.Is(err, storage.ErrStale) {
				// Still changing after maxSendAttempts fresh reads, each of
				// which let the sender write: a retry of a stored message
				// is answered with it (as sendConversation does), anything
				// else with 409 (asProtoError) for the app to send again.
				if prev, perr := n.store.MessageByClientID(ctx, c.ID, p.User.ID, p.Cred.DeviceID, s.ClientID, n.now()); perr == nil {
					return prev, false, nil
				}
			}
		} else {
			stored, created, err = n.store.AppendMessage(ctx, m)
		}
		if err != nil {
			return storage.Message{}, false, err
		}
		if !created {
			// A retry: the node that stored the message may have died
			// before it published it (cluster: the app retries on another
			// node), and then no member would get it live or by push.
			// Published again, it is dropped by the sockets that have it
			// (a socket's seq span) and deduplicated by id by the apps
			// (API.md: at least once); a push still undelivered folds
			// into the first by its collapse key.
			n.publish(ctx, &c, p, stored)
			return stored, false, nil
		}
		n.metrics.stored.Inc()
		n.publish(ctx, &c, p, stored)
		n.metrics.sendLatency.Observe(time.Since(start).Seconds())
		return stored, true, nil
	}
}

// inlineFanout is the most users whose idle sockets the publishing
// goroutine writes a message to itself (Event.queued): a direct
// conversation or a class's group, not a school-wide one, where the
// sender's "sent" would wait for a thousand writes.
const inlineFanout = 64

// publish hands the stored message m to the member devices of c except
// the sender's: live through the broker, and to the push relay
// (OnMessage).
func (n *Node) publish(ctx context.Context, c *storage.Conversation, p auth.Principal, m storage.Message) {
	users := make([]string, len(c.Members))
	for i, mb := range c.Members {
		users[i] = mb.UserID
	}
	// The event and its message in one allocation.
	box := &struct {
		ev Event
		m  storage.Message
	}{m: m}
	box.ev = Event{Kind: EventMessage, Message: &box.m, ExcludeDevice: proto.KeyName(p.User.ID, p.Cred.DeviceID),
		queued: len(users) > inlineFanout}
	pctx := ctx
	if _, ok := ctx.Deadline(); ok {
		pctx = context.WithoutCancel(ctx) // stored: published even if the send's deadline has passed
	}
	if err := n.broker.Publish(pctx, users, &box.ev); err != nil {
		// Stored is what counts: receivers recover through sync.
		n.log.Warn("publish", "conv", c.ID, "err", err)
	}
	n.cfg.OnMessage(c, &box.m)
}

// frameContext is the context of the store calls a client's frame makes:
// bounded by Gateway.SendTimeout when set.
func (n *Node) frameContext() (context.Context, context.CancelFunc) {
	if d := n.cfg.Gateway.SendTimeout; d > 0 {
		return context.WithTimeout(context.Background(), d)
	}
	return context.Background(), func() {}
}

// maxSendAttempts bounds the appends of one send that find its
// conversation changed since it was read (each attempt reads it afresh).
const maxSendAttempts = 8

// sendConversation returns the conversation s goes to once p may write in
// it, with s.Keys kept to its members; or, when p may not but s is the
// retry of a message stored before, that message. With cached, a copy
// from n.convs serves when it allows the send as it stands (the append
// checks the copy's revision); anything else is judged on a fresh read.
func (n *Node) sendConversation(ctx context.Context, p auth.Principal, s *proto.Send, cached bool) (storage.Conversation, *storage.Message, error) {
	if cached {
		if c, ok := n.convs.get(s.Conversation); ok && c.School == p.User.School {
			if member, ok := c.Member(p.User.ID); ok && allMemberKeys(s.Keys, &c) &&
				n.mayWrite(ctx, p, &c, member, true) == nil {
				return c, nil, nil
			}
		}
	}
	c, member, err := n.conversationFor(ctx, p, s.Conversation)
	if err != nil {
		return c, nil, err
	}
	if n.revs != nil {
		n.convs.put(c)
	}
	err = n.mayWrite(ctx, p, &c, member, false)
	if err == nil && !keepMemberKeys(s.Keys, &c) {
		err = proto.Errorf(proto.CodeInvalidRequest, "keys must hold a wrapped key for a device of a member")
	}
	if err != nil {
		// A retry of a message stored before the right was lost (or its
		// readers left) is answered with that message: the app would
		// otherwise mark as failed what its members have already received.
		if prev, perr := n.store.MessageByClientID(ctx, c.ID, p.User.ID, p.Cred.DeviceID, s.ClientID, n.now()); perr == nil {
			return c, &prev, nil
		}
		return c, nil, err
	}
	return c, nil, nil
}

// allMemberKeys reports whether keys is not empty and every entry is for
// a member of c: keepMemberKeys would keep them all.
func allMemberKeys(keys map[string][]byte, c *storage.Conversation) bool {
	isMember := memberTest(keys, c)
	for name := range keys {
		if user, _, ok := proto.SplitKeyName(name); !ok || !isMember(user) {
			return false
		}
	}
	return len(keys) > 0
}

// memberTest returns a test of membership in c for len(keys) lookups.
func memberTest(keys map[string][]byte, c *storage.Conversation) func(user string) bool {
	if len(keys) > 16 && len(c.Members) > 16 {
		set := make(map[string]struct{}, len(c.Members))
		for _, m := range c.Members {
			set[m.UserID] = struct{}{}
		}
		return func(user string) bool { _, ok := set[user]; return ok }
	}
	return func(user string) bool { _, ok := c.Member(user); return ok }
}

// keepMemberKeys removes from keys the entries for users who are not
// members of c, and reports whether one for a member is left. Entries for
// others are never shown to anyone, also not to a user who joins later and
// would otherwise find a key written before it was a member. A message
// without a key for a member is one no member can decrypt: a client bug,
// which the server would store and show to every reader with empty keys.
func keepMemberKeys(keys map[string][]byte, c *storage.Conversation) bool {
	isMember := memberTest(keys, c)
	for name := range keys {
		if user, _, ok := proto.SplitKeyName(name); !ok || !isMember(user) {
			delete(keys, name)
		}
	}
	return len(keys) > 0
}

// mayWrite returns why p, with membership member, may not send to c, or
// nil: the right to write and, between two students, the school's switch.
func (n *Node) mayWrite(ctx context.Context, p auth.Principal, c *storage.Conversation, member storage.Member, cached bool) error {
	if !member.CanWrite {
		return proto.Errorf(proto.CodeForbidden, "you may not write in this conversation")
	}
	if p.User.Role != storage.RoleStudent {
		return nil
	}
	pair, err := n.studentPair(ctx, c)
	if err != nil || !pair {
		return err
	}
	return n.studentDirectAllowed(ctx, c.School, cached)
}

// History returns messages of a conversation after a seq.
func (n *Node) History(ctx context.Context, p auth.Principal, convID string, afterSeq uint64, limit int) ([]storage.Message, bool, error) {
	if _, _, err := n.conversationFor(ctx, p, convID); err != nil {
		return nil, false, err
	}
	return n.store.MessagesAfter(ctx, convID, afterSeq, limit, n.now())
}

// Message returns one message for a member of its conversation.
func (n *Node) Message(ctx context.Context, p auth.Principal, id string) (storage.Message, error) {
	m, err := n.store.Message(ctx, id, n.now())
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return m, errNotFound
		}
		return m, err
	}
	if _, _, err := n.conversationFor(ctx, p, m.Conversation); err != nil {
		return storage.Message{}, err
	}
	return m, nil
}

// toProto converts a stored message to its wire form (slices shared).
func toProto(m *storage.Message) proto.Message {
	return proto.Message{
		ID: m.ID, Conversation: m.Conversation, Seq: m.Seq,
		Sender: proto.Sender{UserID: m.SenderUser, DeviceID: m.SenderDevice},
		SentAt: m.SentAt, ExpiresAt: m.ExpiresAt,
		Ciphertext: m.Ciphertext, Keys: m.Keys, Attachments: m.Attachments,
	}
}
