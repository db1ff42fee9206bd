package storagetest

import (
	"testing"
	"time"

	"klassenfunk/storage"
)

// Erasure, notices and credential counts.

func normTombs(ts []storage.Tombstone) []storage.Tombstone {
	out := make([]storage.Tombstone, 0, len(ts))
	for _, t := range ts {
		t.ErasedAt = normTime(t.ErasedAt)
		out = append(out, t)
	}
	return out
}

func normNotices(ns []storage.Notice) []storage.Notice {
	out := make([]storage.Notice, 0, len(ns))
	for _, n := range ns {
		n.At = normTime(n.At)
		out = append(out, n)
	}
	return out
}

func memberIDs(c storage.Conversation) []string {
	out := []string{}
	for _, m := range c.Members {
		out = append(out, m.UserID)
	}
	return out
}

// eraseWorld is u1 (to be erased) and u2 with everything the store keeps of
// a user: credentials (one with a push registration and a pending push),
// login history, device keys, notices, group and direct conversations and
// messages.
func eraseWorld(t *testing.T, s storage.Store) {
	t.Helper()
	ctx := t.Context()
	mustUser(t, s, newUser("u1", "Erika.Muster", storage.RoleTeacher))
	mustUser(t, s, newUser("u2", "Ben", storage.RoleStudent))
	trust := newCred("c1", "u1", storage.CredTrust, at(time.Minute))
	trust.Push = &storage.PushRegistration{Provider: "fcm", Token: "fcm-token", Secret: []byte("0123456789abcdef0123456789abcdef"), UpdatedAt: base}
	mustCred(t, s, trust)
	mustCred(t, s, newCred("c2", "u1", storage.CredSession, at(2*time.Minute)))
	mustCred(t, s, newCred("c3", "u2", storage.CredTrust, at(3*time.Minute)))
	if po, ok := s.(storage.PushOutbox); ok {
		noErr(t, po.PutPushes(ctx, []storage.PushEntry{
			{CredID: "c1", UserID: "u1", DeviceID: "device-c1", Provider: "fcm", Conversation: "g1", MessageID: "m1", Seq: 1, ExpiresAt: at(day), EnqueuedAt: base},
			{CredID: "c3", UserID: "u2", DeviceID: "device-c3", Provider: "fcm", Conversation: "g1", MessageID: "m1", Seq: 1, ExpiresAt: at(day), EnqueuedAt: base},
		}), "PutPushes")
	}
	for _, u := range []string{"u1", "u2"} {
		noErr(t, s.RecordLoginFailure(ctx, u), "RecordLoginFailure "+u)
		noErr(t, s.RecordLoginSuccess(ctx, u, storage.LoginEvent{At: base, IP: "203.0.113.0", DeviceName: "Phone"}, 10), "RecordLoginSuccess "+u)
		noErr(t, s.AddNotice(ctx, u, storage.Notice{At: base, Kind: storage.NoticeCountryBlocked, Country: "FR", IP: "198.51.100.0"}, 20), "AddNotice "+u)
	}
	for _, k := range []storage.DeviceKey{
		{UserID: "u1", DeviceID: "device-c1", PublicKey: []byte("key-u1-1")},
		{UserID: "u1", DeviceID: "device-c2", PublicKey: []byte("key-u1-2")},
		{UserID: "u2", DeviceID: "device-c3", PublicKey: []byte("key-u2")},
	} {
		noErr(t, s.PutDeviceKey(ctx, k), "PutDeviceKey")
	}
	mustGroup(t, s, newGroup("g1", "u1", "u2"))
	mustGroup(t, s, newGroup("g2", "u1"))
	mustGroup(t, s, newGroup("g3", "u2"))
	_, created, err := s.CreateDirect(ctx, newDirect("d1", "u2", "u1"))
	noErr(t, err, "CreateDirect")
	eq(t, "CreateDirect created", created, true)
	mustAppend(t, s, newMsg("m1", "g1", "a", 0, day))         // sent by u1
	mustAppend(t, s, newMsg("m2", "d1", "b", time.Hour, day)) // sent by u1
	for _, u := range []string{"u1", "u2"} {
		noErr(t, s.PutAttachment(ctx, storage.Attachment{ID: "att-" + u, Uploader: u, Size: 1, CreatedAt: base, ExpiresAt: at(day)}), "PutAttachment")
	}
}

