// Package storagetest is the conformance suite that every storage backend
// must pass. A backend's _test.go file calls Run with a factory that opens
// a fresh, empty store for each subtest:
//
//	func TestBolt(t *testing.T) {
//		storagetest.Run(t, func(t *testing.T) storage.Store { … })
//	}
//
// The factory registers its own cleanup (t.Cleanup). Subtests run in
// parallel, each on its own store, and use fixed times, so results do not
// depend on the clock.
package storagetest

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"klassenfunk/storage"
)

// base is the fixed "now" the suite's times are built from.
var base = time.Date(2025, time.March, 3, 8, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return base.Add(d) }

// errBoom is what the fn of an UpdateX returns to abort.
var errBoom = errors.New("boom")

// Run runs the conformance suite against the stores open returns.
func Run(t *testing.T, open func(t *testing.T) storage.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s storage.Store)
	}{
		{"Meta", testMeta},
		{"Schools", testSchools},
		{"Users", testUsers},
		{"UserCountries", testUserCountries},
		{"UpdateUser", testUpdateUser},
		{"UpdateSchool", testUpdateSchool},
		{"BackendChoices", testBackendChoices},
		{"UsersOfSchool", testUsersOfSchool},
		{"CountUsers", testCountUsers},
		{"Credentials", testCredentials},
		{"TouchCredential", testTouchCredential},
		{"UpdateCredential", testUpdateCredential},
		{"DeleteCredential", testDeleteCredential},
		{"DeleteExpiredSessions", testDeleteExpiredSessions},
		{"LoginHistory", testLoginHistory},
		{"DeviceKeys", testDeviceKeys},
		{"Conversations", testConversations},
		{"UpdateConversation", testUpdateConversation},
		{"CreateDirect", testCreateDirect},
		{"CreateDirectConcurrent", testCreateDirectConcurrent},
		{"AppendMessage", testAppendMessage},
		{"AppendConcurrent", testAppendConcurrent},
		{"AppendReadableInOrder", testAppendReadableInOrder},
		{"AppendMessageRev", testAppendMessageRev},
		{"IdempotentClientID", testIdempotentClientID},
		{"IdempotentClientIDConcurrent", testIdempotentClientIDConcurrent},
		{"MessagesAfterPaging", testMessagesAfterPaging},
		{"MessageExpiry", testMessageExpiry},
		{"DeleteExpiredMessages", testDeleteExpiredMessages},
		{"CountMessages", testCountMessages},
		{"Attachments", testAttachments},
		{"AttachmentConversations", testAttachmentConversations},
		{"DeleteExpiredAttachments", testDeleteExpiredAttachments},
		{"AttachmentsOf", testAttachmentsOf},
		{"Ping", testPing},
		{"EraseUser", testEraseUser},
		{"EraseUserMany", testEraseUserMany},
		{"Notices", testNotices},
		{"CountCredentials", testCountCredentials},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, open(t))
		})
	}
	t.Run("Close", func(t *testing.T) {
		t.Parallel()
		testClose(t, open(t))
	})
}

// Assertions.

func noErr(t *testing.T, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: unexpected error: %v", what, err)
	}
}

func isErr(t *testing.T, err, want error, what string) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: error = %v, want %v", what, err, want)
	}
}

func eq[T any](t *testing.T, what string, got, want T) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s:\n got %+v\nwant %+v", what, got, want)
	}
}

// Normalisation: backends may return times in another location and empty
// collections as nil; neither is a difference.

func normTime(t time.Time) time.Time { return t.UTC() }

func normSchool(s storage.School) storage.School {
	s.CreatedAt = normTime(s.CreatedAt)
	return s
}

// normUser keeps Countries as it is: nil and empty differ.
func normUser(u storage.User) storage.User {
	u.CreatedAt = normTime(u.CreatedAt)
	return u
}

func normCred(c storage.Credential) storage.Credential {
	c.CreatedAt = normTime(c.CreatedAt)
	c.LastUsedAt = normTime(c.LastUsedAt)
	c.ExpiresAt = normTime(c.ExpiresAt)
	if c.Push != nil {
		p := *c.Push
		p.UpdatedAt = normTime(p.UpdatedAt)
		if len(p.Secret) == 0 {
			p.Secret = nil
		}
		c.Push = &p
	}
	return c
}

func normCreds(cs []storage.Credential) []storage.Credential {
	out := make([]storage.Credential, 0, len(cs))
	for _, c := range cs {
		out = append(out, normCred(c))
	}
	return out
}

func normLogins(evs []storage.LoginEvent) []storage.LoginEvent {
	out := make([]storage.LoginEvent, 0, len(evs))
	for _, ev := range evs {
		ev.At = normTime(ev.At)
		out = append(out, ev)
	}
	return out
}

func normConv(c storage.Conversation) storage.Conversation {
	c.CreatedAt = normTime(c.CreatedAt)
	c.Rev = "" // testAppendMessageRev covers it
	if len(c.Members) == 0 {
		c.Members = nil
	}
	return c
}

func normMsg(m storage.Message) storage.Message {
	m.SentAt = normTime(m.SentAt)
	m.ExpiresAt = normTime(m.ExpiresAt)
	if len(m.Ciphertext) == 0 {
		m.Ciphertext = nil
	}
	if len(m.Keys) == 0 {
		m.Keys = nil
	}
	if len(m.Attachments) == 0 {
		m.Attachments = nil
	}
	return m
}

// normAtt also sorts Conversations: their order is not specified.
func normAtt(a storage.Attachment) storage.Attachment {
	a.CreatedAt = normTime(a.CreatedAt)
	a.ExpiresAt = normTime(a.ExpiresAt)
	a.Conversations = slices.Sorted(slices.Values(a.Conversations))
	if len(a.Conversations) == 0 {
		a.Conversations = nil
	}
	return a
}

func seqsOf(ms []storage.Message) []uint64 {
	out := []uint64{}
	for _, m := range ms {
		out = append(out, m.Seq)
	}
	return out
}

func credIDs(cs []storage.Credential) []string {
	out := []string{}
	for _, c := range cs {
		out = append(out, c.ID)
	}
	return out
}

func convIDs(cs []storage.Conversation) []string {
	out := []string{}
	for _, c := range cs {
		out = append(out, c.ID)
	}
	return out
}

// Fixtures.

func hashOf(token string) storage.TokenHash { return sha256.Sum256([]byte(token)) }

func newUser(id, login string, role storage.Role) storage.User {
	return storage.User{
		ID:           id,
		School:       "s1",
		Login:        login,
		DisplayName:  "Name of " + id,
		Role:         role,
		PasswordHash: "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA",
		CreatedAt:    base,
	}
}

func mustUser(t *testing.T, s storage.Store, u storage.User) {
	t.Helper()
	noErr(t, s.CreateUser(t.Context(), u), "CreateUser "+u.ID)
}

func newCred(id, user string, kind storage.CredKind, created time.Time) storage.Credential {
	c := storage.Credential{
		ID:         id,
		TokenHash:  hashOf("token-" + id),
		Kind:       kind,
		UserID:     user,
		School:     "s1",
		DeviceID:   "device-" + id,
		DeviceName: "Phone of " + user,
		OS:         "android",
		CreatedAt:  created,
		LastUsedAt: created,
	}
	if kind == storage.CredSession {
		c.ExpiresAt = created.Add(30 * time.Minute)
	} else {
		c.ServiceID = "svc-" + id
	}
	return c
}

func mustCred(t *testing.T, s storage.Store, c storage.Credential) {
	t.Helper()
	noErr(t, s.PutCredential(t.Context(), c), "PutCredential "+c.ID)
}

func newGroup(id string, members ...string) storage.Conversation {
	c := storage.Conversation{
		ID:        id,
		School:    "s1",
		Kind:      storage.ConvGroup,
		Title:     "Group " + id,
		Creator:   members[0],
		CreatedAt: base,
	}
	for i, m := range members {
		c.Members = append(c.Members, storage.Member{UserID: m, CanWrite: i == 0})
	}
	return c
}

func mustGroup(t *testing.T, s storage.Store, c storage.Conversation) {
	t.Helper()
	noErr(t, s.CreateConversation(t.Context(), c), "CreateConversation "+c.ID)
}

func newDirect(id, a, b string) storage.Conversation {
	return storage.Conversation{
		ID:        id,
		School:    "s1",
		Kind:      storage.ConvDirect,
		Creator:   a,
		Members:   []storage.Member{{UserID: a, CanWrite: true}, {UserID: b, CanWrite: true}},
		CreatedAt: base,
	}
}

// newMsg returns a message sent at base+sent that expires at base+exp.
func newMsg(id, conv, clientID string, sent, exp time.Duration) storage.Message {
	return storage.Message{
		ID:           id,
		Conversation: conv,
		SenderUser:   "u1",
		SenderDevice: "phone",
		ClientID:     clientID,
		SentAt:       at(sent),
		ExpiresAt:    at(exp),
		Ciphertext:   []byte("ciphertext of " + id),
		Keys:         map[string][]byte{"u2/tablet": []byte("wrapped key of " + id)},
	}
}

const day = 24 * time.Hour

func mustAppend(t *testing.T, s storage.Store, m storage.Message) storage.Message {
	t.Helper()
	got, created, err := s.AppendMessage(t.Context(), m)
	noErr(t, err, "AppendMessage "+m.ID)
	if !created {
		t.Fatalf("AppendMessage %s: created = false, want true", m.ID)
	}
	return got
}

func lastSeqOf(t *testing.T, s storage.Store, conv string) uint64 {
	t.Helper()
	c, err := s.Conversation(t.Context(), conv)
	noErr(t, err, "Conversation "+conv)
	return c.LastSeq
}

func countMessages(t *testing.T, s storage.Store) int {
	t.Helper()
	n, err := s.CountMessages(t.Context())
	noErr(t, err, "CountMessages")
	return n
}

// Meta.

func testMeta(t *testing.T, s storage.Store) {
	ctx := t.Context()
	_, err := s.GetMeta(ctx, "operator_token")
	isErr(t, err, storage.ErrNotFound, "GetMeta of a missing key")

	in := []byte("v1")
	noErr(t, s.PutMeta(ctx, "operator_token", in), "PutMeta")
	in[0] = 'X' // the store must have copied it
	got, err := s.GetMeta(ctx, "operator_token")
	noErr(t, err, "GetMeta")
	eq(t, "GetMeta", string(got), "v1")
	got[0] = 'Y' // and must hand out a copy
	got, err = s.GetMeta(ctx, "operator_token")
	noErr(t, err, "GetMeta")
	eq(t, "GetMeta after changing the returned slice", string(got), "v1")

	noErr(t, s.PutMeta(ctx, "operator_token", []byte("v2")), "PutMeta overwrite")
	got, err = s.GetMeta(ctx, "operator_token")
	noErr(t, err, "GetMeta")
	eq(t, "GetMeta after overwrite", string(got), "v2")

	noErr(t, s.PutMeta(ctx, "empty", []byte{}), "PutMeta empty value")
	got, err = s.GetMeta(ctx, "empty")
	noErr(t, err, "GetMeta of an empty value")
	eq(t, "len of empty value", len(got), 0)

	_, err = s.GetMeta(ctx, "Operator_Token")
	isErr(t, err, storage.ErrNotFound, "GetMeta keys are case-sensitive")
}

// Accounts.

func testSchools(t *testing.T, s storage.Store) {
	ctx := t.Context()
	_, err := s.School(ctx, "s1")
	isErr(t, err, storage.ErrNotFound, "School of an empty store")
	list, err := s.Schools(ctx)
	noErr(t, err, "Schools of an empty store")
	eq(t, "Schools of an empty store", len(list), 0)

	schools := []storage.School{
		{ID: "s1", Name: "Zebra-Gymnasium", CreatedAt: at(time.Hour)},
		{ID: "s2", Name: "Albert-Schule", NoStudentDirect: true, CreatedAt: at(2 * time.Hour)},
		{ID: "s3", Name: "Mittelschule", CreatedAt: at(3 * time.Hour)},
	}
	for _, sc := range schools {
		noErr(t, s.CreateSchool(ctx, sc), "CreateSchool "+sc.ID)
	}
	for _, sc := range schools {
		got, err := s.School(ctx, sc.ID)
		noErr(t, err, "School "+sc.ID)
		eq(t, "School "+sc.ID, normSchool(got), sc)
	}

	err = s.CreateSchool(ctx, storage.School{ID: "s1", Name: "Other", CreatedAt: base})
	isErr(t, err, storage.ErrConflict, "CreateSchool with a taken ID")
	got, err := s.School(ctx, "s1")
	noErr(t, err, "School s1")
	eq(t, "School s1 after the conflict", got.Name, "Zebra-Gymnasium")

	list, err = s.Schools(ctx)
	noErr(t, err, "Schools")
	var names []string
	for _, sc := range list {
		names = append(names, sc.Name)
	}
	eq(t, "Schools ordered by name", names, []string{"Albert-Schule", "Mittelschule", "Zebra-Gymnasium"})
	eq(t, "Schools()[0]", normSchool(list[0]), schools[1])
}

