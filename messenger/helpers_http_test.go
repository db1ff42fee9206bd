package messenger_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"klassenfunk/internal/testenv"
	"klassenfunk/proto"
	"klassenfunk/storage"
)

// The helpers of the HTTP tests are methods of httpAPI or carry an http
// prefix, so they do not collide with the other tests of the package.

// httpUser is one user of an httpWorld, logged in on one personal device.
type httpUser struct {
	id, school, role string
	tok, trust       string
	device           string
}

// key is the wrapped-key name of the user's device.
func (u httpUser) key() string { return u.id + "/" + u.device }

// httpWorld is two schools with users of every role. School A ("Schule am
// See"): anna (admin), tina and tom (teachers), sam, sue and sol
// (students), pat (parent). School B ("Albert-Schule"): bella (admin), ben
// (teacher), bert (student).
type httpWorld struct {
	httpAPI
	a, b string // school ids
	u    map[string]httpUser
}

func newHTTPWorld(t *testing.T, opts ...testenv.Option) *httpWorld {
	t.Helper()
	env := testenv.New(t, opts...)
	w := &httpWorld{httpAPI: httpAPI{t: t, env: env}, u: map[string]httpUser{}}
	w.a = env.CreateSchool("Schule am See")
	w.b = env.CreateSchool("Albert-Schule")
	for _, x := range []struct{ school, login, role string }{
		{w.a, "anna", "admin"}, {w.a, "tina", "teacher"}, {w.a, "tom", "teacher"},
		{w.a, "sam", "student"}, {w.a, "sue", "student"}, {w.a, "sol", "student"}, {w.a, "pat", "parent"},
		{w.b, "bella", "admin"}, {w.b, "ben", "teacher"}, {w.b, "bert", "student"},
	} {
		u := httpUser{school: x.school, role: x.role, device: x.login + "-phone"}
		u.id = env.CreateUser(x.school, x.login, x.role)
		u.tok, u.trust = env.Login(x.login, u.device, true)
		w.u[x.login] = u
	}
	return w
}

// httpAPI is a small client of the messenger's HTTP API. Its helpers fail
// the test on any unexpected answer.
type httpAPI struct {
	t   *testing.T
	env *testenv.Env
}

// convView is GET /conversations' shape of a conversation.
type convView struct {
	ID      string           `json:"id"`
	Kind    string           `json:"kind"`
	Title   string           `json:"title"`
	Members []storage.Member `json:"members"`
	LastSeq uint64           `json:"last_seq"`
}

// httpDirect is the body that asks for a direct conversation.
func httpDirect(peer string) map[string]any { return map[string]any{"kind": "direct", "peer": peer} }

// httpGroup is the body that creates a group.
func httpGroup(title string, members ...storage.Member) map[string]any {
	if members == nil {
		members = []storage.Member{}
	}
	return map[string]any{"kind": "group", "title": title, "members": members}
}

// httpMember is shorthand for a member entry.
func httpMember(user string, canWrite bool) storage.Member {
	return storage.Member{UserID: user, CanWrite: canWrite}
}

// group creates a group as the user with token tok and returns its id.
func (a httpAPI) group(tok, title string, members ...storage.Member) string {
	a.t.Helper()
	var c convView
	a.env.JSON("POST", "/api/v1/conversations", tok, httpGroup(title, members...), http.StatusCreated, &c)
	return c.ID
}

// direct returns the direct conversation of the caller and peer.
func (a httpAPI) direct(tok, peer string) string {
	a.t.Helper()
	r := a.env.Do("POST", "/api/v1/conversations", tok, httpDirect(peer))
	if r.Status != http.StatusCreated && r.Status != http.StatusOK {
		a.t.Fatalf("direct conversation: status %d, body %s", r.Status, r.Body)
	}
	var c convView
	if err := json.Unmarshal(r.Body, &c); err != nil || c.ID == "" {
		a.t.Fatalf("direct conversation: decode %s: %v", r.Body, err)
	}
	return c.ID
}

// conversations returns the caller's conversations by id.
func (a httpAPI) conversations(tok string) map[string]convView {
	a.t.Helper()
	var list []convView
	r := a.env.JSON("GET", "/api/v1/conversations", tok, nil, http.StatusOK, &list)
	if list == nil {
		a.t.Fatalf("GET /conversations: %s, want an array", r.Body)
	}
	out := make(map[string]convView, len(list))
	for _, c := range list {
		if _, dup := out[c.ID]; dup {
			a.t.Fatalf("conversation %s listed twice", c.ID)
		}
		out[c.ID] = c
	}
	return out
}

// members returns the members of a conversation as user → can_write, as
// listed for tok (who must be a member).
func (a httpAPI) members(tok, conv string) map[string]bool {
	a.t.Helper()
	c, ok := a.conversations(tok)[conv]
	if !ok {
		a.t.Fatalf("conversation %s not listed for the caller", conv)
	}
	return httpMemberMap(a.t, c.Members)
}

