package server_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"klassenfunk/internal/testenv"
	"klassenfunk/proto"
	"klassenfunk/server"
	"klassenfunk/storage"
)

var authIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

func TestCreateSchool(t *testing.T) {
	w := newAuthWorld(t)
	env := w.env
	teacherTok, _ := authLogin(t, env, "teacher-a", "tdev", true)
	adminTok, _ := authLogin(t, env, "admin-a", "adev", true)

	tests := map[string]struct {
		token    string
		body     any
		want     int
		wantCode string
		wantName string
	}{
		"operator":                  {token: testenv.OperatorToken, body: map[string]string{"name": "Gymnasium Nord"}, want: 201, wantName: "Gymnasium Nord"},
		"name is trimmed":           {token: testenv.OperatorToken, body: map[string]string{"name": "  Realschule  "}, want: 201, wantName: "Realschule"},
		"200 runes":                 {token: testenv.OperatorToken, body: map[string]string{"name": strings.Repeat("ä", 200)}, want: 201, wantName: strings.Repeat("ä", 200)},
		"no token":                  {body: map[string]string{"name": "X"}, want: 401, wantCode: "unauthorized"},
		"wrong token":               {token: "kfop_wrong", body: map[string]string{"name": "X"}, want: 401, wantCode: "unauthorized"},
		"operator token, suffixed":  {token: testenv.OperatorToken + "x", body: map[string]string{"name": "X"}, want: 401, wantCode: "unauthorized"},
		"teacher token":             {token: teacherTok, body: map[string]string{"name": "X"}, want: 403, wantCode: "forbidden"},
		"school admin token":        {token: adminTok, body: map[string]string{"name": "X"}, want: 403, wantCode: "forbidden"},
		"empty name":                {token: testenv.OperatorToken, body: map[string]string{"name": ""}, want: 400, wantCode: "invalid_request"},
		"blank name":                {token: testenv.OperatorToken, body: map[string]string{"name": " \t "}, want: 400, wantCode: "invalid_request"},
		"missing name":              {token: testenv.OperatorToken, body: map[string]string{}, want: 400, wantCode: "invalid_request"},
		"name too long":             {token: testenv.OperatorToken, body: map[string]string{"name": strings.Repeat("a", 201)}, want: 400, wantCode: "invalid_request"},
		"name not a string":         {token: testenv.OperatorToken, body: map[string]any{"name": 7}, want: 400, wantCode: "invalid_request"},
		"name with a line break":    {token: testenv.OperatorToken, body: map[string]string{"name": "Schule\nNord"}, want: 400, wantCode: "invalid_request"},
		"name with a bidi override": {token: testenv.OperatorToken, body: map[string]string{"name": "Schule\u202eNord"}, want: 400, wantCode: "invalid_request"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := authCall(t, env, "POST", "/api/v1/schools", tc.token, tc.body, nil)
			if tc.wantCode != "" {
				authWantError(t, r, tc.want, tc.wantCode)
				return
			}
			authWantStatus(t, r, tc.want)
			keys := authKeys(t, r.Body)
			var out struct{ ID, Name string }
			authDecode(t, r, &out)
			if len(keys) != 2 || !authIDPattern.MatchString(out.ID) || out.Name != tc.wantName {
				t.Fatalf("body %s: want {id, name: %q}", r.Body, tc.wantName)
			}
		})
	}
}

func TestListSchools(t *testing.T) {
	w := newAuthWorld(t)
	env := w.env
	teacherTok, _ := authLogin(t, env, "teacher-a", "tdev", true)

	tests := map[string]struct {
		token    string
		want     int
		wantCode string
	}{
		"operator":    {token: testenv.OperatorToken, want: 200},
		"no token":    {want: 401, wantCode: "unauthorized"},
		"wrong token": {token: "kfop_nope", want: 401, wantCode: "unauthorized"},
		"user token":  {token: teacherTok, want: 403, wantCode: "forbidden"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := authCall(t, env, "GET", "/api/v1/schools", tc.token, nil, nil)
			if tc.wantCode != "" {
				authWantError(t, r, tc.want, tc.wantCode)
				return
			}
			authWantStatus(t, r, tc.want)
			var out []struct{ ID, Name string }
			authDecode(t, r, &out)
			got := map[string]string{}
			for _, s := range out {
				got[s.ID] = s.Name
			}
			if len(out) != 2 || got[w.schoolA] != "Schule A" || got[w.schoolB] != "Schule B" {
				t.Fatalf("schools %s: want exactly Schule A (%s) and Schule B (%s)", r.Body, w.schoolA, w.schoolB)
			}
		})
	}
}

