package messenger_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"

	"klassenfunk/internal/testenv"
	"klassenfunk/messenger"
	"klassenfunk/proto"
	"klassenfunk/storage"
)

func TestHTTPDirectConversationIdempotent(t *testing.T) {
	w := newHTTPWorld(t)
	tina, sam := w.u["tina"], w.u["sam"]

	var first convView
	r := w.env.JSON("POST", "/api/v1/conversations", tina.tok, httpDirect(sam.id), http.StatusCreated, &first)
	if first.ID == "" || first.Kind != "direct" || first.LastSeq != 0 {
		t.Fatalf("new direct conversation: %s", r.Body)
	}
	if bytes.Contains(r.Body, []byte(`"title"`)) {
		t.Fatalf("a direct conversation has no title: %s", r.Body)
	}
	if got, want := httpMemberMap(t, first.Members), map[string]bool{tina.id: true, sam.id: true}; !maps.Equal(got, want) {
		t.Fatalf("members %v, want %v", got, want)
	}

	for name, tc := range map[string]struct{ tok, peer string }{
		"again from the creator": {tina.tok, sam.id},
		"from the peer":          {sam.tok, tina.id},
	} {
		t.Run(name, func(t *testing.T) {
			var again convView
			w.env.JSON("POST", "/api/v1/conversations", tc.tok, httpDirect(tc.peer), http.StatusOK, &again)
			if again.ID != first.ID || again.Kind != "direct" || len(again.Members) != 2 {
				t.Fatalf("got %+v, want conversation %s", again, first.ID)
			}
		})
	}
	for _, u := range []httpUser{tina, sam} {
		if got := w.conversations(u.tok); len(got) != 1 || got[first.ID].ID != first.ID {
			t.Fatalf("conversations of %s: %+v, want only %s", u.id, got, first.ID)
		}
	}
}

func TestHTTPDirectConversationRefused(t *testing.T) {
	w := newHTTPWorld(t)
	tina := w.u["tina"]
	for name, tc := range map[string]struct {
		tok    string
		body   any
		status int
		code   proto.Code
	}{
		"peer in another school": {tina.tok, httpDirect(w.u["ben"].id), 404, proto.CodeNotFound},
		"unknown peer":           {tina.tok, httpDirect("no-such-user"), 404, proto.CodeNotFound},
		"peer is the caller":     {tina.tok, httpDirect(tina.id), 400, proto.CodeInvalidRequest},
		"peer missing":           {tina.tok, map[string]any{"kind": "direct"}, 400, proto.CodeInvalidRequest},
		"peer not a string":      {tina.tok, map[string]any{"kind": "direct", "peer": 7}, 400, proto.CodeInvalidRequest},
		"malformed JSON":         {tina.tok, `{"kind":"direct",`, 400, proto.CodeInvalidRequest},
		"no credential":          {"", httpDirect(w.u["sam"].id), 401, proto.CodeUnauthorized},
	} {
		t.Run(name, func(t *testing.T) {
			httpWantError(t, w.env.Do("POST", "/api/v1/conversations", tc.tok, tc.body), tc.status, tc.code)
		})
	}
	for _, login := range []string{"tina", "ben"} {
		if got := w.conversations(w.u[login].tok); len(got) != 0 {
			t.Fatalf("%s has conversations after refused requests: %+v", login, got)
		}
	}
}

