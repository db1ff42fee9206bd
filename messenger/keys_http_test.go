package messenger_test

import (
	"bytes"
	"encoding/base64"
	"maps"
	"net/http"
	"strings"
	"testing"

	"klassenfunk/proto"
)

// httpKey is a 32-byte public key derived from a seed byte.
func httpKey(seed byte) []byte { return bytes.Repeat([]byte{seed}, 32) }

// devices returns GET /conversations/{id}/devices as "user/device" →
// base64 public key, after checking every entry's shape.
func (a httpAPI) devices(tok, conv string) map[string]string {
	a.t.Helper()
	var raw []map[string]any
	r := a.env.JSON("GET", "/api/v1/conversations/"+conv+"/devices", tok, nil, http.StatusOK, &raw)
	if raw == nil {
		a.t.Fatalf("devices: %s, want an array", r.Body)
	}
	out := map[string]string{}
	for _, e := range raw {
		user, _ := e["user_id"].(string)
		dev, _ := e["device_id"].(string)
		pub, _ := e["public_key"].(string)
		if len(e) != 3 || user == "" || dev == "" || pub == "" {
			a.t.Fatalf("device entry %v, want exactly user_id, device_id, public_key", e)
		}
		if _, dup := out[user+"/"+dev]; dup {
			a.t.Fatalf("device %s/%s listed twice", user, dev)
		}
		out[user+"/"+dev] = pub
	}
	return out
}