func TestCreateUser(t *testing.T) {
	w := newAuthWorld(t)
	env := w.env
	adminA, _ := authLogin(t, env, "admin-a", "adev", true)
	adminASession, _ := authLogin(t, env, "admin-a", "shared-pc", false)
	adminB, _ := authLogin(t, env, "admin-b", "bdev", true)
	teacherA, _ := authLogin(t, env, "teacher-a", "tdev", true)
	teacherB, _ := authLogin(t, env, "teacher-b", "tbdev", true)
	studentA, _ := authLogin(t, env, "student-a", "sdev", true)

	hash := testenv.ClientHash("a-good-password")
	raw := make([]byte, 32)
	for i := range raw {
		raw[i] = 0xff // base64 "////…" in the standard and "____…" in the URL alphabet
	}
	body := func(login string, change func(m map[string]any)) map[string]any {
		m := map[string]any{"login": login, "display_name": "Erika Muster", "role": "student", "client_hash": hash}
		if change != nil {
			change(m)
		}
		return m
	}
	set := func(k string, v any) func(map[string]any) { return func(m map[string]any) { m[k] = v } }
	del := func(k string) func(map[string]any) { return func(m map[string]any) { delete(m, k) } }

	tests := map[string]struct {
		token    string
		school   string // "" means school A
		body     map[string]any
		want     int
		wantCode string
	}{
		"operator":                    {token: testenv.OperatorToken, body: body("new-op", nil), want: 201},
		"operator in school B":        {token: testenv.OperatorToken, school: "B", body: body("new-op-b", set("role", "teacher")), want: 201},
		"school admin":                {token: adminA, body: body("new-admin", set("role", "parent")), want: 201},
		"school admin with a session": {token: adminASession, body: body("new-admin-session", set("role", "admin")), want: 201},
		"unicode login":               {token: testenv.OperatorToken, body: body("jürgen.müller", nil), want: 201},
		"admin of another school":     {token: adminB, body: body("x-admin-b", nil), want: 404, wantCode: "not_found"},
		"teacher of the school":       {token: teacherA, body: body("x-teacher", nil), want: 403, wantCode: "forbidden"},
		"student of the school":       {token: studentA, body: body("x-student", nil), want: 403, wantCode: "forbidden"},
		"teacher of another school":   {token: teacherB, body: body("x-teacher-b", nil), want: 404, wantCode: "not_found"},
		"no token":                    {body: body("x-none", nil), want: 401, wantCode: "unauthorized"},
		"wrong token":                 {token: "kf1_" + strings.Repeat("A", 43), body: body("x-wrong", nil), want: 401, wantCode: "unauthorized"},
		"unknown school operator":     {token: testenv.OperatorToken, school: "no-such-school", body: body("x-unknown", nil), want: 404, wantCode: "not_found"},
		"unknown school admin":        {token: adminA, school: "no-such-school", body: body("x-unknown2", nil), want: 404, wantCode: "not_found"},
		"login taken":                 {token: testenv.OperatorToken, body: body("teacher-a", nil), want: 409, wantCode: "conflict"},
		"login taken other case":      {token: testenv.OperatorToken, body: body("Teacher-A", nil), want: 409, wantCode: "conflict"},
		"login taken in other school": {token: testenv.OperatorToken, school: "B", body: body("STUDENT-a", nil), want: 409, wantCode: "conflict"},
		"unknown role":                {token: testenv.OperatorToken, body: body("x-role", set("role", "janitor")), want: 400, wantCode: "invalid_request"},
		"role wrong case":             {token: testenv.OperatorToken, body: body("x-role2", set("role", "Teacher")), want: 400, wantCode: "invalid_request"},
		"role not a string":           {token: testenv.OperatorToken, body: body("x-role3", set("role", 1)), want: 400, wantCode: "invalid_request"},
		"client_hash 31 bytes":        {token: testenv.OperatorToken, body: body("x-h31", set("client_hash", base64.StdEncoding.EncodeToString(raw[:31]))), want: 400, wantCode: "invalid_request"},
		"client_hash 33 bytes":        {token: testenv.OperatorToken, body: body("x-h33", set("client_hash", base64.StdEncoding.EncodeToString(append(raw, 1)))), want: 400, wantCode: "invalid_request"},
		"client_hash not base64":      {token: testenv.OperatorToken, body: body("x-hb64", set("client_hash", "not base64 at all!!")), want: 400, wantCode: "invalid_request"},
		"client_hash unpadded":        {token: testenv.OperatorToken, body: body("x-hraw", set("client_hash", base64.RawStdEncoding.EncodeToString(raw))), want: 400, wantCode: "invalid_request"},
		"client_hash url alphabet":    {token: testenv.OperatorToken, body: body("x-hurl", set("client_hash", base64.URLEncoding.EncodeToString(raw))), want: 400, wantCode: "invalid_request"},
		"client_hash hex":             {token: testenv.OperatorToken, body: body("x-hhex", set("client_hash", strings.Repeat("ab", 32))), want: 400, wantCode: "invalid_request"},
		"client_hash with CRLF":       {token: testenv.OperatorToken, body: body("x-hcrlf", set("client_hash", hash[:8]+"\r\n"+hash[8:])), want: 400, wantCode: "invalid_request"},
		"client_hash empty":           {token: testenv.OperatorToken, body: body("x-hempty", set("client_hash", "")), want: 400, wantCode: "invalid_request"},
		"missing login":               {token: testenv.OperatorToken, body: body("", del("login")), want: 400, wantCode: "invalid_request"},
		"missing display_name":        {token: testenv.OperatorToken, body: body("x-nodn", del("display_name")), want: 400, wantCode: "invalid_request"},
		"blank display_name":          {token: testenv.OperatorToken, body: body("x-blankdn", set("display_name", "   ")), want: 400, wantCode: "invalid_request"},
		"display_name too long":       {token: testenv.OperatorToken, body: body("x-longdn", set("display_name", strings.Repeat("x", 201))), want: 400, wantCode: "invalid_request"},
		"missing role":                {token: testenv.OperatorToken, body: body("x-norole", del("role")), want: 400, wantCode: "invalid_request"},
		"missing client_hash":         {token: testenv.OperatorToken, body: body("x-nohash", del("client_hash")), want: 400, wantCode: "invalid_request"},
		"login with slash":            {token: testenv.OperatorToken, body: body("a/b", nil), want: 400, wantCode: "invalid_request"},
		"login with spaces around":    {token: testenv.OperatorToken, body: body(" padded ", nil), want: 400, wantCode: "invalid_request"},
		"login with control char":     {token: testenv.OperatorToken, body: body("a\x01b", nil), want: 400, wantCode: "invalid_request"},
		"login with a bidi override":  {token: testenv.OperatorToken, body: body("adm\u202enimda", nil), want: 400, wantCode: "invalid_request"},
		"display_name with control":   {token: testenv.OperatorToken, body: body("x-dnctl", set("display_name", "Frau\x01Meyer")), want: 400, wantCode: "invalid_request"},
		"display_name with bidi":      {token: testenv.OperatorToken, body: body("x-dnbidi", set("display_name", "Frau \u202eMeyer")), want: 400, wantCode: "invalid_request"},
		"login too long":              {token: testenv.OperatorToken, body: body(strings.Repeat("l", 129), nil), want: 400, wantCode: "invalid_request"},
		"login too long in umlauts":   {token: testenv.OperatorToken, body: body(strings.Repeat("ö", 129), nil), want: 400, wantCode: "invalid_request"},
		"login of 128 umlauts":        {token: testenv.OperatorToken, body: body(strings.Repeat("ö", 128), nil), want: 201},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			school := w.schoolA
			switch tc.school {
			case "":
			case "B":
				school = w.schoolB
			default:
				school = tc.school
			}
			r := authCall(t, env, "POST", "/api/v1/schools/"+school+"/users", tc.token, tc.body, nil)
			if tc.wantCode != "" {
				authWantError(t, r, tc.want, tc.wantCode)
				return
			}
			authWantStatus(t, r, tc.want)
			if keys := authKeys(t, r.Body); len(keys) != 5 {
				t.Fatalf("body %s: want exactly id, login, display_name, role, school", r.Body)
			}
			var u struct {
				ID          string `json:"id"`
				Login       string `json:"login"`
				DisplayName string `json:"display_name"`
				Role        string `json:"role"`
				School      string `json:"school"`
			}
			authDecode(t, r, &u)
			if !authIDPattern.MatchString(u.ID) || u.Login != tc.body["login"] || u.DisplayName != tc.body["display_name"] ||
				u.Role != tc.body["role"] || u.School != school {
				t.Fatalf("user %s does not match request %v in school %s", r.Body, tc.body, school)
			}
			// The new user can log in with the hash it was created with.
			lr := authCall(t, env, "POST", "/api/v1/login", "", authLoginBody(u.Login, "a-good-password", "d1", "ios", false), nil)
			authWantStatus(t, lr, http.StatusOK)
		})
	}
}