func testUsers(t *testing.T, s storage.Store) {
	ctx := t.Context()
	_, err := s.User(ctx, "u1")
	isErr(t, err, storage.ErrNotFound, "User of an empty store")
	_, err = s.UserByLogin(ctx, "anna")
	isErr(t, err, storage.ErrNotFound, "UserByLogin of an empty store")

	u1 := newUser("u1", "Anna.Schmidt", storage.RoleTeacher)
	u1.Countries = []string{"DE", "AT"}
	mustUser(t, s, u1)

	got, err := s.User(ctx, "u1")
	noErr(t, err, "User")
	eq(t, "User", normUser(got), u1)
	for _, login := range []string{"Anna.Schmidt", "anna.schmidt", "ANNA.SCHMIDT", "aNNA.sCHMIDT"} {
		got, err := s.UserByLogin(ctx, login)
		noErr(t, err, "UserByLogin "+login)
		eq(t, "UserByLogin "+login, normUser(got), u1)
	}
	_, err = s.UserByLogin(ctx, "anna.schmid")
	isErr(t, err, storage.ErrNotFound, "UserByLogin of a prefix")
	_, err = s.User(ctx, "u2")
	isErr(t, err, storage.ErrNotFound, "User of a missing ID")

	// A taken ID, with a free login.
	dupID := newUser("u1", "someone.else", storage.RoleStudent)
	isErr(t, s.CreateUser(ctx, dupID), storage.ErrConflict, "CreateUser with a taken ID")
	_, err = s.UserByLogin(ctx, "someone.else")
	isErr(t, err, storage.ErrNotFound, "the conflicting user's login must not be stored")
	got, err = s.User(ctx, "u1")
	noErr(t, err, "User")
	eq(t, "User after the ID conflict", normUser(got), u1)

	// A taken login in another case, with a free ID.
	dupLogin := newUser("u2", "ANNA.schmidt", storage.RoleStudent)
	isErr(t, s.CreateUser(ctx, dupLogin), storage.ErrConflict, "CreateUser with a taken login in another case")
	_, err = s.User(ctx, "u2")
	isErr(t, err, storage.ErrNotFound, "the conflicting user must not be stored")

	// Logins are server-wide: another school does not help.
	other := newUser("u3", "anna.SCHMIDT", storage.RoleStudent)
	other.School = "s2"
	isErr(t, s.CreateUser(ctx, other), storage.ErrConflict, "CreateUser with a login taken in another school")

	u4 := newUser("u4", "Ben", storage.RoleStudent)
	mustUser(t, s, u4)
	got, err = s.UserByLogin(ctx, "bEN")
	noErr(t, err, "UserByLogin bEN")
	eq(t, "UserByLogin bEN", got.ID, "u4")
}

func testUserCountries(t *testing.T, s storage.Store) {
	ctx := t.Context()
	none := newUser("u1", "none", storage.RoleStudent) // Countries nil: no restriction
	empty := newUser("u2", "empty", storage.RoleStudent)
	empty.Countries = []string{} // no country allowed
	some := newUser("u3", "some", storage.RoleStudent)
	some.Countries = []string{"DE"}
	for _, u := range []storage.User{none, empty, some} {
		mustUser(t, s, u)
	}
	got, err := s.User(ctx, "u1")
	noErr(t, err, "User u1")
	if got.Countries != nil {
		t.Fatalf("nil Countries came back as %#v", got.Countries)
	}
	got, err = s.User(ctx, "u2")
	noErr(t, err, "User u2")
	if got.Countries == nil || len(got.Countries) != 0 {
		t.Fatalf("empty Countries came back as %#v, want []string{}", got.Countries)
	}
	got, err = s.UserByLogin(ctx, "EMPTY")
	noErr(t, err, "UserByLogin EMPTY")
	if got.Countries == nil {
		t.Fatal("empty Countries came back as nil from UserByLogin")
	}
	got, err = s.User(ctx, "u3")
	noErr(t, err, "User u3")
	eq(t, "Countries", got.Countries, []string{"DE"})

	noErr(t, s.UpdateUser(ctx, "u3", func(u *storage.User) error {
		u.Countries = []string{}
		return nil
	}), "UpdateUser to empty Countries")
	got, err = s.User(ctx, "u3")
	noErr(t, err, "User u3")
	if got.Countries == nil || len(got.Countries) != 0 {
		t.Fatalf("Countries set empty by UpdateUser came back as %#v", got.Countries)
	}
	noErr(t, s.UpdateUser(ctx, "u3", func(u *storage.User) error {
		u.Countries = nil
		return nil
	}), "UpdateUser to nil Countries")
	got, err = s.User(ctx, "u3")
	noErr(t, err, "User u3")
	if got.Countries != nil {
		t.Fatalf("Countries set nil by UpdateUser came back as %#v", got.Countries)
	}
}

func testUpdateUser(t *testing.T, s storage.Store) {
	ctx := t.Context()
	u1 := newUser("u1", "Anna", storage.RoleTeacher)
	mustUser(t, s, u1)

	var seen storage.User
	noErr(t, s.UpdateUser(ctx, "u1", func(u *storage.User) error {
		seen = *u
		u.DisplayName = "Anna S."
		u.Disabled = true
		u.Countries = []string{"DE"}
		u.PasswordHash = "new-hash"
		return nil
	}), "UpdateUser")
	eq(t, "fn sees the stored user", normUser(seen), u1)
	want := u1
	want.DisplayName, want.Disabled, want.Countries, want.PasswordHash = "Anna S.", true, []string{"DE"}, "new-hash"
	got, err := s.User(ctx, "u1")
	noErr(t, err, "User")
	eq(t, "User after UpdateUser", normUser(got), want)
	got, err = s.UserByLogin(ctx, "anna")
	noErr(t, err, "UserByLogin")
	eq(t, "UserByLogin after UpdateUser", normUser(got), want)

	err = s.UpdateUser(ctx, "u1", func(u *storage.User) error {
		u.DisplayName = "must not be written"
		u.Disabled = false
		return fmt.Errorf("wrapped: %w", errBoom)
	})
	isErr(t, err, errBoom, "UpdateUser returns fn's error")
	got, err = s.User(ctx, "u1")
	noErr(t, err, "User")
	eq(t, "User after an aborted UpdateUser", normUser(got), want)

	called := false
	err = s.UpdateUser(ctx, "u9", func(*storage.User) error { called = true; return nil })
	isErr(t, err, storage.ErrNotFound, "UpdateUser of a missing user")
	if called {
		t.Fatal("UpdateUser called fn for a missing user")
	}
}

