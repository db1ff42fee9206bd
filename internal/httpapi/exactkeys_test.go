package httpapi

import (
	"encoding/json"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"
)

type keysDevice struct {
	ID   string `json:"id"`
	Name string `json:"name,omitempty"`
}

type keysMember struct {
	UserID   string `json:"user_id"`
	CanWrite *bool  `json:"can_write"`
}

type keysBase struct {
	Kind string `json:"kind"`
}

type keysReq struct {
	keysBase
	Login   string                `json:"login"`
	Device  *keysDevice           `json:"device"`
	Members []keysMember          `json:"members"`
	ByName  map[string]keysDevice `json:"by_name"`
	Raw     json.RawMessage       `json:"raw"`
	At      time.Time             `json:"at"`
	Secret  []byte                `json:"secret"`
	Plain   string                // no tag: encoding/json names it "Plain"
	Skipped string                `json:"-"`
}

func TestDecodeExactKeys(t *testing.T) {
	tests := map[string]struct {
		body string
		want keysReq
	}{
		"exact names": {
			body: `{"kind":"k","login":"a","device":{"id":"d"},"members":[{"user_id":"u"}],"Plain":"p"}`,
			want: keysReq{keysBase: keysBase{Kind: "k"}, Login: "a", Device: &keysDevice{ID: "d"}, Members: []keysMember{{UserID: "u"}}, Plain: "p"},
		},
		"variant alone":          {body: `{"LOGIN":"x"}`, want: keysReq{}},
		"variant after exact":    {body: `{"login":"a","Login":"x"}`, want: keysReq{Login: "a"}},
		"variant before exact":   {body: `{"LOGIN":"x","login":"a"}`, want: keysReq{Login: "a"}},
		"escaped variant":        {body: `{"LOG\u0049N":"x","login":"a"}`, want: keysReq{Login: "a"}},
		"promoted field variant": {body: `{"KIND":"x"}`, want: keysReq{}},
		"nested object":          {body: `{"device":{"ID":"x","id":"d","Name":"n"}}`, want: keysReq{Device: &keysDevice{ID: "d"}}},
		"array of objects":       {body: `{"members":[{"User_ID":"x"},{"user_id":"u","Can_Write":true}]}`, want: keysReq{Members: []keysMember{{}, {UserID: "u"}}}},
		"map values":             {body: `{"by_name":{"A":{"ID":"x","id":"d"}}}`, want: keysReq{ByName: map[string]keysDevice{"A": {ID: "d"}}}},
		"untagged field variant": {body: `{"plain":"x"}`, want: keysReq{}},
		"raw kept as sent":       {body: `{"raw":{"LOGIN":"x","Id":1}}`, want: keysReq{Raw: json.RawMessage(`{"LOGIN":"x","Id":1}`)}},
		"other unknown kept":     {body: `{"Zzz":{"LOGIN":"x"},"login":"a","at":"2026-11-26T10:00:00Z","secret":"AAE="}`, want: keysReq{Login: "a", At: time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC), Secret: []byte{0, 1}}},
		"ignored field variant":  {body: `{"SKIPPED":"x","skipped":"y"}`, want: keysReq{}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var got keysReq
			r := httptest.NewRequest("POST", "/", strings.NewReader(tc.body))
			if err := Decode(httptest.NewRecorder(), r, &got); err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestDecodeExactKeysLeavesBadJSON(t *testing.T) {
	for _, body := range []string{`{"LOGIN":`, `{"login":"a"} x`, strings.Repeat("[", 400) + strings.Repeat("]", 400)} {
		var got keysReq
		r := httptest.NewRequest("POST", "/", strings.NewReader(body))
		if err := Decode(httptest.NewRecorder(), r, &got); err == nil {
			t.Errorf("Decode(%.20q) accepted it: %+v", body, got)
		}
	}
}

// FuzzDecode checks that Decode never panics, and that filtering the
// case variants out leaves none: the filter's output is its own fixpoint.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"kind":"k","login":"a","device":{"id":"d"},"members":[{"user_id":"u"}],"Plain":"p"}`,
		`{"LOGIN":"x","login":"a","device":{"ID":"x","id":"d"}}`,
		`{"by_name":{"A":{"ID":"x"}},"raw":{"LOGIN":1},"secret":"AAE=","at":"2026-11-26T10:00:00Z"}`,
		`{"members":[{"User_ID":"x"},{"user_id":"u","Can_Write":true}]}`,
		`{"LOGIN":"x","Login":"y","login":"a","LOGIN":"z"}`,
		`[1,2]`, `null`, `{"login":"\u00e4"}`, "{\"\xff\":1}",
	} {
		f.Add([]byte(s))
	}
	typ := reflect.TypeFor[*keysReq]()
	f.Fuzz(func(t *testing.T, body []byte) {
		var got keysReq
		r := httptest.NewRequest("POST", "/", strings.NewReader(string(body)))
		_ = Decode(httptest.NewRecorder(), r, &got)
		once := withoutCaseVariants(body, typ)
		if twice := withoutCaseVariants(once, typ); string(twice) != string(once) {
			t.Fatalf("%q filtered to %q, and again to %q", body, once, twice)
		}
	})
}