func TestLogin(t *testing.T) {
	w := newAuthWorld(t)
	env := w.env
	now := env.Clock.Now()
	pw := testenv.Password("teacher-a")
	dev := func(change func(d map[string]any)) map[string]any {
		d := map[string]any{"id": "dev-1", "name": "Tablet", "os": "ios", "personal": true}
		if change != nil {
			change(d)
		}
		return d
	}
	req := func(login, hash string, device any) map[string]any {
		m := map[string]any{"login": login, "client_hash": hash}
		if device != nil {
			m["device"] = device
		}
		return m
	}
	good := testenv.ClientHash(pw)
	set := func(k string, v any) func(map[string]any) { return func(m map[string]any) { m[k] = v } }

	type want struct {
		status   int
		code     string
		kind     string // "trust" or "session" on success
		devName  string
		userID   string
		userRole string
	}
	tests := map[string]struct {
		body any
		want want
	}{
		"personal":               {req("teacher-a", good, dev(nil)), want{status: 200, kind: "trust", devName: "Tablet", userID: w.teacherA, userRole: "teacher"}},
		"not personal":           {req("teacher-a", good, dev(set("personal", false))), want{status: 200, kind: "session", devName: "Tablet", userID: w.teacherA, userRole: "teacher"}},
		"login other case":       {req("TEACHER-A", good, dev(set("id", "dev-case"))), want{status: 200, kind: "trust", devName: "Tablet", userID: w.teacherA, userRole: "teacher"}},
		"no device name":         {req("student-a", testenv.ClientHash(testenv.Password("student-a")), dev(set("name", ""))), want{status: 200, kind: "trust", devName: "ios", userID: w.studentA, userRole: "student"}},
		"device id 128 chars":    {req("teacher-a", good, dev(set("id", strings.Repeat("d", 128)))), want{status: 200, kind: "trust", devName: "Tablet", userID: w.teacherA, userRole: "teacher"}},
		"device id 128 umlauts":  {req("teacher-a", good, dev(set("id", strings.Repeat("ä", 128)))), want{status: 200, kind: "trust", devName: "Tablet", userID: w.teacherA, userRole: "teacher"}},
		"device id 129 umlauts":  {req("teacher-a", good, dev(set("id", strings.Repeat("ä", 129)))), want{status: 400, code: "invalid_request"}},
		"os android":             {req("admin-a", testenv.ClientHash(testenv.Password("admin-a")), dev(set("os", "android"))), want{status: 200, kind: "trust", devName: "Tablet", userID: w.adminA, userRole: "admin"}},
		"os web":                 {req("admin-a", testenv.ClientHash(testenv.Password("admin-a")), dev(set("os", "web"))), want{status: 200, kind: "trust", devName: "Tablet", userID: w.adminA, userRole: "admin"}},
		"os macos":               {req("admin-a", testenv.ClientHash(testenv.Password("admin-a")), dev(set("os", "macos"))), want{status: 200, kind: "trust", devName: "Tablet", userID: w.adminA, userRole: "admin"}},
		"os windows":             {req("admin-a", testenv.ClientHash(testenv.Password("admin-a")), dev(set("os", "windows"))), want{status: 200, kind: "trust", devName: "Tablet", userID: w.adminA, userRole: "admin"}},
		"os linux":               {req("admin-a", testenv.ClientHash(testenv.Password("admin-a")), dev(set("os", "linux"))), want{status: 200, kind: "trust", devName: "Tablet", userID: w.adminA, userRole: "admin"}},
		"bad os":                 {req("teacher-a", good, dev(set("os", "symbian"))), want{status: 400, code: "invalid_request"}},
		"os wrong case":          {req("teacher-a", good, dev(set("os", "iOS"))), want{status: 400, code: "invalid_request"}},
		"missing os":             {req("teacher-a", good, dev(func(d map[string]any) { delete(d, "os") })), want{status: 400, code: "invalid_request"}},
		"device id 129 chars":    {req("teacher-a", good, dev(set("id", strings.Repeat("d", 129)))), want{status: 400, code: "invalid_request"}},
		"empty device id":        {req("teacher-a", good, dev(set("id", ""))), want{status: 400, code: "invalid_request"}},
		"device name too long":   {req("teacher-a", good, dev(set("name", strings.Repeat("n", 129)))), want{status: 400, code: "invalid_request"}},
		"device id with control": {req("teacher-a", good, dev(set("id", "tab\x01let"))), want{status: 400, code: "invalid_request"}},
		"device id with NUL":     {req("teacher-a", good, dev(set("id", "tab\x00"))), want{status: 400, code: "invalid_request"}},
		"device id with DEL":     {req("teacher-a", good, dev(set("id", "tab\x7f"))), want{status: 400, code: "invalid_request"}},
		"device name with bell":  {req("teacher-a", good, dev(set("name", "\abell"))), want{status: 400, code: "invalid_request"}},
		"device name with bidi":  {req("teacher-a", good, dev(set("name", "iPad \u202eenohp"))), want{status: 400, code: "invalid_request"}},
		"missing device":         {req("teacher-a", good, nil), want{status: 400, code: "invalid_request"}},
		"device null":            {map[string]any{"login": "teacher-a", "client_hash": good, "device": nil}, want{status: 400, code: "invalid_request"}},
		"device not an object":   {req("teacher-a", good, "phone"), want{status: 400, code: "invalid_request"}},
		"missing personal":       {req("teacher-a", good, dev(func(d map[string]any) { delete(d, "personal") })), want{status: 400, code: "invalid_request"}},
		"personal null":          {req("teacher-a", good, dev(set("personal", nil))), want{status: 400, code: "invalid_request"}},
		"personal not a bool":    {req("teacher-a", good, dev(set("personal", "yes"))), want{status: 400, code: "invalid_request"}},
		"missing login":          {map[string]any{"client_hash": good, "device": dev(nil)}, want{status: 400, code: "invalid_request"}},
		"missing client_hash":    {req("teacher-a", "", dev(nil)), want{status: 400, code: "invalid_request"}},
		"client_hash 16 bytes":   {req("teacher-a", base64.StdEncoding.EncodeToString(make([]byte, 16)), dev(nil)), want{status: 400, code: "invalid_request"}},
		"client_hash unpadded":   {req("teacher-a", strings.TrimRight(good, "="), dev(nil)), want{status: 400, code: "invalid_request"}},
		"client_hash garbage":    {req("teacher-a", "%%%%", dev(nil)), want{status: 400, code: "invalid_request"}},
		"client_hash with LF":    {req("teacher-a", good[:8]+"\n"+good[8:], dev(nil)), want{status: 400, code: "invalid_request"}},
		"client_hash bad login":  {req("nobody", "%%%%", dev(nil)), want{status: 400, code: "invalid_request"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := authCall(t, env, "POST", "/api/v1/login", "", tc.body, nil)
			if tc.want.code != "" {
				authWantError(t, r, tc.want.status, tc.want.code)
				return
			}
			authWantStatus(t, r, tc.want.status)
			top := authKeys(t, r.Body)
			cred := authKeys(t, top["credential"])
			var out struct {
				User struct {
					ID          string `json:"id"`
					Login       string `json:"login"`
					DisplayName string `json:"display_name"`
					Role        string `json:"role"`
					School      string `json:"school"`
				} `json:"user"`
				Credential struct {
					Kind      string `json:"kind"`
					Token     string `json:"token"`
					ExpiresAt string `json:"expires_at"`
				} `json:"credential"`
				TrustID string `json:"trust_id"`
			}
			authDecode(t, r, &out)
			if out.User.ID != tc.want.userID || out.User.Role != tc.want.userRole || out.User.School != w.schoolA || out.User.DisplayName == "" {
				t.Fatalf("user %s: want id %s role %s school %s", r.Body, tc.want.userID, tc.want.userRole, w.schoolA)
			}
			if out.Credential.Kind != tc.want.kind || out.Credential.Token == "" {
				t.Fatalf("credential %s: want kind %q with a token", top["credential"], tc.want.kind)
			}
			switch tc.want.kind {
			case "trust":
				if _, ok := cred["expires_at"]; ok {
					t.Fatalf("trust credential has expires_at: %s", r.Body)
				}
				if !authIDPattern.MatchString(out.TrustID) || len(top) != 3 {
					t.Fatalf("body %s: want user, credential, trust_id", r.Body)
				}
				// The trust id is the one GET /trust lists as current.
				var cur []string
				for _, e := range authTrusts(t, env, out.Credential.Token) {
					if e.Current {
						cur = append(cur, e.ID)
						if e.DeviceName != tc.want.devName {
							t.Fatalf("device_name %q, want %q", e.DeviceName, tc.want.devName)
						}
					}
				}
				if len(cur) != 1 || cur[0] != out.TrustID {
					t.Fatalf("current trusts %v, want [%s]", cur, out.TrustID)
				}
			case "session":
				if _, ok := top["trust_id"]; ok || len(top) != 2 {
					t.Fatalf("session login body %s: want user and credential only", r.Body)
				}
				if want := now.Add(30 * time.Minute).Format(time.RFC3339); out.Credential.ExpiresAt != want {
					t.Fatalf("expires_at %q, want %q", out.Credential.ExpiresAt, want)
				}
			}
			me := authCall(t, env, "GET", "/api/v1/me", out.Credential.Token, nil, nil)
			authWantStatus(t, me, http.StatusOK)
		})
	}
}

// TestLoginFailuresLookAlike checks that a wrong login and a wrong password
// cannot be told apart from the answer.
func TestLoginFailuresLookAlike(t *testing.T) {
	w := newAuthWorld(t)
	env := w.env
	tests := map[string]struct {
		login, password string
	}{
		"unknown login":              {"no-such-user", testenv.Password("teacher-a")},
		"wrong password":             {"teacher-a", "wrong-password"},
		"password of another user":   {"teacher-a", testenv.Password("student-a")},
		"unknown login, other case":  {"No-Such-User", "x"},
		"right password, wrong user": {"teacher-b", testenv.Password("teacher-a")},
	}
	var first []byte
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := authCall(t, env, "POST", "/api/v1/login", "", authLoginBody(tc.login, tc.password, "d", "web", false), nil)
			authWantError(t, r, http.StatusUnauthorized, "unauthorized")
			if first == nil {
				first = r.Body
			} else if string(r.Body) != string(first) {
				t.Fatalf("body %s differs from %s", r.Body, first)
			}
			if ra := r.Header.Get("Retry-After"); ra != "" {
				t.Fatalf("Retry-After %q on a plain failure", ra)
			}
		})
	}
}

