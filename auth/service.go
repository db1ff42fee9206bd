package auth

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"
	"unicode/utf8"

	"klassenfunk/internal/httpapi"
	"klassenfunk/internal/ids"
	"klassenfunk/proto"
	"klassenfunk/storage"
)

// Store is what auth needs from storage.
type Store interface {
	storage.Accounts
	storage.Credentials
	storage.LoginHistory
	storage.Meta
	// The users' data rights (rights.go, geo.go): notices, erasure and
	// the export, which reads the user's keys, conversations, messages and
	// uploads.
	storage.Notices
	storage.Erasure
	storage.DeviceKeys
	storage.Conversations
	storage.Messages
	storage.Attachments
}

// Config configures a Service. Zero fields take the documented defaults.
type Config struct {
	Store Store        // required
	Log   *slog.Logger // nil: slog.Default()

	Argon2 Argon2Params
	// SessionIdle is how long a session credential lives without use. Zero
	// means 30 minutes.
	SessionIdle time.Duration
	// TouchInterval is how often the use of a credential is written back
	// (last_used_at, a session's deadline). Zero means 1 minute; more than
	// a quarter of SessionIdle is lowered to that.
	TouchInterval time.Duration
	// MaxFailuresPerLogin within FailureWindow locks a login. Zero means 5.
	MaxFailuresPerLogin int
	// MaxFailuresPerAddr within FailureWindow locks a client address.
	// Zero means 20.
	MaxFailuresPerAddr int
	// FailureWindow is the brute-force window. Zero means 15 minutes.
	FailureWindow time.Duration
	// NewLimiter returns the brute-force counter named name ("login" or
	// "addr"). Nil means NewMemoryLimiter: counts per process.
	NewLimiter func(name string, limit int, window time.Duration) Limiter
	// MaxConcurrentHashes bounds concurrent Argon2 computations (each uses
	// Argon2.Memory). Zero means 4.
	MaxConcurrentHashes int
	// LoginHistory is how many successful logins are kept. Zero means 10.
	LoginHistory int
	// LoginRetention is how long a login stays in the history. Zero
	// means 90 days (2160h).
	LoginRetention time.Duration

	// OnRevoke is called after a credential was deleted (logout,
	// revocation, replacement by a new login on the same device, expiry),
	// so that open sockets are closed and pushes stopped. Must not block.
	OnRevoke func(storage.Credential)
	// OnErase is called after an account was erased (and OnRevoke for
	// each of its credentials), so that every socket of the user closes
	// on every node. Must not block.
	OnErase func(userID string)
	// Locator locates client addresses for the users' country
	// restrictions (geo.go). Nil means no GeoIP database: no restriction
	// can be set, and one set earlier refuses every address.
	Locator Locator
	// OnCountries is called after a user set a country restriction, so
	// that the user's open sockets are checked against it at once. Must
	// not block.
	OnCountries func(userID string)
	// Now is the clock. Nil means time.Now.
	Now func() time.Time
}

// Service implements accounts, login and credentials.
type Service struct {
	cfg       Config
	store     Store
	log       *slog.Logger
	now       func() time.Time
	hashSem   chan struct{}
	dummyHash string
	byLogin   Limiter
	byAddr    Limiter
	gates     gates    // login attempts being checked, by limiter key
	opHash    [32]byte // SHA-256 of the operator token; zero when none
}

// Principal is the authenticated caller of a request.
type Principal struct {
	User storage.User
	Cred storage.Credential
}