func TestHTTPStudentDirectSwitch(t *testing.T) {
	w := newHTTPWorld(t)
	sam, sue, sol := w.u["sam"], w.u["sue"], w.u["sol"]
	patch := func(tok string, body any) testenv.Response {
		return w.env.Do("PATCH", "/api/v1/schools/"+w.a, tok, body)
	}
	off := map[string]bool{"student_direct": false}

	for name, tc := range map[string]struct {
		tok    string
		body   any
		status int
		code   proto.Code
	}{
		"teacher":                   {w.u["tina"].tok, off, 403, proto.CodeForbidden},
		"student":                   {sam.tok, off, 403, proto.CodeForbidden},
		"parent":                    {w.u["pat"].tok, off, 403, proto.CodeForbidden},
		"admin of another school":   {w.u["bella"].tok, off, 404, proto.CodeNotFound},
		"no credential":             {"", off, 401, proto.CodeUnauthorized},
		"student_direct not a bool": {w.u["anna"].tok, map[string]any{"student_direct": "no"}, 400, proto.CodeInvalidRequest},
		"student_direct a number":   {w.u["anna"].tok, map[string]any{"student_direct": 0}, 400, proto.CodeInvalidRequest},
		"student_direct an object":  {w.u["anna"].tok, map[string]any{"student_direct": map[string]bool{"on": true}}, 400, proto.CodeInvalidRequest},
	} {
		t.Run(name, func(t *testing.T) { httpWantError(t, patch(tc.tok, tc.body), tc.status, tc.code) })
	}
	httpWantError(t, w.env.Do("PATCH", "/api/v1/schools/no-such-school", testenv.OperatorToken, off), 404, proto.CodeNotFound)

	// On by default, and none of the refused PATCHes switched it off.
	samSue := w.direct(sam.tok, sue.id)
	before := w.post(sam.tok, samSue, httpMsg("before", "hi", []string{sam.key(), sue.key()}))
	samTom := w.direct(sam.tok, w.u["tom"].id)

	type school struct {
		ID            string `json:"id"`
		Name          string `json:"name"`
		StudentDirect *bool  `json:"student_direct"`
	}
	var s school
	w.env.JSON("PATCH", "/api/v1/schools/"+w.a, w.u["anna"].tok, off, http.StatusOK, &s)
	if s.ID != w.a || s.Name != "Schule am See" || s.StudentDirect == nil || *s.StudentDirect {
		t.Fatalf("PATCH answer %+v", s)
	}

	t.Run("switched off", func(t *testing.T) {
		for name, tc := range map[string]struct {
			tok, peer string
			status    int
		}{
			"student to student":          {sam.tok, sol.id, http.StatusForbidden},
			"other student to student":    {sol.tok, sue.id, http.StatusForbidden},
			"teacher to student":          {w.u["tom"].tok, sol.id, http.StatusCreated},
			"student to teacher":          {sol.tok, w.u["tina"].id, http.StatusCreated},
			"student to parent":           {sol.tok, w.u["pat"].id, http.StatusCreated},
			"admin to student":            {w.u["anna"].tok, sol.id, http.StatusCreated},
			"other school is not touched": {w.u["bert"].tok, w.u["ben"].id, http.StatusCreated},
		} {
			t.Run(name, func(t *testing.T) {
				r := w.env.Do("POST", "/api/v1/conversations", tc.tok, httpDirect(tc.peer))
				if tc.status == http.StatusForbidden {
					httpWantError(t, r, tc.status, proto.CodeForbidden)
					return
				}
				if r.Status != tc.status {
					t.Fatalf("status %d, want %d: %s", r.Status, tc.status, r.Body)
				}
			})
		}
		if got := w.conversations(sol.tok); len(got) != 4 {
			t.Fatalf("sol has %d conversations, want 4 (tom, tina, pat, anna)", len(got))
		}
	})

	// A conversation of two students that exists already is read-only:
	// listed without can_write, refused on both paths, still readable.
	t.Run("existing conversation of two students", func(t *testing.T) {
		for _, u := range []httpUser{sam, sue} {
			if got := w.members(u.tok, samSue); got[sam.id] || got[sue.id] {
				t.Errorf("%s sees members %v, want no can_write", u.id, got)
			}
		}
		if got := w.members(sam.tok, samTom); !got[sam.id] || !got[w.u["tom"].id] {
			t.Errorf("sam's conversation with a teacher lists %v, want can_write for both", got)
		}
		r := w.env.Do("POST", "/api/v1/conversations/"+samSue+"/messages", sam.tok, httpMsg("off", "x", []string{sam.key(), sue.key()}))
		httpWantError(t, r, http.StatusForbidden, proto.CodeForbidden)
		ws := w.env.Dial(sue.tok)
		s := &proto.Send{Conversation: samSue, ClientID: "off-ws", Ciphertext: []byte("x"),
			Keys: map[string][]byte{sam.key(): []byte("k"), sue.key(): []byte("k")}}
		ws.Send(string(proto.AppendSendFrame(nil, "r1", s)))
		if f := ws.Read(); f.Type != proto.TypeError || f.Code != proto.CodeForbidden || f.Ref != "r1" {
			t.Fatalf("send frame: got %+v, want forbidden", f)
		}
		w.post(sam.tok, samTom, httpMsg("to-teacher", "x", []string{sam.key()}))
		if msgs, _ := w.history(sue.tok, samSue, ""); len(msgs) != 1 {
			t.Fatalf("history has %d messages, want the 1 sent before", len(msgs))
		}

		// A retry of the message stored before the switch (its answer was
		// lost) gets that message, on both paths; nothing new is stored.
		var again struct {
			ID  string `json:"id"`
			Seq uint64 `json:"seq"`
		}
		w.env.JSON("POST", "/api/v1/conversations/"+samSue+"/messages", sam.tok, httpMsg("before", "hi", []string{sam.key(), sue.key()}), http.StatusOK, &again)
		if again.ID != before.ID || again.Seq != before.Seq {
			t.Fatalf("HTTP retry got %s/%d, want the stored %s/%d", again.ID, again.Seq, before.ID, before.Seq)
		}
		samWS := w.env.Dial(sam.tok)
		retry := &proto.Send{Conversation: samSue, ClientID: "before", Ciphertext: []byte("hi"),
			Keys: map[string][]byte{sam.key(): []byte("k"), sue.key(): []byte("k")}}
		samWS.Send(string(proto.AppendSendFrame(nil, "r2", retry)))
		if f := samWS.Read(); f.Type != proto.TypeSent || f.ID != before.ID || f.Seq != before.Seq || f.Ref != "r2" {
			t.Fatalf("WebSocket retry: got %+v, want sent %s/%d", f, before.ID, before.Seq)
		}
		// Sue has sent no message with that client id: still refused.
		r = w.env.Do("POST", "/api/v1/conversations/"+samSue+"/messages", sue.tok, httpMsg("before", "hi", []string{sam.key(), sue.key()}))
		httpWantError(t, r, http.StatusForbidden, proto.CodeForbidden)
		if msgs, _ := w.history(sue.tok, samSue, ""); len(msgs) != 1 {
			t.Fatalf("history has %d messages after the retries, want 1", len(msgs))
		}
	})

	// The operator switches it on again.
	s = school{}
	w.env.JSON("PATCH", "/api/v1/schools/"+w.a, testenv.OperatorToken, map[string]bool{"student_direct": true}, http.StatusOK, &s)
	if s.ID != w.a || s.StudentDirect == nil || !*s.StudentDirect {
		t.Fatalf("operator PATCH answer %+v", s)
	}
	// An empty PATCH changes nothing.
	s = school{}
	w.env.JSON("PATCH", "/api/v1/schools/"+w.a, testenv.OperatorToken, map[string]any{}, http.StatusOK, &s)
	if s.StudentDirect == nil || !*s.StudentDirect {
		t.Fatalf("empty PATCH answer %+v", s)
	}
	// null restores the default (on): a merge patch removes the setting.
	w.env.JSON("PATCH", "/api/v1/schools/"+w.a, testenv.OperatorToken, off, http.StatusOK, nil)
	s = school{}
	w.env.JSON("PATCH", "/api/v1/schools/"+w.a, testenv.OperatorToken, map[string]any{"student_direct": nil}, http.StatusOK, &s)
	if s.StudentDirect == nil || !*s.StudentDirect {
		t.Fatalf("PATCH with null answered %+v, want student_direct true", s)
	}
	w.env.JSON("POST", "/api/v1/conversations", sam.tok, httpDirect(sol.id), http.StatusCreated, nil)
	if got := w.members(sue.tok, samSue); !got[sam.id] || !got[sue.id] {
		t.Errorf("switched on again: members %v, want can_write for both", got)
	}
	if m := w.post(sue.tok, samSue, httpMsg("after", "x", []string{sam.key(), sue.key()})); m.Seq != 2 {
		t.Errorf("switched on again: seq %d, want 2", m.Seq)
	}
}

