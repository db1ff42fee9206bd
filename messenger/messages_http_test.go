package messenger_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"klassenfunk/proto"
)

// httpChatBody is a valid message body for c's conversation with one
// wrapped key per device (the ones c.post uses).
func httpChatBody(c *chat, clientID, text string) map[string]any {
	return map[string]any{
		"client_id":  clientID,
		"ciphertext": httpB64([]byte(text)),
		"keys": map[string]string{
			c.alice + "/a-phone":  httpB64([]byte("ka1")),
			c.alice + "/a-tablet": httpB64([]byte("ka2")),
			c.bob + "/b-phone":    httpB64([]byte("kb1")),
		},
	}
}

// httpOutsiders adds carol (a teacher of the chat's school in none of its
// conversations) and dave (a teacher of another school), logs them in and
// returns their tokens.
func httpOutsiders(c *chat) (carol, dave string) {
	carol, _ = httpOutsidersIDs(c)
	dave, _ = c.env.Login("dave", "d-phone", true)
	return carol, dave
}

// httpOutsidersIDs is httpOutsiders without dave's login, returning carol's
// token and user id.
func httpOutsidersIDs(c *chat) (carolTok, carolID string) {
	carolID = c.env.CreateUser(c.school, "carol", "teacher")
	c.env.CreateUser(c.env.CreateSchool("Albert-Schule"), "dave", "teacher")
	carolTok, _ = c.env.Login("carol", "c-phone", true)
	return carolTok, carolID
}

func TestHTTPPostMessage(t *testing.T) {
	c := newChat(t)
	a := httpAPI{t, c.env}
	path := "/api/v1/conversations/" + c.conv + "/messages"
	sentAt := c.env.Clock.Now().UTC()

	r := c.env.Do("POST", path, c.alice1, httpChatBody(c, "m1", "erste Nachricht"))
	if r.Status != http.StatusCreated {
		t.Fatalf("first post: %d %s", r.Status, r.Body)
	}
	if !bytes.Contains(r.Body, []byte(`"attachments":[]`)) {
		t.Fatalf("attachments is not [] in %s", r.Body)
	}
	var m1 proto.Message
	if err := json.Unmarshal(r.Body, &m1); err != nil {
		t.Fatal(err)
	}
	if m1.ID == "" || m1.Conversation != c.conv || m1.Seq != 1 ||
		m1.Sender != (proto.Sender{UserID: c.alice, DeviceID: "a-phone"}) ||
		string(m1.Ciphertext) != "erste Nachricht" {
		t.Fatalf("first message %s", r.Body)
	}
	if !m1.SentAt.Equal(sentAt) || !m1.ExpiresAt.Equal(sentAt.Add(720*time.Hour)) {
		t.Fatalf("sent_at %v expires_at %v, want %v and 720h later", m1.SentAt, m1.ExpiresAt, sentAt)
	}
	if want := map[string][]byte{c.alice + "/a-phone": []byte("ka1")}; !maps.EqualFunc(m1.Keys, want, bytes.Equal) {
		t.Fatalf("sender got keys %q, want only its own device's", m1.Keys)
	}

	c.env.Clock.Advance(time.Second)
	for i, id := range []string{"m2", "m3"} {
		if m := c.post(c.b1, id, "antwort"); m.Seq != uint64(i+2) || m.Sender.UserID != c.bob {
			t.Fatalf("%s: seq %d sender %+v", id, m.Seq, m.Sender)
		}
	}

	// The same client_id from the same device: the stored message, 200.
	var again proto.Message
	c.env.JSON("POST", path, c.alice1, httpChatBody(c, "m1", "erste Nachricht"), http.StatusOK, &again)
	if again.ID != m1.ID || again.Seq != 1 || !again.SentAt.Equal(m1.SentAt) {
		t.Fatalf("repeat: %+v, want message %s seq 1", again, m1.ID)
	}
	if seq := a.lastSeq(c.b1, c.conv); seq != 3 {
		t.Fatalf("last_seq %d after a repeated client_id, want 3", seq)
	}
	if n, err := c.env.Srv.Store().CountMessages(context.Background()); err != nil || n != 3 {
		t.Fatalf("stored messages %d (%v), want 3", n, err)
	}
	if got := c.env.Metric("klassenfunk_messages_stored_total"); got != 3 {
		t.Fatalf("klassenfunk_messages_stored_total %v, want 3", got)
	}

	// The same client_id from the sender's other device is a new message.
	var other proto.Message
	c.env.JSON("POST", path, c.alice2, httpChatBody(c, "m1", "vom Tablet"), http.StatusCreated, &other)
	if other.ID == m1.ID || other.Seq != 4 || other.Sender.DeviceID != "a-tablet" {
		t.Fatalf("same client_id, other device: %+v", other)
	}
	if seq := a.lastSeq(c.alice1, c.conv); seq != 4 {
		t.Fatalf("last_seq %d, want 4", seq)
	}

	// Members of the body that name another conversation, sender or seq
	// are ignored: the path and the credential decide.
	g := a.group(c.alice1, "Klasse 7b", httpMember(c.bob, true))
	spoof := httpChatBody(c, "m5", "gefälscht?")
	spoof["conversation"] = g
	spoof["sender"] = map[string]string{"user_id": c.bob, "device_id": "b-phone"}
	spoof["seq"] = 99
	spoofed := a.post(c.alice1, c.conv, spoof)
	if spoofed.Conversation != c.conv || spoofed.Seq != 5 || spoofed.Sender != (proto.Sender{UserID: c.alice, DeviceID: "a-phone"}) {
		t.Fatalf("body members overrode the path or credential: %+v", spoofed)
	}
	if seq := a.lastSeq(c.alice1, g); seq != 0 {
		t.Fatalf("the group got a message: last_seq %d", seq)
	}
}