func testEraseUser(t *testing.T, s storage.Store) {
	ctx := t.Context()
	tombs, err := s.Tombstones(ctx)
	noErr(t, err, "Tombstones of an empty store")
	eq(t, "Tombstones of an empty store", len(tombs), 0)

	eraseWorld(t, s)
	erasedAt := at(5 * day)
	removed, err := s.EraseUser(ctx, "u1", erasedAt)
	noErr(t, err, "EraseUser")
	eq(t, "removed credentials", credIDs(removed), []string{"c1", "c2"})
	eq(t, "removed credentials keep their records", removed[0].Push != nil && removed[0].DeviceID == "device-c1", true)

	// Nothing of u1 is left.
	_, err = s.User(ctx, "u1")
	isErr(t, err, storage.ErrNotFound, "User after erasure")
	_, err = s.UserByLogin(ctx, "erika.muster")
	isErr(t, err, storage.ErrNotFound, "UserByLogin after erasure")
	for _, id := range []string{"c1", "c2"} {
		_, err = s.Credential(ctx, id)
		isErr(t, err, storage.ErrNotFound, "Credential "+id+" after erasure")
		_, err = s.CredentialByHash(ctx, hashOf("token-"+id))
		isErr(t, err, storage.ErrNotFound, "CredentialByHash "+id+" after erasure")
	}
	creds, err := s.CredentialsOf(ctx, "u1")
	noErr(t, err, "CredentialsOf")
	eq(t, "CredentialsOf after erasure", len(creds), 0)
	logins, err := s.Logins(ctx, "u1")
	noErr(t, err, "Logins")
	eq(t, "Logins after erasure", len(logins), 0)
	notices, err := s.Notices(ctx, "u1")
	noErr(t, err, "Notices")
	eq(t, "Notices after erasure", len(notices), 0)
	keys, err := s.DeviceKeysOf(ctx, []string{"u1", "u2"})
	noErr(t, err, "DeviceKeysOf")
	eq(t, "DeviceKeysOf after erasure", keys, []storage.DeviceKey{{UserID: "u2", DeviceID: "device-c3", PublicKey: []byte("key-u2")}})
	convs, err := s.ConversationsOf(ctx, "u1")
	noErr(t, err, "ConversationsOf")
	eq(t, "ConversationsOf after erasure", len(convs), 0)
	byRole, _, err := s.CountUsers(ctx)
	noErr(t, err, "CountUsers")
	eq(t, "CountUsers after erasure", nonZero(byRole), map[storage.Role]int{storage.RoleStudent: 1})
	kinds, err := s.CountCredentials(ctx)
	noErr(t, err, "CountCredentials")
	eq(t, "CountCredentials after erasure", nonZero(kinds), map[storage.CredKind]int{storage.CredTrust: 1})
	if po, ok := s.(storage.PushOutbox); ok {
		pending, err := po.PendingPushes(ctx)
		noErr(t, err, "PendingPushes")
		ids := []string{}
		for _, e := range pending {
			ids = append(ids, e.CredID)
		}
		eq(t, "pending pushes after erasure", ids, []string{"c3"})
		regs, err := po.CountRegistrations(ctx)
		noErr(t, err, "CountRegistrations")
		eq(t, "push registrations after erasure", nonZero(regs), map[string]int{})
	}

	// The conversations live on without u1; u1's messages stay until they
	// expire.
	for id, want := range map[string][]string{"g1": {"u2"}, "g2": {}, "g3": {"u2"}, "d1": {"u2"}} {
		c, err := s.Conversation(ctx, id)
		noErr(t, err, "Conversation "+id)
		eq(t, "members of "+id, memberIDs(c), want)
	}
	convs, err = s.ConversationsOf(ctx, "u2")
	noErr(t, err, "ConversationsOf u2")
	eq(t, "ConversationsOf u2", convIDs(convs), []string{"d1", "g1", "g3"})
	msgs, _, err := s.MessagesAfter(ctx, "g1", 0, 10, at(time.Hour))
	noErr(t, err, "MessagesAfter")
	eq(t, "messages of g1", seqsOf(msgs), []uint64{1})
	// So do u1's uploads, but no longer as u1's.
	_, err = s.Attachment(ctx, "att-u1", base)
	noErr(t, err, "Attachment uploaded by u1")
	uploads, err := s.AttachmentsOf(ctx, "u1", base)
	noErr(t, err, "AttachmentsOf u1")
	eq(t, "AttachmentsOf after erasure", len(uploads), 0)
	uploads, err = s.AttachmentsOf(ctx, "u2", base)
	noErr(t, err, "AttachmentsOf u2")
	eq(t, "AttachmentsOf u2", len(uploads), 1)

	// u2 is untouched.
	creds, err = s.CredentialsOf(ctx, "u2")
	noErr(t, err, "CredentialsOf u2")
	eq(t, "CredentialsOf u2", credIDs(creds), []string{"c3"})
	logins, err = s.Logins(ctx, "u2")
	noErr(t, err, "Logins u2")
	eq(t, "Logins u2", len(logins), 1)
	notices, err = s.Notices(ctx, "u2")
	noErr(t, err, "Notices u2")
	eq(t, "Notices u2", len(notices), 1)
	_, err = s.UserByLogin(ctx, "ben")
	noErr(t, err, "UserByLogin u2")

	// The tombstone; the login is free again, under a new ID.
	tombs, err = s.Tombstones(ctx)
	noErr(t, err, "Tombstones")
	eq(t, "Tombstones", normTombs(tombs), []storage.Tombstone{{UserID: "u1", ErasedAt: erasedAt}})
	mustUser(t, s, newUser("u9", "ERIKA.muster", storage.RoleParent))
	got, err := s.UserByLogin(ctx, "erika.muster")
	noErr(t, err, "UserByLogin of the reused login")
	eq(t, "the reused login's user", got.ID, "u9")
	_, created, err := s.CreateDirect(ctx, newDirect("d2", "u2", "u9"))
	noErr(t, err, "CreateDirect with the new user")
	eq(t, "CreateDirect with the new user created", created, true)

	// Again: nothing to do, the first time stays.
	removed, err = s.EraseUser(ctx, "u1", at(9*day))
	noErr(t, err, "EraseUser again")
	eq(t, "removed credentials the second time", len(removed), 0)
	// An ID that never existed: a tombstone all the same.
	removed, err = s.EraseUser(ctx, "ghost", at(7*day))
	noErr(t, err, "EraseUser of an unknown user")
	eq(t, "removed credentials of an unknown user", len(removed), 0)
	tombs, err = s.Tombstones(ctx)
	noErr(t, err, "Tombstones")
	eq(t, "Tombstones after the reruns", normTombs(tombs), []storage.Tombstone{
		{UserID: "u1", ErasedAt: erasedAt},
		{UserID: "ghost", ErasedAt: at(7 * day)},
	})
	_, err = s.User(ctx, "u9")
	noErr(t, err, "the login's new user survives a rerun for the old ID")

	_, err = s.EraseUser(ctx, "", at(0))
	if err == nil {
		t.Fatal("EraseUser with an empty ID: no error")
	}
}

