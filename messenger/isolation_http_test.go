package messenger_test

import (
	"bytes"
	"context"
	"maps"
	"net/http"
	"testing"

	"klassenfunk/proto"
	"klassenfunk/storage"
)

// TestHTTPCrossSchoolIsolation: whatever a user of school B does with a
// conversation, message or attachment of school A, the answer is 404 and
// names nothing of school A.
func TestHTTPCrossSchoolIsolation(t *testing.T) {
	w := newHTTPWorld(t)
	tina, sam := w.u["tina"], w.u["sam"]
	const title = "Geheimnis der 7b"
	w.env.JSON("PUT", "/api/v1/keys", tina.tok, map[string]string{"public_key": httpB64(httpKey(1))}, http.StatusNoContent, nil)
	g := w.group(tina.tok, title, httpMember(sam.id, true))
	d := w.direct(tina.tok, sam.id)
	att := w.mustUpload(tina.tok, httpBlob(64))
	m := w.post(tina.tok, g, httpMsg("t1", "streng geheim", []string{tina.key(), sam.key()}, att))
	dm := w.post(sam.tok, d, httpMsg("s1", "psst", []string{tina.key(), sam.key()}))
	secrets := []string{
		w.a, tina.id, sam.id, tina.device, g, d, m.ID, dm.ID, att, title, "Schule am See",
		httpB64([]byte("streng geheim")), httpB64(httpKey(1)),
	}

	for _, login := range []string{"bella", "ben", "bert"} {
		caller := w.u[login]
		t.Run(login, func(t *testing.T) {
			for name, tc := range map[string]struct {
				method, path string
				body         any
			}{
				"devices of the group":        {"GET", "/api/v1/conversations/" + g + "/devices", nil},
				"devices of the direct":       {"GET", "/api/v1/conversations/" + d + "/devices", nil},
				"history of the group":        {"GET", "/api/v1/conversations/" + g + "/messages", nil},
				"history page":                {"GET", "/api/v1/conversations/" + d + "/messages?after_seq=0&limit=1", nil},
				"post to the group":           {"POST", "/api/v1/conversations/" + g + "/messages", httpMsg("b1", "hi", []string{caller.key()})},
				"post to the direct":          {"POST", "/api/v1/conversations/" + d + "/messages", httpMsg("b2", "hi", []string{caller.key()})},
				"add itself":                  {"PUT", "/api/v1/conversations/" + g + "/members/" + caller.id, map[string]bool{"can_write": true}},
				"change a member":             {"PUT", "/api/v1/conversations/" + g + "/members/" + sam.id, map[string]bool{"can_write": false}},
				"add itself to the direct":    {"PUT", "/api/v1/conversations/" + d + "/members/" + caller.id, map[string]bool{"can_write": true}},
				"remove a member":             {"DELETE", "/api/v1/conversations/" + g + "/members/" + sam.id, nil},
				"remove itself":               {"DELETE", "/api/v1/conversations/" + g + "/members/" + caller.id, nil},
				"remove from the direct":      {"DELETE", "/api/v1/conversations/" + d + "/members/" + tina.id, nil},
				"get the group message":       {"GET", "/api/v1/messages/" + m.ID, nil},
				"get the direct message":      {"GET", "/api/v1/messages/" + dm.ID, nil},
				"get the attachment":          {"GET", "/api/v1/attachments/" + att, nil},
				"direct with a user of A":     {"POST", "/api/v1/conversations", httpDirect(tina.id)},
				"switch A's student_direct":   {"PATCH", "/api/v1/schools/" + w.a, map[string]bool{"student_direct": false}},
				"create a user in A":          {"POST", "/api/v1/schools/" + w.a + "/users", map[string]string{"login": "mole", "display_name": "Mole", "role": "student", "client_hash": httpB64(httpKey(2))}},
				"group with a member of A":    {"POST", "/api/v1/conversations", httpGroup("Spionage", httpMember(sam.id, true))},
				"unknown conversation (ctrl)": {"GET", "/api/v1/conversations/no-such-conv/messages", nil},
			} {
				if name == "group with a member of A" && caller.role == "student" {
					continue // students may not create groups at all (403 before any lookup)
				}
				t.Run(name, func(t *testing.T) {
					r := w.env.Do(tc.method, tc.path, caller.tok, tc.body)
					httpWantError(t, r, http.StatusNotFound, proto.CodeNotFound)
					if l := httpLeaks(r.Body, secrets); l != nil {
						t.Fatalf("body %s names %v of school A", r.Body, l)
					}
				})
			}
			r := w.env.JSON("GET", "/api/v1/conversations", caller.tok, nil, http.StatusOK, nil)
			if string(bytes.TrimSpace(r.Body)) != "[]" {
				t.Fatalf("B's conversations: %s", r.Body)
			}
		})
	}

	// A conversation of B cannot carry A's attachment either.
	bd := w.direct(w.u["ben"].tok, w.u["bert"].id)
	httpWantError(t, w.env.Do("POST", "/api/v1/conversations/"+bd+"/messages", w.u["ben"].tok,
		httpMsg("x", "x", []string{w.u["bert"].key()}, att)), 400, proto.CodeInvalidRequest)

	// Nothing of A changed.
	if got, want := w.members(tina.tok, g), map[string]bool{tina.id: true, sam.id: true}; !maps.Equal(got, want) {
		t.Fatalf("group members %v, want %v", got, want)
	}
	if got := w.members(tina.tok, d); len(got) != 2 {
		t.Fatalf("direct members %v", got)
	}
	for conv, seq := range map[string]uint64{g: 1, d: 1} {
		if got := w.lastSeq(tina.tok, conv); got != seq {
			t.Fatalf("last_seq of %s: %d, want %d", conv, got, seq)
		}
	}
	if n, err := w.env.Srv.Store().CountMessages(context.Background()); err != nil || n != 2 {
		t.Fatalf("%d messages stored (%v), want 2", n, err)
	}
	if _, err := w.env.Srv.Store().UserByLogin(context.Background(), "mole"); err == nil {
		t.Fatal("a user of B created a user in A")
	}
	var s struct {
		StudentDirect bool `json:"student_direct"`
	}
	w.env.JSON("PATCH", "/api/v1/schools/"+w.a, w.u["anna"].tok, map[string]any{}, http.StatusOK, &s)
	if !s.StudentDirect {
		t.Fatal("a user of B switched off A's student_direct")
	}
	var devs []storage.DeviceKey
	r := w.env.JSON("GET", "/api/v1/conversations/"+g+"/devices", sam.tok, nil, http.StatusOK, &devs)
	if len(devs) != 1 {
		t.Fatalf("devices of A's group: %s", r.Body)
	}
}
