// Package web serves the account settings page at /settings: one HTML page,
// one style sheet and one script, embedded in the binary, with no
// third-party requests, no inline script or style, and nothing kept in the
// browser but the session cookie and, once the user switches it, the
// language (localStorage "kf.lang").
//
// # Login
//
// The script derives client_hash from the password with WebCrypto
// (PBKDF2-HMAC-SHA256, 600000 iterations, salt "klassenfunk/v1/" +
// lowercase(login), 32 bytes) and posts it to POST /settings/login
// (auth.HTTP.CookieLogin). The answer sets the session credential as the
// cookie __Host-kf_session (HttpOnly, SameSite=Strict, Secure, Path=/);
// the token never reaches the script. The script
// then calls the JSON API under /api/v1 with that cookie, sending
// X-Klassenfunk-CSRF: 1 on every call (see auth/cookie.go for the CSRF
// rules).
//
// # Security headers
//
// Every response of this package carries a Content-Security-Policy without
// 'unsafe-inline' (and with Trusted Types required), X-Frame-Options: DENY,
// Referrer-Policy: no-referrer, X-Content-Type-Options: nosniff, a
// Permissions-Policy that denies the powerful features, cross-origin
// opener and resource policies, and Strict-Transport-Security when the
// request came over HTTPS (directly, or through a trusted proxy that says so
// in X-Forwarded-Proto). The page is Cache-Control: no-store; the assets
// have content-hashed names and are cached for a year, and the page loads
// them with Subresource Integrity.
//
// docs/settings.md describes the page for operators and users.
package web
