package client

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"klassenfunk/proto"
)

// Client calls the HTTP API of API.md. It is safe for concurrent use once
// set up; Token may be changed only while no call runs.
type Client struct {
	// BaseURL is the server, e.g. "https://chat.example.org" (no /api/v1).
	BaseURL string
	// Token is the credential sent as Authorization: Bearer. Empty sends
	// none.
	Token string
	// HTTP is the HTTP client. Nil means one with a 30 s timeout.
	HTTP *http.Client
}

// New returns a client for the server at baseURL.
func New(baseURL, token string) *Client {
	return &Client{BaseURL: strings.TrimRight(baseURL, "/"), Token: token}
}

var defaultHTTP = &http.Client{Timeout: 30 * time.Second}

func (c *Client) httpClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return defaultHTTP
}

// maxResponse caps JSON answers (a page of 500 messages of 64 KiB is well
// below).
const maxResponse = 64 << 20

// do sends one request. body is nil, []byte (sent as
// application/octet-stream) or a value sent as JSON. A 2xx JSON answer is
// decoded into out when out is not nil; anything else is an *APIError.
func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var (
		rd    io.Reader
		ctype string
	)
	switch b := body.(type) {
	case nil:
	case []byte:
		rd, ctype = bytes.NewReader(b), "application/octet-stream"
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return err
		}
		rd, ctype = bytes.NewReader(j), "application/json"
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.BaseURL, "/")+"/api/v1"+path, rd)
	if err != nil {
		return err
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return readAPIError(resp)
	}
	switch o := out.(type) {
	case nil:
		io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponse))
		return nil
	case *[]byte:
		b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
		*o = b
		return err
	default:
		if err := json.NewDecoder(io.LimitReader(resp.Body, maxResponse)).Decode(out); err != nil {
			return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
		}
		return nil
	}
}

// readAPIError turns a non-2xx answer into an *APIError.
func readAPIError(resp *http.Response) *APIError {
	var e struct {
		Error struct {
			Code    proto.Code `json:"code"`
			Message string     `json:"message"`
		} `json:"error"`
	}
	json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&e)
	ae := &APIError{Status: resp.StatusCode, Code: e.Error.Code, Message: e.Error.Message}
	if ae.Code == "" {
		ae.Code = codeForStatus(resp.StatusCode)
	}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		ae.RetryAfter = time.Duration(s) * time.Second
	}
	return ae
}

func codeForStatus(status int) proto.Code {
	for _, c := range []proto.Code{proto.CodeInvalidRequest, proto.CodeUnauthorized, proto.CodeForbidden,
		proto.CodeNotFound, proto.CodeConflict, proto.CodePayloadTooLarge, proto.CodeRateLimited} {
		if c.HTTPStatus() == status {
			return c
		}
	}
	return proto.CodeInternal
}

// User is a user as the API shows it.
type User struct {
	ID          string `json:"id"`
	Login       string `json:"login"`
	DisplayName string `json:"display_name"`
	Role        string `json:"role"`
	School      string `json:"school"`
}

// DeviceInfo describes the device at login.
type DeviceInfo struct {
	// ID is chosen by the app, stable per installation, ≤ 128 bytes.
	ID string `json:"id"`
	// Name is shown in the list of trust relationships.
	Name string `json:"name"`
	// OS is ios, android, web, macos, windows or linux.
	OS string `json:"os"`
	// Personal asks for a trust credential; false for a session on a
	// shared device.
	Personal bool `json:"personal"`
}