func TestHTTPPostMessageRefused(t *testing.T) {
	c := newChat(t)
	carol, dave := httpOutsiders(c)
	a := httpAPI{t, c.env}
	path := "/api/v1/conversations/" + c.conv + "/messages"
	valid := func(change func(m map[string]any)) map[string]any {
		m := httpChatBody(c, "x1", "text")
		change(m)
		return m
	}
	oneKey := func(name, value string) func(map[string]any) {
		return func(m map[string]any) { m["keys"] = map[string]string{name: value} }
	}
	set := func(k string, v any) func(map[string]any) { return func(m map[string]any) { m[k] = v } }
	del := func(k string) func(map[string]any) { return func(m map[string]any) { delete(m, k) } }
	ff := []byte{0xfb, 0xff, 0xfe, 0xfb} // '+' and '/' in standard base64
	big := bytes.Repeat([]byte{'x'}, proto.MaxCiphertextSize+1)

	for name, tc := range map[string]struct {
		tok, path string
		body      any
		status    int
		code      proto.Code
	}{
		"client_id missing":         {c.alice1, path, valid(del("client_id")), 400, proto.CodeInvalidRequest},
		"client_id empty":           {c.alice1, path, valid(set("client_id", "")), 400, proto.CodeInvalidRequest},
		"client_id not a string":    {c.alice1, path, valid(set("client_id", 7)), 400, proto.CodeInvalidRequest},
		"client_id too long":        {c.alice1, path, valid(set("client_id", strings.Repeat("c", 129))), 400, proto.CodeInvalidRequest},
		"keys empty":                {c.alice1, path, valid(set("keys", map[string]string{})), 400, proto.CodeInvalidRequest},
		"keys missing":              {c.alice1, path, valid(del("keys")), 400, proto.CodeInvalidRequest},
		"key name without slash":    {c.alice1, path, valid(oneKey(c.bob+"-b-phone", httpB64([]byte("k")))), 400, proto.CodeInvalidRequest},
		"keys only for non-members": {c.alice1, path, valid(set("keys", map[string]string{"nobody/x": httpB64([]byte("k")), "stranger/phone": httpB64([]byte("k"))})), 400, proto.CodeInvalidRequest},
		"key name without device":   {c.alice1, path, valid(oneKey(c.bob+"/", httpB64([]byte("k")))), 400, proto.CodeInvalidRequest},
		"wrapped key not base64":    {c.alice1, path, valid(oneKey(c.bob+"/b-phone", "kein base64!")), 400, proto.CodeInvalidRequest},
		"wrapped key empty":         {c.alice1, path, valid(oneKey(c.bob+"/b-phone", "")), 400, proto.CodeInvalidRequest},
		"ciphertext not base64":     {c.alice1, path, valid(set("ciphertext", "kein base64!")), 400, proto.CodeInvalidRequest},
		"ciphertext URL-safe":       {c.alice1, path, valid(set("ciphertext", base64.URLEncoding.EncodeToString(ff))), 400, proto.CodeInvalidRequest},
		"ciphertext unpadded":       {c.alice1, path, valid(set("ciphertext", base64.RawStdEncoding.EncodeToString([]byte("ab")))), 400, proto.CodeInvalidRequest},
		"ciphertext missing":        {c.alice1, path, valid(del("ciphertext")), 400, proto.CodeInvalidRequest},
		"ciphertext empty":          {c.alice1, path, valid(set("ciphertext", "")), 400, proto.CodeInvalidRequest},
		"attachments not an array":  {c.alice1, path, valid(set("attachments", "a1")), 400, proto.CodeInvalidRequest},
		"attachment id empty":       {c.alice1, path, valid(set("attachments", []string{""})), 400, proto.CodeInvalidRequest},
		"unknown attachment":        {c.alice1, path, valid(set("attachments", []string{"no-such-attachment"})), 400, proto.CodeInvalidRequest},
		"malformed JSON":            {c.alice1, path, `{"client_id":"x1",`, 400, proto.CodeInvalidRequest},
		"lone surrogate escape":     {c.alice1, path, `{"client_id":"x\ud800","ciphertext":"AAAA","keys":{"` + c.bob + `/b-phone":"AAAA"}}`, 400, proto.CodeInvalidRequest},
		"not an object":             {c.alice1, path, `["x1"]`, 400, proto.CodeInvalidRequest},
		"ciphertext over 64 KiB":    {c.alice1, path, valid(set("ciphertext", httpB64(big))), 413, proto.CodePayloadTooLarge},
		"wrapped key over 256":      {c.alice1, path, valid(oneKey(c.bob+"/b-phone", httpB64(make([]byte, 257)))), 413, proto.CodePayloadTooLarge},
		"body over 1 MiB":           {c.alice1, path, valid(set("padding", strings.Repeat("p", 1<<20))), 413, proto.CodePayloadTooLarge},
		"same-school non-member":    {carol, path, httpChatBody(c, "x1", "text"), 404, proto.CodeNotFound},
		"other school":              {dave, path, httpChatBody(c, "x1", "text"), 404, proto.CodeNotFound},
		"unknown conversation":      {c.alice1, "/api/v1/conversations/no-such-conv/messages", httpChatBody(c, "x1", "text"), 404, proto.CodeNotFound},
		"no credential":             {"", path, httpChatBody(c, "x1", "text"), 401, proto.CodeUnauthorized},
		"token in the query string": {"", path + "?token=" + c.alice1, httpChatBody(c, "x1", "text"), 401, proto.CodeUnauthorized},
	} {
		t.Run(name, func(t *testing.T) {
			httpWantError(t, c.env.Do("POST", tc.path, tc.tok, tc.body), tc.status, tc.code)
		})
	}
	if seq := a.lastSeq(c.alice1, c.conv); seq != 0 {
		t.Fatalf("last_seq %d after refused posts, want 0", seq)
	}
	// The limits themselves are allowed.
	m := a.post(c.alice1, c.conv, map[string]any{
		"client_id":  strings.Repeat("c", 128),
		"ciphertext": httpB64(big[:proto.MaxCiphertextSize]),
		"keys":       map[string]string{c.bob + "/b-phone": httpB64(make([]byte, 256))},
	})
	if m.Seq != 1 || len(m.Ciphertext) != proto.MaxCiphertextSize {
		t.Fatalf("message at the limits: seq %d, %d bytes", m.Seq, len(m.Ciphertext))
	}
}