// nonZero drops zero counts, which a backend may or may not report.
func nonZero[K comparable](m map[K]int) map[K]int {
	out := map[K]int{}
	for k, v := range m {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}

func testCountUsers(t *testing.T, s storage.Store) {
	ctx := t.Context()
	byRole, byStatus, err := s.CountUsers(ctx)
	noErr(t, err, "CountUsers of an empty store")
	eq(t, "byRole of an empty store", nonZero(byRole), map[storage.Role]int{})
	eq(t, "byStatus of an empty store", nonZero(byStatus), map[string]int{})

	users := []struct {
		id       string
		role     storage.Role
		disabled bool
	}{
		{"u1", storage.RoleAdmin, false},
		{"u2", storage.RoleTeacher, false},
		{"u3", storage.RoleTeacher, true},
		{"u4", storage.RoleStudent, false},
		{"u5", storage.RoleStudent, false},
		{"u6", storage.RoleStudent, true},
		{"u7", storage.RoleParent, false},
	}
	for _, x := range users {
		u := newUser(x.id, "login-"+x.id, x.role)
		u.Disabled = x.disabled
		mustUser(t, s, u)
	}
	byRole, byStatus, err = s.CountUsers(ctx)
	noErr(t, err, "CountUsers")
	eq(t, "byRole", nonZero(byRole), map[storage.Role]int{
		storage.RoleAdmin: 1, storage.RoleTeacher: 2, storage.RoleStudent: 3, storage.RoleParent: 1,
	})
	eq(t, "byStatus", nonZero(byStatus), map[string]int{"active": 5, "disabled": 2})

	noErr(t, s.UpdateUser(ctx, "u4", func(u *storage.User) error { u.Disabled = true; return nil }), "UpdateUser")
	_, byStatus, err = s.CountUsers(ctx)
	noErr(t, err, "CountUsers")
	eq(t, "byStatus after disabling one", nonZero(byStatus), map[string]int{"active": 4, "disabled": 3})
}

// Credentials.

func testCredentials(t *testing.T, s storage.Store) {
	ctx := t.Context()
	_, err := s.Credential(ctx, "c1")
	isErr(t, err, storage.ErrNotFound, "Credential of an empty store")
	_, err = s.CredentialByHash(ctx, hashOf("token-c1"))
	isErr(t, err, storage.ErrNotFound, "CredentialByHash of an empty store")
	list, err := s.CredentialsOf(ctx, "u1")
	noErr(t, err, "CredentialsOf of an empty store")
	eq(t, "CredentialsOf of an empty store", len(list), 0)

	// IDs sort the other way round from creation, to see the order.
	c1 := newCred("c1", "u1", storage.CredTrust, at(3*time.Hour))
	c1.Push = &storage.PushRegistration{Provider: "fcm", Token: "fcm-token", Secret: []byte("0123456789abcdef0123456789abcdef"), UpdatedAt: at(3 * time.Hour)}
	c2 := newCred("c2", "u1", storage.CredSession, at(2*time.Hour))
	c3 := newCred("c3", "u1", storage.CredTrust, at(1*time.Hour))
	c3.OS = "ios"
	c4 := newCred("c4", "u2", storage.CredTrust, at(1*time.Hour))
	for _, c := range []storage.Credential{c1, c2, c3, c4} {
		mustCred(t, s, c)
	}

	for _, c := range []storage.Credential{c1, c2, c3, c4} {
		got, err := s.Credential(ctx, c.ID)
		noErr(t, err, "Credential "+c.ID)
		eq(t, "Credential "+c.ID, normCred(got), c)
		got, err = s.CredentialByHash(ctx, c.TokenHash)
		noErr(t, err, "CredentialByHash "+c.ID)
		eq(t, "CredentialByHash "+c.ID, normCred(got), c)
	}
	_, err = s.CredentialByHash(ctx, hashOf("token-c9"))
	isErr(t, err, storage.ErrNotFound, "CredentialByHash of an unknown hash")

	list, err = s.CredentialsOf(ctx, "u1")
	noErr(t, err, "CredentialsOf u1")
	eq(t, "CredentialsOf u1, oldest first", normCreds(list), []storage.Credential{c3, c2, c1})
	list, err = s.CredentialsOf(ctx, "u2")
	noErr(t, err, "CredentialsOf u2")
	eq(t, "CredentialsOf u2", normCreds(list), []storage.Credential{c4})
	list, err = s.CredentialsOf(ctx, "u9")
	noErr(t, err, "CredentialsOf u9")
	eq(t, "CredentialsOf of a user without credentials", len(list), 0)

	// Put replaces by ID, the token hash included.
	c1b := c1
	c1b.TokenHash = hashOf("rotated")
	c1b.DeviceName = "Renamed"
	c1b.Push = nil
	mustCred(t, s, c1b)
	_, err = s.CredentialByHash(ctx, c1.TokenHash)
	isErr(t, err, storage.ErrNotFound, "CredentialByHash of the replaced hash")
	got, err := s.CredentialByHash(ctx, c1b.TokenHash)
	noErr(t, err, "CredentialByHash of the new hash")
	eq(t, "CredentialByHash after replace", normCred(got), c1b)
	got, err = s.Credential(ctx, "c1")
	noErr(t, err, "Credential after replace")
	eq(t, "Credential after replace", normCred(got), c1b)
	list, err = s.CredentialsOf(ctx, "u1")
	noErr(t, err, "CredentialsOf after replace")
	eq(t, "CredentialsOf after replace", normCreds(list), []storage.Credential{c3, c2, c1b})
}

func testTouchCredential(t *testing.T, s storage.Store) {
	ctx := t.Context()
	trust := newCred("c1", "u1", storage.CredTrust, base)
	sess := newCred("c2", "u1", storage.CredSession, base) // expires base+30m
	mustCred(t, s, trust)
	mustCred(t, s, sess)

	noErr(t, s.TouchCredential(ctx, "c1", at(time.Hour), time.Time{}), "TouchCredential trust")
	want := trust
	want.LastUsedAt = at(time.Hour)
	got, err := s.Credential(ctx, "c1")
	noErr(t, err, "Credential c1")
	eq(t, "trust credential after touch", normCred(got), want)

	noErr(t, s.TouchCredential(ctx, "c2", at(10*time.Minute), at(40*time.Minute)), "TouchCredential session")
	wantS := sess
	wantS.LastUsedAt, wantS.ExpiresAt = at(10*time.Minute), at(40*time.Minute)
	got, err = s.CredentialByHash(ctx, sess.TokenHash)
	noErr(t, err, "CredentialByHash c2")
	eq(t, "session after touch", normCred(got), wantS)

	// A zero expiresAt leaves ExpiresAt alone.
	noErr(t, s.TouchCredential(ctx, "c2", at(20*time.Minute), time.Time{}), "TouchCredential session, zero expiresAt")
	wantS.LastUsedAt = at(20 * time.Minute)
	got, err = s.Credential(ctx, "c2")
	noErr(t, err, "Credential c2")
	eq(t, "session after touch with zero expiresAt", normCred(got), wantS)

	isErr(t, s.TouchCredential(ctx, "c9", at(time.Hour), time.Time{}), storage.ErrNotFound, "TouchCredential of a missing credential")
	_, err = s.Credential(ctx, "c9")
	isErr(t, err, storage.ErrNotFound, "TouchCredential must not create a credential")

	// Concurrent touches, among them touches of a missing credential,
	// which must fail alone.
	const n = 30
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			switch i % 3 {
			case 0:
				errs[i] = s.TouchCredential(ctx, "c1", at(2*time.Hour+time.Duration(i)*time.Second), time.Time{})
			case 1:
				errs[i] = s.TouchCredential(ctx, "c2", at(2*time.Hour+time.Duration(i)*time.Second), at(3*time.Hour))
			case 2:
				errs[i] = s.TouchCredential(ctx, "gone", at(2*time.Hour), time.Time{})
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		if i%3 == 2 {
			isErr(t, err, storage.ErrNotFound, fmt.Sprintf("concurrent touch %d of a missing credential", i))
		} else {
			noErr(t, err, fmt.Sprintf("concurrent touch %d", i))
		}
	}
	got, err = s.Credential(ctx, "c2")
	noErr(t, err, "Credential c2")
	eq(t, "ExpiresAt after concurrent touches", normTime(got.ExpiresAt), at(3*time.Hour))
	d := got.LastUsedAt.Sub(at(2 * time.Hour))
	if d < 0 || d >= n*time.Second || d%(3*time.Second) != time.Second {
		t.Fatalf("LastUsedAt after concurrent touches = %v, not one of the touched values", got.LastUsedAt)
	}
	got, err = s.Credential(ctx, "c1")
	noErr(t, err, "Credential c1")
	eq(t, "trust ExpiresAt after concurrent touches", got.ExpiresAt.IsZero(), true)
}

func testUpdateCredential(t *testing.T, s storage.Store) {
	ctx := t.Context()
	c1 := newCred("c1", "u1", storage.CredTrust, base)
	mustCred(t, s, c1)

	reg := &storage.PushRegistration{
		Provider: "apns", Token: "apns-token", Topic: "de.klassenfunk.app", Sandbox: true,
		Secret: []byte("0123456789abcdef0123456789abcdef"), UpdatedAt: at(time.Hour),
	}
	var seen storage.Credential
	noErr(t, s.UpdateCredential(ctx, "c1", func(c *storage.Credential) error {
		seen = *c
		p := *reg
		c.Push = &p
		return nil
	}), "UpdateCredential set push")
	eq(t, "fn sees the stored credential", normCred(seen), c1)
	want := c1
	want.Push = reg
	got, err := s.Credential(ctx, "c1")
	noErr(t, err, "Credential")
	eq(t, "Credential after UpdateCredential", normCred(got), want)
	got, err = s.CredentialByHash(ctx, c1.TokenHash)
	noErr(t, err, "CredentialByHash")
	eq(t, "CredentialByHash after UpdateCredential", normCred(got), want)

	err = s.UpdateCredential(ctx, "c1", func(c *storage.Credential) error {
		c.Push = nil
		c.DeviceName = "must not be written"
		return errBoom
	})
	isErr(t, err, errBoom, "UpdateCredential returns fn's error")
	got, err = s.Credential(ctx, "c1")
	noErr(t, err, "Credential")
	eq(t, "Credential after an aborted UpdateCredential", normCred(got), want)

	noErr(t, s.UpdateCredential(ctx, "c1", func(c *storage.Credential) error {
		c.Push = nil
		return nil
	}), "UpdateCredential remove push")
	got, err = s.CredentialByHash(ctx, c1.TokenHash)
	noErr(t, err, "CredentialByHash")
	eq(t, "CredentialByHash after removing push", normCred(got), c1)

	called := false
	err = s.UpdateCredential(ctx, "c9", func(*storage.Credential) error { called = true; return nil })
	isErr(t, err, storage.ErrNotFound, "UpdateCredential of a missing credential")
	if called {
		t.Fatal("UpdateCredential called fn for a missing credential")
	}
}

func testDeleteCredential(t *testing.T, s storage.Store) {
	ctx := t.Context()
	c1 := newCred("c1", "u1", storage.CredTrust, base)
	c1.Push = &storage.PushRegistration{Provider: "fcm", Token: "tok", Secret: []byte("secret"), UpdatedAt: base}
	c2 := newCred("c2", "u1", storage.CredSession, at(time.Hour))
	mustCred(t, s, c1)
	mustCred(t, s, c2)

	got, err := s.DeleteCredential(ctx, "c1")
	noErr(t, err, "DeleteCredential")
	eq(t, "DeleteCredential returns the removed record", normCred(got), c1)
	_, err = s.Credential(ctx, "c1")
	isErr(t, err, storage.ErrNotFound, "Credential after delete")
	_, err = s.CredentialByHash(ctx, c1.TokenHash)
	isErr(t, err, storage.ErrNotFound, "CredentialByHash after delete")
	list, err := s.CredentialsOf(ctx, "u1")
	noErr(t, err, "CredentialsOf after delete")
	eq(t, "CredentialsOf after delete", normCreds(list), []storage.Credential{c2})

	_, err = s.DeleteCredential(ctx, "c1")
	isErr(t, err, storage.ErrNotFound, "DeleteCredential twice")
	_, err = s.DeleteCredential(ctx, "c9")
	isErr(t, err, storage.ErrNotFound, "DeleteCredential of a missing credential")

	// The ID and the hash can be used again.
	mustCred(t, s, c1)
	got, err = s.CredentialByHash(ctx, c1.TokenHash)
	noErr(t, err, "CredentialByHash after re-create")
	eq(t, "CredentialByHash after re-create", normCred(got), c1)
}

func testDeleteExpiredSessions(t *testing.T, s storage.Store) {
	ctx := t.Context()
	now := at(time.Hour)
	session := func(id string, exp time.Time) storage.Credential {
		c := newCred(id, "u1", storage.CredSession, base)
		c.ExpiresAt = exp
		return c
	}
	past := session("s-past", at(30*time.Minute))
	equal := session("s-equal", now) // not after now: expired
	alive := session("s-alive", now.Add(time.Nanosecond))
	touched := session("s-touched", at(10*time.Minute)) // moved on by use
	updated := session("s-updated", at(2*time.Hour))    // moved back by UpdateCredential
	trust := newCred("t1", "u1", storage.CredTrust, base)
	for _, c := range []storage.Credential{past, equal, alive, touched, updated, trust} {
		mustCred(t, s, c)
	}
	noErr(t, s.TouchCredential(ctx, "s-touched", at(50*time.Minute), at(80*time.Minute)), "TouchCredential")
	noErr(t, s.UpdateCredential(ctx, "s-updated", func(c *storage.Credential) error {
		c.ExpiresAt = at(50 * time.Minute)
		return nil
	}), "UpdateCredential")
	updated.ExpiresAt = at(50 * time.Minute)

	gone, err := s.DeleteExpiredSessions(ctx, base)
	noErr(t, err, "DeleteExpiredSessions before any expiry")
	eq(t, "sessions expired at base", len(gone), 0)

	gone, err = s.DeleteExpiredSessions(ctx, now)
	noErr(t, err, "DeleteExpiredSessions")
	gone = normCreds(gone)
	slices.SortFunc(gone, func(a, b storage.Credential) int { return strings.Compare(a.ID, b.ID) })
	eq(t, "DeleteExpiredSessions returns the removed sessions", gone, []storage.Credential{equal, past, updated})
	for _, c := range gone {
		_, err := s.Credential(ctx, c.ID)
		isErr(t, err, storage.ErrNotFound, "Credential of expired "+c.ID)
		_, err = s.CredentialByHash(ctx, c.TokenHash)
		isErr(t, err, storage.ErrNotFound, "CredentialByHash of expired "+c.ID)
	}
	list, err := s.CredentialsOf(ctx, "u1")
	noErr(t, err, "CredentialsOf")
	ids := credIDs(list)
	slices.Sort(ids)
	eq(t, "credentials left", ids, []string{"s-alive", "s-touched", "t1"})

	gone, err = s.DeleteExpiredSessions(ctx, now)
	noErr(t, err, "DeleteExpiredSessions again")
	eq(t, "second DeleteExpiredSessions", len(gone), 0)

	// Far in the future every session goes, trust credentials stay.
	gone, err = s.DeleteExpiredSessions(ctx, at(365*day))
	noErr(t, err, "DeleteExpiredSessions far ahead")
	ids = credIDs(gone)
	slices.Sort(ids)
	eq(t, "sessions removed far ahead", ids, []string{"s-alive", "s-touched"})
	got, err := s.Credential(ctx, "t1")
	noErr(t, err, "trust credential survives")
	eq(t, "trust credential", normCred(got), trust)
}

// Login history.

func testLoginHistory(t *testing.T, s storage.Store) {
	ctx := t.Context()
	mustUser(t, s, newUser("u1", "anna", storage.RoleTeacher))
	mustUser(t, s, newUser("u2", "ben", storage.RoleStudent))
	ev := func(i int) storage.LoginEvent {
		return storage.LoginEvent{At: at(time.Duration(i) * time.Hour), IP: fmt.Sprintf("192.0.2.%d", i), DeviceName: fmt.Sprintf("Device %d", i)}
	}
	with := func(e storage.LoginEvent, failed int) storage.LoginEvent { e.FailedBefore = failed; return e }
	logins := func(user string) []storage.LoginEvent {
		t.Helper()
		l, err := s.Logins(ctx, user)
		noErr(t, err, "Logins "+user)
		return normLogins(l)
	}
	fail := func(user string, n int) {
		t.Helper()
		for range n {
			noErr(t, s.RecordLoginFailure(ctx, user), "RecordLoginFailure "+user)
		}
	}
	success := func(user string, e storage.LoginEvent, keep int) {
		t.Helper()
		noErr(t, s.RecordLoginSuccess(ctx, user, e, keep), "RecordLoginSuccess "+user)
	}

	eq(t, "Logins without history", len(logins("u1")), 0)

	fail("u1", 2)
	fail("u2", 5) // another user's failures do not count
	e1 := ev(1)
	e1.FailedBefore = 99 // the store sets it
	success("u1", e1, 3)
	eq(t, "after the first success", logins("u1"), []storage.LoginEvent{with(ev(1), 2)})

	success("u1", ev(2), 3)
	eq(t, "after a second success", logins("u1"), []storage.LoginEvent{with(ev(2), 0), with(ev(1), 2)})

	fail("u1", 1)
	success("u1", ev(3), 3)
	eq(t, "newest first", logins("u1"), []storage.LoginEvent{with(ev(3), 1), with(ev(2), 0), with(ev(1), 2)})

	success("u1", ev(4), 3)
	eq(t, "keep 3 drops the oldest", logins("u1"), []storage.LoginEvent{with(ev(4), 0), with(ev(3), 1), with(ev(2), 0)})

	success("u1", ev(5), 2)
	eq(t, "keep 2", logins("u1"), []storage.LoginEvent{with(ev(5), 0), with(ev(4), 0)})

	// Concurrent failures all count.
	const n = 25
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { errs[i] = s.RecordLoginFailure(ctx, "u1") })
	}
	wg.Wait()
	for i, err := range errs {
		noErr(t, err, fmt.Sprintf("concurrent RecordLoginFailure %d", i))
	}
	success("u1", ev(6), 10)
	eq(t, "after concurrent failures", logins("u1"), []storage.LoginEvent{with(ev(6), n), with(ev(5), 0), with(ev(4), 0)})

	success("u2", ev(7), 10)
	eq(t, "other user", logins("u2"), []storage.LoginEvent{with(ev(7), 5)})

	// Retention: events from before the cutoff go, the rest and the
	// failure count stay.
	forget := func(user string, cutoff time.Time, want int) {
		t.Helper()
		n, err := s.ForgetLoginsBefore(ctx, user, cutoff)
		noErr(t, err, "ForgetLoginsBefore "+user)
		eq(t, "events forgotten of "+user, n, want)
	}
	forget("u1", at(4*time.Hour), 0) // the oldest is at 4h: not before
	forget("u1", at(5*time.Hour+time.Minute), 2)
	eq(t, "after forgetting", logins("u1"), []storage.LoginEvent{with(ev(6), n)})
	forget("u1", at(5*time.Hour+time.Minute), 0)
	fail("u1", 1)
	forget("u1", at(time.Hour*24), 1)
	eq(t, "all forgotten", len(logins("u1")), 0)
	success("u1", ev(8), 10)
	eq(t, "failures counted before forgetting", logins("u1"), []storage.LoginEvent{with(ev(8), 1)})
	forget("u3", at(time.Hour*24), 0) // no history
	forget("nobody", at(time.Hour*24), 0)
	eq(t, "another user's events stay", logins("u2"), []storage.LoginEvent{with(ev(7), 5)})
}