// New returns a Service.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil {
		return nil, errors.New("auth: Config.Store is required")
	}
	cfg.Argon2 = cfg.Argon2.withDefaults()
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	defInt := func(d *int, v int) {
		if *d == 0 {
			*d = v
		}
	}
	def(&cfg.SessionIdle, 30*time.Minute)
	def(&cfg.TouchInterval, time.Minute)
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if most := cfg.SessionIdle / 4; cfg.TouchInterval > most {
		// A use is written back only every TouchInterval: with a session
		// idle time not well above it, sessions in use would end.
		cfg.Log.Warn("auth: touch_interval lowered to a quarter of session_idle", "touch_interval", cfg.TouchInterval, "session_idle", cfg.SessionIdle, "now", most)
		cfg.TouchInterval = most
	}
	def(&cfg.FailureWindow, 15*time.Minute)
	defInt(&cfg.MaxFailuresPerLogin, 5)
	defInt(&cfg.MaxFailuresPerAddr, 20)
	defInt(&cfg.MaxConcurrentHashes, 4)
	defInt(&cfg.LoginHistory, 10)
	def(&cfg.LoginRetention, 90*24*time.Hour)
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.OnRevoke == nil {
		cfg.OnRevoke = func(storage.Credential) {}
	}
	if cfg.OnErase == nil {
		cfg.OnErase = func(string) {}
	}
	if cfg.OnCountries == nil {
		cfg.OnCountries = func(string) {}
	}
	if cfg.NewLimiter == nil {
		cfg.NewLimiter = func(_ string, limit int, window time.Duration) Limiter { return NewMemoryLimiter(limit, window) }
	}
	s := &Service{
		cfg:     cfg,
		store:   cfg.Store,
		log:     cfg.Log,
		now:     cfg.Now,
		hashSem: make(chan struct{}, cfg.MaxConcurrentHashes),
		byLogin: cfg.NewLimiter("login", cfg.MaxFailuresPerLogin, cfg.FailureWindow),
		byAddr:  cfg.NewLimiter("addr", cfg.MaxFailuresPerAddr, cfg.FailureWindow),
	}
	s.dummyHash = hashPassword(make([]byte, ClientHashLen), cfg.Argon2)
	return s, nil
}

// operatorTokenKey is the meta key of the operator token's SHA-256.
const operatorTokenKey = "operator_token_sha256"

// InitOperatorToken makes the operator token known. With a configured
// token, that one is used (and its hash stored). Without one, a stored hash
// is used; only when there is none a token is generated, stored hashed and
// returned so the caller can print it once. generated is "" otherwise.
func (s *Service) InitOperatorToken(ctx context.Context, configured string) (generated string, err error) {
	if configured != "" {
		h := sha256.Sum256([]byte(configured))
		s.opHash = h
		return "", s.store.PutMeta(ctx, operatorTokenKey, h[:])
	}
	v, err := s.store.GetMeta(ctx, operatorTokenKey)
	switch {
	case err == nil && len(v) == 32:
		copy(s.opHash[:], v)
		return "", nil
	case err != nil && !errors.Is(err, storage.ErrNotFound):
		return "", fmt.Errorf("read operator token: %w", err)
	}
	tok := "kfop_" + ids.Random(32)
	h := sha256.Sum256([]byte(tok))
	if err := s.store.PutMeta(ctx, operatorTokenKey, h[:]); err != nil {
		return "", fmt.Errorf("store operator token: %w", err)
	}
	s.opHash = h
	return tok, nil
}

// ResetOperatorToken replaces the operator token with a new one and returns
// it (admin CLI).
func (s *Service) ResetOperatorToken(ctx context.Context) (string, error) {
	tok := "kfop_" + ids.Random(32)
	h := sha256.Sum256([]byte(tok))
	if err := s.store.PutMeta(ctx, operatorTokenKey, h[:]); err != nil {
		return "", fmt.Errorf("store operator token: %w", err)
	}
	s.opHash = h
	return tok, nil
}

// IsOperator reports whether token is the operator token.
func (s *Service) IsOperator(token string) bool {
	if token == "" || s.opHash == ([32]byte{}) {
		return false
	}
	h := sha256.Sum256([]byte(token))
	return subtle.ConstantTimeCompare(h[:], s.opHash[:]) == 1
}

