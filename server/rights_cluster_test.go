package server_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"klassenfunk/internal/redistest"
	"klassenfunk/internal/testenv"
	"klassenfunk/proto"
	"klassenfunk/server"
	"klassenfunk/storage"
)

// TestClusterEraseAndCountry: in cluster mode, an erasure on node 1 closes
// the user's socket on node 2 and leaves nothing of the user in Redis; a
// restriction set on node 1 closes a refused socket on node 2 with 4403.
func TestClusterEraseAndCountry(t *testing.T) {
	r := redistest.Start(t)
	geo := testenv.GeoIP(t, nil)
	cluster := func(c *server.Config) { c.RedisURL = r.URL() }
	n1 := testenv.New(t, cluster, testenv.WithGeoIP(geo))
	n2 := testenv.New(t, cluster, testenv.WithGeoIP(geo))
	school := n1.CreateSchool("Gesamtschule Nord")
	alice := n1.CreateUser(school, "alice", "teacher")
	bob := n2.CreateUser(school, "bob", "student")
	aTok := tokenFrom(t, n1, "alice", "a-phone", addrDE)
	bTok := tokenFrom(t, n2, "bob", "b-phone", addrDE)
	var conv struct{ ID string }
	n1.JSON("POST", "/api/v1/conversations", aTok, map[string]string{"kind": "direct", "peer": bob}, http.StatusCreated, &conv)

	// Country: bob's socket from France on node 2 closes when bob sets a
	// restriction on node 1; the one from Germany stays.
	open := func(env *testenv.Env, tok, addr string) *testenv.WS {
		t.Helper()
		ws, _, err := wsFrom(t, env, tok, addr)
		if err != nil {
			t.Fatal(err)
		}
		wantReady(t, ws)
		return ws
	}
	bFR, bDE := open(n2, bTok, addrFR), open(n2, bTok, addrDE)
	authWantStatus(t, setCountries(t, n1, bTok, addrDE, []string{"DE"}), 204)
	if code := bFR.CloseCode(5 * time.Second); code != int(proto.CloseCountryBlocked) {
		t.Fatalf("bob's socket from France on node 2: close code %d, want 4403", code)
	}
	bDE.Send(`{"type":"ping"}`)
	if f, _ := bDE.ReadType(proto.TypePong); f == nil {
		t.Fatal("bob's socket from Germany: no pong")
	}

	// Erasure: alice erases on node 1; her socket on node 2 closes.
	aWS := open(n2, aTok, addrFR)
	authWantStatus(t, authCall(t, n1, "POST", "/api/v1/me/erase", aTok, map[string]string{"client_hash": testenv.ClientHash(testenv.Password("alice"))}, from(addrDE)), 204)
	if code := aWS.CloseCode(5 * time.Second); code != int(proto.CloseUnauthorized) {
		t.Fatalf("alice's socket on node 2: close code %d, want 4401", code)
	}
	authWantError(t, authCall(t, n2, "GET", "/api/v1/me", aTok, nil, from(addrDE)), 401, "unauthorized")
	ctx := context.Background()
	st := n2.Srv.Store()
	if _, err := st.User(ctx, alice); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("alice in Redis: %v", err)
	}
	c, err := st.Conversation(ctx, conv.ID)
	if err != nil || len(c.Members) != 1 || c.Members[0].UserID != bob {
		t.Fatalf("direct conversation after the erasure: %+v %v", c, err)
	}
	var stats struct {
		Erased int `json:"erased_accounts"`
		Trust  int `json:"trust_relationships"`
	}
	n2.JSON("GET", "/api/v1/admin/stats", testenv.OperatorToken, nil, 200, &stats)
	if stats.Erased != 1 || stats.Trust != 1 {
		t.Fatalf("stats %+v", stats)
	}
}