// Device keys.

func testDeviceKeys(t *testing.T, s storage.Store) {
	ctx := t.Context()
	keys := func(users ...string) []storage.DeviceKey {
		t.Helper()
		k, err := s.DeviceKeysOf(ctx, users)
		noErr(t, err, "DeviceKeysOf")
		return k
	}
	eq(t, "DeviceKeysOf of an empty store", len(keys("u1")), 0)

	put := []storage.DeviceKey{
		{UserID: "u2", DeviceID: "tablet 1/school", PublicKey: []byte("key-u2-tablet")},
		{UserID: "u1", DeviceID: "phone", PublicKey: []byte("key-u1-phone")},
		{UserID: "u10", DeviceID: "a", PublicKey: []byte("key-u10-a")},
		{UserID: "u1", DeviceID: "laptop", PublicKey: []byte("key-u1-laptop")},
		{UserID: "u3", DeviceID: "x", PublicKey: []byte("key-u3-x")},
	}
	for _, k := range put {
		noErr(t, s.PutDeviceKey(ctx, k), "PutDeviceKey "+k.UserID+"/"+k.DeviceID)
	}
	eq(t, "DeviceKeysOf ordered by user then device", keys("u2", "u1", "u10"), []storage.DeviceKey{
		{UserID: "u1", DeviceID: "laptop", PublicKey: []byte("key-u1-laptop")},
		{UserID: "u1", DeviceID: "phone", PublicKey: []byte("key-u1-phone")},
		{UserID: "u10", DeviceID: "a", PublicKey: []byte("key-u10-a")},
		{UserID: "u2", DeviceID: "tablet 1/school", PublicKey: []byte("key-u2-tablet")},
	})
	eq(t, "DeviceKeysOf u1 only (not u10)", keys("u1"), []storage.DeviceKey{
		{UserID: "u1", DeviceID: "laptop", PublicKey: []byte("key-u1-laptop")},
		{UserID: "u1", DeviceID: "phone", PublicKey: []byte("key-u1-phone")},
	})
	eq(t, "DeviceKeysOf of a user without keys", len(keys("u9")), 0)
	eq(t, "DeviceKeysOf of no users", len(keys()), 0)

	noErr(t, s.PutDeviceKey(ctx, storage.DeviceKey{UserID: "u1", DeviceID: "phone", PublicKey: []byte("new-key")}), "PutDeviceKey replace")
	eq(t, "DeviceKeysOf after replace", keys("u1"), []storage.DeviceKey{
		{UserID: "u1", DeviceID: "laptop", PublicKey: []byte("key-u1-laptop")},
		{UserID: "u1", DeviceID: "phone", PublicKey: []byte("new-key")},
	})

	noErr(t, s.DeleteDeviceKey(ctx, "u1", "phone"), "DeleteDeviceKey")
	eq(t, "DeviceKeysOf after delete", keys("u1"), []storage.DeviceKey{
		{UserID: "u1", DeviceID: "laptop", PublicKey: []byte("key-u1-laptop")},
	})
	noErr(t, s.DeleteDeviceKey(ctx, "u1", "phone"), "DeleteDeviceKey of an absent key")
	noErr(t, s.DeleteDeviceKey(ctx, "u9", "none"), "DeleteDeviceKey of an unknown user")
	eq(t, "other users untouched", len(keys("u2", "u3", "u10")), 3)
}

// Conversations.

func testConversations(t *testing.T, s storage.Store) {
	ctx := t.Context()
	_, err := s.Conversation(ctx, "g1")
	isErr(t, err, storage.ErrNotFound, "Conversation of an empty store")
	list, err := s.ConversationsOf(ctx, "u1")
	noErr(t, err, "ConversationsOf of an empty store")
	eq(t, "ConversationsOf of an empty store", len(list), 0)

	gb := newGroup("gb", "u1", "u2")
	ga := newGroup("ga", "u3", "u1")
	gc := newGroup("gc", "u4")
	gc.LastSeq = 9 // not written through CreateConversation
	for _, c := range []storage.Conversation{gb, ga, gc} {
		mustGroup(t, s, c)
	}
	eq(t, "LastSeq of a new conversation", lastSeqOf(t, s, "gc"), uint64(0))
	got, err := s.Conversation(ctx, "gb")
	noErr(t, err, "Conversation gb")
	eq(t, "Conversation gb", normConv(got), gb)

	dup := newGroup("gb", "u9")
	isErr(t, s.CreateConversation(ctx, dup), storage.ErrConflict, "CreateConversation with a taken ID")
	got, err = s.Conversation(ctx, "gb")
	noErr(t, err, "Conversation gb")
	eq(t, "Conversation gb after the conflict", normConv(got), gb)
	list, err = s.ConversationsOf(ctx, "u9")
	noErr(t, err, "ConversationsOf u9")
	eq(t, "the conflicting conversation's member must not be indexed", len(list), 0)

	list, err = s.ConversationsOf(ctx, "u1")
	noErr(t, err, "ConversationsOf u1")
	eq(t, "ConversationsOf u1 ordered by ID", convIDs(list), []string{"ga", "gb"})
	eq(t, "ConversationsOf u1 records", normConv(list[1]), gb)
	list, err = s.ConversationsOf(ctx, "u4")
	noErr(t, err, "ConversationsOf u4")
	eq(t, "ConversationsOf u4", convIDs(list), []string{"gc"})

	// LastSeq is filled on read.
	mustAppend(t, s, newMsg("m1", "gb", "c1", 0, day))
	mustAppend(t, s, newMsg("m2", "gb", "c2", 0, day))
	eq(t, "Conversation LastSeq", lastSeqOf(t, s, "gb"), uint64(2))
	list, err = s.ConversationsOf(ctx, "u1")
	noErr(t, err, "ConversationsOf u1")
	eq(t, "ConversationsOf LastSeq", []uint64{list[0].LastSeq, list[1].LastSeq}, []uint64{0, 2})
}

func testUpdateConversation(t *testing.T, s storage.Store) {
	ctx := t.Context()
	g := newGroup("g1", "u1", "u2")
	mustGroup(t, s, g)
	mustAppend(t, s, newMsg("m1", "g1", "c1", 0, day))
	member := func(user string) []string {
		t.Helper()
		list, err := s.ConversationsOf(ctx, user)
		noErr(t, err, "ConversationsOf "+user)
		return convIDs(list)
	}

	var seen storage.Conversation
	noErr(t, s.UpdateConversation(ctx, "g1", func(c *storage.Conversation) error {
		seen = *c
		c.Members = append(c.Members, storage.Member{UserID: "u3", CanWrite: true})
		c.Members[1].CanWrite = true
		c.Title = "Renamed"
		return nil
	}), "UpdateConversation add u3")
	g.LastSeq = 1
	eq(t, "fn sees the stored conversation with LastSeq", normConv(seen), g)
	want := g
	want.Title = "Renamed"
	want.Members = []storage.Member{{UserID: "u1", CanWrite: true}, {UserID: "u2", CanWrite: true}, {UserID: "u3", CanWrite: true}}
	got, err := s.Conversation(ctx, "g1")
	noErr(t, err, "Conversation")
	eq(t, "Conversation after adding u3", normConv(got), want)
	eq(t, "u3 is indexed as a member", member("u3"), []string{"g1"})

	noErr(t, s.UpdateConversation(ctx, "g1", func(c *storage.Conversation) error {
		c.Members = slices.DeleteFunc(c.Members, func(m storage.Member) bool { return m.UserID == "u2" })
		return nil
	}), "UpdateConversation remove u2")
	want.Members = []storage.Member{{UserID: "u1", CanWrite: true}, {UserID: "u3", CanWrite: true}}
	got, err = s.Conversation(ctx, "g1")
	noErr(t, err, "Conversation")
	eq(t, "Conversation after removing u2", normConv(got), want)
	eq(t, "u2 is no longer indexed", len(member("u2")), 0)
	eq(t, "u1 still indexed", member("u1"), []string{"g1"})

	err = s.UpdateConversation(ctx, "g1", func(c *storage.Conversation) error {
		c.Members = append(c.Members, storage.Member{UserID: "u4"})
		c.Members = c.Members[1:] // drops u1
		return errBoom
	})
	isErr(t, err, errBoom, "UpdateConversation returns fn's error")
	got, err = s.Conversation(ctx, "g1")
	noErr(t, err, "Conversation")
	eq(t, "Conversation after an aborted update", normConv(got), want)
	eq(t, "u4 not indexed after the aborted update", len(member("u4")), 0)
	eq(t, "u1 still indexed after the aborted update", member("u1"), []string{"g1"})

	called := false
	err = s.UpdateConversation(ctx, "g9", func(*storage.Conversation) error { called = true; return nil })
	isErr(t, err, storage.ErrNotFound, "UpdateConversation of a missing conversation")
	if called {
		t.Fatal("UpdateConversation called fn for a missing conversation")
	}
	eq(t, "LastSeq survives updates", lastSeqOf(t, s, "g1"), uint64(1))
}

func testCreateDirect(t *testing.T, s storage.Store) {
	ctx := t.Context()
	d := newDirect("d1", "u1", "u2")
	got, created, err := s.CreateDirect(ctx, d)
	noErr(t, err, "CreateDirect")
	eq(t, "created", created, true)
	eq(t, "CreateDirect returns the new conversation", normConv(got), d)
	got, err = s.Conversation(ctx, "d1")
	noErr(t, err, "Conversation d1")
	eq(t, "Conversation d1", normConv(got), d)

	// The same pair in the other order, under another ID.
	again := newDirect("d2", "u2", "u1")
	mustAppend(t, s, newMsg("m1", "d1", "c1", 0, day))
	got, created, err = s.CreateDirect(ctx, again)
	noErr(t, err, "CreateDirect of an existing pair")
	eq(t, "created for an existing pair", created, false)
	want := d
	want.LastSeq = 1
	eq(t, "CreateDirect returns the existing conversation with LastSeq", normConv(got), want)
	_, err = s.Conversation(ctx, "d2")
	isErr(t, err, storage.ErrNotFound, "the second ID must not be stored")

	for _, u := range []string{"u1", "u2"} {
		list, err := s.ConversationsOf(ctx, u)
		noErr(t, err, "ConversationsOf "+u)
		eq(t, "ConversationsOf "+u, convIDs(list), []string{"d1"})
	}

	other := newDirect("d3", "u1", "u3")
	got, created, err = s.CreateDirect(ctx, other)
	noErr(t, err, "CreateDirect of another pair")
	eq(t, "created for another pair", created, true)
	eq(t, "another pair's conversation", got.ID, "d3")
	list, err := s.ConversationsOf(ctx, "u1")
	noErr(t, err, "ConversationsOf u1")
	eq(t, "ConversationsOf u1", convIDs(list), []string{"d1", "d3"})
}

