package auth

import (
	"cmp"
	"encoding/json"
	"errors"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"klassenfunk/internal/httpapi"
	"klassenfunk/proto"
	"klassenfunk/storage"
)

// UserView is the public shape of a user (API.md).
type UserView struct {
	ID          string       `json:"id"`
	Login       string       `json:"login"`
	DisplayName string       `json:"display_name"`
	Role        storage.Role `json:"role"`
	School      string       `json:"school"`
}

// ViewUser returns the public shape of u.
func ViewUser(u storage.User) UserView {
	return UserView{ID: u.ID, Login: u.Login, DisplayName: u.DisplayName, Role: u.Role, School: u.School}
}

// HTTP serves the endpoints of this package.
type HTTP struct {
	svc *Service
	// TrustedProxies may set X-Forwarded-For.
	TrustedProxies []netip.Prefix
}

// NewHTTP returns the handlers of svc.
func NewHTTP(svc *Service, trustedProxies []netip.Prefix) *HTTP {
	return &HTTP{svc: svc, TrustedProxies: trustedProxies}
}

// Register adds the routes to mux under /api/v1.
func (h *HTTP) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST /api/v1/schools", h.Operator(h.createSchool))
	mux.HandleFunc("GET /api/v1/schools", h.Operator(h.listSchools))
	mux.HandleFunc("PATCH /api/v1/schools/{school}", h.patchSchool)
	mux.HandleFunc("POST /api/v1/schools/{school}/users", h.createUser)
	mux.HandleFunc("POST /api/v1/login", h.login)
	mux.HandleFunc("POST /api/v1/logout", h.Authed(h.logout))
	mux.HandleFunc("GET /api/v1/me", h.Authed(h.me))
	mux.HandleFunc("GET /api/v1/users", h.Authed(h.directory))
	mux.HandleFunc("GET /api/v1/me/logins", h.Authed(h.logins))
	mux.HandleFunc("GET /api/v1/trust", h.Authed(h.trusts))
	mux.HandleFunc("DELETE /api/v1/trust/{id}", h.Authed(h.revokeTrust))
	mux.HandleFunc("DELETE /api/v1/trust/{id}/push", h.Authed(h.deleteTrustPush))
	// Data rights, country restriction, operator statistics (rights_http.go).
	mux.HandleFunc("GET /api/v1/me/countries", h.Authed(h.getCountries))
	mux.HandleFunc("PUT /api/v1/me/countries", h.Authed(h.putCountries))
	mux.HandleFunc("GET /api/v1/me/notices", h.Authed(h.notices))
	mux.HandleFunc("GET /api/v1/me/export", h.Authed(h.export))
	mux.HandleFunc("POST /api/v1/me/erase", h.Authed(h.erase))
	mux.HandleFunc("GET /api/v1/admin/stats", h.Operator(h.stats))
	mux.HandleFunc("GET /api/v1/admin/tombstones", h.Operator(h.tombstones))
	mux.HandleFunc("POST /api/v1/admin/tombstones", h.Operator(h.reapplyErasures))
}

// Authed wraps a handler that needs a user credential: the bearer token,
// or without an Authorization header the web page's session cookie
// (cookie.go).
func (h *HTTP) Authed(next func(http.ResponseWriter, *http.Request, Principal)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, err := h.principal(r)
		if err != nil {
			httpapi.WriteError(w, h.svc.log, err)
			return
		}
		next(w, r, p)
	}
}

// Operator wraps a handler that needs the operator token. A user's valid
// credential is 403, not 401: it is fine, only not enough here, and an app
// that takes 401 for a revoked token must not log its user out.
// The operator token comes only as a bearer token; the settings page's
// session cookie, a user credential, is 403 there too.
func (h *HTTP) Operator(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if tok := httpapi.Bearer(r); !h.svc.IsOperator(tok) {
			err := errUnauthorized
			if h.svc.known(r.Context(), cmp.Or(tok, h.cookieToken(r))) {
				err = errNotOperator
			}
			httpapi.WriteError(w, nil, err)
			return
		}
		next(w, r)
	}
}

func (h *HTTP) createSchool(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name string `json:"name"`
	}
	if err := httpapi.Decode(w, r, &req); err != nil {
		httpapi.WriteError(w, nil, err)
		return
	}
	sc, err := h.svc.CreateSchool(r.Context(), req.Name)
	if err != nil {
		httpapi.WriteError(w, h.svc.log, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusCreated, map[string]string{"id": sc.ID, "name": sc.Name})
}

