package messenger_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"klassenfunk/internal/testenv"
	"klassenfunk/proto"
)

// httpBlob is test attachment content: every byte value, zeros included.
func httpBlob(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}

func TestHTTPAttachmentUploadAndRead(t *testing.T) {
	c := newChat(t)
	carol, carolID := httpOutsidersIDs(c)
	dave, _ := c.env.Login("dave", "d-phone", true)
	a := httpAPI{t, c.env}
	data := httpBlob(3000)

	r := a.upload(c.alice1, data, false)
	if r.Status != http.StatusCreated {
		t.Fatalf("upload: %d %s", r.Status, r.Body)
	}
	var fields map[string]json.RawMessage
	var up attachmentView
	if json.Unmarshal(r.Body, &fields) != nil || json.Unmarshal(r.Body, &up) != nil {
		t.Fatalf("upload answer %s", r.Body)
	}
	want := c.env.Clock.Now().UTC().Add(720 * time.Hour)
	exp, err := time.Parse(time.RFC3339, up.ExpiresAt)
	if len(fields) != 3 || up.ID == "" || up.Size != 3000 || err != nil || !exp.Equal(want) {
		t.Fatalf("upload answer %s, want {id, size: 3000, expires_at: %s}", r.Body, want.Format(time.RFC3339))
	}
	get := func(tok string) (int, []byte, string) {
		t.Helper()
		r := c.env.Do("GET", "/api/v1/attachments/"+up.ID, tok, nil)
		return r.Status, r.Body, r.Header.Get("Content-Type")
	}
	if st, body, ct := get(c.alice1); st != 200 || !bytes.Equal(body, data) || ct != "application/octet-stream" {
		t.Fatalf("uploader: %d, %d bytes (equal %v), Content-Type %q", st, len(body), bytes.Equal(body, data), ct)
	}
	if st, body, _ := get(c.alice2); st != 200 || !bytes.Equal(body, data) {
		t.Fatalf("uploader's other device: %d", st)
	}

	// carol shares another conversation with alice.
	g := a.group(c.alice1, "Kollegium", httpMember(carolID, true))
	a.post(c.alice1, g, httpMsg("g1", "ohne Anhang", []string{carolID + "/c-phone"}))

	notFound := map[string]string{
		"same-school non-member":              carol,
		"other school":                        dave,
		"conversation member, no message yet": c.b1,
	}
	check404 := func() {
		for name, tok := range notFound {
			t.Run(name, func(t *testing.T) {
				r := c.env.Do("GET", "/api/v1/attachments/"+up.ID, tok, nil)
				httpWantError(t, r, 404, proto.CodeNotFound)
				if bytes.Contains(r.Body, data[:64]) {
					t.Fatal("404 body carries the attachment")
				}
			})
		}
	}
	check404()

	body := httpChatBody(c, "m1", "mit Anhang")
	body["attachments"] = []string{up.ID}
	m := a.post(c.alice1, c.conv, body)
	if !slices.Equal(m.Attachments, []string{up.ID}) {
		t.Fatalf("message attachments %v", m.Attachments)
	}
	if st, got, ct := get(c.b1); st != 200 || !bytes.Equal(got, data) || ct != "application/octet-stream" {
		t.Fatalf("member of the conversation: %d, Content-Type %q", st, ct)
	}
	delete(notFound, "conversation member, no message yet")
	check404()
	httpWantError(t, c.env.Do("GET", "/api/v1/attachments/no-such-attachment", c.alice1, nil), 404, proto.CodeNotFound)
	httpWantError(t, c.env.Do("GET", "/api/v1/attachments/"+up.ID, "", nil), 401, proto.CodeUnauthorized)
	httpWantError(t, a.upload("", data, false), 401, proto.CodeUnauthorized)
}