func TestLogoutAndMe(t *testing.T) {
	tests := map[string]struct {
		login    string
		personal bool
		role     string
	}{
		"trust":   {"teacher-a", true, "teacher"},
		"session": {"student-a", false, "student"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			w := newAuthWorld(t)
			env := w.env
			tok, _ := authLogin(t, env, tc.login, "dev", tc.personal)
			other, otherTrust := authLogin(t, env, tc.login, "other-dev", true)

			r := authCall(t, env, "GET", "/api/v1/me", tok, nil, nil)
			authWantStatus(t, r, http.StatusOK)
			keys := authKeys(t, r.Body)
			if _, ok := keys["credential"]; !ok || len(keys) != 6 {
				t.Fatalf("GET /me %s: want exactly id, login, display_name, role, school and credential (docs/api.md)", r.Body)
			}
			var me map[string]any
			authDecode(t, r, &me)
			wantDisplay := strings.ToUpper(tc.login[:1]) + tc.login[1:]
			if me["login"] != tc.login || me["role"] != tc.role || me["school"] != w.schoolA || me["display_name"] != wantDisplay || me["id"] == "" {
				t.Fatalf("GET /me %s", r.Body)
			}

			r = authCall(t, env, "POST", "/api/v1/logout", tok, nil, nil)
			authWantStatus(t, r, http.StatusNoContent)
			if len(r.Body) != 0 {
				t.Fatalf("logout body %q, want empty", r.Body)
			}
			for _, path := range []string{"/api/v1/me", "/api/v1/trust", "/api/v1/me/logins"} {
				authWantError(t, authCall(t, env, "GET", path, tok, nil, nil), http.StatusUnauthorized, "unauthorized")
			}
			authWantError(t, authCall(t, env, "POST", "/api/v1/logout", tok, nil, nil), http.StatusUnauthorized, "unauthorized")

			// The other device is untouched and sees only itself.
			trusts := authTrusts(t, env, other)
			if len(trusts) != 1 || trusts[0].ID != otherTrust {
				t.Fatalf("trusts after logout %+v, want only %s", trusts, otherTrust)
			}
		})
	}
	t.Run("no credential", func(t *testing.T) {
		env := testenv.New(t)
		for _, tok := range []string{"", "garbage", "kf1_" + strings.Repeat("x", 43), testenv.OperatorToken} {
			authWantError(t, authCall(t, env, "GET", "/api/v1/me", tok, nil, nil), http.StatusUnauthorized, "unauthorized")
			authWantError(t, authCall(t, env, "POST", "/api/v1/logout", tok, nil, nil), http.StatusUnauthorized, "unauthorized")
		}
	})
}

func TestLoginHistory(t *testing.T) {
	w := newAuthWorld(t)
	env := w.env
	pw := testenv.Password("teacher-a")
	// failuresBefore[i] wrong passwords come before successful login i.
	failuresBefore := map[int]int{1: 1, 5: 1, 12: 2}
	var tok string
	at := map[int]string{}
	for i := 1; i <= 12; i++ {
		env.Clock.Advance(time.Minute)
		for range failuresBefore[i] {
			r := authCall(t, env, "POST", "/api/v1/login", "", authLoginBody("teacher-a", "wrong", "x", "web", false), nil)
			authWantError(t, r, http.StatusUnauthorized, "unauthorized")
		}
		r := authCall(t, env, "POST", "/api/v1/login", "", authLoginBody("teacher-a", pw, "dev-"+authItoa(i), "android", i%2 == 0), nil)
		authWantStatus(t, r, http.StatusOK)
		var out struct{ Credential struct{ Token string } }
		authDecode(t, r, &out)
		tok = out.Credential.Token
		at[i] = env.Clock.Now().UTC().Format(time.RFC3339)
	}
	// Another user's logins never show up.
	authLogin(t, env, "teacher2-a", "foreign", true)

	r := authCall(t, env, "GET", "/api/v1/me/logins", tok, nil, nil)
	authWantStatus(t, r, http.StatusOK)
	var raw []map[string]json.RawMessage
	authDecode(t, r, &raw)
	var got []struct {
		At           string `json:"at"`
		IP           string `json:"ip"`
		DeviceName   string `json:"device_name"`
		FailedBefore int    `json:"failed_before"`
	}
	authDecode(t, r, &got)
	if len(got) != 10 {
		t.Fatalf("%d logins, want the last 10: %s", len(got), r.Body)
	}
	for k, e := range got {
		i := 12 - k // newest first
		t.Run("login "+authItoa(i), func(t *testing.T) {
			if len(raw[k]) != 4 {
				t.Errorf("entry %s: want exactly at, ip, device_name, failed_before", authJSON(raw[k]))
			}
			if e.At != at[i] || e.IP != "127.0.0.0" || e.DeviceName != "dev-"+authItoa(i)+" name" || e.FailedBefore != failuresBefore[i] {
				t.Errorf("entry %+v, want at %s ip 127.0.0.0 device dev-%d name failed_before %d", e, at[i], i, failuresBefore[i])
			}
		})
	}

	// A user without history gets an empty list, not null.
	fresh := authCall(t, env, "POST", "/api/v1/schools/"+w.schoolA+"/users", testenv.OperatorToken, map[string]any{
		"login": "fresh", "display_name": "Fresh", "role": "parent", "client_hash": testenv.ClientHash(testenv.Password("fresh")),
	}, nil)
	authWantStatus(t, fresh, http.StatusCreated)
	ftok, _ := authLogin(t, env, "fresh", "d", false)
	r = authCall(t, env, "GET", "/api/v1/me/logins", ftok, nil, nil)
	authWantStatus(t, r, http.StatusOK)
	var one []map[string]any
	authDecode(t, r, &one)
	if len(one) != 1 || one[0]["failed_before"] != float64(0) {
		t.Fatalf("history of a fresh user %s, want its one login", r.Body)
	}
}

// TestLoginHistoryRetention: a login past retention.login_history is left
// out of GET /me/logins and the export at once, and the sweep removes
// every user's from the store (retention_deleted_total{type="logins"}).
func TestLoginHistoryRetention(t *testing.T) {
	w := newAuthWorld(t, func(c *server.Config) { c.Retention.LoginHistory = 48 * time.Hour })
	env := w.env
	ctx := context.Background()
	authLogin(t, env, "teacher-a", "old-phone", true)
	authLogin(t, env, "teacher2-a", "other", true)
	env.Clock.Advance(47 * time.Hour)
	tok, _ := authLogin(t, env, "teacher-a", "new-phone", true)
	devices := func(evs []storage.LoginEvent) []string {
		var out []string
		for _, e := range evs {
			out = append(out, e.DeviceName)
		}
		return out
	}
	shown := func() []string {
		t.Helper()
		r := authCall(t, env, "GET", "/api/v1/me/logins", tok, nil, nil)
		authWantStatus(t, r, http.StatusOK)
		var evs []storage.LoginEvent
		authDecode(t, r, &evs)
		return devices(evs)
	}
	stored := func(user string) []string {
		t.Helper()
		evs, err := env.Srv.Store().Logins(ctx, user)
		if err != nil {
			t.Fatal(err)
		}
		return devices(evs)
	}
	if got := shown(); !slices.Equal(got, []string{"new-phone name", "old-phone name"}) {
		t.Fatalf("within retention: %q", got)
	}

	env.Clock.Advance(2 * time.Hour) // the first login is 49 h old
	if got := shown(); !slices.Equal(got, []string{"new-phone name"}) {
		t.Fatalf("past retention, before a sweep: %q, want only the new login", got)
	}
	var exported []storage.LoginEvent
	if err := json.Unmarshal(exportFiles(t, env, tok)["logins.json"], &exported); err != nil {
		t.Fatal(err)
	}
	if got := devices(exported); !slices.Equal(got, []string{"new-phone name"}) {
		t.Fatalf("export past retention: %q, want only the new login", got)
	}
	if got := stored(w.teacherA); len(got) != 2 {
		t.Fatalf("stored before the sweep: %q", got)
	}

	env.Srv.Sweep(ctx)
	if got := stored(w.teacherA); !slices.Equal(got, []string{"new-phone name"}) {
		t.Fatalf("stored after the sweep: %q, want only the new login", got)
	}
	if got := env.MetricWith("klassenfunk_retention_deleted_total", "type", "logins"); got != 2 {
		t.Fatalf("logins deleted: %v, want 2 (teacher-a's old one and teacher2-a's)", got)
	}
	if got := stored(w.teacher2A); len(got) != 0 {
		t.Fatalf("teacher2-a's login past retention is still stored: %q", got)
	}
}