func TestHTTPCreateGroup(t *testing.T) {
	w := newHTTPWorld(t)
	tina, sam, sue := w.u["tina"], w.u["sam"], w.u["sue"]
	good := strings.Repeat("ä", 200)

	t.Run("teacher, duplicates collapsed", func(t *testing.T) {
		var c convView
		r := w.env.JSON("POST", "/api/v1/conversations", tina.tok, httpGroup("Klasse 7b",
			httpMember(sam.id, false), httpMember(sue.id, true), httpMember(sam.id, false), httpMember(tina.id, false),
		), http.StatusCreated, &c)
		if c.ID == "" || c.Kind != "group" || c.Title != "Klasse 7b" || c.LastSeq != 0 {
			t.Fatalf("created %s", r.Body)
		}
		got := httpMemberMap(t, c.Members)
		if len(got) != 3 || !got[tina.id] || !got[sue.id] {
			t.Fatalf("members %v: want tina (can_write), sam, sue (can_write), once each", got)
		}
		if w, ok := got[sam.id]; !ok || w {
			t.Fatalf("members %v: want sam without can_write", got)
		}
		if listed := w.members(sam.tok, c.ID); !maps.Equal(listed, got) {
			t.Fatalf("GET /conversations shows members %v, POST answered %v", listed, got)
		}
	})
	t.Run("admin, 200-character title, no members", func(t *testing.T) {
		var c convView
		w.env.JSON("POST", "/api/v1/conversations", w.u["anna"].tok, httpGroup(good), http.StatusCreated, &c)
		if c.Title != good || !maps.Equal(httpMemberMap(t, c.Members), map[string]bool{w.u["anna"].id: true}) {
			t.Fatalf("created %+v", c)
		}
	})

	for name, tc := range map[string]struct {
		tok    string
		body   any
		status int
		code   proto.Code
	}{
		"student":                  {sam.tok, httpGroup("Lerngruppe"), 403, proto.CodeForbidden},
		"parent":                   {w.u["pat"].tok, httpGroup("Elternrat"), 403, proto.CodeForbidden},
		"member of another school": {tina.tok, httpGroup("AG", httpMember(sam.id, true), httpMember(w.u["bert"].id, true)), 404, proto.CodeNotFound},
		"unknown member":           {tina.tok, httpGroup("AG", httpMember("no-such-user", true)), 404, proto.CodeNotFound},
		"title with a line break":  {tina.tok, httpGroup("AG\nneu"), 400, proto.CodeInvalidRequest},
		"title with bidi override": {tina.tok, httpGroup("AG \u202etxet"), 400, proto.CodeInvalidRequest},
		"member without user_id":   {tina.tok, map[string]any{"kind": "group", "title": "AG", "members": []map[string]bool{{"can_write": true}}}, 400, proto.CodeInvalidRequest},
		"member without can_write": {tina.tok, map[string]any{"kind": "group", "title": "AG", "members": []map[string]string{{"user_id": sam.id}}}, 400, proto.CodeInvalidRequest},
		"can_write not a bool":     {tina.tok, map[string]any{"kind": "group", "title": "AG", "members": []map[string]string{{"user_id": sam.id, "can_write": "yes"}}}, 400, proto.CodeInvalidRequest},
		"member twice, two rights": {tina.tok, httpGroup("AG", httpMember(sam.id, false), httpMember(sue.id, true), httpMember(sam.id, true)), 400, proto.CodeInvalidRequest},
		"empty title":              {tina.tok, httpGroup(""), 400, proto.CodeInvalidRequest},
		"blank title":              {tina.tok, httpGroup("   "), 400, proto.CodeInvalidRequest},
		"title missing":            {tina.tok, map[string]any{"kind": "group"}, 400, proto.CodeInvalidRequest},
		"title too long":           {tina.tok, httpGroup(good + "ä"), 400, proto.CodeInvalidRequest},
		"kind missing":             {tina.tok, map[string]any{"title": "AG"}, 400, proto.CodeInvalidRequest},
		"kind unknown":             {tina.tok, map[string]any{"kind": "channel", "title": "AG"}, 400, proto.CodeInvalidRequest},
		"members not an array":     {tina.tok, map[string]any{"kind": "group", "title": "AG", "members": "sam"}, 400, proto.CodeInvalidRequest},
	} {
		t.Run(name, func(t *testing.T) {
			httpWantError(t, w.env.Do("POST", "/api/v1/conversations", tc.tok, tc.body), tc.status, tc.code)
		})
	}
	// Refused requests created nothing.
	if got := w.conversations(tina.tok); len(got) != 1 {
		t.Fatalf("tina has %d conversations, want 1", len(got))
	}
	for _, login := range []string{"sam", "pat", "bert"} {
		want := map[string]int{"sam": 1}[login]
		if got := w.conversations(w.u[login].tok); len(got) != want {
			t.Fatalf("%s has %d conversations, want %d", login, len(got), want)
		}
	}
}