func TestHTTPAttachmentReferences(t *testing.T) {
	c := newChat(t)
	carol, _ := httpOutsidersIDs(c)
	dave, _ := c.env.Login("dave", "d-phone", true)
	a := httpAPI{t, c.env}
	mine := a.mustUpload(c.alice1, httpBlob(10))
	carols := a.mustUpload(carol, httpBlob(11))
	daves := a.mustUpload(dave, httpBlob(12))
	bobs := a.mustUpload(c.b1, httpBlob(13))

	with := func(clientID string, ids ...string) map[string]any {
		b := httpChatBody(c, clientID, "mit Anhang")
		b["attachments"] = ids
		return b
	}
	for name, ids := range map[string][]string{
		"unknown attachment":                   {"no-such-attachment"},
		"someone else's, not readable":         {carols},
		"other school's":                       {daves},
		"one good, one unknown":                {mine, "no-such-attachment"},
		"duplicate id":                         {mine, mine},
		"another member's, not yet referenced": {bobs},
	} {
		t.Run(name, func(t *testing.T) {
			httpWantError(t, c.env.Do("POST", "/api/v1/conversations/"+c.conv+"/messages", c.alice1, with("x", ids...)),
				400, proto.CodeInvalidRequest)
		})
	}
	if seq := a.lastSeq(c.alice1, c.conv); seq != 0 {
		t.Fatalf("last_seq %d after refused messages, want 0", seq)
	}
	// Own uploads may be referenced; so may one the sender can read
	// because a message in a conversation of theirs references it.
	a.post(c.b1, c.conv, with("b1", bobs))
	m := a.post(c.alice1, c.conv, with("a1", mine, bobs))
	if !slices.Equal(m.Attachments, []string{mine, bobs}) {
		t.Fatalf("attachments %v", m.Attachments)
	}
	// The carol/dave uploads stay private after all this.
	for _, id := range []string{carols, daves} {
		httpWantError(t, c.env.Do("GET", "/api/v1/attachments/"+id, c.alice1, nil), 404, proto.CodeNotFound)
	}
}

func TestHTTPAttachmentLimits(t *testing.T) {
	var dataDir string
	c := newChat(t, httpCaptureDataDir(&dataDir), func(cfg *serverConfig) { cfg.Messenger.MaxAttachmentBytes = 1024 })
	a := httpAPI{t, c.env}
	dir := httpAttachmentDir(dataDir)
	if got := httpDirFiles(t, dir); len(got) != 0 {
		t.Fatalf("attachment dir starts with %v", got)
	}
	var first attachmentView
	r := a.upload(c.alice1, httpBlob(1024), false)
	if r.Status != http.StatusCreated || json.Unmarshal(r.Body, &first) != nil || first.Size != 1024 {
		t.Fatalf("upload at the limit: %d %s", r.Status, r.Body)
	}
	second := a.mustUpload(c.alice1, httpBlob(1))
	want := []string{first.ID, second}
	slices.Sort(want)
	if got := httpDirFiles(t, dir); !slices.Equal(got, want) {
		t.Fatalf("attachment dir %v, want %v", got, want)
	}

	for name, tc := range map[string]struct {
		size    int
		chunked bool
		status  int
		code    proto.Code
	}{
		"1025 bytes":            {1025, false, 413, proto.CodePayloadTooLarge},
		"1025 bytes, no length": {1025, true, 413, proto.CodePayloadTooLarge},
		"64 KiB, no length":     {64 << 10, true, 413, proto.CodePayloadTooLarge},
		"empty":                 {0, false, 400, proto.CodeInvalidRequest},
		"empty, no length":      {0, true, 400, proto.CodeInvalidRequest},
		"1 MiB + 1":             {(1 << 20) + 1, false, 413, proto.CodePayloadTooLarge},
	} {
		t.Run(name, func(t *testing.T) {
			httpWantError(t, a.upload(c.alice1, httpBlob(tc.size), tc.chunked), tc.status, tc.code)
			if got := httpDirFiles(t, dir); !slices.Equal(got, want) {
				t.Fatalf("attachment dir %v after a refused upload, want only %v", got, want)
			}
		})
	}
	// The earlier files are intact.
	for id, size := range map[string]int{first.ID: 1024, second: 1} {
		r := c.env.Do("GET", "/api/v1/attachments/"+id, c.alice1, nil)
		if r.Status != 200 || !bytes.Equal(r.Body, httpBlob(size)) {
			t.Fatalf("attachment %s: %d, %d bytes", id, r.Status, len(r.Body))
		}
	}
}