// TestLoginHistoryIP checks the anonymised address, also behind a trusted
// reverse proxy.
func TestLoginHistoryIP(t *testing.T) {
	w := newAuthWorld(t, func(c *server.Config) { c.TrustedProxies = []string{"127.0.0.1"} })
	env := w.env
	tests := map[string]struct {
		xff    []string
		wantIP string
	}{
		"direct":                   {nil, "127.0.0.0"},
		"ipv4 via proxy":           {[]string{"203.0.113.77"}, "203.0.113.0"},
		"ipv6 via proxy":           {[]string{"2001:db8:1:2:3:4:5:6"}, "2001:db8:1::"},
		"chain, rightmost untrust": {[]string{"192.0.2.1, 198.51.100.9, 127.0.0.1"}, "198.51.100.0"},
		"two header lines":         {[]string{"192.0.2.1", "198.51.100.200"}, "198.51.100.0"},
		"garbage falls back":       {[]string{"not-an-ip"}, "127.0.0.0"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			h := http.Header{"X-Forwarded-For": tc.xff}
			r := authCall(t, env, "POST", "/api/v1/login", "", authLoginBody("student-a", testenv.Password("student-a"), "d", "web", false), h)
			authWantStatus(t, r, http.StatusOK)
			var out struct{ Credential struct{ Token string } }
			authDecode(t, r, &out)
			lr := authCall(t, env, "GET", "/api/v1/me/logins", out.Credential.Token, nil, nil)
			authWantStatus(t, lr, http.StatusOK)
			var got []struct{ IP string }
			authDecode(t, lr, &got)
			if len(got) == 0 || got[0].IP != tc.wantIP {
				t.Fatalf("logins %s: newest ip want %q", lr.Body, tc.wantIP)
			}
		})
	}
}

func TestTrustList(t *testing.T) {
	w := newAuthWorld(t)
	env := w.env
	t0 := env.Clock.Now().UTC().Format(time.RFC3339)
	tok1, trust1 := authLogin(t, env, "teacher-a", "phone", true)
	tok2, trust2 := authLogin(t, env, "teacher-a", "laptop", true)
	// A session on the device of a trust relationship: still not current.
	sess, _ := authLogin(t, env, "teacher-a", "phone", false)
	otherTok, otherTrust := authLogin(t, env, "teacher2-a", "phone", true)

	tests := map[string]struct {
		token       string
		wantIDs     []string
		wantCurrent string
	}{
		"first device":  {tok1, []string{trust1, trust2}, trust1},
		"second device": {tok2, []string{trust1, trust2}, trust2},
		"session":       {sess, []string{trust1, trust2}, ""},
		"other user":    {otherTok, []string{otherTrust}, otherTrust},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := authCall(t, env, "GET", "/api/v1/trust", tc.token, nil, nil)
			authWantStatus(t, r, http.StatusOK)
			var raw []map[string]json.RawMessage
			authDecode(t, r, &raw)
			got := authTrusts(t, env, tc.token)
			var ids []string
			for i, e := range got {
				ids = append(ids, e.ID)
				if len(raw[i]) != 7 {
					t.Errorf("entry %s: want exactly id, device_name, os, created_at, last_used_at, push, current", authJSON(raw[i]))
				}
				if e.Current != (e.ID == tc.wantCurrent) {
					t.Errorf("entry %s current=%v, want current only for %q", e.ID, e.Current, tc.wantCurrent)
				}
				if e.Push || e.OS != "android" || e.CreatedAt != t0 || e.LastUsedAt != t0 || !strings.HasSuffix(e.DeviceName, " name") {
					t.Errorf("entry %+v, want push false, os android, created/last used %s", e, t0)
				}
			}
			slices.Sort(ids)
			want := slices.Clone(tc.wantIDs)
			slices.Sort(want)
			if !slices.Equal(ids, want) {
				t.Fatalf("trust ids %v, want %v (sessions are not trust relationships)", ids, want)
			}
		})
	}

	t.Run("last_used_at follows use", func(t *testing.T) {
		env.Clock.Advance(5 * time.Minute)
		later := env.Clock.Now().UTC().Format(time.RFC3339)
		authWantStatus(t, authCall(t, env, "GET", "/api/v1/me", tok2, nil, nil), http.StatusOK)
		for _, e := range authTrusts(t, env, sess) {
			want := t0
			if e.ID == trust2 {
				want = later
			}
			if e.LastUsedAt != want || e.CreatedAt != t0 {
				t.Fatalf("entry %+v: last_used_at want %s", e, want)
			}
		}
	})
}

func TestTrustPush(t *testing.T) {
	w := newAuthWorld(t)
	env := w.env
	ctx := context.Background()
	tok1, trust1 := authLogin(t, env, "teacher-a", "phone", true)
	tok2, trust2 := authLogin(t, env, "teacher-a", "tablet", true)
	otherTok, _ := authLogin(t, env, "teacher2-a", "phone", true)
	foreignTok, _ := authLogin(t, env, "teacher-b", "phone", true)
	sess, _ := authLogin(t, env, "teacher-a", "pc", false)
	for _, id := range []string{trust1, trust2} {
		err := env.Srv.Store().UpdateCredential(ctx, id, func(c *storage.Credential) error {
			c.Push = &storage.PushRegistration{Provider: "fcm", Token: "fcm-token-" + id, Secret: make([]byte, 32), UpdatedAt: env.Clock.Now()}
			return nil
		})
		if err != nil {
			t.Fatalf("set push registration: %v", err)
		}
	}
	pushOf := func(t *testing.T) map[string]bool {
		m := map[string]bool{}
		for _, e := range authTrusts(t, env, tok1) {
			m[e.ID] = e.Push
		}
		return m
	}
	if p := pushOf(t); !p[trust1] || !p[trust2] {
		t.Fatalf("push flags %v, want both true", p)
	}

	tests := map[string]struct {
		token    string
		id       string
		want     int
		wantCode string
		wantPush map[string]bool // after the call
	}{
		"user of the same school": {otherTok, trust2, 404, "not_found", map[string]bool{trust1: true, trust2: true}},
		"user of another school":  {foreignTok, trust2, 404, "not_found", map[string]bool{trust1: true, trust2: true}},
		"unknown id":              {tok1, "no-such-trust", 404, "not_found", map[string]bool{trust1: true, trust2: true}},
		"own other device":        {tok1, trust2, 204, "", map[string]bool{trust1: true, trust2: false}},
		"own device, again":       {tok1, trust2, 204, "", map[string]bool{trust1: true, trust2: false}},
		"own current, by session": {sess, trust1, 204, "", map[string]bool{trust1: false, trust2: false}},
	}
	order := []string{"user of the same school", "user of another school", "unknown id", "own other device", "own device, again", "own current, by session"}
	if len(order) != len(tests) {
		t.Fatal("order does not name every case")
	}
	for _, name := range order {
		tc := tests[name]
		t.Run(name, func(t *testing.T) {
			r := authCall(t, env, "DELETE", "/api/v1/trust/"+tc.id+"/push", tc.token, nil, nil)
			if tc.wantCode != "" {
				authWantError(t, r, tc.want, tc.wantCode)
			} else {
				authWantStatus(t, r, tc.want)
			}
			if p := pushOf(t); p[trust1] != tc.wantPush[trust1] || p[trust2] != tc.wantPush[trust2] || len(p) != 2 {
				t.Fatalf("push flags %v, want %v", p, tc.wantPush)
			}
		})
	}
	// Deleting the push registration keeps the trust relationship.
	for _, tok := range []string{tok1, tok2} {
		authWantStatus(t, authCall(t, env, "GET", "/api/v1/me", tok, nil, nil), http.StatusOK)
	}
	c, err := env.Srv.Store().Credential(ctx, trust2)
	if err != nil || c.Push != nil {
		t.Fatalf("stored credential %+v, %v: want it without push", c, err)
	}
}