// CreateSchool creates a school.
func (s *Service) CreateSchool(ctx context.Context, name string) (storage.School, error) {
	name = strings.TrimSpace(name)
	if !proto.ValidName(name, 200) {
		return storage.School{}, proto.Errorf(proto.CodeInvalidRequest, "name must be 1 to 200 characters, no control characters")
	}
	sc := storage.School{ID: ids.New(), Name: name, CreatedAt: s.now().UTC()}
	if err := s.store.CreateSchool(ctx, sc); err != nil {
		return storage.School{}, err
	}
	return sc, nil
}

// NewUser is the input of CreateUser.
type NewUser struct {
	School      string
	Login       string
	DisplayName string
	Role        storage.Role
	ClientHash  []byte
}

// CreateUser creates a user after validating every field. A taken login is
// 409 conflict; an unknown school is 404.
func (s *Service) CreateUser(ctx context.Context, nu NewUser) (storage.User, error) {
	if err := validLogin(nu.Login); err != nil {
		return storage.User{}, err
	}
	nu.DisplayName = strings.TrimSpace(nu.DisplayName)
	if !proto.ValidName(nu.DisplayName, 200) {
		return storage.User{}, proto.Errorf(proto.CodeInvalidRequest, "display_name must be 1 to 200 characters, no control characters")
	}
	if !nu.Role.Valid() {
		return storage.User{}, proto.Errorf(proto.CodeInvalidRequest, "role must be admin, teacher, student or parent")
	}
	if len(nu.ClientHash) != ClientHashLen {
		return storage.User{}, proto.Errorf(proto.CodeInvalidRequest, "client_hash must be 32 bytes, base64")
	}
	if _, err := s.store.School(ctx, nu.School); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return storage.User{}, errNotFound
		}
		return storage.User{}, err
	}
	if _, err := s.store.UserByLogin(ctx, nu.Login); err == nil {
		return storage.User{}, proto.Errorf(proto.CodeConflict, "login is taken")
	}
	u := storage.User{
		ID:          ids.New(),
		School:      nu.School,
		Login:       nu.Login,
		DisplayName: nu.DisplayName,
		Role:        nu.Role,
		CreatedAt:   s.now().UTC(),
	}
	if err := s.withHashSlot(ctx, func() { u.PasswordHash = hashPassword(nu.ClientHash, s.cfg.Argon2) }); err != nil {
		return storage.User{}, err
	}
	if err := s.store.CreateUser(ctx, u); err != nil {
		if errors.Is(err, storage.ErrConflict) {
			return storage.User{}, proto.Errorf(proto.CodeConflict, "login is taken")
		}
		return storage.User{}, err
	}
	return u, nil
}

// maxLoginChars is the longest login, in characters.
const maxLoginChars = 128

func validLogin(l string) error {
	if l == "" || utf8.RuneCountInString(l) > maxLoginChars || strings.TrimSpace(l) != l {
		return proto.Errorf(proto.CodeInvalidRequest, "login must be 1 to 128 characters without surrounding spaces")
	}
	if proto.ContainsControl(l) || strings.ContainsRune(l, '/') {
		return proto.Errorf(proto.CodeInvalidRequest, "login must not contain control characters or '/'")
	}
	return nil
}

// withHashSlot runs fn (an Argon2 computation) when a slot is free.
func (s *Service) withHashSlot(ctx context.Context, fn func()) error {
	select {
	case s.hashSem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-s.hashSem }()
	fn()
	return nil
}

// Device is the device part of a login request.
type Device struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	OS       string `json:"os"`
	Personal *bool  `json:"personal"`
}

// ValidOS reports whether os is one API.md allows.
func ValidOS(os string) bool {
	switch os {
	case "ios", "android", "web", "macos", "windows", "linux":
		return true
	}
	return false
}

