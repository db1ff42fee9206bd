package messenger

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"klassenfunk/internal/redistest"
)

// TestPresenceDeadNode: a node that dies without closing (kill -9) leaves
// its presence entries behind for their TTL, but the other nodes stop
// counting them once it has not said it is alive for nodeTTL, so its
// devices get pushes again; a live node's entries keep counting.
func TestPresenceDeadNode(t *testing.T) {
	srv := redistest.Start(t)
	client := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { client.Close() })
	ctx := t.Context()
	dead := NewRedisPresence(client, "pres:", "dead", 0, nil) // 30-s entries
	live := NewRedisPresence(client, "pres:", "live", 0, nil)
	other := NewRedisPresence(client, "pres:", "other", 0, nil)
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
	for deadline := time.Now().Add(5 * time.Second); !online("ute") || !online("lea"); {
		if time.Now().After(deadline) {
			t.Fatal("the devices never counted as online")
		}
		time.Sleep(10 * time.Millisecond)
	}

	// As kill -9: the loops stop, nothing is removed.
	close(dead.stop)
	dead.wg.Wait()
	crashed := time.Now()
	var gone time.Duration
	for {
		d := time.Since(crashed)
		if !online("lea") {
			t.Fatalf("lea, on a live node, counted as offline %v after the other node died", d)
		}
		if gone == 0 && !online("ute") {
			gone = d
		}
		if gone != 0 && d > nodeTTL+2*nodeBeat { // the live node has beaten several times
			break
		}
		if d > presenceTestTTL {
			t.Fatalf("ute, on the dead node, still online %v after it died", d)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if gone < nodeTTL-2*nodeBeat {
		t.Fatalf("ute counted as offline %v after the crash: before the node could be missed", gone)
	}
	t.Logf("the dead node's device offline after %v", gone)

	// A node that closes cleanly takes its devices offline at once.
	live.Close()
	if online("lea") {
		t.Fatal("lea still online after her node closed")
	}
}

// presenceTestTTL bounds the wait for a dead node's device: well below the
// entries' 30-s TTL.
const presenceTestTTL = 3 * nodeTTL