func TestRevokeTrust(t *testing.T) {
	type fixture struct {
		w                   *authWorld
		tok1, tok2, sess    string // teacher-a: two trusts and a session
		trust1, trust2      string
		sessID              string
		otherTok, otherID   string // teacher2-a, same school
		foreignTok, foreign string // teacher-b, school B
	}
	tests := map[string]struct {
		caller   func(f *fixture) string
		target   func(f *fixture) string
		want     int
		wantCode string
		gone     func(f *fixture) []string // tokens refused afterwards
		alive    func(f *fixture) []string // tokens still working
		listed   func(f *fixture) []string // GET /trust of teacher-a afterwards (by tok1, else tok2)
	}{
		"own other device": {
			caller: func(f *fixture) string { return f.tok1 }, target: func(f *fixture) string { return f.trust2 }, want: 204,
			gone:   func(f *fixture) []string { return []string{f.tok2} },
			alive:  func(f *fixture) []string { return []string{f.tok1, f.sess, f.otherTok, f.foreignTok} },
			listed: func(f *fixture) []string { return []string{f.trust1} },
		},
		"own current device": {
			caller: func(f *fixture) string { return f.tok1 }, target: func(f *fixture) string { return f.trust1 }, want: 204,
			gone:   func(f *fixture) []string { return []string{f.tok1} },
			alive:  func(f *fixture) []string { return []string{f.tok2, f.sess} },
			listed: func(f *fixture) []string { return []string{f.trust2} },
		},
		"from a session": {
			caller: func(f *fixture) string { return f.sess }, target: func(f *fixture) string { return f.trust1 }, want: 204,
			gone:   func(f *fixture) []string { return []string{f.tok1} },
			alive:  func(f *fixture) []string { return []string{f.tok2, f.sess} },
			listed: func(f *fixture) []string { return []string{f.trust2} },
		},
		"user of the same school": {
			caller: func(f *fixture) string { return f.otherTok }, target: func(f *fixture) string { return f.trust1 }, want: 404, wantCode: "not_found",
			alive:  func(f *fixture) []string { return []string{f.tok1, f.tok2, f.sess, f.otherTok} },
			listed: func(f *fixture) []string { return []string{f.trust1, f.trust2} },
		},
		"user of another school": {
			caller: func(f *fixture) string { return f.foreignTok }, target: func(f *fixture) string { return f.trust2 }, want: 404, wantCode: "not_found",
			alive:  func(f *fixture) []string { return []string{f.tok1, f.tok2, f.sess, f.foreignTok} },
			listed: func(f *fixture) []string { return []string{f.trust1, f.trust2} },
		},
		"another user's trust by its admin": {
			caller: func(f *fixture) string { tok, _ := authLogin(f.w.env.T, f.w.env, "admin-a", "adm", true); return tok },
			target: func(f *fixture) string { return f.trust2 }, want: 404, wantCode: "not_found",
			alive:  func(f *fixture) []string { return []string{f.tok1, f.tok2} },
			listed: func(f *fixture) []string { return []string{f.trust1, f.trust2} },
		},
		"unknown id": {
			caller: func(f *fixture) string { return f.tok1 }, target: func(f *fixture) string { return "no-such-trust" }, want: 404, wantCode: "not_found",
			alive:  func(f *fixture) []string { return []string{f.tok1, f.tok2, f.sess} },
			listed: func(f *fixture) []string { return []string{f.trust1, f.trust2} },
		},
		"own session is not a trust": {
			caller: func(f *fixture) string { return f.tok1 }, target: func(f *fixture) string { return f.sessID }, want: 404, wantCode: "not_found",
			alive:  func(f *fixture) []string { return []string{f.tok1, f.tok2, f.sess} },
			listed: func(f *fixture) []string { return []string{f.trust1, f.trust2} },
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			w := newAuthWorld(t)
			env := w.env
			f := &fixture{w: w}
			f.tok1, f.trust1 = authLogin(t, env, "teacher-a", "phone", true)
			f.tok2, f.trust2 = authLogin(t, env, "teacher-a", "tablet", true)
			f.sess, _ = authLogin(t, env, "teacher-a", "pc", false)
			f.otherTok, f.otherID = authLogin(t, env, "teacher2-a", "phone", true)
			f.foreignTok, f.foreign = authLogin(t, env, "teacher-b", "phone", true)
			creds, err := env.Srv.Store().CredentialsOf(context.Background(), w.teacherA)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range creds {
				if c.Kind == storage.CredSession {
					f.sessID = c.ID
				}
			}
			if f.sessID == "" {
				t.Fatal("no session credential stored")
			}

			caller := tc.caller(f)
			r := authCall(t, env, "DELETE", "/api/v1/trust/"+tc.target(f), caller, nil, nil)
			if tc.wantCode != "" {
				authWantError(t, r, tc.want, tc.wantCode)
			} else {
				authWantStatus(t, r, tc.want)
				if len(r.Body) != 0 {
					t.Fatalf("body %q, want empty", r.Body)
				}
				// Revoking twice: the second time it is gone.
				again := authCall(t, env, "DELETE", "/api/v1/trust/"+tc.target(f), tc.alive(f)[0], nil, nil)
				authWantError(t, again, http.StatusNotFound, "not_found")
			}
			if tc.gone != nil {
				for _, tok := range tc.gone(f) {
					authWantError(t, authCall(t, env, "GET", "/api/v1/me", tok, nil, nil), http.StatusUnauthorized, "unauthorized")
				}
			}
			for _, tok := range tc.alive(f) {
				authWantStatus(t, authCall(t, env, "GET", "/api/v1/me", tok, nil, nil), http.StatusOK)
			}
			var ids []string
			for _, e := range authTrusts(t, env, tc.alive(f)[0]) {
				ids = append(ids, e.ID)
			}
			if caller := tc.alive(f)[0]; caller == f.otherTok || caller == f.foreignTok {
				t.Fatal("test bug: first alive token must be teacher-a's")
			}
			slices.Sort(ids)
			want := tc.listed(f)
			slices.Sort(want)
			if !slices.Equal(ids, want) {
				t.Fatalf("trusts %v, want %v", ids, want)
			}
		})
	}
}

// TestRevokeTrustClosesWebSocket checks that revocation reaches the open
// socket of the revoked device.
func TestRevokeTrustClosesWebSocket(t *testing.T) {
	tests := map[string]struct {
		revoke func(env *testenv.Env, self, other, trustID string) testenv.Response
	}{
		"DELETE /trust/{id} from another device": {func(env *testenv.Env, self, other, id string) testenv.Response {
			return authCall(env.T, env, "DELETE", "/api/v1/trust/"+id, other, nil, nil)
		}},
		"logout": {func(env *testenv.Env, self, other, id string) testenv.Response {
			return authCall(env.T, env, "POST", "/api/v1/logout", self, nil, nil)
		}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			w := newAuthWorld(t)
			env := w.env
			tok, id := authLogin(t, env, "teacher-a", "phone", true)
			other, _ := authLogin(t, env, "teacher-a", "laptop", true)
			ws := env.Dial(tok)
			authWantStatus(t, tc.revoke(env, tok, other, id), http.StatusNoContent)
			if code := ws.CloseCode(5 * time.Second); code != int(proto.CloseUnauthorized) {
				t.Fatalf("close code %d, want %d", code, proto.CloseUnauthorized)
			}
			// And the token cannot open a new socket.
			_, resp, err := env.DialRaw(http.Header{"Authorization": {"Bearer " + tok}})
			if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
				status := 0
				if resp != nil {
					status = resp.StatusCode
				}
				t.Fatalf("dial with revoked token: err %v, HTTP %d; want 401", err, status)
			}
		})
	}
}