func testCreateDirectConcurrent(t *testing.T, s storage.Store) {
	ctx := t.Context()
	const n = 20
	type result struct {
		conv    storage.Conversation
		created bool
		err     error
	}
	results := make([]result, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			d := newDirect(fmt.Sprintf("d%02d", i), "u5", "u6")
			if i%2 == 1 {
				d = newDirect(fmt.Sprintf("d%02d", i), "u6", "u5")
			}
			r := &results[i]
			r.conv, r.created, r.err = s.CreateDirect(ctx, d)
		})
	}
	wg.Wait()
	created, id := 0, ""
	for i, r := range results {
		noErr(t, r.err, fmt.Sprintf("CreateDirect %d", i))
		if r.created {
			created++
			id = r.conv.ID
		}
	}
	eq(t, "calls that created", created, 1)
	for i, r := range results {
		eq(t, fmt.Sprintf("conversation of call %d", i), r.conv.ID, id)
	}
	for _, u := range []string{"u5", "u6"} {
		list, err := s.ConversationsOf(ctx, u)
		noErr(t, err, "ConversationsOf "+u)
		eq(t, "ConversationsOf "+u, convIDs(list), []string{id})
	}
	for i := range n {
		other := fmt.Sprintf("d%02d", i)
		if other == id {
			continue
		}
		_, err := s.Conversation(ctx, other)
		isErr(t, err, storage.ErrNotFound, "losing conversation "+other)
	}
}

// Messages.

func testAppendMessage(t *testing.T, s storage.Store) {
	ctx := t.Context()
	mustGroup(t, s, newGroup("g1", "u1", "u2"))
	now := at(time.Hour)

	for i := 1; i <= 3; i++ {
		m := newMsg(fmt.Sprintf("m%d", i), "g1", fmt.Sprintf("c%d", i), time.Duration(i)*time.Minute, 30*day)
		m.Seq = 77 // ignored: the store assigns it
		got := mustAppend(t, s, m)
		want := m
		want.Seq = uint64(i)
		eq(t, "AppendMessage "+m.ID, normMsg(got), want)
	}
	m2 := newMsg("m2", "g1", "c2", 2*time.Minute, 30*day)
	m2.Seq = 2
	got, err := s.Message(ctx, "m2", now)
	noErr(t, err, "Message m2")
	eq(t, "Message m2", normMsg(got), m2)
	_, err = s.Message(ctx, "m9", now)
	isErr(t, err, storage.ErrNotFound, "Message of a missing ID")
	eq(t, "LastSeq", lastSeqOf(t, s, "g1"), uint64(3))

	// Attachments and several keys round-trip.
	m4 := newMsg("m4", "g1", "c4", 4*time.Minute, 30*day)
	m4.Keys["u1/laptop"] = []byte{0, 1, 2, 255}
	m4.Attachments = []string{"a1", "a2"}
	mustAppend(t, s, m4)
	m4.Seq = 4
	got, err = s.Message(ctx, "m4", now)
	noErr(t, err, "Message m4")
	eq(t, "Message m4", normMsg(got), m4)

	msgs, more, err := s.MessagesAfter(ctx, "g1", 0, 10, now)
	noErr(t, err, "MessagesAfter")
	eq(t, "MessagesAfter seqs", seqsOf(msgs), []uint64{1, 2, 3, 4})
	eq(t, "MessagesAfter more", more, false)
	eq(t, "MessagesAfter record", normMsg(msgs[1]), m2)

	// Seqs are per conversation.
	mustGroup(t, s, newGroup("g2", "u1"))
	got = mustAppend(t, s, newMsg("m5", "g2", "c1", 5*time.Minute, 30*day))
	eq(t, "first seq of another conversation", got.Seq, uint64(1))
	eq(t, "LastSeq g1 unchanged", lastSeqOf(t, s, "g1"), uint64(4))
}

func testAppendConcurrent(t *testing.T, s storage.Store) {
	ctx := t.Context()
	mustGroup(t, s, newGroup("g1", "u1"))
	mustGroup(t, s, newGroup("g2", "u1"))
	const writers, each = 50, 2
	type res struct {
		conv, id string
		seq      uint64
		err      error
	}
	out := make(chan res, (writers+10)*each)
	var wg sync.WaitGroup
	for w := range writers + 10 {
		wg.Go(func() {
			conv := "g1"
			if w >= writers {
				conv = "g2" // a second conversation in the same batches
			}
			for i := range each {
				m := newMsg(fmt.Sprintf("m-%d-%d", w, i), conv, fmt.Sprintf("c-%d-%d", w, i), 0, day)
				m.SenderDevice = fmt.Sprintf("dev-%d", w)
				got, created, err := s.AppendMessage(ctx, m)
				if err == nil && !created {
					err = fmt.Errorf("created = false for %s", m.ID)
				}
				out <- res{conv, m.ID, got.Seq, err}
			}
		})
	}
	wg.Wait()
	close(out)
	seqs := map[string][]uint64{}
	idBySeq := map[string]map[uint64]string{"g1": {}, "g2": {}}
	for r := range out {
		noErr(t, r.err, "concurrent AppendMessage")
		seqs[r.conv] = append(seqs[r.conv], r.seq)
		idBySeq[r.conv][r.seq] = r.id
	}
	for conv, n := range map[string]int{"g1": writers * each, "g2": 10 * each} {
		got := slices.Sorted(slices.Values(seqs[conv]))
		want := make([]uint64, n)
		for i := range want {
			want[i] = uint64(i + 1)
		}
		eq(t, "seqs of "+conv, got, want)
		eq(t, "LastSeq of "+conv, lastSeqOf(t, s, conv), uint64(n))
		msgs, more, err := s.MessagesAfter(ctx, conv, 0, 500, base)
		noErr(t, err, "MessagesAfter "+conv)
		eq(t, "more", more, false)
		eq(t, "MessagesAfter seqs of "+conv, seqsOf(msgs), want)
		for _, m := range msgs {
			if idBySeq[conv][m.Seq] != m.ID {
				t.Fatalf("%s seq %d holds %s, AppendMessage returned %s", conv, m.Seq, m.ID, idBySeq[conv][m.Seq])
			}
		}
	}
	eq(t, "CountMessages", countMessages(t, s), (writers+10)*each)
}

// testAppendReadableInOrder sends messages with and without attachments
// to one conversation at once and checks that when AppendMessage returns
// seq n, seqs 1..n can all be read. The messenger publishes a message when
// its append returns, and a socket that gets seq n first fills the gap
// from the store: an earlier message still being stored (its attachments
// linked) was lost to it.
func testAppendReadableInOrder(t *testing.T, s storage.Store) {
	ctx := t.Context()
	mustGroup(t, s, newGroup("g1", "u1"))
	const rounds, plain = 30, 3
	for r := range rounds {
		att := fmt.Sprintf("att-%d", r)
		noErr(t, s.PutAttachment(ctx, storage.Attachment{ID: att, Uploader: "u1", Size: 1, CreatedAt: base, ExpiresAt: at(30 * day)}), "PutAttachment")
	}
	errs := make(chan error, rounds*(plain+1))
	for r := range rounds {
		var wg sync.WaitGroup
		for i := range plain + 1 {
			wg.Go(func() {
				m := newMsg(fmt.Sprintf("m-%d-%d", r, i), "g1", fmt.Sprintf("c-%d-%d", r, i), 0, day)
				if i == 0 {
					m.Attachments = []string{fmt.Sprintf("att-%d", r)}
				}
				got, _, err := s.AppendMessage(ctx, m)
				if err != nil {
					errs <- err
					return
				}
				msgs, _, err := s.MessagesAfter(ctx, "g1", 0, int(got.Seq), base)
				switch {
				case err != nil:
					errs <- err
				case len(msgs) != int(got.Seq):
					errs <- fmt.Errorf("AppendMessage returned seq %d (attachments %v) while only seqs %v could be read", got.Seq, m.Attachments, seqsOf(msgs))
				}
			})
		}
		wg.Wait()
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Each seq given out once: every message is there.
	eq(t, "LastSeq", lastSeqOf(t, s, "g1"), uint64(rounds*(plain+1)))
	msgs, _, err := s.MessagesAfter(ctx, "g1", 0, 1000, base)
	noErr(t, err, "MessagesAfter")
	ids := map[string]bool{}
	for _, m := range msgs {
		ids[m.ID] = true
	}
	eq(t, "distinct messages stored", len(ids), rounds*(plain+1))
}

func testIdempotentClientID(t *testing.T, s storage.Store) {
	ctx := t.Context()
	mustGroup(t, s, newGroup("g1", "u1", "u2"))
	mustGroup(t, s, newGroup("g2", "u1", "u2"))
	now := at(time.Hour)

	m1 := mustAppend(t, s, newMsg("m1", "g1", "c1", 0, 30*day))

	retry := newMsg("m1-retry", "g1", "c1", time.Minute, 30*day)
	retry.Ciphertext = []byte("different")
	got, created, err := s.AppendMessage(ctx, retry)
	noErr(t, err, "AppendMessage retry")
	eq(t, "created for the same triple", created, false)
	eq(t, "the retry returns the stored message", normMsg(got), normMsg(m1))
	_, err = s.Message(ctx, "m1-retry", now)
	isErr(t, err, storage.ErrNotFound, "the retry's ID must not be stored")
	eq(t, "LastSeq after the retry", lastSeqOf(t, s, "g1"), uint64(1))
	eq(t, "CountMessages after the retry", countMessages(t, s), 1)

	// Another device of the same user, same client id: a new message.
	other := newMsg("m2", "g1", "c1", time.Minute, 30*day)
	other.SenderDevice = "laptop"
	eq(t, "seq for another device", mustAppend(t, s, other).Seq, uint64(2))
	// Another user with the same device and client id.
	other = newMsg("m3", "g1", "c1", time.Minute, 30*day)
	other.SenderUser = "u2"
	eq(t, "seq for another user", mustAppend(t, s, other).Seq, uint64(3))
	// The same triple in another conversation.
	eq(t, "seq in another conversation", mustAppend(t, s, newMsg("m4", "g2", "c1", time.Minute, 30*day)).Seq, uint64(1))
	// Device and client ids that only differ in where they split.
	xy := newMsg("m5", "g1", "z", time.Minute, 30*day)
	xy.SenderDevice = "xy"
	x := newMsg("m6", "g1", "yz", time.Minute, 30*day)
	x.SenderDevice = "x"
	eq(t, "seq of device xy, client z", mustAppend(t, s, xy).Seq, uint64(4))
	eq(t, "seq of device x, client yz", mustAppend(t, s, x).Seq, uint64(5))

	// An expired match does not count: a new message is appended, and
	// later retries return the new one.
	short := mustAppend(t, s, newMsg("m-short", "g1", "c-short", 0, time.Hour))
	eq(t, "seq of m-short", short.Seq, uint64(6))
	stillAlive := newMsg("m-x", "g1", "c-short", time.Hour-time.Nanosecond, 30*day)
	got, created, err = s.AppendMessage(ctx, stillAlive)
	noErr(t, err, "AppendMessage before expiry")
	eq(t, "created just before expiry", created, false)
	eq(t, "ID just before expiry", got.ID, "m-short")

	renewed := newMsg("m-renewed", "g1", "c-short", time.Hour, 30*day) // sent when m-short expires
	got, created, err = s.AppendMessage(ctx, renewed)
	noErr(t, err, "AppendMessage after expiry")
	eq(t, "created after the match expired", created, true)
	eq(t, "new message after expiry", [2]any{got.ID, got.Seq}, [2]any{"m-renewed", uint64(7)})
	got, created, err = s.AppendMessage(ctx, newMsg("m-again", "g1", "c-short", 2*time.Hour, 30*day))
	noErr(t, err, "AppendMessage retry after renewal")
	eq(t, "created for a retry after renewal", created, false)
	eq(t, "retry after renewal returns the new message", got.ID, "m-renewed")

	// The sweep of the expired message keeps the new one's client id.
	n, err := s.DeleteExpiredMessages(ctx, at(2*time.Hour), 100)
	noErr(t, err, "DeleteExpiredMessages")
	eq(t, "swept", n, 1)
	got, created, err = s.AppendMessage(ctx, newMsg("m-later", "g1", "c-short", 3*time.Hour, 30*day))
	noErr(t, err, "AppendMessage retry after the sweep")
	eq(t, "created for a retry after the sweep", created, false)
	eq(t, "retry after the sweep returns the new message", got.ID, "m-renewed")
	eq(t, "LastSeq", lastSeqOf(t, s, "g1"), uint64(7))

	// MessageByClientID answers as a retry would, and stores nothing.
	byClient := func(conv, user, device, client string, now time.Time) string {
		t.Helper()
		m, err := s.MessageByClientID(ctx, conv, user, device, client, now)
		if errors.Is(err, storage.ErrNotFound) {
			return "not found"
		}
		noErr(t, err, "MessageByClientID")
		eq(t, "its client id", m.ClientID, client)
		return fmt.Sprintf("%s %d", m.ID, m.Seq)
	}
	eq(t, "by client id", byClient("g1", "u1", "phone", "c1", now), "m1 1")
	eq(t, "by client id, other conversation", byClient("g2", "u1", "phone", "c1", now), "m4 1")
	eq(t, "by client id, renewed", byClient("g1", "u1", "phone", "c-short", at(3*time.Hour)), "m-renewed 7")
	eq(t, "by client id, expired", byClient("g1", "u1", "phone", "c1", at(30*day)), "not found")
	eq(t, "by client id, unknown", byClient("g1", "u1", "phone", "c-none", now), "not found")
	eq(t, "by client id, other device", byClient("g1", "u1", "no-device", "c1", now), "not found")
	eq(t, "by client id, empty", byClient("g1", "u1", "phone", "", now), "not found")
	eq(t, "by client id, no conversation", byClient("g9", "u1", "phone", "c1", now), "not found")
	eq(t, "LastSeq after the lookups", lastSeqOf(t, s, "g1"), uint64(7))
}

func testIdempotentClientIDConcurrent(t *testing.T, s storage.Store) {
	ctx := t.Context()
	mustGroup(t, s, newGroup("g1", "u1"))
	const n = 20
	type res struct {
		msg     storage.Message
		created bool
		err     error
	}
	results := make([]res, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			r := &results[i]
			r.msg, r.created, r.err = s.AppendMessage(ctx, newMsg(fmt.Sprintf("m%d", i), "g1", "same", 0, day))
		})
	}
	wg.Wait()
	created := 0
	for i, r := range results {
		noErr(t, r.err, fmt.Sprintf("AppendMessage %d", i))
		if r.created {
			created++
		}
		eq(t, "seq of every retry", r.msg.Seq, uint64(1))
		eq(t, "ID of every retry", r.msg.ID, results[0].msg.ID)
	}
	eq(t, "calls that created", created, 1)
	eq(t, "LastSeq", lastSeqOf(t, s, "g1"), uint64(1))
	eq(t, "CountMessages", countMessages(t, s), 1)
}