func TestHTTPHistoryPaging(t *testing.T) {
	c := newChat(t)
	a := httpAPI{t, c.env}
	var ids []string
	for i := 1; i <= 7; i++ {
		ids = append(ids, c.post(c.alice1, fmt.Sprint("m", i), fmt.Sprint("text ", i)).ID)
	}
	seqs := func(ms []proto.Message) []uint64 {
		var out []uint64
		for _, m := range ms {
			out = append(out, m.Seq)
		}
		return out
	}
	for _, tc := range []struct {
		query string
		want  []uint64
		more  bool
	}{
		{"?after_seq=0&limit=3", []uint64{1, 2, 3}, true},
		{"?after_seq=3&limit=3", []uint64{4, 5, 6}, true},
		{"?after_seq=6&limit=3", []uint64{7}, false},
		{"?limit=3", []uint64{1, 2, 3}, true},
		{"?after_seq=4", []uint64{5, 6, 7}, false},
		{"", []uint64{1, 2, 3, 4, 5, 6, 7}, false},
		{"?limit=7", []uint64{1, 2, 3, 4, 5, 6, 7}, false},
		{"?limit=500", []uint64{1, 2, 3, 4, 5, 6, 7}, false},
		{"?after_seq=7", nil, false},
		{"?after_seq=100&limit=1", nil, false},
	} {
		t.Run(tc.query, func(t *testing.T) {
			msgs, more := a.history(c.b1, c.conv, tc.query)
			if fmt.Sprint(seqs(msgs)) != fmt.Sprint(tc.want) || more != tc.more {
				t.Fatalf("got seqs %v more %v, want %v more %v", seqs(msgs), more, tc.want, tc.more)
			}
			for _, m := range msgs {
				if m.ID != ids[m.Seq-1] || m.Conversation != c.conv {
					t.Fatalf("seq %d: id %s conversation %s", m.Seq, m.ID, m.Conversation)
				}
			}
		})
	}
	r := c.env.JSON("GET", "/api/v1/conversations/"+c.conv+"/messages?after_seq=7", c.b1, nil, http.StatusOK, nil)
	if got := string(bytes.TrimSpace(r.Body)); got != `{"messages":[],"more":false}` {
		t.Fatalf("empty page %s", got)
	}

	for _, q := range []string{"limit=0", "limit=501", "limit=-1", "limit=x", "limit=1.5", "after_seq=-1", "after_seq=x", "after_seq=1e3"} {
		t.Run(q, func(t *testing.T) {
			httpWantError(t, c.env.Do("GET", "/api/v1/conversations/"+c.conv+"/messages?"+q, c.b1, nil), 400, proto.CodeInvalidRequest)
		})
	}
	carol, dave := httpOutsiders(c)
	for name, tc := range map[string]struct{ tok, conv string }{
		"same-school non-member": {carol, c.conv},
		"other school":           {dave, c.conv},
		"unknown conversation":   {c.b1, "no-such-conv"},
	} {
		t.Run(name, func(t *testing.T) {
			httpWantError(t, c.env.Do("GET", "/api/v1/conversations/"+tc.conv+"/messages", tc.tok, nil), 404, proto.CodeNotFound)
		})
	}
}