func TestPersonalReLoginReplacesTrust(t *testing.T) {
	tests := map[string]struct {
		second       func(env *testenv.Env) (string, string) // second login: token, trust id
		oldSurvives  bool
		wantTrustsOf int // of teacher-a, seen by the second token (or old one)
	}{
		"same device id, personal": {
			second:       func(env *testenv.Env) (string, string) { return authLogin(env.T, env, "teacher-a", "phone", true) },
			wantTrustsOf: 1,
		},
		"same device id, other case login": {
			second: func(env *testenv.Env) (string, string) {
				r := authCall(env.T, env, "POST", "/api/v1/login", "", authLoginBody("Teacher-A", testenv.Password("teacher-a"), "phone", "android", true), nil)
				authWantStatus(env.T, r, http.StatusOK)
				var out struct {
					Credential struct{ Token string }
					TrustID    string `json:"trust_id"`
				}
				authDecode(env.T, r, &out)
				return out.Credential.Token, out.TrustID
			},
			wantTrustsOf: 1,
		},
		"same device id, session": {
			second:       func(env *testenv.Env) (string, string) { return authLogin(env.T, env, "teacher-a", "phone", false) },
			oldSurvives:  true,
			wantTrustsOf: 1,
		},
		"other device id": {
			second:       func(env *testenv.Env) (string, string) { return authLogin(env.T, env, "teacher-a", "phone-2", true) },
			oldSurvives:  true,
			wantTrustsOf: 2,
		},
		"same device id, other user": {
			second:       func(env *testenv.Env) (string, string) { return authLogin(env.T, env, "teacher2-a", "phone", true) },
			oldSurvives:  true,
			wantTrustsOf: 1,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			w := newAuthWorld(t)
			env := w.env
			old, oldID := authLogin(t, env, "teacher-a", "phone", true)
			tok, id := tc.second(env)
			if tok == old || (id != "" && id == oldID) {
				t.Fatalf("second login reused token or trust id")
			}
			authWantStatus(t, authCall(t, env, "GET", "/api/v1/me", tok, nil, nil), http.StatusOK)
			r := authCall(t, env, "GET", "/api/v1/me", old, nil, nil)
			if tc.oldSurvives {
				authWantStatus(t, r, http.StatusOK)
			} else {
				authWantError(t, r, http.StatusUnauthorized, "unauthorized")
			}
			viewer := old
			if !tc.oldSurvives {
				viewer = tok
			}
			trusts := authTrusts(t, env, viewer)
			if len(trusts) != tc.wantTrustsOf {
				t.Fatalf("teacher-a has %d trusts %+v, want %d", len(trusts), trusts, tc.wantTrustsOf)
			}
			if !tc.oldSurvives && (trusts[0].ID != id || !trusts[0].Current) {
				t.Fatalf("trusts %+v, want only the new %s, current", trusts, id)
			}
		})
	}
}

func TestSessionIdleTimeout(t *testing.T) {
	type step struct {
		advance time.Duration // before the request
		want    int
	}
	tests := map[string]struct {
		personal bool
		steps    []step
	}{
		"works at 29 minutes":         {false, []step{{29 * time.Minute, 200}}},
		"idle 30 minutes":             {false, []step{{30 * time.Minute, 401}}},
		"idle 29m59s":                 {false, []step{{30*time.Minute - time.Second, 200}}},
		"use moves the deadline":      {false, []step{{20 * time.Minute, 200}, {25 * time.Minute, 200}, {30 * time.Minute, 401}}},
		"beyond the first deadline":   {false, []step{{20 * time.Minute, 200}, {29 * time.Minute, 200}}},
		"30 idle minutes after a use": {false, []step{{20 * time.Minute, 200}, {30 * time.Minute, 401}}},
		"kept alive for hours":        {false, []step{{25 * time.Minute, 200}, {25 * time.Minute, 200}, {25 * time.Minute, 200}, {25 * time.Minute, 200}, {25 * time.Minute, 200}, {25 * time.Minute, 200}}},
		"expired stays expired":       {false, []step{{31 * time.Minute, 401}, {0, 401}, {-31 * time.Minute, 401}}},
		"trust does not expire":       {true, []step{{30 * time.Minute, 200}, {90 * 24 * time.Hour, 200}}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			env := testenv.New(t)
			school := env.CreateSchool("S")
			env.CreateUser(school, "pupil", "student")
			tok, _ := authLogin(t, env, "pupil", "pc", tc.personal)
			for i, s := range tc.steps {
				env.Clock.Advance(s.advance)
				r := authCall(t, env, "GET", "/api/v1/me", tok, nil, nil)
				if s.want == 200 {
					authWantStatus(t, r, http.StatusOK)
				} else {
					if r.Status != s.want {
						t.Fatalf("step %d: status %d, want %d", i, r.Status, s.want)
					}
					authWantError(t, r, s.want, "unauthorized")
				}
			}
		})
	}

	// An idle time below the touch interval (1 minute by default) would
	// end sessions in use: the interval is lowered to a quarter of it.
	t.Run("short idle time, in use", func(t *testing.T) {
		env := testenv.New(t, func(c *server.Config) { c.Auth.SessionIdle = 20 * time.Second })
		school := env.CreateSchool("S")
		env.CreateUser(school, "pupil", "student")
		tok, _ := authLogin(t, env, "pupil", "pc", false)
		for i := range 12 {
			env.Clock.Advance(5 * time.Second)
			if r := authCall(t, env, "GET", "/api/v1/me", tok, nil, nil); r.Status != http.StatusOK {
				t.Fatalf("use %d, %v after the login: %d", i+1, time.Duration(i+1)*5*time.Second, r.Status)
			}
		}
		env.Clock.Advance(20 * time.Second)
		authWantError(t, authCall(t, env, "GET", "/api/v1/me", tok, nil, nil), http.StatusUnauthorized, "unauthorized")
	})

	// The same over the session's socket: what its client sends is use,
	// recorded as often as over HTTP.
	t.Run("short idle time, in use over its socket", func(t *testing.T) {
		env := testenv.New(t, func(c *server.Config) { c.Auth.SessionIdle = 20 * time.Second })
		school := env.CreateSchool("S")
		env.CreateUser(school, "pupil", "student")
		tok, _ := authLogin(t, env, "pupil", "pc", false)
		ws := env.Dial(tok)
		for range 12 {
			env.Clock.Advance(5 * time.Second)
			ws.Send(`{"type":"ping"}`)
			ws.ReadType(proto.TypePong)
		}
		env.Srv.Sweep(context.Background())
		authWantStatus(t, authCall(t, env, "GET", "/api/v1/me", tok, nil, nil), http.StatusOK)
	})

	t.Run("sweep deletes idle sessions", func(t *testing.T) {
		env := testenv.New(t)
		school := env.CreateSchool("S")
		uid := env.CreateUser(school, "pupil", "student")
		authLogin(t, env, "pupil", "pc", false)
		authLogin(t, env, "pupil", "phone", true)
		count := func() (sessions, trusts int) {
			cs, err := env.Srv.Store().CredentialsOf(context.Background(), uid)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range cs {
				if c.Kind == storage.CredSession {
					sessions++
				} else {
					trusts++
				}
			}
			return
		}
		env.Clock.Advance(29 * time.Minute)
		env.Srv.Sweep(context.Background())
		if s, tr := count(); s != 1 || tr != 1 {
			t.Fatalf("before the deadline: %d sessions, %d trusts; want 1, 1", s, tr)
		}
		env.Clock.Advance(time.Minute)
		env.Srv.Sweep(context.Background())
		if s, tr := count(); s != 0 || tr != 1 {
			t.Fatalf("after the deadline: %d sessions, %d trusts; want 0, 1", s, tr)
		}
		if n := env.MetricWith("klassenfunk_retention_deleted_total", "type", "sessions"); n != 1 {
			t.Fatalf("retention_deleted_total{type=sessions} = %v, want 1", n)
		}
	})

	// A session's socket closes (4401) within seconds of the session's
	// deadline, not at the next retention sweep (every minute).
	t.Run("an idle session's socket closes", func(t *testing.T) {
		env := testenv.New(t)
		env.Srv.Start()
		school := env.CreateSchool("S")
		env.CreateUser(school, "pupil", "student")
		tok, _ := authLogin(t, env, "pupil", "pc", false)
		ws := env.Dial(tok)
		env.Clock.Advance(30 * time.Minute)
		if code := ws.CloseCode(15 * time.Second); code != int(proto.CloseUnauthorized) {
			t.Fatalf("the idle session's socket: close %d, want 4401", code)
		}
	})
}