func testMessagesAfterPaging(t *testing.T, s storage.Store) {
	ctx := t.Context()
	mustGroup(t, s, newGroup("g1", "u1"))
	mustGroup(t, s, newGroup("g10", "u1")) // its keys sort right after g1's
	for i := 1; i <= 10; i++ {
		mustAppend(t, s, newMsg(fmt.Sprintf("m%d", i), "g1", fmt.Sprintf("c%d", i), 0, day))
	}
	mustAppend(t, s, newMsg("other", "g10", "c1", 0, day))
	cases := []struct {
		after uint64
		limit int
		want  []uint64
		more  bool
	}{
		{0, 4, []uint64{1, 2, 3, 4}, true},
		{4, 4, []uint64{5, 6, 7, 8}, true},
		{8, 4, []uint64{9, 10}, false},
		{6, 4, []uint64{7, 8, 9, 10}, false},
		{10, 4, []uint64{}, false},
		{99, 4, []uint64{}, false},
		{0, 500, []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, false},
		{0, 1, []uint64{1}, true},
		{9, 1, []uint64{10}, false},
	}
	for _, c := range cases {
		msgs, more, err := s.MessagesAfter(ctx, "g1", c.after, c.limit, base)
		what := fmt.Sprintf("MessagesAfter(%d, %d)", c.after, c.limit)
		noErr(t, err, what)
		eq(t, what+" seqs", seqsOf(msgs), c.want)
		eq(t, what+" more", more, c.more)
		for _, m := range msgs {
			eq(t, what+" conversation", m.Conversation, "g1")
			eq(t, what+" ID", m.ID, fmt.Sprintf("m%d", m.Seq))
		}
	}
	msgs, more, err := s.MessagesAfter(ctx, "g9", 0, 10, base)
	if err != nil {
		isErr(t, err, storage.ErrNotFound, "MessagesAfter of an unknown conversation")
	} else {
		eq(t, "MessagesAfter of an unknown conversation", len(msgs), 0)
		eq(t, "more of an unknown conversation", more, false)
	}
}

func testMessageExpiry(t *testing.T, s storage.Store) {
	ctx := t.Context()
	mustGroup(t, s, newGroup("g1", "u1"))
	mustGroup(t, s, newGroup("g2", "u1"))
	now := at(2 * time.Hour)
	exp := []time.Duration{1 * time.Hour, 2 * time.Hour, 3 * time.Hour, 1 * time.Hour, 10 * time.Hour, 1 * time.Hour}
	for i, e := range exp {
		mustAppend(t, s, newMsg(fmt.Sprintf("m%d", i+1), "g1", fmt.Sprintf("c%d", i+1), 0, e))
	}
	// seq:     1   2   3   4   5    6
	// expires: 1h  2h  3h  1h  10h  1h     now = 2h: 3 and 5 remain

	for _, id := range []string{"m1", "m2", "m4", "m6"} {
		_, err := s.Message(ctx, id, now)
		isErr(t, err, storage.ErrNotFound, "Message of expired "+id)
	}
	for _, id := range []string{"m3", "m5"} {
		got, err := s.Message(ctx, id, now)
		noErr(t, err, "Message "+id)
		eq(t, "Message ID", got.ID, id)
	}
	got, err := s.Message(ctx, "m2", now.Add(-time.Nanosecond))
	noErr(t, err, "Message m2 a nanosecond before it expires")
	eq(t, "Message m2 seq", got.Seq, uint64(2))

	cases := []struct {
		after uint64
		limit int
		want  []uint64
		more  bool
	}{
		{0, 10, []uint64{3, 5}, false},
		{0, 1, []uint64{3}, true},
		{3, 1, []uint64{5}, false}, // seq 6 has expired: no more
		{5, 10, []uint64{}, false},
		{0, 2, []uint64{3, 5}, false},
	}
	for _, c := range cases {
		msgs, more, err := s.MessagesAfter(ctx, "g1", c.after, c.limit, now)
		what := fmt.Sprintf("MessagesAfter(%d, %d) at 2h", c.after, c.limit)
		noErr(t, err, what)
		eq(t, what+" seqs", seqsOf(msgs), c.want)
		eq(t, what+" more", more, c.more)
	}
	if r, ok := s.(storage.SentAtReader); ok {
		// FirstSentAfter reads what MessagesAfter(…, 1) would return.
		for after := range uint64(8) {
			for _, when := range []time.Time{base, now, at(10 * time.Hour)} {
				msgs, _, err := s.MessagesAfter(ctx, "g1", after, 1, when)
				noErr(t, err, "MessagesAfter")
				seq, sentAt, found, err := r.FirstSentAfter(ctx, "g1", after, when)
				what := fmt.Sprintf("FirstSentAfter(%d) at %v", after, when.Sub(base))
				noErr(t, err, what)
				eq(t, what+" found", found, len(msgs) == 1)
				if len(msgs) == 1 {
					eq(t, what+" seq", seq, msgs[0].Seq)
					eq(t, what+" sent_at", sentAt.Equal(msgs[0].SentAt), true)
				}
			}
		}
		_, _, found, err := r.FirstSentAfter(ctx, "g9", 0, base)
		noErr(t, err, "FirstSentAfter of an unknown conversation")
		eq(t, "FirstSentAfter of an unknown conversation", found, false)
	}
	msgs, more, err := s.MessagesAfter(ctx, "g1", 0, 10, base)
	noErr(t, err, "MessagesAfter at base")
	eq(t, "MessagesAfter at base", seqsOf(msgs), []uint64{1, 2, 3, 4, 5, 6})
	eq(t, "more at base", more, false)
	msgs, _, err = s.MessagesAfter(ctx, "g1", 0, 10, at(10*time.Hour))
	noErr(t, err, "MessagesAfter at 10h")
	eq(t, "MessagesAfter when all expired", len(msgs), 0)

	eq(t, "LastSeq counts expired messages", lastSeqOf(t, s, "g1"), uint64(6))
	eq(t, "CountMessages counts unswept messages", countMessages(t, s), 6)

	// Expiry does not reuse seqs.
	got = mustAppend(t, s, newMsg("m7", "g1", "c7", 3*time.Hour, day))
	eq(t, "seq after expired messages", got.Seq, uint64(7))

	// Attachments expire the same way.
	noErr(t, s.PutAttachment(ctx, storage.Attachment{ID: "a1", Uploader: "u1", Size: 10, CreatedAt: base, ExpiresAt: at(time.Hour)}), "PutAttachment")
	_, err = s.Attachment(ctx, "a1", at(time.Hour))
	isErr(t, err, storage.ErrNotFound, "Attachment at its ExpiresAt")
	_, err = s.Attachment(ctx, "a1", at(2*time.Hour))
	isErr(t, err, storage.ErrNotFound, "Attachment after its ExpiresAt")
	a, err := s.Attachment(ctx, "a1", at(time.Hour-time.Nanosecond))
	noErr(t, err, "Attachment before its ExpiresAt")
	eq(t, "Attachment ID", a.ID, "a1")
}

func testDeleteExpiredMessages(t *testing.T, s storage.Store) {
	ctx := t.Context()
	mustGroup(t, s, newGroup("g1", "u1"))
	mustGroup(t, s, newGroup("g2", "u1"))
	for i := 1; i <= 5; i++ {
		// Appended newest expiry first, to show the sweep goes by expiry.
		mustAppend(t, s, newMsg(fmt.Sprintf("m%d", i), "g1", fmt.Sprintf("c%d", i), 0, time.Duration(6-i)*time.Hour))
	}
	mustAppend(t, s, newMsg("m6", "g1", "c6", 0, 100*time.Hour))
	mustAppend(t, s, newMsg("n1", "g2", "c1", 0, 2*time.Hour))
	// g1 seq/expiry: 1/5h 2/4h 3/3h 4/2h 5/1h 6/100h; g2 1/2h
	eq(t, "CountMessages", countMessages(t, s), 7)

	sweep := func(now time.Time, max, want int) {
		t.Helper()
		n, err := s.DeleteExpiredMessages(ctx, now, max)
		noErr(t, err, "DeleteExpiredMessages")
		eq(t, fmt.Sprintf("removed at %v with max %d", now.Sub(base), max), n, want)
	}
	sweep(base, 10, 0)
	sweep(at(3*time.Hour), 0, 0)
	sweep(at(3*time.Hour), 2, 2) // two of m5, m4, n1
	eq(t, "CountMessages after 2", countMessages(t, s), 5)
	sweep(at(3*time.Hour), 10, 2) // the rest of them and m3
	eq(t, "CountMessages after 4", countMessages(t, s), 3)
	sweep(at(3*time.Hour), 10, 0)

	// Physically gone: not even visible with an earlier now.
	for _, id := range []string{"m3", "m4", "m5", "n1"} {
		_, err := s.Message(ctx, id, base)
		isErr(t, err, storage.ErrNotFound, "Message of swept "+id)
	}
	msgs, more, err := s.MessagesAfter(ctx, "g1", 0, 10, base)
	noErr(t, err, "MessagesAfter")
	eq(t, "MessagesAfter after the sweep", seqsOf(msgs), []uint64{1, 2, 6})
	eq(t, "more", more, false)
	msgs, _, err = s.MessagesAfter(ctx, "g2", 0, 10, base)
	noErr(t, err, "MessagesAfter g2")
	eq(t, "g2 after the sweep", len(msgs), 0)

	eq(t, "LastSeq g1 after the sweep", lastSeqOf(t, s, "g1"), uint64(6))
	eq(t, "LastSeq g2 after the sweep", lastSeqOf(t, s, "g2"), uint64(1))
	got := mustAppend(t, s, newMsg("m7", "g1", "c7", 0, day))
	eq(t, "seq after the sweep", got.Seq, uint64(7))
	got = mustAppend(t, s, newMsg("n2", "g2", "c2", 0, day))
	eq(t, "g2 seq after the sweep", got.Seq, uint64(2))

	sweep(at(1000*time.Hour), 100, 5)
	eq(t, "CountMessages after sweeping all", countMessages(t, s), 0)
	eq(t, "LastSeq g1 after sweeping all", lastSeqOf(t, s, "g1"), uint64(7))
}