// lastSeq is the conversation's last_seq as listed for tok.
func (a httpAPI) lastSeq(tok, conv string) uint64 {
	a.t.Helper()
	c, ok := a.conversations(tok)[conv]
	if !ok {
		a.t.Fatalf("conversation %s not listed", conv)
	}
	return c.LastSeq
}

func httpMemberMap(t *testing.T, ms []storage.Member) map[string]bool {
	t.Helper()
	out := make(map[string]bool, len(ms))
	for _, m := range ms {
		if _, dup := out[m.UserID]; dup {
			t.Fatalf("member %s listed twice in %+v", m.UserID, ms)
		}
		out[m.UserID] = m.CanWrite
	}
	return out
}

func httpB64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// httpWrapped is the wrapped key the HTTP tests put for a key name.
func httpWrapped(name string) []byte { return []byte("k:" + name) }

// httpMsg is a valid POST …/messages body with one wrapped key per key
// name (httpWrapped(name)).
func httpMsg(clientID, text string, keyNames []string, attachments ...string) map[string]any {
	keys := map[string]string{}
	for _, k := range keyNames {
		keys[k] = httpB64(httpWrapped(k))
	}
	body := map[string]any{"client_id": clientID, "ciphertext": httpB64([]byte(text)), "keys": keys}
	if attachments != nil {
		body["attachments"] = attachments
	}
	return body
}

// post posts a message and expects 201.
func (a httpAPI) post(tok, conv string, body any) proto.Message {
	a.t.Helper()
	var m proto.Message
	a.env.JSON("POST", "/api/v1/conversations/"+conv+"/messages", tok, body, http.StatusCreated, &m)
	return m
}

// history returns one page of GET …/messages (query includes the "?").
func (a httpAPI) history(tok, conv, query string) (msgs []proto.Message, more bool) {
	a.t.Helper()
	var page struct {
		Messages []proto.Message `json:"messages"`
		More     *bool           `json:"more"`
	}
	r := a.env.JSON("GET", "/api/v1/conversations/"+conv+"/messages"+query, tok, nil, http.StatusOK, &page)
	if page.More == nil || page.Messages == nil {
		a.t.Fatalf("history page without a messages array or more: %s", r.Body)
	}
	return page.Messages, *page.More
}

// httpWantError checks an API error response.
func httpWantError(t *testing.T, r testenv.Response, status int, code proto.Code) {
	t.Helper()
	if r.Status != status || r.ErrorCode() != string(code) {
		t.Fatalf("got %d %q, want %d %q; body %s", r.Status, r.ErrorCode(), status, code, r.Body)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("error Content-Type %q, want application/json", ct)
	}
}

// raw sends body with the given Content-Type ("" for none).
func (a httpAPI) raw(method, path, tok, contentType string, body io.Reader) testenv.Response {
	a.t.Helper()
	req, err := http.NewRequest(method, a.env.URL+path, body)
	if err != nil {
		a.t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		a.t.Fatal(err)
	}
	return testenv.Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// httpChunked hides the length of a reader, so the request goes out with
// Transfer-Encoding: chunked and no Content-Length.
type httpChunked struct{ r io.Reader }

func (c httpChunked) Read(p []byte) (int, error) { return c.r.Read(p) }

// attachmentView is the answer to POST /attachments.
type attachmentView struct {
	ID        string `json:"id"`
	Size      int64  `json:"size"`
	ExpiresAt string `json:"expires_at"`
}

// upload posts data as an attachment and returns the raw response.
func (a httpAPI) upload(tok string, data []byte, hideLength bool) testenv.Response {
	a.t.Helper()
	var body io.Reader = bytes.NewReader(data)
	if hideLength {
		body = httpChunked{body}
	}
	return a.raw("POST", "/api/v1/attachments", tok, "application/octet-stream", body)
}

// mustUpload uploads data and returns the attachment id.
func (a httpAPI) mustUpload(tok string, data []byte) string {
	a.t.Helper()
	r := a.upload(tok, data, false)
	var v attachmentView
	if r.Status != http.StatusCreated || json.Unmarshal(r.Body, &v) != nil || v.ID == "" {
		a.t.Fatalf("upload: %d %s", r.Status, r.Body)
	}
	return v.ID
}

// httpDirFiles lists the names in dir, sorted.
func httpDirFiles(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	names := []string{}
	for _, e := range ents {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	return names
}

// httpCaptureDataDir is an option that records the node's data directory;
// the attachment blobs live in httpAttachmentDir of it.
func httpCaptureDataDir(dst *string) testenv.Option {
	return func(c *serverConfig) { *dst = c.DataDir }
}

func httpAttachmentDir(dataDir string) string { return filepath.Join(dataDir, "attachments") }

// httpLeaks returns the secrets that occur in body.
func httpLeaks(body []byte, secrets []string) []string {
	var out []string
	for _, s := range secrets {
		if s != "" && strings.Contains(string(body), s) {
			out = append(out, s)
		}
	}
	return out
}