func (h *HTTP) listSchools(w http.ResponseWriter, r *http.Request) {
	schools, err := h.svc.store.Schools(r.Context())
	if err != nil {
		httpapi.WriteError(w, h.svc.log, err)
		return
	}
	out := make([]map[string]string, 0, len(schools))
	for _, s := range schools {
		out = append(out, map[string]string{"id": s.ID, "name": s.Name})
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
}

// schoolManager lets the operator and admins of the school in the path
// through; it answers the request itself otherwise and returns false.
func (h *HTTP) schoolManager(w http.ResponseWriter, r *http.Request) bool {
	if h.svc.IsOperator(httpapi.Bearer(r)) {
		return true
	}
	p, err := h.principal(r) // a bearer token or the page's cookie
	switch {
	case err != nil:
		httpapi.WriteError(w, h.svc.log, err)
	case p.User.School != r.PathValue("school"):
		httpapi.WriteError(w, nil, errNotFound)
	case p.User.Role != storage.RoleAdmin:
		httpapi.WriteError(w, nil, errForbidden)
	default:
		return true
	}
	return false
}

// schoolView is the API shape of a school.
type schoolView struct {
	ID            string `json:"id"`
	Name          string `json:"name"`
	StudentDirect bool   `json:"student_direct"`
}

// patchSchool changes a school's settings: {"student_direct": bool}
// switches direct conversations between students on or off. It is a merge
// patch (RFC 7396): a field left out stays as it is, and null restores its
// default (on).
func (h *HTTP) patchSchool(w http.ResponseWriter, r *http.Request) {
	if !h.schoolManager(w, r) {
		return
	}
	var req struct {
		StudentDirect json.RawMessage `json:"student_direct"`
	}
	if err := httpapi.Decode(w, r, &req); err != nil {
		httpapi.WriteError(w, nil, err)
		return
	}
	var studentDirect *bool
	switch string(req.StudentDirect) {
	case "": // left out
	case "null":
		studentDirect = new(true)
	default:
		var on bool
		if err := json.Unmarshal(req.StudentDirect, &on); err != nil {
			httpapi.WriteError(w, nil, proto.Errorf(proto.CodeInvalidRequest, "student_direct must be true, false or null"))
			return
		}
		studentDirect = &on
	}
	var out storage.School
	err := h.svc.store.UpdateSchool(r.Context(), r.PathValue("school"), func(s *storage.School) error {
		if studentDirect != nil {
			s.NoStudentDirect = !*studentDirect
		}
		out = *s
		return nil
	})
	if errors.Is(err, storage.ErrNotFound) {
		err = errNotFound
	}
	if err != nil {
		httpapi.WriteError(w, h.svc.log, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, schoolView{ID: out.ID, Name: out.Name, StudentDirect: !out.NoStudentDirect})
}

// createUser is for the operator and for admins of the school in the path.
func (h *HTTP) createUser(w http.ResponseWriter, r *http.Request) {
	if !h.schoolManager(w, r) {
		return
	}
	school := r.PathValue("school")
	var req struct {
		Login       string       `json:"login"`
		DisplayName string       `json:"display_name"`
		Role        storage.Role `json:"role"`
		ClientHash  string       `json:"client_hash"`
	}
	if err := httpapi.Decode(w, r, &req); err != nil {
		httpapi.WriteError(w, nil, err)
		return
	}
	ch, err := decodeClientHash(req.ClientHash)
	if err != nil {
		httpapi.WriteError(w, nil, err)
		return
	}
	u, err := h.svc.CreateUser(r.Context(), NewUser{
		School: school, Login: req.Login, DisplayName: req.DisplayName, Role: req.Role, ClientHash: ch,
	})
	if err != nil {
		httpapi.WriteError(w, h.svc.log, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusCreated, ViewUser(u))
}

func decodeClientHash(s string) ([]byte, error) {
	b, err := proto.DecodeBase64(s)
	if err != nil || len(b) != ClientHashLen {
		return nil, proto.Errorf(proto.CodeInvalidRequest, "client_hash must be 32 bytes in padded standard base64, without line breaks")
	}
	return b, nil
}

type credentialView struct {
	Kind      storage.CredKind `json:"kind"`
	Token     string           `json:"token"`
	ExpiresAt *time.Time       `json:"expires_at,omitempty"`
}

type loginResponse struct {
	User       UserView       `json:"user"`
	Credential credentialView `json:"credential"`
	TrustID    string         `json:"trust_id,omitempty"`
}

func (h *HTTP) login(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Login      string  `json:"login"`
		ClientHash string  `json:"client_hash"`
		Device     *Device `json:"device"`
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
	if req.Device == nil {
		httpapi.WriteError(w, nil, proto.Errorf(proto.CodeInvalidRequest, "device is required"))
		return
	}
	addr := httpapi.ClientAddr(r, h.TrustedProxies)
	res, err := h.svc.Login(r.Context(), req.Login, ch, *req.Device, addr)
	if err != nil {
		httpapi.WriteError(w, h.svc.log, err)
		return
	}
	trustID, expiresAt := credentialExtras(res.Credential)
	httpapi.WriteJSON(w, http.StatusOK, loginResponse{
		User:       ViewUser(res.User),
		Credential: credentialView{Kind: res.Credential.Kind, Token: res.Token, ExpiresAt: expiresAt},
		TrustID:    trustID,
	})
}

// credentialExtras returns what a response shows of c beyond its kind: a
// trust credential's relationship id, or a session's idle deadline.
func credentialExtras(c storage.Credential) (trustID string, expiresAt *time.Time) {
	if c.Kind == storage.CredTrust {
		return c.ID, nil
	}
	at := c.ExpiresAt.UTC()
	return "", &at
}

func (h *HTTP) logout(w http.ResponseWriter, r *http.Request, p Principal) {
	if err := h.svc.Logout(r.Context(), p); err != nil {
		httpapi.WriteError(w, h.svc.log, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// meView is GET /me: API.md's user object, and (an addition) the
// credential the request came with, so that an app on a shared device can
// show when its session ends.
type meView struct {
	UserView
	Credential meCredential `json:"credential"`
}

type meCredential struct {
	Kind      storage.CredKind `json:"kind"`
	DeviceID  string           `json:"device_id"`
	TrustID   string           `json:"trust_id,omitempty"`   // a trust credential's relationship (DELETE /trust/{id})
	ExpiresAt *time.Time       `json:"expires_at,omitempty"` // a session's idle deadline, moved on by use
}

func (h *HTTP) me(w http.ResponseWriter, r *http.Request, p Principal) {
	c := meCredential{Kind: p.Cred.Kind, DeviceID: p.Cred.DeviceID}
	c.TrustID, c.ExpiresAt = credentialExtras(p.Cred)
	httpapi.WriteJSON(w, http.StatusOK, meView{UserView: ViewUser(p.User), Credential: c})
}

// directoryEntry is one user in the school directory: what an app needs to
// start a conversation and to name members, and nothing more (no login).
type directoryEntry struct {
	ID          string       `json:"id"`
	DisplayName string       `json:"display_name"`
	Role        storage.Role `json:"role"`
}

// directory is GET /users: the active users of the caller's own school,
// ordered by display name.
func (h *HTTP) directory(w http.ResponseWriter, r *http.Request, p Principal) {
	users, err := h.svc.store.UsersOfSchool(r.Context(), p.User.School)
	if err != nil {
		httpapi.WriteError(w, h.svc.log, err)
		return
	}
	out := make([]directoryEntry, 0, len(users))
	for _, u := range users {
		if !u.Disabled {
			out = append(out, directoryEntry{ID: u.ID, DisplayName: u.DisplayName, Role: u.Role})
		}
	}
	slices.SortStableFunc(out, func(a, b directoryEntry) int {
		return strings.Compare(strings.ToLower(a.DisplayName), strings.ToLower(b.DisplayName))
	})
	httpapi.WriteJSON(w, http.StatusOK, out)
}

func (h *HTTP) logins(w http.ResponseWriter, r *http.Request, p Principal) {
	ev, err := h.svc.Logins(r.Context(), p)
	if err != nil {
		httpapi.WriteError(w, h.svc.log, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, ev)
}

func (h *HTTP) trusts(w http.ResponseWriter, r *http.Request, p Principal) {
	t, err := h.svc.Trusts(r.Context(), p)
	if err != nil {
		httpapi.WriteError(w, h.svc.log, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, t)
}

func (h *HTTP) revokeTrust(w http.ResponseWriter, r *http.Request, p Principal) {
	if err := h.svc.RevokeTrust(r.Context(), p, r.PathValue("id")); err != nil {
		httpapi.WriteError(w, h.svc.log, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *HTTP) deleteTrustPush(w http.ResponseWriter, r *http.Request, p Principal) {
	if err := h.svc.DeleteTrustPush(r.Context(), p, r.PathValue("id")); err != nil {
		httpapi.WriteError(w, h.svc.log, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