func TestHTTPListConversations(t *testing.T) {
	w := newHTTPWorld(t)
	tina, tom, sam, sue := w.u["tina"], w.u["tom"], w.u["sam"], w.u["sue"]
	d := w.direct(tina.tok, sam.id)
	g1 := w.group(tina.tok, "Elternabend", httpMember(sue.id, true))
	g2 := w.group(tom.tok, "Fußball-AG", httpMember(sam.id, false))
	for i := range 2 {
		w.post(tina.tok, g1, httpMsg(fmt.Sprint("c", i), "hallo", []string{tina.key(), sue.key()}))
	}

	type entry struct {
		kind, title string
		lastSeq     uint64
	}
	for name, tc := range map[string]struct {
		tok  string
		want map[string]entry
	}{
		"tina": {tina.tok, map[string]entry{d: {"direct", "", 0}, g1: {"group", "Elternabend", 2}}},
		"sam":  {sam.tok, map[string]entry{d: {"direct", "", 0}, g2: {"group", "Fußball-AG", 0}}},
		"sue":  {sue.tok, map[string]entry{g1: {"group", "Elternabend", 2}}},
		"tom":  {tom.tok, map[string]entry{g2: {"group", "Fußball-AG", 0}}},
		"pat":  {w.u["pat"].tok, map[string]entry{}},
		"anna": {w.u["anna"].tok, map[string]entry{}},
		"bert": {w.u["bert"].tok, map[string]entry{}},
	} {
		t.Run(name, func(t *testing.T) {
			got := map[string]entry{}
			for id, c := range w.conversations(tc.tok) {
				got[id] = entry{c.Kind, c.Title, c.LastSeq}
			}
			if !maps.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			if len(tc.want) == 0 {
				r := w.env.Do("GET", "/api/v1/conversations", tc.tok, nil)
				if string(bytes.TrimSpace(r.Body)) != "[]" {
					t.Fatalf("empty list is %s, want []", r.Body)
				}
			}
		})
	}
	httpWantError(t, w.env.Do("GET", "/api/v1/conversations", "", nil), 401, proto.CodeUnauthorized)
}