func TestHTTPReaderSeesOnlyItsOwnKey(t *testing.T) {
	c := newChat(t)
	a := httpAPI{t, c.env}
	m1 := c.post(c.alice1, "m1", "von alice")
	m2 := c.post(c.b1, "m2", "von bob")
	laptop, _ := c.env.Login("alice", "a-laptop", true) // no wrapped key for it

	for name, tc := range map[string]struct {
		tok  string
		want map[string][]byte
	}{
		"bob":             {c.b1, map[string][]byte{c.bob + "/b-phone": []byte("kb1")}},
		"alice's phone":   {c.alice1, map[string][]byte{c.alice + "/a-phone": []byte("ka1")}},
		"alice's tablet":  {c.alice2, map[string][]byte{c.alice + "/a-tablet": []byte("ka2")}},
		"alice's new pad": {laptop, map[string][]byte{}},
	} {
		t.Run(name, func(t *testing.T) {
			msgs, _ := a.history(tc.tok, c.conv, "")
			if len(msgs) != 2 {
				t.Fatalf("%d messages, want 2", len(msgs))
			}
			for _, id := range []string{m1.ID, m2.ID} {
				var one proto.Message
				r := c.env.JSON("GET", "/api/v1/messages/"+id, tc.tok, nil, http.StatusOK, &one)
				msgs = append(msgs, one)
				if len(tc.want) == 0 && !bytes.Contains(r.Body, []byte(`"keys":{}`)) {
					t.Fatalf("keys of a device without an entry: %s, want {}", r.Body)
				}
			}
			for _, m := range msgs {
				if !maps.EqualFunc(m.Keys, tc.want, bytes.Equal) {
					t.Fatalf("message %d: keys %q, want %q", m.Seq, m.Keys, tc.want)
				}
			}
		})
	}
}

