package auth

import (
	"bytes"
	"encoding/json"
	"mime"
	"net/http"
	"net/netip"

	"klassenfunk/internal/httpapi"
	"klassenfunk/proto"
	"klassenfunk/storage"
)

// ClientAddr returns the client address of r: X-Forwarded-For is honoured
// from the trusted proxies only.
func (h *HTTP) ClientAddr(r *http.Request) netip.Addr {
	return httpapi.ClientAddr(r, h.TrustedProxies)
}

// Principal authenticates r as Authed does: its credential (the bearer
// token when r has an Authorization header, otherwise the web page's
// session cookie) used from r's client address, so that a country
// restriction applies. The WebSocket gateway calls it for the header path.
func (h *HTTP) Principal(r *http.Request) (Principal, error) {
	return h.principal(r)
}

// Country restriction.

type countriesView struct {
	Allowed []string `json:"allowed"`
	GeoIP   bool     `json:"geoip"`
}

func (h *HTTP) getCountries(w http.ResponseWriter, r *http.Request, p Principal) {
	allowed, geoip, err := h.svc.Countries(r.Context(), p)
	if err != nil {
		httpapi.WriteError(w, h.svc.log, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, countriesView{Allowed: allowed, GeoIP: geoip})
}

// putCountries is PUT /me/countries {allowed: [...] | null}. The field is
// required; null removes the restriction.
func (h *HTTP) putCountries(w http.ResponseWriter, r *http.Request, p Principal) {
	var req struct {
		Allowed json.RawMessage `json:"allowed"`
	}
	if err := httpapi.Decode(w, r, &req); err != nil {
		httpapi.WriteError(w, nil, err)
		return
	}
	if req.Allowed == nil {
		httpapi.WriteError(w, nil, proto.Errorf(proto.CodeInvalidRequest, "allowed is required: a list of country codes, or null for no restriction"))
		return
	}
	var allowed []string
	if !bytes.Equal(req.Allowed, []byte("null")) {
		if err := json.Unmarshal(req.Allowed, &allowed); err != nil {
			httpapi.WriteError(w, nil, proto.Errorf(proto.CodeInvalidRequest, "allowed must be a list of country codes or null"))
			return
		}
		if allowed == nil {
			allowed = []string{}
		}
	}
	if err := h.svc.SetCountries(r.Context(), p, allowed); err != nil {
		httpapi.WriteError(w, h.svc.log, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *HTTP) notices(w http.ResponseWriter, r *http.Request, p Principal) {
	list, err := h.svc.Notices(r.Context(), p)
	if err != nil {
		httpapi.WriteError(w, h.svc.log, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, list)
}

// Data rights.

// export is GET /me/export: the ZIP archive, streamed. A failure before
// the first byte is an error response; one while the messages stream
// aborts the connection, so that the client never takes a cut archive for
// a whole one.
func (h *HTTP) export(w http.ResponseWriter, r *http.Request, p Principal) {
	e, err := h.svc.CollectExport(r.Context(), p)
	if err != nil {
		httpapi.WriteError(w, h.svc.log, err)
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", "application/zip")
	hd.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": e.Filename()}))
	hd.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if err := e.WriteZip(r.Context(), w); err != nil {
		if r.Context().Err() == nil {
			h.svc.log.Error("export: archive cut short", "user", p.User.ID, "err", err)
		}
		panic(http.ErrAbortHandler)
	}
}

// erase is POST /me/erase {client_hash}.
func (h *HTTP) erase(w http.ResponseWriter, r *http.Request, p Principal) {
	var req struct {
		ClientHash string `json:"client_hash"`
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
	if err := h.svc.Erase(r.Context(), p, ch); err != nil {
		httpapi.WriteError(w, h.svc.log, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// Operator.

func (h *HTTP) stats(w http.ResponseWriter, r *http.Request) {
	st, err := h.svc.Stats(r.Context())
	if err != nil {
		httpapi.WriteError(w, h.svc.log, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, st)
}

// tombstones is GET /admin/tombstones: the erased accounts (user id and
// time), which `klassenfunk admin export-tombstones` saves next to the
// backups.
func (h *HTTP) tombstones(w http.ResponseWriter, r *http.Request) {
	ts, err := h.svc.Tombstones(r.Context())
	if err != nil {
		httpapi.WriteError(w, h.svc.log, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, ts)
}

// reapplyErasures is POST /admin/tombstones {tombstones: [...]} →
// {tombstones, removed_credentials}: the erasures are applied again (after
// a restore).
func (h *HTTP) reapplyErasures(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Tombstones []storage.Tombstone `json:"tombstones"`
	}
	if err := httpapi.Decode(w, r, &req); err != nil {
		httpapi.WriteError(w, nil, err)
		return
	}
	n, err := h.svc.ReapplyErasures(r.Context(), req.Tombstones)
	if err != nil {
		httpapi.WriteError(w, h.svc.log, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]int{"tombstones": len(req.Tombstones), "removed_credentials": n})
}