// TestCrossAccess checks that what belongs to another user or school is
// 404, with no data in the answer.
func TestCrossAccess(t *testing.T) {
	w := newAuthWorld(t)
	env := w.env
	victimTok, victimTrust := authLogin(t, env, "teacher-a", "victim-phone", true)
	adminA, _ := authLogin(t, env, "admin-a", "adm", true)
	adminB, _ := authLogin(t, env, "admin-b", "adm", true)
	teacherB, _ := authLogin(t, env, "teacher-b", "tb", true)
	teacher2A, _ := authLogin(t, env, "teacher2-a", "t2", true)

	newUser := map[string]any{"login": "intruder", "display_name": "I", "role": "admin", "client_hash": testenv.ClientHash("x")}
	tests := map[string]struct {
		method, path string
		token        string
		body         any
	}{
		"revoke trust, same school":      {"DELETE", "/api/v1/trust/" + victimTrust, teacher2A, nil},
		"revoke trust, other school":     {"DELETE", "/api/v1/trust/" + victimTrust, teacherB, nil},
		"revoke trust, own admin":        {"DELETE", "/api/v1/trust/" + victimTrust, adminA, nil},
		"revoke trust, foreign admin":    {"DELETE", "/api/v1/trust/" + victimTrust, adminB, nil},
		"trust push, same school":        {"DELETE", "/api/v1/trust/" + victimTrust + "/push", teacher2A, nil},
		"trust push, other school":       {"DELETE", "/api/v1/trust/" + victimTrust + "/push", teacherB, nil},
		"create user, foreign admin":     {"POST", "/api/v1/schools/" + w.schoolA + "/users", adminB, newUser},
		"create user, foreign teacher":   {"POST", "/api/v1/schools/" + w.schoolA + "/users", teacherB, newUser},
		"create user, admin A in B":      {"POST", "/api/v1/schools/" + w.schoolB + "/users", adminA, newUser},
		"create user, admin, bad school": {"POST", "/api/v1/schools/xyz/users", adminA, newUser},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := authCall(t, env, tc.method, tc.path, tc.token, tc.body, nil)
			authWantError(t, r, http.StatusNotFound, "not_found")
			for _, secret := range []string{victimTrust, "victim-phone", w.teacherA, w.schoolA, w.schoolB, "intruder"} {
				if strings.Contains(string(r.Body), secret) {
					t.Fatalf("404 body %s reveals %q", r.Body, secret)
				}
			}
		})
	}
	// Nothing happened.
	authWantStatus(t, authCall(t, env, "GET", "/api/v1/me", victimTok, nil, nil), http.StatusOK)
	if tr := authTrusts(t, env, victimTok); len(tr) != 1 || tr[0].ID != victimTrust {
		t.Fatalf("victim trusts %+v", tr)
	}
	r := authCall(t, env, "POST", "/api/v1/login", "", authLoginBody("intruder", "x", "d", "web", false), nil)
	authWantError(t, r, http.StatusUnauthorized, "unauthorized")
	// The same 404 for a school that exists and one that does not.
	a := authCall(t, env, "POST", "/api/v1/schools/"+w.schoolA+"/users", adminB, newUser, nil)
	b := authCall(t, env, "POST", "/api/v1/schools/no-such-school/users", adminB, newUser, nil)
	if string(a.Body) != string(b.Body) {
		t.Fatalf("404 bodies differ: %s vs %s", a.Body, b.Body)
	}
}

func authItoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}

func authJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// A personal device that logs in again keeps its public key in the
// directory: the new trust relationship exists before the old one goes.
func TestReloginKeepsDeviceKey(t *testing.T) {
	env := testenv.New(t)
	school := env.CreateSchool("S")
	env.CreateUser(school, "tina", "teacher")
	bob := env.CreateUser(school, "bob", "student")
	tok, _ := env.Login("tina", "phone", true)
	key := base64.StdEncoding.EncodeToString(make([]byte, 32))
	env.JSON("PUT", "/api/v1/keys", tok, map[string]string{"public_key": key}, http.StatusNoContent, nil)
	var conv struct{ ID string }
	env.JSON("POST", "/api/v1/conversations", tok, map[string]string{"kind": "direct", "peer": bob}, http.StatusCreated, &conv)

	tok2, _ := env.Login("tina", "phone", true)
	if r := env.Do("GET", "/api/v1/me", tok, nil); r.Status != http.StatusUnauthorized {
		t.Fatalf("old token after re-login: %d", r.Status)
	}
	var devs []struct {
		DeviceID string `json:"device_id"`
	}
	env.JSON("GET", "/api/v1/conversations/"+conv.ID+"/devices", tok2, nil, http.StatusOK, &devs)
	if len(devs) != 1 || devs[0].DeviceID != "phone" {
		t.Fatalf("devices after re-login: %+v, want the phone's key kept", devs)
	}
}

// TestMeShowsCredential: GET /me also names the credential of the
// request: a session with its idle deadline as moved on by use, a trust
// credential with its trust relationship.
func TestMeShowsCredential(t *testing.T) {
	env := testenv.New(t)
	school := env.CreateSchool("S")
	env.CreateUser(school, "pupil", "student")
	type me struct {
		ID         string `json:"id"`
		Login      string `json:"login"`
		Credential struct {
			Kind      string  `json:"kind"`
			DeviceID  string  `json:"device_id"`
			TrustID   string  `json:"trust_id"`
			ExpiresAt *string `json:"expires_at"`
		} `json:"credential"`
	}
	get := func(tok string) me {
		t.Helper()
		r := authCall(t, env, "GET", "/api/v1/me", tok, nil, nil)
		authWantStatus(t, r, http.StatusOK)
		var m me
		if err := json.Unmarshal(r.Body, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	session, _ := authLogin(t, env, "pupil", "pc", false)
	env.Clock.Advance(20 * time.Minute) // the use moves the deadline
	m := get(session)
	want := env.Clock.Now().Add(30 * time.Minute).UTC().Format(time.RFC3339)
	if m.Login != "pupil" || m.Credential.Kind != "session" || m.Credential.DeviceID != "pc" || m.Credential.TrustID != "" ||
		m.Credential.ExpiresAt == nil || *m.Credential.ExpiresAt != want {
		t.Fatalf("GET /me with a session: %+v, want expires_at %s", m, want)
	}
	trust, trustID := authLogin(t, env, "pupil", "phone", true)
	m = get(trust)
	if m.Credential.Kind != "trust" || m.Credential.DeviceID != "phone" || m.Credential.TrustID != trustID || m.Credential.ExpiresAt != nil {
		t.Fatalf("GET /me with a trust credential: %+v, want trust_id %s", m, trustID)
	}
}
