package messenger_test

import (
	"context"
	"testing"
	"time"

	"klassenfunk/internal/testenv"
	"klassenfunk/proto"
	"klassenfunk/storage"
)

// TestRetryPublishesAgain: a message that a node stored but did not
// publish (it died in between; the app retries with the same client_id,
// in a cluster on another node) reaches the members' open sockets when
// the retry comes, not only through their next sync; the retry's answer
// is the stored message.
func TestRetryPublishesAgain(t *testing.T) {
	c := newChat(t)
	bob, tablet := c.env.Dial(c.b1), c.env.Dial(c.alice2)
	now := c.env.Clock.Now().UTC()
	stored, created, err := c.env.Srv.Store().AppendMessage(context.Background(), storage.Message{
		ID: "stored-unpublished", Conversation: c.conv, SenderUser: c.alice, SenderDevice: "a-phone", ClientID: "c-lost",
		SentAt: now, ExpiresAt: now.Add(time.Hour), Ciphertext: []byte("hello"),
		Keys: map[string][]byte{c.bob + "/b-phone": {1}, c.alice + "/a-tablet": {2}, c.alice + "/a-phone": {3}},
	})
	if err != nil || !created {
		t.Fatal(created, err)
	}

	phone := c.env.Dial(c.alice1)
	phone.Send(c.sendFrame("r1", "c-lost", "hello"))
	if sent, _ := phone.ReadType(proto.TypeSent); sent.ID != stored.ID || sent.Seq != stored.Seq {
		t.Fatalf("sent = %+v, want the stored message %s seq %d", sent, stored.ID, stored.Seq)
	}
	for name, ws := range map[string]*testenv.WS{"bob": bob, "alice's tablet": tablet} {
		if f := ws.Read(); f.Type != proto.TypeMessage || f.Message.ID != stored.ID || f.Message.Seq != stored.Seq {
			t.Fatalf("%s got %+v, want message %s", name, f, stored.ID)
		}
	}
}
