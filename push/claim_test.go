package push_test

import (
	"context"
	"testing"
	"time"

	"klassenfunk/push"
	"klassenfunk/storage"
)

// otherNodeStore is the relay's store as seen by a node whose every claim
// another node already holds (cluster mode, after a restart).
type otherNodeStore struct{ *storage.Bolt }

func (otherNodeStore) ClaimPush(context.Context, string, string, string, time.Time) (bool, error) {
	return false, nil
}

// A push claimed by another node sharing the outbox is neither sent nor
// acknowledged here: the claiming node sends it and removes the entry.
func TestPushClaimedElsewhereIsLeftToItsOwner(t *testing.T) {
	r := newRig(t)
	a := r.device("u1", "phone", push.ProviderFCM)
	cfg := r.config()
	cfg.Store = otherNodeStore{r.store}
	rl, err := push.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.relay = rl
	t.Cleanup(rl.Close)
	r.send("conv-1", []string{"u1", "u2"}, "u2", "d2")

	eventually(t, "the claim refused", func() bool {
		return r.outcome(push.ProviderFCM, push.OutcomeClaimedElsewhere) >= 1
	})
	if n := len(r.prov.To(r.tokens[a])); n != 0 {
		t.Fatalf("%d pushes sent for an entry another node claimed", n)
	}
	if p := r.pending(); len(p) != 1 || p[0].CredID != a {
		t.Fatalf("outbox %+v: the other node's entry must stay until it acknowledges", p)
	}
}