// TestHTTPKeysForNonMembersDropped: a wrapped key for a user who is not a
// member when the message is sent is not stored, so a user who joins later
// finds no key written before it joined (docs/api.md).
func TestHTTPKeysForNonMembersDropped(t *testing.T) {
	c := newChat(t)
	carol, carolID := httpOutsidersIDs(c)
	a := httpAPI{t, c.env}
	g := a.group(c.alice1, "Später")
	early := a.post(c.alice1, g, httpMsg("e1", "vor carol", []string{c.alice + "/a-phone", carolID + "/c-phone", "stranger/x"}))
	c.env.JSON("PUT", "/api/v1/conversations/"+g+"/members/"+carolID, c.alice1, map[string]any{"can_write": false}, http.StatusNoContent, nil)
	late := a.post(c.alice1, g, httpMsg("e2", "mit carol", []string{c.alice + "/a-phone", carolID + "/c-phone"}))

	want := map[string]map[string][]byte{
		early.ID: {},
		late.ID:  {carolID + "/c-phone": httpWrapped(carolID + "/c-phone")},
	}
	msgs, _ := a.history(carol, g, "")
	if len(msgs) != 2 {
		t.Fatalf("%d messages for carol, want 2", len(msgs))
	}
	for _, id := range []string{early.ID, late.ID} {
		var one proto.Message
		c.env.JSON("GET", "/api/v1/messages/"+id, carol, nil, http.StatusOK, &one)
		msgs = append(msgs, one)
	}
	for _, m := range msgs {
		if !maps.EqualFunc(m.Keys, want[m.ID], bytes.Equal) {
			t.Fatalf("message %d for carol: keys %q, want %q", m.Seq, m.Keys, want[m.ID])
		}
	}
	// The sender's own key is kept.
	var own proto.Message
	c.env.JSON("GET", "/api/v1/messages/"+early.ID, c.alice1, nil, http.StatusOK, &own)
	if len(own.Keys) != 1 || own.Keys[c.alice+"/a-phone"] == nil {
		t.Fatalf("alice's keys of her message: %q", own.Keys)
	}
}

func TestHTTPGetMessage(t *testing.T) {
	c := newChat(t)
	carol, carolID := httpOutsidersIDs(c)
	dave, _ := c.env.Login("dave", "d-phone", true)
	a := httpAPI{t, c.env}
	posted := c.post(c.alice1, "m1", "nur für bob")
	// carol shares a group with alice, but not this conversation.
	g := a.group(c.alice1, "Kollegium", httpMember(carolID, true))
	a.post(carol, g, httpMsg("c1", "hallo", []string{carolID + "/c-phone"}))

	var got proto.Message
	c.env.JSON("GET", "/api/v1/messages/"+posted.ID, c.b1, nil, http.StatusOK, &got)
	if got.ID != posted.ID || got.Seq != 1 || got.Conversation != c.conv || string(got.Ciphertext) != "nur für bob" ||
		got.Sender != posted.Sender || !got.SentAt.Equal(posted.SentAt) || !got.ExpiresAt.Equal(posted.ExpiresAt) {
		t.Fatalf("GET /messages/{id}: %+v, want %+v", got, posted)
	}

	for name, tc := range map[string]struct{ tok, id string }{
		"member of another conversation": {carol, posted.ID},
		"user of another school":         {dave, posted.ID},
		"unknown message":                {c.b1, "no-such-message"},
	} {
		t.Run(name, func(t *testing.T) {
			r := c.env.Do("GET", "/api/v1/messages/"+tc.id, tc.tok, nil)
			httpWantError(t, r, 404, proto.CodeNotFound)
			if l := httpLeaks(r.Body, []string{c.conv, c.alice, httpB64([]byte("nur für bob"))}); l != nil {
				t.Fatalf("404 body leaks %v", l)
			}
		})
	}
	httpWantError(t, c.env.Do("GET", "/api/v1/messages/"+posted.ID, "", nil), 401, proto.CodeUnauthorized)
}

