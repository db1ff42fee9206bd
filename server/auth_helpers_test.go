package server_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"klassenfunk/internal/testenv"
)

// authWorld is a test node with two schools and a few users in each. Every
// user has the password testenv.Password(login).
type authWorld struct {
	env *testenv.Env

	schoolA, schoolB string

	// User ids; the login is the field name with a dash ("admin-a", …).
	adminA, teacherA, teacher2A, studentA string
	adminB, teacherB                      string
}

func newAuthWorld(t *testing.T, opts ...testenv.Option) *authWorld {
	t.Helper()
	env := testenv.New(t, opts...)
	w := &authWorld{env: env}
	w.schoolA = env.CreateSchool("Schule A")
	w.schoolB = env.CreateSchool("Schule B")
	w.adminA = env.CreateUser(w.schoolA, "admin-a", "admin")
	w.teacherA = env.CreateUser(w.schoolA, "teacher-a", "teacher")
	w.teacher2A = env.CreateUser(w.schoolA, "teacher2-a", "teacher")
	w.studentA = env.CreateUser(w.schoolA, "student-a", "student")
	w.adminB = env.CreateUser(w.schoolB, "admin-b", "admin")
	w.teacherB = env.CreateUser(w.schoolB, "teacher-b", "teacher")
	return w
}

// authCall sends one request and reports failures on t (not on env.T, so
// that it is safe inside subtests). body is nil, a string (sent as is) or
// a value sent as JSON. hdr adds headers.
func authCall(t testing.TB, env *testenv.Env, method, path, token string, body any, hdr http.Header) testenv.Response {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, env.URL+path, rd)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, vs := range hdr {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return testenv.Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// authWantStatus fails unless r has the status.
func authWantStatus(t testing.TB, r testenv.Response, status int) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status %d, want %d; body %s", r.Status, status, r.Body)
	}
}

// authDecode decodes r's JSON body into out.
func authDecode(t testing.TB, r testenv.Response, out any) {
	t.Helper()
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q, want application/json", ct)
	}
	if err := json.Unmarshal(r.Body, out); err != nil {
		t.Fatalf("decode %s: %v", r.Body, err)
	}
}

// authWantError checks the status and that the body is exactly
// {"error":{"code":code,"message":<non-empty>}}.
func authWantError(t testing.TB, r testenv.Response, status int, code string) {
	t.Helper()
	authWantStatus(t, r, status)
	var top map[string]json.RawMessage
	authDecode(t, r, &top)
	if len(top) != 1 || top["error"] == nil {
		t.Fatalf("error body %s: want exactly one key \"error\"", r.Body)
	}
	var inner map[string]any
	if err := json.Unmarshal(top["error"], &inner); err != nil {
		t.Fatalf("error body %s: %v", r.Body, err)
	}
	gotCode, _ := inner["code"].(string)
	msg, _ := inner["message"].(string)
	if len(inner) != 2 || gotCode != code || msg == "" {
		t.Fatalf("error body %s: want exactly {code: %q, message: <text>}", r.Body, code)
	}
}

// authKeys returns the keys of a JSON object.
func authKeys(t testing.TB, raw []byte) map[string]json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("decode object %s: %v", raw, err)
	}
	return m
}

// authLoginBody is a login request with the given password.
func authLoginBody(login, password, deviceID, os string, personal bool) map[string]any {
	return map[string]any{
		"login": login, "client_hash": testenv.ClientHash(password),
		"device": map[string]any{"id": deviceID, "name": deviceID + " name", "os": os, "personal": personal},
	}
}

// authLogin logs login in with its right password and returns the token
// and trust id ("" for sessions).
func authLogin(t testing.TB, env *testenv.Env, login, deviceID string, personal bool) (token, trustID string) {
	t.Helper()
	r := authCall(t, env, "POST", "/api/v1/login", "", authLoginBody(login, testenv.Password(login), deviceID, "android", personal), nil)
	authWantStatus(t, r, http.StatusOK)
	var out struct {
		Credential struct{ Token string } `json:"credential"`
		TrustID    string                 `json:"trust_id"`
	}
	authDecode(t, r, &out)
	if out.Credential.Token == "" || personal != (out.TrustID != "") {
		t.Fatalf("login %s: %s", login, r.Body)
	}
	return out.Credential.Token, out.TrustID
}

// trustEntry is one element of GET /trust.
type trustEntry struct {
	ID         string `json:"id"`
	DeviceName string `json:"device_name"`
	OS         string `json:"os"`
	CreatedAt  string `json:"created_at"`
	LastUsedAt string `json:"last_used_at"`
	Push       bool   `json:"push"`
	Current    bool   `json:"current"`
}

func authTrusts(t testing.TB, env *testenv.Env, token string) []trustEntry {
	t.Helper()
	r := authCall(t, env, "GET", "/api/v1/trust", token, nil, nil)
	authWantStatus(t, r, http.StatusOK)
	var out []trustEntry
	authDecode(t, r, &out)
	return out
}