func (d *Device) validate() error {
	if !proto.ValidDeviceID(d.ID) {
		return proto.Errorf(proto.CodeInvalidRequest, "device.id must be 1 to %d characters without control characters", proto.MaxIDLen)
	}
	if utf8.RuneCountInString(d.Name) > 128 || !utf8.ValidString(d.Name) || proto.ContainsControl(d.Name) {
		return proto.Errorf(proto.CodeInvalidRequest, "device.name must be at most 128 characters without control characters")
	}
	if !ValidOS(d.OS) {
		return proto.Errorf(proto.CodeInvalidRequest, "device.os must be ios, android, web, macos, windows or linux")
	}
	if d.Personal == nil {
		return proto.Errorf(proto.CodeInvalidRequest, "device.personal is required")
	}
	return nil
}

// LoginResult is what a successful login returns.
type LoginResult struct {
	User       storage.User
	Credential storage.Credential
	Token      string
}

// Login checks a login and client_hash and issues a credential for the
// device. addr is the client's address (throttling, history).
func (s *Service) Login(ctx context.Context, login string, clientHash []byte, dev Device, addr netip.Addr) (LoginResult, error) {
	if login == "" || utf8.RuneCountInString(login) > maxLoginChars {
		return LoginResult{}, proto.Errorf(proto.CodeInvalidRequest, "login is required")
	}
	if len(clientHash) != ClientHashLen {
		return LoginResult{}, proto.Errorf(proto.CodeInvalidRequest, "client_hash must be 32 bytes, base64")
	}
	if err := dev.validate(); err != nil {
		return LoginResult{}, err
	}
	loginKey := strings.ToLower(login)
	addrKey := addr.String()
	gs, leave, err := s.enterGates(ctx, loginKey, addrKey)
	if err != nil {
		return LoginResult{}, err
	}
	defer leave()
	tl, ta, err := s.acquireLogin(ctx, loginKey, addrKey, gs)
	if err != nil {
		return LoginResult{}, err
	}
	defer func() { // after the failure is counted or taken back
		for _, g := range gs {
			g.endCheck()
		}
	}()
	release := func() {
		s.releaseFailure(s.byLogin, loginKey, tl)
		s.releaseFailure(s.byAddr, addrKey, ta)
	}
	now := s.now()

	u, err := s.store.UserByLogin(ctx, login)
	found := err == nil
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		release()
		return LoginResult{}, err
	}
	encoded := s.dummyHash
	if found {
		encoded = u.PasswordHash
	}
	var ok bool
	var verr error
	if err := s.withHashSlot(ctx, func() { ok, verr = verifyPassword(clientHash, encoded) }); err != nil {
		release()
		return LoginResult{}, err
	}
	if verr != nil {
		release()
		return LoginResult{}, fmt.Errorf("verify password of user %s: %w", u.ID, verr)
	}
	if !found || !ok || u.Disabled {
		// Already counted by acquire.
		if found {
			if err := s.store.RecordLoginFailure(ctx, u.ID); err != nil {
				s.log.Warn("record login failure", "err", err)
			}
		}
		return LoginResult{}, errBadLogin
	}
	s.clearFailures(s.byLogin, loginKey)
	s.releaseFailure(s.byAddr, addrKey, ta)
	// The password was right: only now may the answer tell that the
	// country restriction refuses the address.
	if err := s.checkCountry(ctx, u, addr); err != nil {
		return LoginResult{}, err
	}

	token, hash := newToken()
	name := dev.Name
	if name == "" {
		name = dev.OS
	}
	c := storage.Credential{
		ID:         ids.New(),
		TokenHash:  hash,
		UserID:     u.ID,
		School:     u.School,
		DeviceID:   dev.ID,
		DeviceName: name,
		OS:         dev.OS,
		CreatedAt:  now.UTC(),
		LastUsedAt: now.UTC(),
	}
	personal := *dev.Personal
	if personal {
		c.Kind = storage.CredTrust
		c.ServiceID = ids.New()
	} else {
		c.Kind = storage.CredSession
		c.ExpiresAt = now.Add(s.cfg.SessionIdle).UTC()
	}
	if err := s.store.PutCredential(ctx, c); err != nil {
		return LoginResult{}, err
	}
	if personal {
		// A personal device that logs in again replaces its trust
		// relationship. The new one is stored first, so the device never
		// has no credential (its public key stays in the directory).
		creds, err := s.store.CredentialsOf(ctx, u.ID)
		if err != nil {
			return LoginResult{}, err
		}
		for _, old := range creds {
			if old.Kind == storage.CredTrust && old.DeviceID == dev.ID && old.ID != c.ID {
				s.deleteCredential(ctx, old.ID)
			}
		}
	}
	ev := storage.LoginEvent{At: now.UTC(), IP: httpapi.Anonymize(addr), DeviceName: name}
	if err := s.store.RecordLoginSuccess(ctx, u.ID, ev, s.cfg.LoginHistory); err != nil {
		s.log.Warn("record login", "err", err)
	}
	return LoginResult{User: u, Credential: c, Token: token}, nil
}