func TestHTTPSetMember(t *testing.T) {
	w := newHTTPWorld(t)
	tina, sam, sue, pat := w.u["tina"], w.u["sam"], w.u["sue"], w.u["pat"]
	g := w.group(tina.tok, "Klasse 7b", httpMember(sam.id, false))
	d := w.direct(tina.tok, sam.id)
	path := func(conv, user string) string { return "/api/v1/conversations/" + conv + "/members/" + user }
	yes := map[string]bool{"can_write": true}

	for name, tc := range map[string]struct {
		tok, conv, user string
		body            any
		status          int
		code            proto.Code
	}{
		"non-creator member":          {sam.tok, g, pat.id, yes, 403, proto.CodeForbidden},
		"member changes own right":    {sam.tok, g, sam.id, yes, 403, proto.CodeForbidden},
		"non-member teacher":          {w.u["tom"].tok, g, pat.id, yes, 404, proto.CodeNotFound},
		"non-member student":          {w.u["sol"].tok, g, w.u["sol"].id, yes, 404, proto.CodeNotFound},
		"admin of another school":     {w.u["bella"].tok, g, pat.id, yes, 404, proto.CodeNotFound},
		"user of another school":      {tina.tok, g, w.u["ben"].id, yes, 404, proto.CodeNotFound},
		"unknown user":                {tina.tok, g, "no-such-user", yes, 404, proto.CodeNotFound},
		"unknown conversation":        {tina.tok, "no-such-conv", pat.id, yes, 404, proto.CodeNotFound},
		"direct conversation":         {tina.tok, d, sam.id, yes, 403, proto.CodeForbidden},
		"direct conversation, admin":  {w.u["anna"].tok, d, pat.id, yes, 403, proto.CodeForbidden},
		"can_write missing":           {tina.tok, g, pat.id, map[string]any{}, 400, proto.CodeInvalidRequest},
		"can_write null":              {tina.tok, g, pat.id, map[string]any{"can_write": nil}, 400, proto.CodeInvalidRequest},
		"can_write not a bool":        {tina.tok, g, pat.id, map[string]any{"can_write": "yes"}, 400, proto.CodeInvalidRequest},
		"no body":                     {tina.tok, g, pat.id, nil, 400, proto.CodeInvalidRequest},
		"no credential":               {"", g, pat.id, yes, 401, proto.CodeUnauthorized},
		"parent of the school, alone": {pat.tok, g, pat.id, yes, 404, proto.CodeNotFound},
	} {
		t.Run(name, func(t *testing.T) {
			httpWantError(t, w.env.Do("PUT", path(tc.conv, tc.user), tc.tok, tc.body), tc.status, tc.code)
		})
	}
	if got, want := w.members(tina.tok, g), map[string]bool{tina.id: true, sam.id: false}; !maps.Equal(got, want) {
		t.Fatalf("refused requests changed the members: %v, want %v", got, want)
	}
	if got := w.members(tina.tok, d); len(got) != 2 {
		t.Fatalf("direct conversation members %v", got)
	}

	// A member without can_write may read but not send.
	w.post(tina.tok, g, httpMsg("t1", "Hausaufgaben", []string{tina.key(), sam.key()}))
	httpWantError(t, w.env.Do("POST", "/api/v1/conversations/"+g+"/messages", sam.tok,
		httpMsg("s1", "darf ich?", []string{tina.key(), sam.key()})), 403, proto.CodeForbidden)
	if msgs, _ := w.history(sam.tok, g, ""); len(msgs) != 1 {
		t.Fatalf("sam reads %d messages, want 1", len(msgs))
	}
	if seq := w.lastSeq(tina.tok, g); seq != 1 {
		t.Fatalf("last_seq %d after a refused send, want 1", seq)
	}

	steps := []struct {
		name, tok, user string
		canWrite        bool
		want            map[string]bool
	}{
		{"creator grants can_write", tina.tok, sam.id, true, map[string]bool{tina.id: true, sam.id: true}},
		{"creator adds a reader", tina.tok, pat.id, false, map[string]bool{tina.id: true, sam.id: true, pat.id: false}},
		{"school admin adds a writer", w.u["anna"].tok, sue.id, true, map[string]bool{tina.id: true, sam.id: true, pat.id: false, sue.id: true}},
		{"school admin changes a right", w.u["anna"].tok, pat.id, true, map[string]bool{tina.id: true, sam.id: true, pat.id: true, sue.id: true}},
		{"creator takes can_write away", tina.tok, sue.id, false, map[string]bool{tina.id: true, sam.id: true, pat.id: true, sue.id: false}},
	}
	for _, s := range steps {
		r := w.env.Do("PUT", path(g, s.user), s.tok, map[string]bool{"can_write": s.canWrite})
		if r.Status != http.StatusNoContent || len(r.Body) != 0 {
			t.Fatalf("%s: %d %s, want 204", s.name, r.Status, r.Body)
		}
		if got := w.members(tina.tok, g); !maps.Equal(got, s.want) {
			t.Fatalf("%s: members %v, want %v", s.name, got, s.want)
		}
	}
	// The rights took effect; the admin managed the group without joining it.
	w.post(sam.tok, g, httpMsg("s1", "jetzt ja", []string{tina.key(), sam.key()}))
	w.post(pat.tok, g, httpMsg("p1", "Elternfrage", []string{tina.key()}))
	httpWantError(t, w.env.Do("POST", "/api/v1/conversations/"+g+"/messages", sue.tok,
		httpMsg("u1", "hallo", []string{tina.key()})), 403, proto.CodeForbidden)
	if _, ok := w.conversations(w.u["anna"].tok)[g]; ok {
		t.Fatal("managing the group made the admin a member")
	}
}