// Credential is the credential of a login.
type Credential struct {
	// Kind is "trust" or "session".
	Kind  string `json:"kind"`
	Token string `json:"token"`
	// ExpiresAt is a session's current idle deadline.
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

// LoginResult is the answer of POST /login.
type LoginResult struct {
	User       User       `json:"user"`
	Credential Credential `json:"credential"`
	TrustID    string     `json:"trust_id,omitempty"`
}

// ClientHash derives the client_hash of API.md from login and password
// (PBKDF2-HMAC-SHA256, 600000 iterations; see proto.ClientHash).
func ClientHash(login, password string) []byte { return proto.ClientHash(login, password) }

// Login derives the client_hash from the password and logs the device in.
// The password itself never leaves this function. On success the client
// uses the new credential.
func (c *Client) Login(ctx context.Context, login, password string, dev DeviceInfo) (*LoginResult, error) {
	return c.LoginHash(ctx, login, ClientHash(login, password), dev)
}

// LoginHash is Login with an already derived client_hash.
func (c *Client) LoginHash(ctx context.Context, login string, clientHash []byte, dev DeviceInfo) (*LoginResult, error) {
	var out LoginResult
	body := map[string]any{
		"login":       login,
		"client_hash": base64.StdEncoding.EncodeToString(clientHash),
		"device":      dev,
	}
	saved := c.Token
	c.Token = ""
	err := c.do(ctx, "POST", "/login", body, &out)
	if err != nil {
		c.Token = saved
		var ae *APIError
		if errors.As(err, &ae) && ae.Code == proto.CodeUnauthorized {
			return nil, fmt.Errorf("login failed: wrong login or password: %w", err)
		}
		return nil, err
	}
	if out.Credential.Token == "" {
		c.Token = saved
		return nil, errors.New("login: the server sent no credential")
	}
	c.Token = out.Credential.Token
	return &out, nil
}

// Logout ends the credential (POST /logout).
func (c *Client) Logout(ctx context.Context) error { return c.do(ctx, "POST", "/logout", nil, nil) }

// Me returns the caller (GET /me).
func (c *Client) Me(ctx context.Context) (*User, error) {
	var u User
	return &u, c.do(ctx, "GET", "/me", nil, &u)
}

// PutKey publishes this device's public key (PUT /keys).
func (c *Client) PutKey(ctx context.Context, publicKey []byte) error {
	return c.do(ctx, "PUT", "/keys", map[string]string{"public_key": base64.StdEncoding.EncodeToString(publicKey)}, nil)
}

// Member is a member of a conversation.
type Member struct {
	UserID   string `json:"user_id"`
	CanWrite bool   `json:"can_write"`
}

// Conversation is a conversation as GET /conversations lists it.
type Conversation struct {
	ID      string   `json:"id"`
	Kind    string   `json:"kind"`
	Title   string   `json:"title,omitempty"`
	Members []Member `json:"members"`
	LastSeq uint64   `json:"last_seq"`
}

// Conversations lists the caller's conversations.
func (c *Client) Conversations(ctx context.Context) ([]Conversation, error) {
	var out []Conversation
	return out, c.do(ctx, "GET", "/conversations", nil, &out)
}

// Direct returns the direct conversation with peer (a user id), creating
// it when needed.
func (c *Client) Direct(ctx context.Context, peer string) (*Conversation, error) {
	var out Conversation
	return &out, c.do(ctx, "POST", "/conversations", map[string]string{"kind": "direct", "peer": peer}, &out)
}

// Group creates a group conversation (teachers and admins).
func (c *Client) Group(ctx context.Context, title string, members []Member) (*Conversation, error) {
	var out Conversation
	if members == nil {
		members = []Member{}
	}
	return &out, c.do(ctx, "POST", "/conversations", map[string]any{"kind": "group", "title": title, "members": members}, &out)
}

// Devices lists the member devices of a conversation with their public
// keys (GET /conversations/{id}/devices).
func (c *Client) Devices(ctx context.Context, conversation string) ([]Recipient, error) {
	var out []Recipient
	return out, c.do(ctx, "GET", "/conversations/"+url.PathEscape(conversation)+"/devices", nil, &out)
}

// Post stores a message (POST /conversations/{id}/messages). Sending the
// same ClientID again returns the same message.
func (c *Client) Post(ctx context.Context, s *proto.Send) (*proto.Message, error) {
	body := map[string]any{"client_id": s.ClientID, "ciphertext": s.Ciphertext, "keys": s.Keys}
	if len(s.Attachments) > 0 {
		body["attachments"] = s.Attachments
	}
	var m proto.Message
	return &m, c.do(ctx, "POST", "/conversations/"+url.PathEscape(s.Conversation)+"/messages", body, &m)
}

// History returns up to limit messages after afterSeq (GET
// /conversations/{id}/messages) and whether more follow.
func (c *Client) History(ctx context.Context, conversation string, afterSeq uint64, limit int) ([]proto.Message, bool, error) {
	var out struct {
		Messages []proto.Message `json:"messages"`
		More     bool            `json:"more"`
	}
	q := url.Values{"after_seq": {strconv.FormatUint(afterSeq, 10)}, "limit": {strconv.Itoa(limit)}}
	err := c.do(ctx, "GET", "/conversations/"+url.PathEscape(conversation)+"/messages?"+q.Encode(), nil, &out)
	return out.Messages, out.More, err
}

// Message returns one message (GET /messages/{id}).
func (c *Client) Message(ctx context.Context, id string) (*proto.Message, error) {
	var m proto.Message
	return &m, c.do(ctx, "GET", "/messages/"+url.PathEscape(id), nil, &m)
}

// Attachment is the answer of POST /attachments.
type Attachment struct {
	ID        string    `json:"id"`
	Size      int64     `json:"size"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Upload stores encrypted attachment bytes (POST /attachments).
func (c *Client) Upload(ctx context.Context, sealed []byte) (*Attachment, error) {
	var a Attachment
	return &a, c.do(ctx, "POST", "/attachments", sealed, &a)
}

// Download fetches encrypted attachment bytes (GET /attachments/{id}).
func (c *Client) Download(ctx context.Context, id string) ([]byte, error) {
	var b []byte
	return b, c.do(ctx, "GET", "/attachments/"+url.PathEscape(id), nil, &b)
}

// Trust is one trust relationship (GET /trust).
type Trust struct {
	ID         string    `json:"id"`
	DeviceName string    `json:"device_name"`
	OS         string    `json:"os"`
	CreatedAt  time.Time `json:"created_at"`
	LastUsedAt time.Time `json:"last_used_at"`
	Push       bool      `json:"push"`
	Current    bool      `json:"current"`
}

// Trusts lists the caller's trust relationships.
func (c *Client) Trusts(ctx context.Context) ([]Trust, error) {
	var out []Trust
	return out, c.do(ctx, "GET", "/trust", nil, &out)
}

// RevokeTrust deletes a trust relationship (DELETE /trust/{id}).
func (c *Client) RevokeTrust(ctx context.Context, id string) error {
	return c.do(ctx, "DELETE", "/trust/"+url.PathEscape(id), nil, nil)
}
