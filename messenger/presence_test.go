package messenger_test

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"klassenfunk/internal/redistest"
	"klassenfunk/internal/testenv"
	"klassenfunk/messenger"
)

// TestPresenceDeadNode: a node that dies without closing (kill -9) leaves
// its presence entries behind for their TTL, but the other nodes stop
// counting them once it has not said it is alive for NodeTTL, so its
// devices get pushes again; a live node's entries keep counting.
func TestPresenceDeadNode(t *testing.T) {
	srv := redistest.Start(t)
	client := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { client.Close() })
	ctx := t.Context()
	dead := messenger.NewRedisPresence(client, "pres:", "dead", 0, nil) // 30-s entries
	live := messenger.NewRedisPresence(client, "pres:", "live", 0, nil)
	other := messenger.NewRedisPresence(client, "pres:", "other", 0, nil)
	t.Cleanup(live.Close)
	t.Cleanup(other.Close)
	online := func(user string) bool {
		t.Helper()
		on, err := other.Online(ctx, user, "phone")
		if err != nil {
			t.Fatal(err)
		}
		return on
	}
	dead.Connected("ute", "phone")
	live.Connected("lea", "phone")
	testenv.Eventually(t, 5*time.Second, "both devices online", func() bool { return online("ute") && online("lea") })

	dead.Crash()
	crashed := time.Now()
	// The dead node's device goes offline well before its entries' 30-s
	// TTL; the live node's stays online all the while.
	stillLive := func() {
		if !online("lea") {
			t.Fatalf("lea, on a live node, counted as offline %v after the other node died", time.Since(crashed))
		}
	}
	testenv.Eventually(t, 3*messenger.NodeTTL, "the dead node's device offline", func() bool {
		stillLive()
		return !online("ute")
	})
	gone := time.Since(crashed)
	if gone < messenger.NodeTTL-2*messenger.NodeBeat {
		t.Fatalf("ute counted as offline %v after the crash: before the node could be missed", gone)
	}
	t.Logf("the dead node's device offline after %v", gone)
	// The live node has beaten several times since, and still counts.
	testenv.Eventually(t, 2*messenger.NodeTTL, "the live node's beats past its TTL", func() bool {
		stillLive()
		return time.Since(crashed) > messenger.NodeTTL+2*messenger.NodeBeat
	})

	// A node that closes cleanly takes its devices offline at once.
	live.Close()
	if online("lea") {
		t.Fatal("lea still online after her node closed")
	}
}