func TestHTTPRemoveMember(t *testing.T) {
	w := newHTTPWorld(t)
	tina, sam, sue, sol, pat := w.u["tina"], w.u["sam"], w.u["sue"], w.u["sol"], w.u["pat"]
	g := w.group(tina.tok, "Klasse 7b", httpMember(sam.id, true), httpMember(sue.id, true),
		httpMember(sol.id, true), httpMember(pat.id, false))
	d := w.direct(tina.tok, sam.id)
	m := w.post(tina.tok, g, httpMsg("t1", "Wandertag", []string{tina.key(), sam.key(), sue.key()}))
	path := func(conv, user string) string { return "/api/v1/conversations/" + conv + "/members/" + user }

	for name, tc := range map[string]struct {
		tok, conv, user string
		status          int
		code            proto.Code
	}{
		"non-creator member removes another": {sam.tok, g, sue.id, 403, proto.CodeForbidden},
		"non-member":                         {w.u["tom"].tok, g, sue.id, 404, proto.CodeNotFound},
		"non-member removes itself":          {w.u["tom"].tok, g, w.u["tom"].id, 404, proto.CodeNotFound},
		"admin of another school":            {w.u["bella"].tok, g, sue.id, 404, proto.CodeNotFound},
		"user who is no member":              {tina.tok, g, w.u["tom"].id, 404, proto.CodeNotFound},
		"user of another school":             {tina.tok, g, w.u["ben"].id, 404, proto.CodeNotFound},
		"unknown conversation":               {tina.tok, "no-such-conv", sue.id, 404, proto.CodeNotFound},
		"direct conversation, the other":     {tina.tok, d, sam.id, 403, proto.CodeForbidden},
		"direct conversation, admin":         {w.u["anna"].tok, d, sam.id, 403, proto.CodeForbidden},
		"no credential":                      {"", g, sue.id, 401, proto.CodeUnauthorized},
	} {
		t.Run(name, func(t *testing.T) {
			httpWantError(t, w.env.Do("DELETE", path(tc.conv, tc.user), tc.tok, nil), tc.status, tc.code)
		})
	}
	if got := w.members(tina.tok, g); len(got) != 5 {
		t.Fatalf("refused requests changed the members: %v", got)
	}

	for name, tc := range map[string]struct {
		tok  string
		gone httpUser
	}{
		"by the creator":       {tina.tok, sue},
		"by the admin":         {w.u["anna"].tok, sam},
		"by the member itself": {pat.tok, pat},
	} {
		t.Run(name, func(t *testing.T) {
			r := w.env.Do("DELETE", path(g, tc.gone.id), tc.tok, nil)
			if r.Status != http.StatusNoContent {
				t.Fatalf("status %d %s, want 204", r.Status, r.Body)
			}
			if _, ok := w.members(tina.tok, g)[tc.gone.id]; ok {
				t.Fatal("still a member")
			}
			if _, ok := w.conversations(tc.gone.tok)[g]; ok {
				t.Fatal("still listed for the removed member")
			}
			for what, r := range map[string]testenv.Response{
				"history":     w.env.Do("GET", "/api/v1/conversations/"+g+"/messages", tc.gone.tok, nil),
				"devices":     w.env.Do("GET", "/api/v1/conversations/"+g+"/devices", tc.gone.tok, nil),
				"message":     w.env.Do("GET", "/api/v1/messages/"+m.ID, tc.gone.tok, nil),
				"send":        w.env.Do("POST", "/api/v1/conversations/"+g+"/messages", tc.gone.tok, httpMsg("x", "x", []string{tina.key()})),
				"leave again": w.env.Do("DELETE", path(g, tc.gone.id), tc.gone.tok, nil),
			} {
				if r.Status != http.StatusNotFound || r.ErrorCode() != string(proto.CodeNotFound) {
					t.Fatalf("%s after removal: %d %s, want 404 not_found", what, r.Status, r.Body)
				}
			}
		})
	}
	if got, want := w.members(tina.tok, g), map[string]bool{tina.id: true, sol.id: true}; !maps.Equal(got, want) {
		t.Fatalf("members %v, want %v", got, want)
	}
	// The rest of the group goes on.
	w.post(sol.tok, g, httpMsg("s1", "noch da", []string{tina.key()}))
	var devs []json.RawMessage
	w.env.JSON("GET", "/api/v1/conversations/"+g+"/devices", sol.tok, nil, http.StatusOK, &devs)
}

