package web

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"mime"
	"net/http"
	"net/netip"
	"path"
	"strings"

	"klassenfunk/auth"
	"klassenfunk/internal/httpapi"
)

//go:embed assets
var assetFS embed.FS

// Path is where the settings page is served.
const Path = "/settings"

// assetPrefix is where the hashed assets are served.
const assetPrefix = Path + "/assets/"

// ContentSecurityPolicy is the policy of every response of this package: the
// page may load its own script, style sheet and images (and data: images),
// talk to its own origin, and nothing else; no inline code, no framing, no
// plugins, and DOM sinks only through Trusted Types (the script uses none).
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; " +
	"require-trusted-types-for 'script'; trusted-types 'none'"

// PermissionsPolicy switches off the browser features the page never uses.
const PermissionsPolicy = "accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), " +
	"microphone=(), payment=(), usb=(), browsing-topics=()"

// HSTS is the Strict-Transport-Security value sent over HTTPS.
const HSTS = "max-age=63072000"

// Config configures the page.
type Config struct {
	// Auth provides the cookie login and logout. Required.
	Auth *auth.HTTP
	// TrustedProxies may say in X-Forwarded-Proto that the client used
	// HTTPS (for HSTS). Nil: none.
	TrustedProxies []netip.Prefix
}

// asset is one embedded file, served under a name that holds its hash.
type asset struct {
	URL       string // assetPrefix + name with hash
	Type      string // Content-Type
	Integrity string // Subresource Integrity value
	body      []byte
}

// Handler serves the settings page.
type Handler struct {
	cfg    Config
	page   []byte            // the rendered page
	assets map[string]*asset // by hashed file name
}

// New loads the embedded assets and renders the page.
func New(cfg Config) (*Handler, error) {
	if cfg.Auth == nil {
		return nil, errors.New("web: Config.Auth is required")
	}
	h := &Handler{cfg: cfg, assets: map[string]*asset{}}
	byName := map[string]*asset{}
	for _, name := range []string{"app.js", "style.css"} {
		b, err := assetFS.ReadFile("assets/" + name)
		if err != nil {
			return nil, fmt.Errorf("web: read asset: %w", err)
		}
		sum := sha256.Sum256(b)
		ext := path.Ext(name)
		hashed := strings.TrimSuffix(name, ext) + "." + hex.EncodeToString(sum[:6]) + ext
		sri := sha512.Sum384(b)
		a := &asset{
			URL:       assetPrefix + hashed,
			Type:      mime.TypeByExtension(ext),
			Integrity: "sha384-" + base64.StdEncoding.EncodeToString(sri[:]),
			body:      b,
		}
		if ext == ".js" {
			a.Type = "text/javascript; charset=utf-8"
		}
		h.assets[hashed] = a
		byName[name] = a
	}
	tpl, err := template.ParseFS(assetFS, "assets/index.html")
	if err != nil {
		return nil, fmt.Errorf("web: parse page: %w", err)
	}
	var buf bytes.Buffer
	if err := tpl.Execute(&buf, map[string]*asset{"JS": byName["app.js"], "CSS": byName["style.css"]}); err != nil {
		return nil, fmt.Errorf("web: render page: %w", err)
	}
	h.page = buf.Bytes()
	return h, nil
}

// Register adds the page, its assets and the cookie login and logout to
// mux. Their security headers come from Secure, which must wrap mux.
func (h *Handler) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET "+Path, h.servePage)
	mux.HandleFunc("GET "+Path+"/{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, Path, http.StatusMovedPermanently)
	})
	mux.HandleFunc("GET "+assetPrefix+"{file}", h.serveAsset)
	mux.HandleFunc("POST "+Path+"/login", h.cfg.Auth.CookieLogin)
	mux.HandleFunc("POST "+Path+"/logout", h.cfg.Auth.CookieLogout)
}

// Secure puts SecurityHeaders on every response to a path under /settings
// that next gives, also those the router makes itself: a 404, a 405 for
// another method, the 404 of an unclean path (httpapi.CleanAPIPaths).
func (h *Handler) Secure(next http.Handler) http.Handler {
	sec := SecurityHeaders(next, h.cfg.TrustedProxies)
	under := func(p string) bool { return p == Path || strings.HasPrefix(p, Path+"/") }
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if under(r.URL.Path) || under(path.Clean(r.URL.Path)) {
			sec.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (h *Handler) servePage(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Type", "text/html; charset=utf-8")
	hd.Set("Cache-Control", "no-store")
	w.Write(h.page)
}

func (h *Handler) serveAsset(w http.ResponseWriter, r *http.Request) {
	a, ok := h.assets[r.PathValue("file")]
	if !ok {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", a.Type)
	hd.Set("Cache-Control", "public, max-age=31536000, immutable")
	w.Write(a.body)
}

// SecurityHeaders sets the headers of the settings page (see the package
// documentation) on every response of next. Strict-Transport-Security is
// sent only when the request came over HTTPS, directly or through one of
// the trusted proxies.
func SecurityHeaders(next http.Handler, trustedProxies []netip.Prefix) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", ContentSecurityPolicy)
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Permissions-Policy", PermissionsPolicy)
		hd.Set("Cross-Origin-Opener-Policy", "same-origin")
		hd.Set("Cross-Origin-Resource-Policy", "same-origin")
		if httpapi.Scheme(r, trustedProxies) == "https" {
			hd.Set("Strict-Transport-Security", HSTS)
		}
		next.ServeHTTP(w, r)
	})
}
