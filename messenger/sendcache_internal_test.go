package messenger

import (
	"context"
	"errors"
	"testing"
	"time"

	"klassenfunk/auth"
	"klassenfunk/proto"
	"klassenfunk/storage"
)

// staleStore is a store whose conversation changes under every append
// (storage.RevAppender): each append is stale.
type staleStore struct {
	storage.Store
	appends int
	stored  storage.Message // what MessageByClientID finds for client id "stored"
}

func (s *staleStore) Conversation(_ context.Context, id string) (storage.Conversation, error) {
	return storage.Conversation{ID: id, School: "s1", Kind: storage.ConvGroup, Rev: "r",
		Members: []storage.Member{{UserID: "u1", CanWrite: true}, {UserID: "u2", CanWrite: true}}}, nil
}

func (s *staleStore) AppendMessageRev(context.Context, storage.Message, string) (storage.Message, bool, error) {
	s.appends++
	return storage.Message{}, false, storage.ErrStale
}

func (s *staleStore) MessageByClientID(_ context.Context, _, _, _, clientID string, _ time.Time) (storage.Message, error) {
	if clientID == "stored" {
		return s.stored, nil
	}
	return storage.Message{}, storage.ErrNotFound
}

// A conversation that changes under every attempt ends a send after
// maxSendAttempts fresh reads: with 409, or, for the retry of a message
// stored before, with that message.
func TestSendGivesUpOnChurn(t *testing.T) {
	st := &staleStore{stored: storage.Message{ID: "m1", Conversation: "c1", Seq: 7}}
	n := catchUpNode(t, st, time.Now())
	n.revs = st
	p := auth.Principal{User: storage.User{ID: "u1", School: "s1", Role: storage.RoleTeacher}, Cred: storage.Credential{ID: "cr1", DeviceID: "d1"}}
	send := func(clientID string) *proto.Send {
		return &proto.Send{Conversation: "c1", ClientID: clientID, Ciphertext: []byte("x"), Keys: map[string][]byte{"u2/d2": []byte("k")}}
	}
	_, _, err := n.Send(t.Context(), p, send("new"))
	var pe *proto.Error
	if !errors.As(asProtoError(n, err), &pe) || pe.Code != proto.CodeConflict {
		t.Fatalf("a new message: %v, want conflict", err)
	}
	if st.appends != maxSendAttempts {
		t.Fatalf("%d appends, want %d", st.appends, maxSendAttempts)
	}
	m, created, err := n.Send(t.Context(), p, send("stored"))
	if err != nil || created || m.ID != "m1" {
		t.Fatalf("a retry of a stored message: %+v, %v, %v; want m1", m, created, err)
	}
}