func testCountMessages(t *testing.T, s storage.Store) {
	ctx := t.Context()
	eq(t, "CountMessages of an empty store", countMessages(t, s), 0)
	mustGroup(t, s, newGroup("g1", "u1"))
	mustGroup(t, s, newGroup("g2", "u1"))
	mustAppend(t, s, newMsg("m1", "g1", "c1", 0, day))
	mustAppend(t, s, newMsg("m2", "g1", "c2", 0, day))
	mustAppend(t, s, newMsg("m3", "g2", "c1", 0, day))
	_, created, err := s.AppendMessage(ctx, newMsg("m4", "g1", "c1", 0, day))
	noErr(t, err, "AppendMessage retry")
	eq(t, "created for a retry", created, false)
	eq(t, "CountMessages", countMessages(t, s), 3)
}

// Attachments.

func testAttachments(t *testing.T, s storage.Store) {
	ctx := t.Context()
	_, err := s.Attachment(ctx, "a1", base)
	isErr(t, err, storage.ErrNotFound, "Attachment of an empty store")

	a1 := storage.Attachment{ID: "a1", Uploader: "u1", Size: 12345, CreatedAt: base, ExpiresAt: at(30 * day)}
	noErr(t, s.PutAttachment(ctx, a1), "PutAttachment")
	got, err := s.Attachment(ctx, "a1", base)
	noErr(t, err, "Attachment")
	eq(t, "Attachment", normAtt(got), a1)

	dup := storage.Attachment{ID: "a1", Uploader: "u2", Size: 1, CreatedAt: base, ExpiresAt: at(day)}
	isErr(t, s.PutAttachment(ctx, dup), storage.ErrConflict, "PutAttachment with a taken ID")
	got, err = s.Attachment(ctx, "a1", base)
	noErr(t, err, "Attachment")
	eq(t, "Attachment after the conflict", normAtt(got), a1)
	_, err = s.Attachment(ctx, "a9", base)
	isErr(t, err, storage.ErrNotFound, "Attachment of a missing ID")
}

func testAttachmentConversations(t *testing.T, s storage.Store) {
	ctx := t.Context()
	for _, id := range []string{"g1", "g2", "g3"} {
		mustGroup(t, s, newGroup(id, "u1"))
	}
	for _, id := range []string{"a1", "a2", "a3"} {
		noErr(t, s.PutAttachment(ctx, storage.Attachment{ID: id, Uploader: "u1", Size: 1, CreatedAt: base, ExpiresAt: at(30 * day)}), "PutAttachment "+id)
	}
	convsOf := func(id string) []string {
		t.Helper()
		a, err := s.Attachment(ctx, id, base)
		noErr(t, err, "Attachment "+id)
		return normAtt(a).Conversations
	}

	m := newMsg("m1", "g1", "c1", 0, day)
	m.Attachments = []string{"a1", "a2"}
	got := mustAppend(t, s, m)
	eq(t, "returned attachments", got.Attachments, []string{"a1", "a2"})
	eq(t, "a1 after m1", convsOf("a1"), []string{"g1"})
	eq(t, "a2 after m1", convsOf("a2"), []string{"g1"})
	eq(t, "a3 unreferenced", len(convsOf("a3")), 0)

	m = newMsg("m2", "g1", "c2", 0, day)
	m.Attachments = []string{"a1"}
	mustAppend(t, s, m)
	eq(t, "a1 twice in g1", convsOf("a1"), []string{"g1"})

	m = newMsg("m3", "g2", "c1", 0, day)
	m.Attachments = []string{"a1"}
	mustAppend(t, s, m)
	eq(t, "a1 in g1 and g2", convsOf("a1"), []string{"g1", "g2"})

	// A retry that the store deduplicates adds nothing.
	m = newMsg("m4", "g1", "c1", 0, day)
	m.Attachments = []string{"a3"}
	_, created, err := s.AppendMessage(ctx, m)
	noErr(t, err, "AppendMessage retry")
	eq(t, "created for a retry", created, false)
	eq(t, "a3 after a deduplicated retry", len(convsOf("a3")), 0)

	// Concurrent appends in different conversations all land.
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i, conv := range []string{"g1", "g2", "g3"} {
		wg.Go(func() {
			m := newMsg("c-"+conv, conv, "concurrent", 0, day)
			m.Attachments = []string{"a3"}
			_, _, errs[i] = s.AppendMessage(ctx, m)
		})
	}
	wg.Wait()
	for _, err := range errs {
		noErr(t, err, "concurrent AppendMessage")
	}
	eq(t, "a3 after concurrent appends", convsOf("a3"), []string{"g1", "g2", "g3"})
}

func testAttachmentsOf(t *testing.T, s storage.Store) {
	ctx := t.Context()
	idsOf := func(user string, now time.Time) []string {
		t.Helper()
		as, err := s.AttachmentsOf(ctx, user, now)
		noErr(t, err, "AttachmentsOf "+user)
		if as == nil {
			t.Fatalf("AttachmentsOf %s: nil, want a (possibly empty) list", user)
		}
		ids := []string{}
		for _, a := range as {
			eq(t, "uploader of "+a.ID, a.Uploader, user)
			ids = append(ids, a.ID)
		}
		return ids
	}
	eq(t, "AttachmentsOf in an empty store", idsOf("u1", base), []string{})

	put := func(id, uploader string, created, exp time.Duration) {
		t.Helper()
		noErr(t, s.PutAttachment(ctx, storage.Attachment{ID: id, Uploader: uploader, Size: 1, CreatedAt: at(created), ExpiresAt: at(exp)}), "PutAttachment "+id)
	}
	put("a1", "u1", 2*time.Second, 30*day)
	put("a2", "u1", time.Second, 30*day)
	put("a0", "u1", 2*time.Second, time.Hour) // same time as a1: by ID
	put("a3", "u2", time.Second, 30*day)
	eq(t, "u1's uploads, oldest first", idsOf("u1", base), []string{"a2", "a0", "a1"})
	eq(t, "u2's uploads", idsOf("u2", base), []string{"a3"})
	eq(t, "uploads of a user without any", idsOf("u3", base), []string{})

	// A taken ID does not list another uploader's attachment.
	isErr(t, s.PutAttachment(ctx, storage.Attachment{ID: "a3", Uploader: "u1", Size: 1, CreatedAt: base, ExpiresAt: at(30 * day)}), storage.ErrConflict, "PutAttachment with u2's ID")
	eq(t, "u1's uploads after the conflict", idsOf("u1", base), []string{"a2", "a0", "a1"})
	eq(t, "u2's uploads after the conflict", idsOf("u2", base), []string{"a3"})

	// A referenced upload is listed with its conversations.
	mustGroup(t, s, newGroup("g1", "u1"))
	m := newMsg("m1", "g1", "c1", 0, day)
	m.Attachments = []string{"a1"}
	mustAppend(t, s, m)
	as, err := s.AttachmentsOf(ctx, "u1", base)
	noErr(t, err, "AttachmentsOf u1")
	eq(t, "listed uploads", len(as), 3)
	eq(t, "conversations of a1", normAtt(as[2]).Conversations, []string{"g1"})
	eq(t, "conversations of a2", len(normAtt(as[0]).Conversations), 0)
	eq(t, "a1 as listed", normAtt(as[2]), storage.Attachment{ID: "a1", Uploader: "u1", Size: 1, CreatedAt: at(2 * time.Second), ExpiresAt: at(30 * day), Conversations: []string{"g1"}})

	// Expired uploads are not listed, swept or not.
	eq(t, "u1's uploads at a0's expiry", idsOf("u1", at(time.Hour)), []string{"a2", "a1"})
	swept, err := s.DeleteExpiredAttachments(ctx, at(time.Hour), 10)
	noErr(t, err, "DeleteExpiredAttachments")
	eq(t, "swept", swept, []string{"a0"})
	eq(t, "u1's uploads after the sweep", idsOf("u1", base), []string{"a2", "a1"})

	// Many uploads (a store may read them in batches): all listed, in order.
	var want []string
	for i := range 600 {
		id := fmt.Sprintf("m%03d", i)
		put(id, "u4", time.Duration(i)*time.Second, 30*day)
		want = append(want, id)
	}
	eq(t, "600 uploads", idsOf("u4", base), want)
}

func testDeleteExpiredAttachments(t *testing.T, s storage.Store) {
	ctx := t.Context()
	for i, exp := range []time.Duration{2 * time.Hour, time.Hour, 3 * time.Hour, 100 * time.Hour} {
		id := fmt.Sprintf("a%d", i+1)
		noErr(t, s.PutAttachment(ctx, storage.Attachment{ID: id, Uploader: "u1", Size: 1, CreatedAt: base, ExpiresAt: at(exp)}), "PutAttachment "+id)
	}
	sweep := func(now time.Time, max int) []string {
		t.Helper()
		ids, err := s.DeleteExpiredAttachments(ctx, now, max)
		noErr(t, err, "DeleteExpiredAttachments")
		return ids
	}
	eq(t, "nothing expired at base", len(sweep(base, 10)), 0)
	eq(t, "max 0", len(sweep(at(3*time.Hour), 0)), 0)
	first := sweep(at(3*time.Hour), 2)
	eq(t, "first sweep with max 2", len(first), 2)
	rest := sweep(at(3*time.Hour), 10)
	eq(t, "second sweep", len(rest), 1)
	all := slices.Sorted(slices.Values(append(first, rest...)))
	eq(t, "swept IDs", all, []string{"a1", "a2", "a3"})
	eq(t, "third sweep", len(sweep(at(3*time.Hour), 10)), 0)

	for _, id := range all {
		_, err := s.Attachment(ctx, id, base)
		isErr(t, err, storage.ErrNotFound, "Attachment of swept "+id)
	}
	a, err := s.Attachment(ctx, "a4", base)
	noErr(t, err, "Attachment a4")
	eq(t, "a4 survives", a.ID, "a4")
	eq(t, "sweep far ahead", sweep(at(1000*time.Hour), 10), []string{"a4"})
}

// Lifecycle.

func testPing(t *testing.T, s storage.Store) {
	noErr(t, s.Ping(t.Context()), "Ping")
}

func testClose(t *testing.T, s storage.Store) {
	ctx := context.Background()
	noErr(t, s.CreateSchool(ctx, storage.School{ID: "s1", Name: "S", CreatedAt: base}), "CreateSchool")
	_, err := s.School(ctx, "s1") // a store that remembers it must still refuse after Close
	noErr(t, err, "School")
	noErr(t, s.Close(), "Close")
	noErr(t, s.Close(), "Close twice")
	if err := s.Ping(ctx); err == nil {
		t.Fatal("Ping after Close succeeded")
	}
	_, err = s.School(ctx, "s1")
	isErr(t, err, storage.ErrClosed, "School after Close")
	isErr(t, s.PutMeta(ctx, "k", []byte("v")), storage.ErrClosed, "PutMeta after Close")
	_, _, err = s.AppendMessage(ctx, newMsg("m1", "g1", "c1", 0, day))
	isErr(t, err, storage.ErrClosed, "AppendMessage after Close")
}