// Authenticate is AuthenticateFrom without a client address: a user with
// a country restriction is refused (an address that cannot be located).
// Callers that have the address use AuthenticateFrom.
func (s *Service) Authenticate(ctx context.Context, token string) (Principal, error) {
	return s.AuthenticateFrom(ctx, token, netip.Addr{})
}

// AuthenticateFrom resolves a bearer token used from the client address
// addr to its principal. It is on the path of every request: one hash and
// two reads, plus a write at most once per TouchInterval. A user's country
// restriction that refuses addr is 403 country_blocked (geo.go).
func (s *Service) AuthenticateFrom(ctx context.Context, token string, addr netip.Addr) (Principal, error) {
	return s.authenticate(ctx, token, addr, "")
}

// known reports whether token is a live credential, without using it (no
// touch, no country check): for telling a user's token from a wrong one.
func (s *Service) known(ctx context.Context, token string) bool {
	c, err := s.credential(ctx, token)
	return err == nil && (c.Kind != storage.CredSession || s.now().Before(c.ExpiresAt))
}

// credential looks token's credential up; an implausible or unknown token
// is errUnauthorized.
func (s *Service) credential(ctx context.Context, token string) (storage.Credential, error) {
	if !plausibleToken(token) {
		return storage.Credential{}, errUnauthorized
	}
	c, err := s.store.CredentialByHash(ctx, hashToken(token))
	if errors.Is(err, storage.ErrNotFound) {
		return c, errUnauthorized
	}
	return c, err
}

// authenticate is AuthenticateFrom; a credential of another kind than
// only (when set) counts as unknown.
func (s *Service) authenticate(ctx context.Context, token string, addr netip.Addr, only storage.CredKind) (Principal, error) {
	c, err := s.credential(ctx, token)
	if err != nil {
		return Principal{}, err
	}
	if only != "" && c.Kind != only {
		return Principal{}, errUnauthorized
	}
	now := s.now()
	if c.Kind == storage.CredSession && !now.Before(c.ExpiresAt) {
		s.deleteCredential(ctx, c.ID)
		return Principal{}, errUnauthorized
	}
	u, err := s.activeUser(ctx, c.UserID)
	if err != nil {
		return Principal{}, err
	}
	if err := s.checkCountry(ctx, u, addr); err != nil {
		return Principal{}, err
	}
	s.touch(ctx, &c, now)
	return Principal{User: u, Cred: c}, nil
}

// Logout deletes the caller's credential (and with it a trust
// relationship's push registration).
func (s *Service) Logout(ctx context.Context, p Principal) error {
	s.deleteCredential(ctx, p.Cred.ID)
	return nil
}