func TestHTTPPostMessageConcurrent(t *testing.T) {
	c := newChat(t)
	a := httpAPI{t, c.env}
	path := c.env.URL + "/api/v1/conversations/" + c.conv + "/messages"
	type result struct {
		status int
		msg    proto.Message
		err    error
	}
	post := func(tok string, body map[string]any) result {
		b, _ := json.Marshal(body)
		req, _ := http.NewRequest("POST", path, bytes.NewReader(b))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return result{err: err}
		}
		defer resp.Body.Close()
		var r result
		r.status = resp.StatusCode
		r.err = json.NewDecoder(resp.Body).Decode(&r.msg)
		return r
	}
	const n = 16
	run := func(f func(i int) result) []result {
		out := make([]result, n)
		done := make(chan struct{})
		for i := range n {
			go func() {
				out[i] = f(i)
				done <- struct{}{}
			}()
		}
		for range n {
			<-done
		}
		return out
	}

	// One client_id sent n times at once: one message.
	same := run(func(int) result { return post(c.alice1, httpChatBody(c, "dup", "einmal")) })
	created := 0
	for _, r := range same {
		if r.err != nil || (r.status != http.StatusCreated && r.status != http.StatusOK) {
			t.Fatalf("concurrent repeat: %d %v", r.status, r.err)
		}
		if r.status == http.StatusCreated {
			created++
		}
		if r.msg.ID != same[0].msg.ID || r.msg.Seq != 1 {
			t.Fatalf("concurrent repeats got message %s seq %d and %s seq %d", r.msg.ID, r.msg.Seq, same[0].msg.ID, same[0].msg.Seq)
		}
	}
	if created != 1 {
		t.Fatalf("%d of %d concurrent repeats answered 201, want exactly 1", created, n)
	}

	// n distinct messages at once from two devices: seqs 2..n+1, no gaps.
	distinct := run(func(i int) result {
		tok := c.alice1
		if i%2 == 1 {
			tok = c.b1
		}
		return post(tok, httpChatBody(c, fmt.Sprint("m", i), "viele"))
	})
	seen := map[uint64]bool{}
	for _, r := range distinct {
		if r.err != nil || r.status != http.StatusCreated {
			t.Fatalf("concurrent post: %d %v", r.status, r.err)
		}
		seen[r.msg.Seq] = true
	}
	for s := uint64(2); s <= n+1; s++ {
		if !seen[s] {
			t.Fatalf("seqs %v: %d is missing", httpSortedSeqs(seen), s)
		}
	}
	msgs, more := a.history(c.b1, c.conv, "")
	if len(msgs) != n+1 || more {
		t.Fatalf("history holds %d messages, want %d", len(msgs), n+1)
	}
	for i, m := range msgs {
		if m.Seq != uint64(i+1) {
			t.Fatalf("history position %d has seq %d", i, m.Seq)
		}
	}
}