// TestHTTPLeaveDirect: a member may leave a direct conversation; starting
// it again brings both back into the same conversation.
func TestHTTPLeaveDirect(t *testing.T) {
	w := newHTTPWorld(t)
	tina, sam := w.u["tina"], w.u["sam"]
	d := w.direct(tina.tok, sam.id)
	w.post(tina.tok, d, httpMsg("t1", "vorher", []string{tina.key(), sam.key()}))

	r := w.env.Do("DELETE", "/api/v1/conversations/"+d+"/members/"+sam.id, sam.tok, nil)
	if r.Status != http.StatusNoContent {
		t.Fatalf("leave: %d %s, want 204", r.Status, r.Body)
	}
	if _, ok := w.conversations(sam.tok)[d]; ok {
		t.Fatal("still listed for the member who left")
	}
	if got := w.members(tina.tok, d); len(got) != 1 || !got[tina.id] {
		t.Fatalf("members after leaving %v, want tina alone", got)
	}
	httpWantError(t, w.env.Do("GET", "/api/v1/conversations/"+d+"/messages", sam.tok, nil), 404, proto.CodeNotFound)
	// The other one may still write; the one who left gets nothing.
	ws := w.env.Dial(sam.tok)
	w.post(tina.tok, d, httpMsg("t2", "allein", []string{tina.key()}))
	ws.Send(`{"type":"ping"}`)
	if f := ws.Read(); f.Type != proto.TypePong {
		t.Fatalf("the member who left got %+v, want only the pong", f)
	}

	// Starting it again, from either side, is the same conversation with
	// both members and its history.
	var again convView
	w.env.JSON("POST", "/api/v1/conversations", sam.tok, httpDirect(tina.id), http.StatusOK, &again)
	if again.ID != d || !maps.Equal(httpMemberMap(t, again.Members), map[string]bool{tina.id: true, sam.id: true}) || again.LastSeq != 2 {
		t.Fatalf("started again: %+v, want %s with both members and last_seq 2", again, d)
	}
	if msgs, _ := w.history(sam.tok, d, ""); len(msgs) != 2 {
		t.Fatalf("history after returning: %d messages, want 2", len(msgs))
	}
	w.post(sam.tok, d, httpMsg("s1", "wieder da", []string{tina.key(), sam.key()}))
	// Members of a direct conversation cannot be added.
	httpWantError(t, w.env.Do("PUT", "/api/v1/conversations/"+d+"/members/"+w.u["sue"].id, tina.tok, map[string]bool{"can_write": true}), 403, proto.CodeForbidden)
}