// testEraseUserMany erases the only two members of a direct
// conversation, one after the other, and a user with many credentials.
func testEraseUserMany(t *testing.T, s storage.Store) {
	ctx := t.Context()
	mustUser(t, s, newUser("u1", "a", storage.RoleTeacher))
	mustUser(t, s, newUser("u2", "b", storage.RoleTeacher))
	_, _, err := s.CreateDirect(ctx, newDirect("d1", "u1", "u2"))
	noErr(t, err, "CreateDirect")
	var want []string
	for i := range 30 {
		c := newCred(string(rune('A'+i)), "u1", storage.CredTrust, at(time.Duration(i)*time.Second))
		mustCred(t, s, c)
		want = append(want, c.ID)
	}
	removed, err := s.EraseUser(ctx, "u1", at(day))
	noErr(t, err, "EraseUser u1")
	eq(t, "removed credentials, oldest first", credIDs(removed), want)
	_, err = s.EraseUser(ctx, "u2", at(2*day))
	noErr(t, err, "EraseUser u2")
	c, err := s.Conversation(ctx, "d1")
	noErr(t, err, "Conversation d1")
	eq(t, "members of d1", memberIDs(c), []string{})
	kinds, err := s.CountCredentials(ctx)
	noErr(t, err, "CountCredentials")
	eq(t, "CountCredentials", nonZero(kinds), map[storage.CredKind]int{})
	tombs, err := s.Tombstones(ctx)
	noErr(t, err, "Tombstones")
	eq(t, "Tombstones, oldest first", normTombs(tombs), []storage.Tombstone{
		{UserID: "u1", ErasedAt: at(day)}, {UserID: "u2", ErasedAt: at(2 * day)},
	})
}