func testUpdateSchool(t *testing.T, s storage.Store) {
	ctx := t.Context()
	sc := storage.School{ID: "s1", Name: "Gymnasium", CreatedAt: base}
	noErr(t, s.CreateSchool(ctx, sc), "CreateSchool")
	if got, err := s.School(ctx, "s1"); err != nil || got.NoStudentDirect {
		t.Fatalf("School before UpdateSchool = %+v, %v", got, err)
	}
	noErr(t, s.UpdateSchool(ctx, "s1", func(x *storage.School) error {
		x.NoStudentDirect = true
		return nil
	}), "UpdateSchool")
	got, err := s.School(ctx, "s1")
	noErr(t, err, "School")
	if !got.NoStudentDirect || got.Name != "Gymnasium" {
		t.Fatalf("School after UpdateSchool = %+v", got)
	}
	err = s.UpdateSchool(ctx, "s1", func(x *storage.School) error {
		x.NoStudentDirect = false
		return errBoom
	})
	isErr(t, err, errBoom, "UpdateSchool returns fn's error")
	got, _ = s.School(ctx, "s1")
	if !got.NoStudentDirect {
		t.Fatal("an aborted UpdateSchool was written")
	}
	isErr(t, s.UpdateSchool(ctx, "nope", func(*storage.School) error { return nil }), storage.ErrNotFound, "UpdateSchool of an unknown school")
	if err := s.UpdateSchool(ctx, "s1", func(x *storage.School) error { x.ID = "s2"; return nil }); err == nil {
		t.Fatal("UpdateSchool allowed changing the ID")
	}
}

// testBackendChoices pins down what the doc comments leave open, as every
// backend decides it: unknown conversation, taken message ids, empty client
// ids, unknown users, invalid ids, one-member directs, changes of Login,
// empty ids, shared token hashes.
func testBackendChoices(t *testing.T, b storage.Store) {
	ctx := t.Context()
	msg := storage.Message{ID: "m1", Conversation: "g1", SenderUser: "u1", SenderDevice: "d", ClientID: "c1", SentAt: base, ExpiresAt: base.Add(time.Hour)}

	if _, _, err := b.AppendMessage(ctx, msg); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("AppendMessage to an unknown conversation: %v, want ErrNotFound", err)
	}
	if n, _ := b.CountMessages(ctx); n != 0 {
		t.Fatalf("CountMessages after a failed append = %d", n)
	}
	for _, id := range []string{"g1", "g2"} {
		if err := b.CreateConversation(ctx, storage.Conversation{ID: id, School: "s1", Kind: storage.ConvGroup, Members: []storage.Member{{UserID: "u1"}}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := b.AppendMessage(ctx, msg); err != nil {
		t.Fatal(err)
	}
	dup := msg
	dup.ClientID = "c2"
	if _, _, err := b.AppendMessage(ctx, dup); !errors.Is(err, storage.ErrConflict) {
		t.Fatalf("AppendMessage with a taken message ID: %v, want ErrConflict", err)
	}
	dup.Conversation = "g2"
	if _, _, err := b.AppendMessage(ctx, dup); !errors.Is(err, storage.ErrConflict) {
		t.Fatalf("AppendMessage with a message ID taken in another conversation: %v, want ErrConflict", err)
	}
	if got, err := b.Message(ctx, "m1", base); err != nil || got.Conversation != "g1" {
		t.Fatalf("Message m1 after the conflicts: %+v, %v", got, err)
	}
	// An empty client id is never deduplicated.
	for i := range 2 {
		m := msg
		m.ID, m.ClientID = fmt.Sprintf("e%d", i), ""
		if _, created, err := b.AppendMessage(ctx, m); err != nil || !created {
			t.Fatalf("AppendMessage with empty client id: created=%v err=%v", created, err)
		}
	}
	if n, _ := b.CountMessages(ctx); n != 3 {
		t.Fatalf("CountMessages = %d, want 3", n)
	}
	if err := b.RecordLoginFailure(ctx, "nobody"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("RecordLoginFailure of an unknown user: %v", err)
	}
	if err := b.CreateSchool(ctx, storage.School{ID: "bad\x00id"}); err == nil {
		t.Fatal("CreateSchool accepted an ID with NUL")
	}
	if _, _, err := b.CreateDirect(ctx, storage.Conversation{ID: "d1", School: "s1", Kind: storage.ConvDirect, Members: []storage.Member{{UserID: "u1"}}}); err == nil {
		t.Fatal("CreateDirect accepted one member")
	}
	// A direct conversation whose ID is taken by a group.
	direct := storage.Conversation{ID: "g2", School: "s1", Kind: storage.ConvDirect, Members: []storage.Member{{UserID: "u1"}, {UserID: "u2"}}}
	if _, _, err := b.CreateDirect(ctx, direct); !errors.Is(err, storage.ErrConflict) {
		t.Fatalf("CreateDirect with a taken ID: %v, want ErrConflict", err)
	}
	if list, _ := b.ConversationsOf(ctx, "u2"); len(list) != 0 {
		t.Fatalf("u2 indexed after the conflict: %v", list)
	}
	direct.ID = "d2"
	if c, created, err := b.CreateDirect(ctx, direct); err != nil || !created || c.ID != "d2" {
		t.Fatalf("CreateDirect after the conflict: %v %v %v", c.ID, created, err)
	}
	if err := b.UpdateUser(ctx, "u1", nil); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("UpdateUser of unknown user: %v", err)
	}
	if err := b.CreateUser(ctx, storage.User{ID: "u1", Login: "a"}); err != nil {
		t.Fatal(err)
	}
	if err := b.UpdateUser(ctx, "u1", func(u *storage.User) error { u.Login = "b"; return nil }); err == nil {
		t.Fatal("UpdateUser allowed a change of Login")
	}
	if _, err := b.UserByLogin(ctx, "b"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("login changed anyway: %v", err)
	}
	for name, err := range map[string]error{
		"User":         func() error { _, err := b.User(ctx, ""); return err }(),
		"UserByLogin":  func() error { _, err := b.UserByLogin(ctx, ""); return err }(),
		"Credential":   func() error { _, err := b.Credential(ctx, ""); return err }(),
		"Conversation": func() error { _, err := b.Conversation(ctx, ""); return err }(),
		"Message":      func() error { _, err := b.Message(ctx, "", base); return err }(),
		"Attachment":   func() error { _, err := b.Attachment(ctx, "", base); return err }(),
		"GetMeta":      func() error { _, err := b.GetMeta(ctx, ""); return err }(),
	} {
		if !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("%s of an empty ID: %v, want ErrNotFound", name, err)
		}
	}
	c1, c2 := newCred("cred-1", "user-1", storage.CredTrust, base), newCred("cred-2", "user-2", storage.CredTrust, base)
	c2.TokenHash = c1.TokenHash
	if err := b.PutCredential(ctx, c1); err != nil {
		t.Fatal(err)
	}
	if err := b.PutCredential(ctx, c2); !errors.Is(err, storage.ErrConflict) {
		t.Fatalf("PutCredential with another credential's hash: %v, want ErrConflict", err)
	}
	if got, err := b.CredentialByHash(ctx, c1.TokenHash); err != nil || got.ID != c1.ID {
		t.Fatalf("CredentialByHash after the conflict: %v %v", got.ID, err)
	}
	if _, err := b.Credential(ctx, c2.ID); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("the conflicting credential is findable by ID: %v", err)
	}
	if list, _ := b.CredentialsOf(ctx, c2.UserID); len(list) != 0 {
		t.Fatalf("the conflicting credential is listed: %v", list)
	}

}

func testUsersOfSchool(t *testing.T, s storage.Store) {
	ctx := t.Context()
	for _, u := range []storage.User{
		{ID: "u2", School: "s1", Login: "b", DisplayName: "B", Role: storage.RoleStudent, CreatedAt: base},
		{ID: "u1", School: "s1", Login: "a", DisplayName: "A", Role: storage.RoleTeacher, CreatedAt: base},
		{ID: "u3", School: "s2", Login: "c", DisplayName: "C", Role: storage.RoleStudent, CreatedAt: base},
	} {
		noErr(t, s.CreateUser(ctx, u), "CreateUser")
	}
	got, err := s.UsersOfSchool(ctx, "s1")
	noErr(t, err, "UsersOfSchool")
	if len(got) != 2 || got[0].ID != "u1" || got[1].ID != "u2" || got[0].DisplayName != "A" || got[1].Role != storage.RoleStudent {
		t.Fatalf("UsersOfSchool(s1) = %+v, want u1 and u2 in order", got)
	}
	if got, err := s.UsersOfSchool(ctx, "nope"); err != nil || got == nil || len(got) != 0 {
		t.Fatalf("UsersOfSchool of an unknown school = %#v, %v; want an empty list", got, err)
	}
}

// testAppendMessageRev: a store that fills Conversation.Rev appends only
// while the record has the revision given, atomically with the append. A
// store without revisions implements no RevAppender and leaves Rev empty.
func testAppendMessageRev(t *testing.T, s storage.Store) {
	ctx := t.Context()
	noErr(t, s.CreateConversation(ctx, storage.Conversation{ID: "g1", School: "s1", Kind: storage.ConvGroup,
		Members: []storage.Member{{UserID: "u1", CanWrite: true}}}), "CreateConversation")
	c, err := s.Conversation(ctx, "g1")
	noErr(t, err, "Conversation")
	ra, ok := s.(storage.RevAppender)
	if !ok {
		if c.Rev != "" {
			t.Fatalf("Rev = %q from a store that cannot check it", c.Rev)
		}
		return
	}
	if c.Rev == "" {
		t.Fatal("a RevAppender left Conversation.Rev empty")
	}
	m1 := newMsg("m1", "g1", "c1", 0, day)
	got, created, err := ra.AppendMessageRev(ctx, m1, c.Rev)
	noErr(t, err, "AppendMessageRev with the current revision")
	if !created || got.Seq != 1 {
		t.Fatalf("AppendMessageRev = seq %d, created %v", got.Seq, created)
	}

	// The seq moving on is no change of the record.
	again, err := s.Conversation(ctx, "g1")
	noErr(t, err, "Conversation")
	eq(t, "Rev after an append", again.Rev, c.Rev)

	noErr(t, s.UpdateConversation(ctx, "g1", func(c *storage.Conversation) error {
		c.Members[0].CanWrite = false
		return nil
	}), "UpdateConversation")
	_, _, err = ra.AppendMessageRev(ctx, newMsg("m2", "g1", "c2", time.Second, day), c.Rev)
	isErr(t, err, storage.ErrStale, "AppendMessageRev with the revision before the update")
	if n, _ := s.CountMessages(ctx); n != 1 {
		t.Fatalf("CountMessages after a stale append = %d, want 1", n)
	}
	// The refused id was withdrawn: the next append may use it.
	fresh, err := s.Conversation(ctx, "g1")
	noErr(t, err, "Conversation")
	if fresh.Rev == c.Rev {
		t.Fatal("Rev unchanged by a change of a member's right")
	}
	got, created, err = ra.AppendMessageRev(ctx, newMsg("m2", "g1", "c2", time.Second, day), fresh.Rev)
	noErr(t, err, "AppendMessageRev with the new revision")
	if !created || got.Seq != 2 {
		t.Fatalf("AppendMessageRev = seq %d, created %v; want 2, true", got.Seq, created)
	}
	// A retry with the same client id is answered from the log whatever
	// revision it names, since the check comes first: it is stale.
	_, _, err = ra.AppendMessageRev(ctx, newMsg("m3", "g1", "c2", 2*time.Second, day), c.Rev)
	isErr(t, err, storage.ErrStale, "a retry naming an old revision")
	// An empty revision checks nothing; an unknown conversation is gone.
	_, created, err = ra.AppendMessageRev(ctx, newMsg("m3", "g1", "c3", 2*time.Second, day), "")
	noErr(t, err, "AppendMessageRev without a revision")
	if !created {
		t.Fatal("AppendMessageRev without a revision did not append")
	}
	_, _, err = ra.AppendMessageRev(ctx, newMsg("m4", "g9", "c4", 3*time.Second, day), fresh.Rev)
	isErr(t, err, storage.ErrNotFound, "AppendMessageRev to an unknown conversation")
}