func TestHTTPGroupSizeCap(t *testing.T) {
	w := newHTTPWorld(t)
	tina := w.u["tina"]
	// Enough users for a full group, written straight to the store (the
	// API would hash 500 passwords).
	ctx := context.Background()
	var others []storage.Member
	for i := range messenger.MaxGroupMembers {
		u := storage.User{ID: fmt.Sprintf("cap-user-%03d", i), School: w.a, Login: fmt.Sprintf("cap%03d", i),
			DisplayName: "Kind", Role: storage.RoleStudent, PasswordHash: "x", CreatedAt: w.env.Clock.Now()}
		if err := w.env.Srv.Store().CreateUser(ctx, u); err != nil {
			t.Fatal(err)
		}
		others = append(others, httpMember(u.ID, false))
	}
	capN := messenger.MaxGroupMembers

	// The creator counts: creator + MaxGroupMembers others is one too many.
	httpWantError(t, w.env.Do("POST", "/api/v1/conversations", tina.tok, httpGroup("zu groß", others...)),
		400, proto.CodeInvalidRequest)
	if got := w.conversations(tina.tok); len(got) != 0 {
		t.Fatalf("an oversized group was created: %v", got)
	}

	// Duplicates do not count: creator + capN-1 others, each listed twice
	// (and the creator once more), is a full group.
	list := append(slices.Clone(others[:capN-1]), others[:capN-1]...)
	list = append(list, httpMember(tina.id, false))
	var c convView
	w.env.JSON("POST", "/api/v1/conversations", tina.tok, httpGroup("voll", list...), http.StatusCreated, &c)
	if len(c.Members) != capN {
		t.Fatalf("full group has %d members, want %d", len(c.Members), capN)
	}
	// A full group takes no one else, but rights still change.
	httpWantError(t, w.env.Do("PUT", "/api/v1/conversations/"+c.ID+"/members/"+others[capN-1].UserID, tina.tok,
		map[string]bool{"can_write": true}), 409, proto.CodeConflict)
	r := w.env.Do("PUT", "/api/v1/conversations/"+c.ID+"/members/"+others[0].UserID, tina.tok, map[string]bool{"can_write": true})
	if r.Status != http.StatusNoContent {
		t.Fatalf("changing a right in a full group: %d %s", r.Status, r.Body)
	}
	if got := w.members(tina.tok, c.ID); len(got) != capN || !got[others[0].UserID] {
		t.Fatalf("members after the changes: %d", len(got))
	}
}