func TestHTTPPutKey(t *testing.T) {
	w := newHTTPWorld(t)
	tina, sam := w.u["tina"], w.u["sam"]
	g := w.group(tina.tok, "Klasse 7b", httpMember(sam.id, true))
	good := make([]byte, 32)
	for i := range good {
		good[i] = byte(0xf0 + i%16) // encodes with '+' and '/'
	}
	urlSafe := base64.URLEncoding.EncodeToString(good)
	if !strings.ContainsAny(urlSafe, "-_") {
		t.Fatalf("test key %q is the same in both alphabets", urlSafe)
	}

	for name, tc := range map[string]struct {
		tok    string
		body   any
		status int
		code   proto.Code
	}{
		"32 bytes":       {tina.tok, map[string]string{"public_key": httpB64(good)}, 204, ""},
		"31 bytes":       {tina.tok, map[string]string{"public_key": httpB64(good[:31])}, 400, proto.CodeInvalidRequest},
		"33 bytes":       {tina.tok, map[string]string{"public_key": httpB64(append(good[:32:32], 1))}, 400, proto.CodeInvalidRequest},
		"URL-safe":       {tina.tok, map[string]string{"public_key": urlSafe}, 400, proto.CodeInvalidRequest},
		"unpadded":       {tina.tok, map[string]string{"public_key": base64.RawStdEncoding.EncodeToString(good)}, 400, proto.CodeInvalidRequest},
		"not base64":     {tina.tok, map[string]string{"public_key": "this is not a key at all!!!!"}, 400, proto.CodeInvalidRequest},
		"line break":     {tina.tok, map[string]string{"public_key": httpB64(good)[:8] + "\n" + httpB64(good)[8:]}, 400, proto.CodeInvalidRequest},
		"empty":          {tina.tok, map[string]string{"public_key": ""}, 400, proto.CodeInvalidRequest},
		"missing":        {tina.tok, map[string]string{}, 400, proto.CodeInvalidRequest},
		"not a string":   {tina.tok, map[string]any{"public_key": 32}, 400, proto.CodeInvalidRequest},
		"malformed JSON": {tina.tok, `{"public_key":`, 400, proto.CodeInvalidRequest},
		"no credential":  {"", map[string]string{"public_key": httpB64(httpKey(9))}, 401, proto.CodeUnauthorized},
	} {
		t.Run(name, func(t *testing.T) {
			r := w.env.Do("PUT", "/api/v1/keys", tc.tok, tc.body)
			if tc.status == http.StatusNoContent {
				if r.Status != tc.status || len(r.Body) != 0 {
					t.Fatalf("got %d %s, want 204", r.Status, r.Body)
				}
				return
			}
			httpWantError(t, r, tc.status, tc.code)
		})
	}
	// Only the good key was stored; the refused ones did not replace it.
	if got, want := w.devices(sam.tok, g), map[string]string{tina.key(): httpB64(good)}; !maps.Equal(got, want) {
		t.Fatalf("devices %v, want %v", got, want)
	}

	// A session on the device id of a trusted device that has no key yet
	// may not put one either: the trusted device puts its own.
	fresh, freshTrust := w.env.Login("tina", "new-phone", true)
	freshSession, _ := w.env.Login("tina", "new-phone", false)
	httpWantError(t, w.env.Do("PUT", "/api/v1/keys", freshSession, map[string]string{"public_key": httpB64(httpKey(8))}), 409, proto.CodeConflict)
	w.env.JSON("PUT", "/api/v1/keys", fresh, map[string]string{"public_key": httpB64(httpKey(12))}, http.StatusNoContent, nil)
	w.env.JSON("PUT", "/api/v1/keys", freshSession, map[string]string{"public_key": httpB64(httpKey(12))}, http.StatusNoContent, nil)
	w.env.JSON("DELETE", "/api/v1/trust/"+freshTrust, fresh, nil, http.StatusNoContent, nil)
	w.env.JSON("POST", "/api/v1/logout", freshSession, nil, http.StatusNoContent, nil) // its last credential: its key goes

	// A session on the device id of tina's trusted phone may send the
	// phone's own key, not another: that key would outlive the session.
	session, _ := w.env.Login("tina", tina.device, false)
	w.env.JSON("PUT", "/api/v1/keys", session, map[string]string{"public_key": httpB64(good)}, http.StatusNoContent, nil)
	httpWantError(t, w.env.Do("PUT", "/api/v1/keys", session, map[string]string{"public_key": httpB64(httpKey(9))}), 409, proto.CodeConflict)
	w.env.JSON("POST", "/api/v1/logout", session, nil, http.StatusNoContent, nil)
	if got, want := w.devices(sam.tok, g), map[string]string{tina.key(): httpB64(good)}; !maps.Equal(got, want) {
		t.Fatalf("after a session on the phone's device id: devices %v, want %v", got, want)
	}
	// The phone itself changes its key; a session on a device id of its
	// own sets any.
	w.env.JSON("PUT", "/api/v1/keys", tina.tok, map[string]string{"public_key": httpB64(httpKey(9))}, http.StatusNoContent, nil)
	pc, _ := w.env.Login("tina", "school-pc", false)
	w.env.JSON("PUT", "/api/v1/keys", pc, map[string]string{"public_key": httpB64(httpKey(10))}, http.StatusNoContent, nil)
	w.env.JSON("PUT", "/api/v1/keys", pc, map[string]string{"public_key": httpB64(httpKey(11))}, http.StatusNoContent, nil)
	want := map[string]string{tina.key(): httpB64(httpKey(9)), tina.id + "/school-pc": httpB64(httpKey(11))}
	if got := w.devices(sam.tok, g); !maps.Equal(got, want) {
		t.Fatalf("devices %v, want %v", got, want)
	}
}

