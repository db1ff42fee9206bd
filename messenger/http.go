package messenger

import (
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"klassenfunk/auth"
	"klassenfunk/internal/httpapi"
	"klassenfunk/proto"
	"klassenfunk/storage"
)

func (n *Node) fail(w http.ResponseWriter, err error) {
	httpapi.WriteError(w, nil, asProtoError(n, err))
}

func (n *Node) putKey(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	var req struct {
		PublicKey string `json:"public_key"`
	}
	if err := httpapi.Decode(w, r, &req); err != nil {
		n.fail(w, err)
		return
	}
	pub, err := proto.DecodeBase64(req.PublicKey)
	if err != nil {
		pub = nil
	}
	if err := n.PutKey(r.Context(), p, pub); err != nil {
		n.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// conversationView is the API shape of a conversation.
type conversationView struct {
	ID      string           `json:"id"`
	Kind    storage.ConvKind `json:"kind"`
	Title   string           `json:"title,omitempty"`
	Members []storage.Member `json:"members"`
	LastSeq uint64           `json:"last_seq"`
}

func viewConversation(c storage.Conversation) conversationView {
	return conversationView{ID: c.ID, Kind: c.Kind, Title: c.Title, Members: c.Members, LastSeq: c.LastSeq}
}

func (n *Node) listConversations(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	cs, err := n.Conversations(r.Context(), p)
	if err != nil {
		n.fail(w, err)
		return
	}
	out := make([]conversationView, len(cs))
	for i, c := range cs {
		out[i] = viewConversation(c)
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
}

func (n *Node) createConversation(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	var req struct {
		Kind    storage.ConvKind `json:"kind"`
		Peer    string           `json:"peer"`
		Title   string           `json:"title"`
		Members []NewMember      `json:"members"`
	}
	if err := httpapi.Decode(w, r, &req); err != nil {
		n.fail(w, err)
		return
	}
	switch req.Kind {
	case storage.ConvDirect:
		c, created, err := n.CreateDirect(r.Context(), p, req.Peer)
		if err != nil {
			n.fail(w, err)
			return
		}
		status := http.StatusOK
		if created {
			status = http.StatusCreated
		}
		httpapi.WriteJSON(w, status, viewConversation(c))
	case storage.ConvGroup:
		c, err := n.CreateGroup(r.Context(), p, req.Title, req.Members)
		if err != nil {
			n.fail(w, err)
			return
		}
		httpapi.WriteJSON(w, http.StatusCreated, viewConversation(c))
	default:
		n.fail(w, proto.Errorf(proto.CodeInvalidRequest, `kind must be "direct" or "group"`))
	}
}

func (n *Node) conversationDevices(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	keys, err := n.Devices(r.Context(), p, r.PathValue("id"))
	if err != nil {
		n.fail(w, err)
		return
	}
	if keys == nil {
		keys = []storage.DeviceKey{}
	}
	httpapi.WriteJSON(w, http.StatusOK, keys)
}

func (n *Node) putMember(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	var req struct {
		CanWrite *bool `json:"can_write"`
	}
	if err := httpapi.Decode(w, r, &req); err != nil {
		n.fail(w, err)
		return
	}
	if req.CanWrite == nil {
		n.fail(w, proto.Errorf(proto.CodeInvalidRequest, "can_write is required"))
		return
	}
	if err := n.SetMember(r.Context(), p, r.PathValue("id"), r.PathValue("user"), *req.CanWrite); err != nil {
		n.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (n *Node) deleteMember(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	if err := n.RemoveMember(r.Context(), p, r.PathValue("id"), r.PathValue("user")); err != nil {
		n.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// writeMessage writes one message with only the caller's device key.
func writeMessage(w http.ResponseWriter, status int, m *storage.Message, p auth.Principal) {
	pm := toProto(m)
	httpapi.WriteRaw(w, status, proto.AppendMessageJSON(nil, &pm, proto.KeyName(p.User.ID, p.Cred.DeviceID)))
}

// readLimited answers 429 rate_limited instead of calling next when the
// device has used up its read bucket (GatewayConfig.ReadRate): one app
// paging history or moving attachments in a closed loop would otherwise
// take the core from everyone's messages.
func (n *Node) readLimited(next func(http.ResponseWriter, *http.Request, auth.Principal)) func(http.ResponseWriter, *http.Request, auth.Principal) {
	return func(w http.ResponseWriter, r *http.Request, p auth.Principal) {
		if n.readRefused(w, p, 1) {
			return
		}
		next(w, r, p)
	}
}

// transferUnit is what an attachment's bytes cost in read tokens, beyond
// the request's one: a 25-MiB upload or download draws 51.
const transferUnit = 512 << 10

// readRefused takes tokens from the device's read bucket, or answers 429
// and reports true.
func (n *Node) readRefused(w http.ResponseWriter, p auth.Principal, tokens int64) bool {
	wait, ok := n.reads.allowN(proto.KeyName(p.User.ID, p.Cred.DeviceID), time.Now(), int(min(tokens, 1<<20)), nil)
	if !ok {
		n.fail(w, &proto.Error{Code: proto.CodeRateLimited, Message: "reading too fast; slow down", RetryAfter: wait})
	}
	return !ok
}

func (n *Node) postMessage(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	if wait, ok := n.sends.allow(proto.KeyName(p.User.ID, p.Cred.DeviceID), time.Now(), nil); !ok {
		n.fail(w, &proto.Error{Code: proto.CodeRateLimited, Message: "sending too fast; slow down", RetryAfter: wait})
		return
	}
	body, err := httpapi.ReadBody(w, r)
	if err != nil {
		n.fail(w, err)
		return
	}
	// proto decodes the body with the same rules as a send frame (strict
	// base64, limits).
	s, perr := proto.DecodeSend(body)
	if perr != nil {
		n.fail(w, perr)
		return
	}
	s.Conversation = r.PathValue("id")
	m, created, err := n.Send(r.Context(), p, s)
	if err != nil {
		n.fail(w, err)
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	writeMessage(w, status, &m, p)
}

// maxHistoryLimit is the largest page of GET …/messages (API.md).
const maxHistoryLimit = 500

func (n *Node) listMessages(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	q := r.URL.Query()
	var after uint64
	if v := q.Get("after_seq"); v != "" {
		var err error
		if after, err = strconv.ParseUint(v, 10, 64); err != nil {
			n.fail(w, proto.Errorf(proto.CodeInvalidRequest, "after_seq must be a non-negative integer"))
			return
		}
	}
	limit := 100
	if v := q.Get("limit"); v != "" {
		l, err := strconv.Atoi(v)
		if err != nil || l < 1 || l > maxHistoryLimit {
			n.fail(w, proto.Errorf(proto.CodeInvalidRequest, "limit must be 1 to %d", maxHistoryLimit))
			return
		}
		limit = l
	}
	msgs, more, err := n.History(r.Context(), p, r.PathValue("id"), after, limit)
	if err != nil {
		n.fail(w, err)
		return
	}
	key := p.User.ID + "/" + p.Cred.DeviceID
	buf := append(make([]byte, 0, 1024), `{"messages":[`...)
	for i := range msgs {
		if i > 0 {
			buf = append(buf, ',')
		}
		pm := toProto(&msgs[i])
		buf = proto.AppendMessageJSON(buf, &pm, key)
	}
	buf = append(buf, `],"more":`...)
	buf = strconv.AppendBool(buf, more)
	buf = append(buf, '}')
	httpapi.WriteRaw(w, http.StatusOK, buf)
}

// An upload's body must keep coming: each read waits at most
// uploadIdleTime for data, and the whole body must arrive within
// uploadMaxTime (25 MiB in 10 minutes is 43 KB/s). Without them a client
// trickling a byte now and then holds a goroutine, a file and a temporary
// blob for as long as it likes.
var (
	uploadIdleTime = 30 * time.Second // a variable for the tests
	uploadMaxTime  = 10 * time.Minute
)

// uploadBody reads an attachment upload under those deadlines and keeps
// the first read error (the store's errors are told apart from the
// client's by it).
type uploadBody struct {
	r     io.Reader
	rc    *http.ResponseController
	until time.Time
	err   error
}

func (b *uploadBody) Read(p []byte) (int, error) {
	deadline := time.Now().Add(uploadIdleTime)
	if deadline.After(b.until) {
		deadline = b.until
	}
	b.rc.SetReadDeadline(deadline) // an error: the connection cannot (HTTP/2 may); read on
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF && b.err == nil {
		b.err = err
	}
	return n, err
}

func (n *Node) getMessage(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	m, err := n.Message(r.Context(), p, r.PathValue("id"))
	if err != nil {
		n.fail(w, err)
		return
	}
	writeMessage(w, http.StatusOK, &m, p)
}

func (n *Node) postAttachment(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	if r.ContentLength > n.cfg.MaxAttachmentBytes {
		n.fail(w, proto.Errorf(proto.CodePayloadTooLarge, "attachments are limited to %d bytes", n.cfg.MaxAttachmentBytes))
		return
	}
	// An announced size is paid for first; an unannounced one when it
	// has arrived (ahead of the device's next reads).
	if n.readRefused(w, p, 1+max(r.ContentLength, 0)/transferUnit) {
		return
	}
	body := &uploadBody{
		r:     http.MaxBytesReader(w, r.Body, n.cfg.MaxAttachmentBytes+1),
		rc:    http.NewResponseController(w),
		until: time.Now().Add(uploadMaxTime),
	}
	a, err := n.Upload(r.Context(), p, body)
	if err == nil && r.ContentLength < 0 {
		n.reads.charge(proto.KeyName(p.User.ID, p.Cred.DeviceID), time.Now(), int(a.Size/transferUnit))
	}
	if body.err != nil && !errors.As(body.err, new(*http.MaxBytesError)) {
		// The client's body ended early, broke off or stalled: its fault,
		// and what net/http says about it names the client's address.
		err = proto.Errorf(proto.CodeInvalidRequest, "the upload did not arrive whole")
	}
	if err != nil {
		n.fail(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusCreated, struct {
		ID        string    `json:"id"`
		Size      int64     `json:"size"`
		ExpiresAt time.Time `json:"expires_at"`
	}{a.ID, a.Size, a.ExpiresAt})
}

func (n *Node) getAttachment(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	a, f, err := n.OpenAttachment(r.Context(), p, r.PathValue("id"))
	if err != nil {
		n.fail(w, err)
		return
	}
	defer f.Close()
	if n.readRefused(w, p, 1+a.Size/transferUnit) {
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.FormatInt(a.Size, 10))
	h.Set("Cache-Control", "private, no-store")
	w.WriteHeader(http.StatusOK)
	io.Copy(w, f)
}