// TrustInfo is one entry of GET /trust.
type TrustInfo struct {
	ID         string    `json:"id"`
	DeviceName string    `json:"device_name"`
	OS         string    `json:"os"`
	CreatedAt  time.Time `json:"created_at"`
	LastUsedAt time.Time `json:"last_used_at"`
	Push       bool      `json:"push"`
	Current    bool      `json:"current"`
}

// Trusts lists the caller's trust relationships.
func (s *Service) Trusts(ctx context.Context, p Principal) ([]TrustInfo, error) {
	creds, err := s.store.CredentialsOf(ctx, p.User.ID)
	if err != nil {
		return nil, err
	}
	out := make([]TrustInfo, 0, len(creds))
	for _, c := range creds {
		if c.Kind != storage.CredTrust {
			continue
		}
		out = append(out, TrustInfo{
			ID: c.ID, DeviceName: c.DeviceName, OS: c.OS,
			CreatedAt: c.CreatedAt, LastUsedAt: c.LastUsedAt,
			Push: c.Push != nil, Current: c.ID == p.Cred.ID,
		})
	}
	return out, nil
}

// ownTrust returns the caller's trust relationship id, or 404.
func (s *Service) ownTrust(ctx context.Context, p Principal, id string) (storage.Credential, error) {
	c, err := s.store.Credential(ctx, id)
	if err != nil || c.UserID != p.User.ID || c.Kind != storage.CredTrust {
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return c, err
		}
		return c, errNotFound
	}
	return c, nil
}

// RevokeTrust deletes one of the caller's trust relationships.
func (s *Service) RevokeTrust(ctx context.Context, p Principal, id string) error {
	if _, err := s.ownTrust(ctx, p, id); err != nil {
		return err
	}
	s.deleteCredential(ctx, id)
	return nil
}

// DeleteTrustPush deletes only the push registration of one of the caller's
// trust relationships.
func (s *Service) DeleteTrustPush(ctx context.Context, p Principal, id string) error {
	if _, err := s.ownTrust(ctx, p, id); err != nil {
		return err
	}
	err := s.store.UpdateCredential(ctx, id, func(c *storage.Credential) error {
		c.Push = nil
		return nil
	})
	if errors.Is(err, storage.ErrNotFound) {
		return errNotFound
	}
	return err
}

// deleteCredential removes a credential and announces it. Failures are
// logged: the caller's request has already been authorised.
func (s *Service) deleteCredential(ctx context.Context, id string) {
	c, err := s.store.DeleteCredential(ctx, id)
	if err != nil {
		if !errors.Is(err, storage.ErrNotFound) {
			s.log.Error("delete credential", "err", err)
		}
		return
	}
	s.cfg.OnRevoke(c)
}

// TouchInterval is how often the use of a credential is written back, as
// in force (Config.TouchInterval, lowered to fit SessionIdle): a long-lived
// socket rechecks its credential, and so records its client's use, this
// often.
func (s *Service) TouchInterval() time.Duration { return s.cfg.TouchInterval }

// SweepSessions deletes sessions idle past their deadline.
func (s *Service) SweepSessions(ctx context.Context) (int, error) {
	gone, err := s.store.DeleteExpiredSessions(ctx, s.now())
	for _, c := range gone {
		s.cfg.OnRevoke(c)
	}
	return len(gone), err
}

// Logins returns the caller's login history.
func (s *Service) Logins(ctx context.Context, p Principal) ([]storage.LoginEvent, error) {
	return s.logins(ctx, p.User.ID)
}

// logins returns the user's login history without the events past
// retention, which the sweep may not have removed yet.
func (s *Service) logins(ctx context.Context, userID string) ([]storage.LoginEvent, error) {
	ev, err := s.store.Logins(ctx, userID)
	if err != nil {
		return nil, err
	}
	cutoff := s.now().Add(-s.cfg.LoginRetention)
	kept := make([]storage.LoginEvent, 0, len(ev))
	for _, e := range ev {
		if !e.At.Before(cutoff) {
			kept = append(kept, e)
		}
	}
	return kept, nil
}