func TestHTTPConversationDevices(t *testing.T) {
	w := newHTTPWorld(t)
	tina, sam, sue, tom, pat := w.u["tina"], w.u["sam"], w.u["sue"], w.u["tom"], w.u["pat"]
	tablet, tabletTrust := w.env.Login("tina", "tina-tablet", true)
	put := func(tok string, key []byte) {
		t.Helper()
		w.env.JSON("PUT", "/api/v1/keys", tok, map[string]string{"public_key": httpB64(key)}, http.StatusNoContent, nil)
	}
	put(tina.tok, httpKey(1))
	put(tablet, httpKey(2))
	put(sam.tok, httpKey(3))
	put(sue.tok, httpKey(4)) // not a member
	put(tom.tok, httpKey(5)) // not a member
	put(w.u["ben"].tok, httpKey(6))
	// pat is a member without a key.
	g := w.group(tina.tok, "Klasse 7b", httpMember(sam.id, true), httpMember(pat.id, false))
	tabletKey := tina.id + "/tina-tablet"
	want := map[string]string{
		tina.key(): httpB64(httpKey(1)),
		tabletKey:  httpB64(httpKey(2)),
		sam.key():  httpB64(httpKey(3)),
	}
	for _, login := range []string{"tina", "sam", "pat"} {
		if got := w.devices(w.u[login].tok, g); !maps.Equal(got, want) {
			t.Fatalf("devices for %s: %v, want %v", login, got, want)
		}
	}

	for name, tok := range map[string]string{
		"same-school non-member":  sue.tok,
		"same-school teacher":     tom.tok,
		"school admin, no member": w.u["anna"].tok,
		"other school":            w.u["ben"].tok,
		"other school's admin":    w.u["bella"].tok,
	} {
		t.Run(name, func(t *testing.T) {
			r := w.env.Do("GET", "/api/v1/conversations/"+g+"/devices", tok, nil)
			httpWantError(t, r, 404, proto.CodeNotFound)
			if l := httpLeaks(r.Body, []string{tina.id, sam.id, httpB64(httpKey(1))}); l != nil {
				t.Fatalf("404 body leaks %v", l)
			}
		})
	}
	httpWantError(t, w.env.Do("GET", "/api/v1/conversations/no-such-conv/devices", tina.tok, nil), 404, proto.CodeNotFound)

	// A new key replaces the old one; a new member's devices appear.
	put(tablet, httpKey(7))
	want[tabletKey] = httpB64(httpKey(7))
	w.env.JSON("PUT", "/api/v1/conversations/"+g+"/members/"+sue.id, tina.tok, map[string]bool{"can_write": true}, http.StatusNoContent, nil)
	want[sue.key()] = httpB64(httpKey(4))
	if got := w.devices(tina.tok, g); !maps.Equal(got, want) {
		t.Fatalf("after key change and new member: %v, want %v", got, want)
	}

	// The tablet also holds a session: revoking its trust relationship
	// keeps the key; ending the session, its last credential, removes it.
	session, _ := w.env.Login("tina", "tina-tablet", false)
	w.env.JSON("DELETE", "/api/v1/trust/"+tabletTrust, tina.tok, nil, http.StatusNoContent, nil)
	if got := w.devices(tina.tok, g); !maps.Equal(got, want) {
		t.Fatalf("after revoking one of two credentials of the tablet: %v, want %v", got, want)
	}
	w.env.JSON("POST", "/api/v1/logout", session, nil, http.StatusNoContent, nil)
	delete(want, tabletKey)
	if got := w.devices(tina.tok, g); !maps.Equal(got, want) {
		t.Fatalf("after the tablet's last credential ended: %v, want %v", got, want)
	}

	// sam deletes his only trust relationship: his device's key is gone.
	w.env.JSON("DELETE", "/api/v1/trust/"+sam.trust, sam.tok, nil, http.StatusNoContent, nil)
	delete(want, sam.key())
	if got := w.devices(tina.tok, g); !maps.Equal(got, want) {
		t.Fatalf("after revoking sam's device: %v, want %v", got, want)
	}
	// A conversation whose members have no key lists [].
	d := w.direct(pat.tok, w.u["sol"].id)
	r := w.env.JSON("GET", "/api/v1/conversations/"+d+"/devices", pat.tok, nil, http.StatusOK, nil)
	if string(bytes.TrimSpace(r.Body)) != "[]" {
		t.Fatalf("devices of pat and sol: %s, want []", r.Body)
	}
}