func httpSortedSeqs(m map[uint64]bool) []uint64 {
	out := make([]uint64, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TestHTTPSendRateLimit checks that POST …/messages has a socket's send
// limit, per device: after the burst, 429 rate_limited with Retry-After,
// and nothing of the refused post is stored; another device has its own
// bucket.
func TestHTTPSendRateLimit(t *testing.T) {
	w := newHTTPWorld(t, func(c *serverConfig) {
		c.Messenger.SendRate = 0.01 // a token per 100 s: none comes back during the test
		c.Messenger.SendBurst = 3
	})
	tina, tom := w.u["tina"], w.u["tom"]
	g := w.group(tina.tok, "Takt", httpMember(tom.id, true))
	keys := []string{tina.key(), tom.key()}
	for i := range 3 {
		w.post(tina.tok, g, httpMsg(fmt.Sprintf("c%d", i), "x", keys))
	}
	r := w.env.Do("POST", "/api/v1/conversations/"+g+"/messages", tina.tok, httpMsg("c3", "x", keys))
	httpWantError(t, r, http.StatusTooManyRequests, proto.CodeRateLimited)
	if ra, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || ra < 1 || ra > 100 {
		t.Errorf("Retry-After %q, want 1 to 100 seconds", r.Header.Get("Retry-After"))
	}
	w.post(tom.tok, g, httpMsg("t0", "x", keys))
	if got := w.lastSeq(tina.tok, g); got != 4 {
		t.Fatalf("last_seq %d, want 4 (3 of tina's, 1 of tom's)", got)
	}
}

// TestReadRateLimit checks the read bucket of a device: history pages,
// a message by id, attachment transfers and sync frames share it; beyond
// its burst, 429 rate_limited with Retry-After (an error frame for a
// sync); another device has its own, and sends are not affected.
func TestReadRateLimit(t *testing.T) {
	w := newHTTPWorld(t, func(c *serverConfig) {
		c.Messenger.ReadRate = 0.01 // a token per 100 s: none comes back during the test
		c.Messenger.ReadBurst = 4
	})
	tina, tom := w.u["tina"], w.u["tom"]
	g := w.group(tina.tok, "Takt", httpMember(tom.id, true))
	keys := []string{tina.key(), tom.key()}
	m := w.post(tina.tok, g, httpMsg("c0", "x", keys))
	for _, path := range []string{"/api/v1/conversations/" + g + "/messages", "/api/v1/messages/" + m.ID} {
		if r := w.env.Do("GET", path, tina.tok, nil); r.Status != http.StatusOK {
			t.Fatalf("GET %s: %d", path, r.Status)
		}
	}
	ws := w.env.Dial(tina.tok)
	ws.Send(`{"type":"sync","ref":"s1"}`)
	for f := ws.Read(); f.Type != proto.TypeSynced; f = ws.Read() {
	}
	if r := w.env.Do("GET", "/api/v1/conversations/"+g+"/messages", tina.tok, nil); r.Status != http.StatusOK {
		t.Fatalf("the fourth read: %d", r.Status)
	}
	r := w.env.Do("GET", "/api/v1/conversations/"+g+"/messages", tina.tok, nil)
	httpWantError(t, r, http.StatusTooManyRequests, proto.CodeRateLimited)
	if ra, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || ra < 1 || ra > 100 {
		t.Errorf("Retry-After %q, want 1 to 100 seconds", r.Header.Get("Retry-After"))
	}
	ws.Send(`{"type":"sync","ref":"s2"}`)
	if f := ws.Read(); f.Type != proto.TypeError || f.Code != proto.CodeRateLimited || f.Ref != "s2" {
		t.Fatalf("a sync beyond the bucket: %+v, want error rate_limited for s2", f)
	}
	w.post(tina.tok, g, httpMsg("c1", "x", keys)) // sends have their own bucket
	if r := w.env.Do("GET", "/api/v1/messages/"+m.ID, tom.tok, nil); r.Status != http.StatusOK {
		t.Fatalf("another device's read: %d", r.Status)
	}
}

// TestSyncPaysPerPage: a sync that replays more than a page of messages
// pays a read token per further page, like paging through GET
// …/messages: after a replay of 450 (1 + 2 tokens) a bucket of 3 is empty.
func TestSyncPaysPerPage(t *testing.T) {
	w := newHTTPWorld(t, func(c *serverConfig) {
		c.Messenger.ReadRate = 0.01 // a token per 100 s: none comes back during the test
		c.Messenger.ReadBurst = 3
		c.Messenger.SendRate, c.Messenger.SendBurst = 1e6, 1e6
	})
	tina, tom := w.u["tina"], w.u["tom"]
	g := w.group(tina.tok, "Takt", httpMember(tom.id, true))
	keys := []string{tina.key(), tom.key()}
	for i := range 450 {
		w.post(tom.tok, g, httpMsg(fmt.Sprint("c", i), "x", keys))
	}
	ws := w.env.Dial(tina.tok)
	ws.Send(`{"type":"sync","ref":"s1"}`)
	n := 0
	for f := ws.Read(); f.Type != proto.TypeSynced; f = ws.Read() {
		if f.Type != proto.TypeMessage {
			t.Fatalf("during the sync: %+v", f)
		}
		n++
	}
	if n != 450 {
		t.Fatalf("replayed %d messages, want 450", n)
	}
	ws.Send(`{"type":"sync","ref":"s2"}`)
	if f := ws.Read(); f.Type != proto.TypeError || f.Code != proto.CodeRateLimited || f.Ref != "s2" {
		t.Fatalf("a sync after a replay of three pages with a bucket of 3: %+v, want error rate_limited", f)
	}
	r := w.env.Do("GET", "/api/v1/conversations/"+g+"/messages", tina.tok, nil)
	httpWantError(t, r, http.StatusTooManyRequests, proto.CodeRateLimited)
}