// SweepLogins removes from every user's login history the events past
// retention, and returns how many.
func (s *Service) SweepLogins(ctx context.Context) (int, error) {
	schools, err := s.store.Schools(ctx)
	if err != nil {
		return 0, err
	}
	cutoff := s.now().Add(-s.cfg.LoginRetention)
	removed := 0
	for _, sc := range schools {
		users, err := s.store.UsersOfSchool(ctx, sc.ID)
		if err != nil {
			return removed, err
		}
		for _, u := range users {
			n, err := s.store.ForgetLoginsBefore(ctx, u.ID, cutoff)
			removed += n
			if err != nil {
				return removed, err
			}
		}
	}
	return removed, nil
}

// Recheck confirms that p's credential still exists and has not expired,
// that its user still exists and that the user's country restriction (if
// any) allows addr, and records the use like Authenticate does.
// Long-lived WebSockets call it now and then; revocation closes them at
// once anyway, this is the safety net. It returns errUnauthorized when the
// credential or user is gone, country_blocked when the restriction
// refuses addr.
func (s *Service) Recheck(ctx context.Context, p *Principal, addr netip.Addr) error {
	c, u, err := s.check(ctx, p.Cred.ID, addr)
	if err != nil {
		return err
	}
	s.touch(ctx, &c, s.now())
	p.Cred = c
	p.User = u
	return nil
}

// Check is Recheck for a connection whose credential is credID, without
// recording a use: whether the credential may still be used from addr.
// The gateway calls it when the broker may have lost a revocation.
func (s *Service) Check(ctx context.Context, credID string, addr netip.Addr) error {
	_, _, err := s.check(ctx, credID, addr)
	return err
}

// check returns credential credID and its user when the credential still
// exists (a session not past its idle deadline: one past it is deleted),
// the user is active and the account's country restriction allows addr.
func (s *Service) check(ctx context.Context, credID string, addr netip.Addr) (storage.Credential, storage.User, error) {
	c, err := s.store.Credential(ctx, credID)
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return c, storage.User{}, errUnauthorized
		}
		return c, storage.User{}, err
	}
	if c.Kind == storage.CredSession && !s.now().Before(c.ExpiresAt) {
		s.deleteCredential(ctx, c.ID)
		return c, storage.User{}, errUnauthorized
	}
	u, err := s.activeUser(ctx, c.UserID)
	if err != nil {
		return c, u, err
	}
	if err := s.checkCountry(ctx, u, addr); err != nil {
		return c, u, err
	}
	return c, u, nil
}

// touch records the use of c at most once per TouchInterval, moving a
// session's idle deadline on.
func (s *Service) touch(ctx context.Context, c *storage.Credential, now time.Time) {
	if now.Sub(c.LastUsedAt) < s.cfg.TouchInterval {
		return
	}
	var exp time.Time
	if c.Kind == storage.CredSession {
		exp = now.Add(s.cfg.SessionIdle).UTC()
		c.ExpiresAt = exp
	}
	c.LastUsedAt = now.UTC()
	if err := s.store.TouchCredential(ctx, c.ID, c.LastUsedAt, exp); err != nil && !errors.Is(err, storage.ErrNotFound) {
		s.log.Warn("touch credential", "err", err)
	}
}

// activeUser returns the user behind a credential, or errUnauthorized when
// it is gone or disabled.
func (s *Service) activeUser(ctx context.Context, id string) (storage.User, error) {
	u, err := s.store.User(ctx, id)
	if errors.Is(err, storage.ErrNotFound) || err == nil && u.Disabled {
		return storage.User{}, errUnauthorized
	}
	return u, err
}

