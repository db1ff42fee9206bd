package auth

// Cookie sessions for the web settings page.
//
// The page never sees a token: POST /settings/login turns a login and
// client_hash into a session credential (personal: false) and puts its
// token in an HttpOnly, SameSite=Strict cookie. Authed then accepts that
// cookie when a request carries no Authorization header. Every
// cookie-authenticated request with a state-changing method (and the
// cookie login and logout themselves) must pass sameOrigin: an Origin header
// equal to the server's own origin and the header X-Klassenfunk-CSRF: 1,
// which a cross-site form cannot send and a cross-site script cannot send
// without a CORS preflight that the server never answers.

import (
	"net/http"
	"time"

	"klassenfunk/internal/httpapi"
	"klassenfunk/internal/ids"
	"klassenfunk/proto"
	"klassenfunk/storage"
)

const (
	// SessionCookie is the name of the cookie that carries the web page's
	// session credential. The __Host- prefix makes browsers refuse it
	// unless it is Secure, has Path=/ and no Domain: another host of the
	// same site (a sibling subdomain) cannot set it for this one.
	SessionCookie = "__Host-kf_session"
	// CSRFHeader must be "1" on every cookie-authenticated request with a
	// state-changing method.
	CSRFHeader = "X-Klassenfunk-CSRF"
	// WebDeviceName and WebDeviceOS describe a cookie session in the login
	// history.
	WebDeviceName = "Browser"
	WebDeviceOS   = "web"
)

// errCrossSite refuses a cookie-authenticated state change that did not
// come from the server's own page.
var errCrossSite = proto.Errorf(proto.CodeForbidden, "cross-site request refused")

// principal authenticates r by its bearer token when r has an
// Authorization header (exactly as before cookies existed), otherwise by
// the session cookie, which for a state-changing method must pass
// sameOrigin. The cookie carries only a session credential, as the page
// gets one: a device's long-lived trust token in it is refused like an
// unknown one, so that it cannot become a browser's ambient credential.
func (h *HTTP) principal(r *http.Request) (Principal, error) {
	if _, ok := r.Header["Authorization"]; ok {
		return h.svc.AuthenticateFrom(r.Context(), httpapi.Bearer(r), h.ClientAddr(r))
	}
	token := sessionToken(r)
	if token == "" {
		return h.svc.AuthenticateFrom(r.Context(), "", h.ClientAddr(r))
	}
	if !safeMethod(r.Method) {
		if err := h.sameOrigin(r); err != nil {
			return Principal{}, err
		}
	}
	return h.svc.authenticate(r.Context(), token, h.ClientAddr(r), storage.CredSession)
}

// cookieToken returns r's session cookie when r has no Authorization
// header (when it is used at all), otherwise "".
func (h *HTTP) cookieToken(r *http.Request) string {
	if _, ok := r.Header["Authorization"]; ok {
		return ""
	}
	return sessionToken(r)
}

// sessionToken returns the value of r's session cookie, or "" when there
// is none or more than one: a second one was planted (by a host that may
// set cookies for this one), and using either would be a guess.
func sessionToken(r *http.Request) string {
	cs := r.CookiesNamed(SessionCookie)
	if len(cs) != 1 {
		return ""
	}
	return cs[0].Value
}

func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// sameOrigin checks that r was sent by a script of the server's own origin:
// the CSRF header is set, Origin equals the origin the client asked for
// (scheme and host, honouring X-Forwarded-Proto and X-Forwarded-Host from
// trusted proxies only), and Sec-Fetch-Site, when the browser sends it, is
// same-origin.
func (h *HTTP) sameOrigin(r *http.Request) error {
	if r.Header.Get(CSRFHeader) != "1" {
		return errCrossSite
	}
	origin := r.Header.Get("Origin")
	if origin == "" || origin != httpapi.Origin(r, h.TrustedProxies) {
		return errCrossSite
	}
	if s := r.Header.Get("Sec-Fetch-Site"); s != "" && s != "same-origin" {
		return errCrossSite
	}
	return nil
}

func (h *HTTP) setSessionCookie(w http.ResponseWriter, r *http.Request, token string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name:     SessionCookie,
		Value:    token,
		Path:     "/",
		MaxAge:   maxAge,
		HttpOnly: true,
		Secure:   true,
		SameSite: http.SameSiteStrictMode,
	})
}

// CookieLogin serves POST /settings/login: {login, client_hash, device_id}
// → 200 {user, expires_at} and the session cookie. device_id is optional
// (1 to 128 characters); without one the session gets a fresh random id,
// which is what the settings page does, so that nothing links one browser
// session to the next. The credential is a session (personal: false): it lists in no
// trust relationship, can never register for push, and ends after the
// session idle time. A valid session cookie sent along is logged out first.
func (h *HTTP) CookieLogin(w http.ResponseWriter, r *http.Request) {
	if err := h.sameOrigin(r); err != nil {
		httpapi.WriteError(w, nil, err)
		return
	}
	var req struct {
		Login      string `json:"login"`
		ClientHash string `json:"client_hash"`
		DeviceID   string `json:"device_id"`
	}
	if err := httpapi.Decode(w, r, &req); err != nil {
		httpapi.WriteError(w, nil, err)
		return
	}
	if req.Login == "" {
		httpapi.WriteError(w, nil, proto.Errorf(proto.CodeInvalidRequest, "login is required"))
		return
	}
	ch, err := decodeClientHash(req.ClientHash)
	if err != nil {
		httpapi.WriteError(w, nil, err)
		return
	}
	if req.DeviceID == "" {
		req.DeviceID = "web-" + ids.New()
	}
	personal := false
	dev := Device{ID: req.DeviceID, Name: WebDeviceName, OS: WebDeviceOS, Personal: &personal}
	res, err := h.svc.Login(r.Context(), req.Login, ch, dev, httpapi.ClientAddr(r, h.TrustedProxies))
	if err != nil {
		httpapi.WriteError(w, h.svc.log, err)
		return
	}
	h.endCookieSession(r)
	h.setSessionCookie(w, r, res.Token, 0)
	httpapi.WriteJSON(w, http.StatusOK, struct {
		User      UserView  `json:"user"`
		ExpiresAt time.Time `json:"expires_at"`
	}{ViewUser(res.User), res.Credential.ExpiresAt})
}

// CookieLogout serves POST /settings/logout: it deletes the session of the
// cookie (when it is still valid) and clears the cookie → 204.
func (h *HTTP) CookieLogout(w http.ResponseWriter, r *http.Request) {
	if err := h.sameOrigin(r); err != nil {
		httpapi.WriteError(w, nil, err)
		return
	}
	h.endCookieSession(r)
	h.setSessionCookie(w, r, "", -1)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

// endCookieSession deletes the session credential of r's cookie, if any.
// Only sessions: a trust token planted in the cookie is left alone.
func (h *HTTP) endCookieSession(r *http.Request) {
	token := sessionToken(r)
	if token == "" {
		return
	}
	// Ending a session needs no country check: look the token up directly.
	cred, err := h.svc.credential(r.Context(), token)
	if err != nil || cred.Kind != storage.CredSession {
		return
	}
	h.svc.deleteCredential(r.Context(), cred.ID)
}