// An upload whose body breaks off before its Content-Length is the
// client's fault: 400 invalid_request, no file left behind, and nothing
// logged that names the client's address (net/http's read error does).
func TestHTTPAttachmentBrokenOff(t *testing.T) {
	var dataDir string
	c := newChat(t, httpCaptureDataDir(&dataDir))
	conn, err := net.Dial("tcp", strings.TrimPrefix(c.env.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /api/v1/attachments HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"+
		"Content-Type: application/octet-stream\r\nContent-Length: 5000\r\n\r\n%s", c.alice1, httpBlob(100))
	conn.(*net.TCPConn).CloseWrite()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	httpWantError(t, testenv.Response{Status: resp.StatusCode, Header: resp.Header, Body: body}, http.StatusBadRequest, proto.CodeInvalidRequest)
	if got := httpDirFiles(t, httpAttachmentDir(dataDir)); len(got) != 0 {
		t.Fatalf("files after a broken-off upload: %v", got)
	}
	local := conn.LocalAddr().(*net.TCPAddr)
	if logs := c.env.Logs(); strings.Contains(logs, fmt.Sprint(":", local.Port)) || strings.Contains(logs, `"internal error"`) {
		t.Fatalf("logs name the client's port %d or an internal error:\n%s", local.Port, logs)
	}
}

// TestAttachmentTransfersDrawOnReads: an upload or a download costs a
// read token and one more per 512 KiB, paid first when the size is known
// and after the upload when it was not announced; one that costs more
// than the whole bucket takes a full one; beyond the bucket, 429.
func TestAttachmentTransfersDrawOnReads(t *testing.T) {
	c := newChat(t, func(cfg *serverConfig) {
		cfg.Messenger.ReadRate = 0.01 // a token per 100 s: none comes back during the test
		cfg.Messenger.ReadBurst = 12
		cfg.Messenger.MaxAttachmentBytes = 16 << 20
	})
	a := httpAPI{t, c.env}
	id := a.mustUpload(c.alice1, httpBlob(2<<20)) // 1 + 4 of alice1's 12
	if r := c.env.Do("GET", "/api/v1/attachments/"+id, c.alice1, nil); r.Status != http.StatusOK {
		t.Fatalf("download: %d", r.Status) // 1 + 4: 2 left
	}
	r := c.env.Do("GET", "/api/v1/attachments/"+id, c.alice1, nil)
	httpWantError(t, r, http.StatusTooManyRequests, proto.CodeRateLimited)
	if ra, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || ra < 200 || ra > 400 {
		t.Errorf("Retry-After %q, want the 3 missing tokens' 300 s", r.Header.Get("Retry-After"))
	}
	// Another device: 3 MiB without a length pays 1 first and 6 after:
	// 5 left, which a 2-MiB upload takes, and then a page does not fit.
	if r := a.upload(c.alice2, httpBlob(3<<20), true); r.Status != http.StatusCreated {
		t.Fatalf("upload without a length: %d %s", r.Status, r.Body)
	}
	a.mustUpload(c.alice2, httpBlob(2<<20))
	httpWantError(t, a.upload(c.alice2, httpBlob(10), false), http.StatusTooManyRequests, proto.CodeRateLimited)
	// A transfer dearer than the bucket (1 + 16 tokens) takes a full one.
	a.mustUpload(c.b1, httpBlob(8<<20))
}