// enterGates waits for the login's turn at the gates of its address and
// of its login (gates), at most loginQueueWait in all, and returns them
// (address first) and the function that leaves them.
func (s *Service) enterGates(ctx context.Context, loginKey, addrKey string) ([]*gate, func(), error) {
	t := time.NewTimer(loginQueueWait)
	defer t.Stop()
	var keys []string
	var gs []*gate
	leave := func() {
		for i, k := range keys {
			s.gates.leave(k, i < len(gs))
		}
	}
	// The address first, then the login, in every attempt: no two wait
	// for each other's slots.
	for _, g := range []struct {
		key   string
		limit int
	}{{"addr " + addrKey, s.cfg.MaxFailuresPerAddr}, {"login " + loginKey, s.cfg.MaxFailuresPerLogin}} {
		gt, err := s.gates.enter(ctx, g.key, g.limit, t.C)
		keys = append(keys, g.key)
		if gt == nil {
			leave()
			if err == nil {
				err = &proto.Error{Code: proto.CodeRateLimited, Message: "too many logins at once; try again", RetryAfter: time.Second}
			}
			return nil, nil, err
		}
		gs = append(gs, gt)
	}
	return gs, leave, nil
}

// acquireLogin counts a login attempt as a failure for its login and its
// address until it succeeds (checking and counting in one step keeps
// concurrent attempts within the limits) and returns the tickets to take
// it back; the caller ends the check on gs (gate.endCheck) once they are
// released or the failure is recorded. Asking the limiters and noting the
// check happen under the gates' locks, so that a refusal sees every
// attempt of its keys on this node that holds a ticket.
//
// An attempt the limiters refuse while others of its keys are being
// checked waits for one of them to end and asks again (they may succeed
// and free their tickets), until loginQueueWait after it first asked;
// otherwise it is refused with 429.
func (s *Service) acquireLogin(ctx context.Context, loginKey, addrKey string, gs []*gate) (tl, ta string, err error) {
	t := time.NewTimer(loginQueueWait)
	defer t.Stop()
	for {
		for _, g := range gs {
			g.mu.Lock()
		}
		now := s.now()
		wl, tl, errl := s.byLogin.Acquire(ctx, loginKey, now)
		wa, ta, erra := s.byAddr.Acquire(ctx, addrKey, now)
		wait, err := max(wl, wa), cmp.Or(errl, erra)
		var ended []<-chan struct{}
		if err == nil && wait == 0 {
			for _, g := range gs {
				g.checking++
			}
		} else {
			if tl != "" {
				s.releaseFailure(s.byLogin, loginKey, tl)
			}
			if ta != "" {
				s.releaseFailure(s.byAddr, addrKey, ta)
			}
			for _, g := range gs {
				if g.checking > 0 {
					ended = append(ended, g.ended)
				}
			}
		}
		for _, g := range gs {
			g.mu.Unlock()
		}
		switch {
		case err != nil:
			return "", "", fmt.Errorf("brute-force counter: %w", err)
		case wait == 0:
			return tl, ta, nil
		case len(ended) == 0:
			return "", "", &proto.Error{Code: proto.CodeRateLimited, Message: "too many failed logins; try again later", RetryAfter: wait}
		}
		var other <-chan struct{}
		if len(ended) > 1 {
			other = ended[1]
		}
		select {
		case <-ended[0]:
		case <-other:
		case <-t.C:
			return "", "", &proto.Error{Code: proto.CodeRateLimited, Message: "too many logins at once; try again", RetryAfter: time.Second}
		case <-ctx.Done():
			return "", "", ctx.Err()
		}
	}
}

// releaseFailure takes back a failure counted by Acquire, and
// clearFailures forgets key's failures after a success. They run even when
// the request's context has ended: a success must not stay counted.
func (s *Service) releaseFailure(l Limiter, key, ticket string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := l.Release(ctx, key, ticket); err != nil {
		s.log.Warn("release brute-force counter", "err", err)
	}
}

func (s *Service) clearFailures(l Limiter, key string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := l.Reset(ctx, key); err != nil {
		s.log.Warn("reset brute-force counter", "err", err)
	}
}