func testNotices(t *testing.T, s storage.Store) {
	ctx := t.Context()
	n := func(i int) storage.Notice {
		return storage.Notice{At: at(time.Duration(i) * time.Minute), Kind: storage.NoticeCountryBlocked, Country: []string{"FR", ""}[i%2], IP: "198.51.100.0"}
	}
	isErr(t, s.AddNotice(ctx, "u1", n(0), 20), storage.ErrNotFound, "AddNotice of an unknown user")
	list, err := s.Notices(ctx, "u1")
	noErr(t, err, "Notices of an unknown user")
	eq(t, "Notices of an unknown user", len(list), 0)

	mustUser(t, s, newUser("u1", "a", storage.RoleStudent))
	mustUser(t, s, newUser("u2", "b", storage.RoleStudent))
	for i := range 4 {
		noErr(t, s.AddNotice(ctx, "u1", n(i), 3), "AddNotice")
	}
	list, err = s.Notices(ctx, "u1")
	noErr(t, err, "Notices")
	eq(t, "Notices, newest first, at most keep", normNotices(list), []storage.Notice{n(3), n(2), n(1)})
	list, err = s.Notices(ctx, "u2")
	noErr(t, err, "Notices of another user")
	eq(t, "Notices of another user", len(list), 0)
	noErr(t, s.AddNotice(ctx, "u1", n(4), 0), "AddNotice keep 0")
	list, err = s.Notices(ctx, "u1")
	noErr(t, err, "Notices after keep 0")
	eq(t, "Notices after keep 0", len(list), 0)
}

func testCountCredentials(t *testing.T, s storage.Store) {
	ctx := t.Context()
	kinds, err := s.CountCredentials(ctx)
	noErr(t, err, "CountCredentials of an empty store")
	eq(t, "CountCredentials of an empty store", nonZero(kinds), map[storage.CredKind]int{})
	for i, k := range []storage.CredKind{storage.CredTrust, storage.CredSession, storage.CredTrust, storage.CredTrust, storage.CredSession} {
		mustCred(t, s, newCred("c"+string(rune('0'+i)), []string{"u1", "u2"}[i%2], k, base))
	}
	kinds, err = s.CountCredentials(ctx)
	noErr(t, err, "CountCredentials")
	eq(t, "CountCredentials", nonZero(kinds), map[storage.CredKind]int{storage.CredTrust: 3, storage.CredSession: 2})
	_, err = s.DeleteCredential(ctx, "c0")
	noErr(t, err, "DeleteCredential")
	gone, err := s.DeleteExpiredSessions(ctx, at(day))
	noErr(t, err, "DeleteExpiredSessions")
	eq(t, "expired sessions", len(gone), 2)
	kinds, err = s.CountCredentials(ctx)
	noErr(t, err, "CountCredentials after deletes")
	eq(t, "CountCredentials after deletes", nonZero(kinds), map[storage.CredKind]int{storage.CredTrust: 2})
}
