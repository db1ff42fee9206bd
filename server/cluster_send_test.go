package server_test

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"testing"
	"time"

	"klassenfunk/internal/testenv"
	"klassenfunk/proto"
)

// postMessage sends one message over HTTP on node e and returns the
// response.
func postMessage(e *testenv.Env, tok, conv, clientID string, keyFor ...string) testenv.Response {
	keys := map[string]string{}
	for _, k := range keyFor {
		keys[k] = "AAAA"
	}
	return e.Do("POST", "/api/v1/conversations/"+conv+"/messages", tok, map[string]any{
		"client_id": clientID, "ciphertext": base64.StdEncoding.EncodeToString([]byte("x")), "keys": keys,
	})
}

func wantStatus(t *testing.T, what string, r testenv.Response, status int, code proto.Code) {
	t.Helper()
	if r.Status != status || (code != "" && r.ErrorCode() != string(code)) {
		t.Fatalf("%s: %d %s, want %d %s", what, r.Status, r.ErrorCode(), status, code)
	}
}

// A node keeps the conversations its senders write to (cluster mode), and
// the append checks them: a membership change made on another node holds
// for the very next send, and a right given there is seen at once too.
func TestClusterSendSeesMembershipChanges(t *testing.T) {
	tn := startTwoNodes(t)
	var g struct{ ID string }
	tn.n1.JSON("POST", "/api/v1/conversations", tn.aTok, map[string]any{"kind": "group", "title": "7b",
		"members": []map[string]any{{"user_id": tn.bob, "can_write": true}}}, http.StatusCreated, &g)
	key := proto.KeyName(tn.alice, "a-phone")
	member := func(canWrite bool) {
		tn.n1.JSON("PUT", "/api/v1/conversations/"+g.ID+"/members/"+tn.bob, tn.aTok,
			map[string]bool{"can_write": canWrite}, http.StatusNoContent, nil)
	}

	// Node 2 has the conversation in memory after bob's first send.
	wantStatus(t, "bob's first send", postMessage(tn.n2, tn.bTok, g.ID, "c1", key), http.StatusCreated, "")
	member(false)
	wantStatus(t, "bob's send right after losing the right on node 1",
		postMessage(tn.n2, tn.bTok, g.ID, "c2", key), http.StatusForbidden, proto.CodeForbidden)
	member(true)
	wantStatus(t, "bob's send right after getting the right back",
		postMessage(tn.n2, tn.bTok, g.ID, "c3", key), http.StatusCreated, "")
	tn.n1.JSON("DELETE", "/api/v1/conversations/"+g.ID+"/members/"+tn.bob, tn.aTok, nil, http.StatusNoContent, nil)
	wantStatus(t, "bob's send right after his removal on node 1",
		postMessage(tn.n2, tn.bTok, g.ID, "c4", key), http.StatusNotFound, proto.CodeNotFound)

	// What was stored: c1 and c3, with seqs 1 and 2.
	var page struct{ Messages []proto.Message }
	tn.n1.JSON("GET", "/api/v1/conversations/"+g.ID+"/messages", tn.aTok, nil, http.StatusOK, &page)
	if len(page.Messages) != 2 || page.Messages[0].Seq != 1 || page.Messages[1].Seq != 2 {
		t.Fatalf("stored %+v, want two messages with seq 1 and 2", page.Messages)
	}

	// A key for a user who joined on node 1 after node 2 last read the
	// conversation is kept, not dropped as a non-member's.
	tn.n1.JSON("PUT", "/api/v1/conversations/"+g.ID+"/members/"+tn.bob, tn.aTok, map[string]bool{"can_write": true}, http.StatusNoContent, nil)
	wantStatus(t, "bob back in", postMessage(tn.n2, tn.bTok, g.ID, "c5", key), http.StatusCreated, "")
	carol := tn.n1.CreateUser(tn.school, "carol", "teacher")
	tn.n1.JSON("PUT", "/api/v1/conversations/"+g.ID+"/members/"+carol, tn.aTok, map[string]bool{"can_write": false}, http.StatusNoContent, nil)
	wantStatus(t, "bob's send with a key for the new member",
		postMessage(tn.n2, tn.bTok, g.ID, "c6", proto.KeyName(carol, "c-phone")), http.StatusCreated, "")
	cTok, _ := tn.n1.Login("carol", "c-phone", true)
	var hers struct{ Messages []proto.Message }
	tn.n1.JSON("GET", "/api/v1/conversations/"+g.ID+"/messages?after_seq=3", cTok, nil, http.StatusOK, &hers)
	if len(hers.Messages) != 1 || len(hers.Messages[0].Keys) != 1 {
		t.Fatalf("carol reads %+v, want the message with her key", hers.Messages)
	}
}

// Switching student_direct off holds on every node within a second or so;
// switching it on holds at once.
func TestClusterStudentSwitchAcrossNodes(t *testing.T) {
	tn := startTwoNodes(t)
	school := tn.school
	sue := tn.n1.CreateUser(school, "sue", "student")
	var d struct{ ID string }
	tn.n2.JSON("POST", "/api/v1/conversations", tn.bTok, map[string]string{"kind": "direct", "peer": sue}, http.StatusCreated, &d)
	key := proto.KeyName(sue, "s-phone")
	wantStatus(t, "bob to sue", postMessage(tn.n2, tn.bTok, d.ID, "c0", key), http.StatusCreated, "")

	swtch := func(on bool) {
		tn.n1.JSON("PATCH", "/api/v1/schools/"+school, testenv.OperatorToken, map[string]bool{"student_direct": on}, http.StatusOK, nil)
	}
	swtch(false)
	// Each try is a send (the test clock stands still, so the send
	// limit's burst is all there is): one every 100 ms.
	var last time.Time
	i := 0
	testenv.Eventually(t, 3*time.Second, "node 2 refusing bob's message to sue", func() bool {
		if time.Since(last) < 100*time.Millisecond {
			return false
		}
		last = time.Now()
		i++
		r := postMessage(tn.n2, tn.bTok, d.ID, fmt.Sprint("c", i), key)
		return r.Status == http.StatusForbidden && r.ErrorCode() == string(proto.CodeForbidden)
	})
	swtch(true)
	wantStatus(t, "bob to sue right after switching on", postMessage(tn.n2, tn.bTok, d.ID, "on", key), http.StatusCreated, "")
}
