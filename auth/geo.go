package auth

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/oschwald/maxminddb-golang/v2"

	"klassenfunk/internal/httpapi"
	"klassenfunk/proto"
	"klassenfunk/storage"
)

// Locator finds the country of a client address for the login-country
// restriction (API.md, PUT /me/countries).
type Locator interface {
	// Country returns the ISO 3166-1 alpha-2 code of the country a is
	// located in, and false when a cannot be located.
	Country(a netip.Addr) (code string, ok bool)
}

// GeoIP is a Locator over a MaxMind-format database (GeoLite2-Country,
// GeoIP2-Country or -City, or any database with the same "country" and
// "registered_country" records, such as DB-IP's). Safe for concurrent use.
type GeoIP struct {
	db *maxminddb.Reader
}

var _ Locator = (*GeoIP)(nil)

// OpenGeoIP opens the database file at path.
func OpenGeoIP(path string) (*GeoIP, error) {
	db, err := maxminddb.Open(path)
	if err != nil {
		return nil, fmt.Errorf("auth: GeoIP database %s: %w", path, err)
	}
	return &GeoIP{db: db}, nil
}

// Country implements Locator: the record's country, or, when it has none
// (satellite and anycast networks), its registered country.
func (g *GeoIP) Country(a netip.Addr) (string, bool) {
	var rec struct {
		Country struct {
			ISOCode string `maxminddb:"iso_code"`
		} `maxminddb:"country"`
		Registered struct {
			ISOCode string `maxminddb:"iso_code"`
		} `maxminddb:"registered_country"`
	}
	if err := g.db.Lookup(a.Unmap()).Decode(&rec); err != nil {
		return "", false
	}
	code := rec.Country.ISOCode
	if code == "" {
		code = rec.Registered.ISOCode
	}
	if !ValidCountry(code) {
		return "", false
	}
	return code, true
}

// Describe names the database (type and build date) for the start log.
func (g *GeoIP) Describe() string {
	m := g.db.Metadata
	return fmt.Sprintf("%s built %s", m.DatabaseType, m.BuildTime().UTC().Format(time.DateOnly))
}

// Close releases the database.
func (g *GeoIP) Close() error { return g.db.Close() }

// MaxCountries is the most countries a restriction may list.
const MaxCountries = 50

// isoCountries are the officially assigned ISO 3166-1 alpha-2 codes, and XK
// (Kosovo, user-assigned, which GeoIP databases use).
const isoCountries = "" +
	"AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ " +
	"CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR " +
	"GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP " +
	"KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT " +
	"MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW " +
	"SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG " +
	"UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW XK"

// ValidCountry reports whether code is an assigned ISO 3166-1 alpha-2 code
// in upper case (or XK).
func ValidCountry(code string) bool {
	if len(code) != 2 || code[0] < 'A' || code[0] > 'Z' || code[1] < 'A' || code[1] > 'Z' {
		return false
	}
	for i := 0; i+2 <= len(isoCountries); i += 3 {
		if isoCountries[i:i+2] == code {
			return true
		}
	}
	return false
}

// normalizeCountries validates a restriction and returns it sorted and
// without duplicates. An empty list stays empty: no country is allowed.
func normalizeCountries(list []string) ([]string, error) {
	out := make([]string, 0, len(list))
	for _, c := range list {
		if !ValidCountry(c) {
			return nil, proto.Errorf(proto.CodeInvalidRequest, "allowed: %q is not an ISO 3166-1 alpha-2 country code in upper case", c)
		}
		out = append(out, c)
	}
	slices.Sort(out)
	out = slices.Compact(out)
	if len(out) > MaxCountries {
		return nil, proto.Errorf(proto.CodeInvalidRequest, "allowed: at most %d countries", MaxCountries)
	}
	return out, nil
}

// locate returns the country of a. Addresses that are not public
// (loopback, private, link-local, unspecified, multicast) and invalid ones
// are never located, whatever the database says.
func (s *Service) locate(a netip.Addr) (string, bool) {
	a = a.Unmap()
	if s.cfg.Locator == nil || !a.IsValid() || a.IsLoopback() || a.IsPrivate() ||
		a.IsLinkLocalUnicast() || a.IsUnspecified() || a.IsMulticast() {
		return "", false
	}
	return s.cfg.Locator.Country(a)
}

// GeoIP reports whether a GeoIP database is configured: without one no
// restriction can be set.
func (s *Service) GeoIP() bool { return s.cfg.Locator != nil }

// noticeQuiet is how long a repeat of the same refusal (same country and
// anonymised address) adds no new notice: an app that retries does not
// push the user's other notices out.
const noticeQuiet = 10 * time.Minute

// keepNotices is how many notices a user keeps.
const keepNotices = 20

// checkCountry refuses a with 403 country_blocked when u has a country
// restriction and a is not located in one of its countries (or cannot be
// located at all), and leaves the user a notice.
func (s *Service) checkCountry(ctx context.Context, u storage.User, a netip.Addr) error {
	if u.Countries == nil {
		return nil
	}
	country, ok := s.locate(a)
	if ok && slices.Contains(u.Countries, country) {
		return nil
	}
	ip := httpapi.Anonymize(a)
	if s.cfg.Locator == nil {
		s.log.Error("country restriction cannot be checked: no GeoIP database configured (geoip_db); refusing", "user", u.ID)
	} else {
		s.log.Info("country restriction: refused", "user", u.ID, "country", country, "ip", ip)
	}
	if a.IsValid() {
		// Without an address the caller is the server itself
		// (Authenticate), not a client attempt worth telling the user.
		s.addNotice(ctx, u.ID, storage.Notice{At: s.now().UTC(), Kind: storage.NoticeCountryBlocked, Country: country, IP: ip})
	}
	return errCountryBlocked
}

// addNotice stores n unless the same notice (kind, country, anonymised
// address) was stored within noticeQuiet. Failures are logged: the refusal
// stands anyway.
func (s *Service) addNotice(ctx context.Context, userID string, n storage.Notice) {
	list, err := s.store.Notices(ctx, userID)
	if err == nil {
		for _, o := range list {
			if o.Kind == n.Kind && o.Country == n.Country && o.IP == n.IP && n.At.Sub(o.At) < noticeQuiet && !n.At.Before(o.At) {
				return
			}
		}
	}
	if err := s.store.AddNotice(ctx, userID, n, keepNotices); err != nil && !errors.Is(err, storage.ErrNotFound) {
		s.log.Warn("store notice", "err", err)
	}
}

// CheckCountry re-checks an open connection of userID from a against the
// account as stored now: errUnauthorized when the account is gone or
// disabled, country_blocked when its restriction refuses a. The messenger
// calls it when a restriction changes.
func (s *Service) CheckCountry(ctx context.Context, userID string, a netip.Addr) error {
	u, err := s.activeUser(ctx, userID)
	if err != nil {
		return err
	}
	return s.checkCountry(ctx, u, a)
}

// IsCountryBlocked reports whether err is the refusal of a country
// restriction (403 country_blocked; WebSocket close 4403).
func IsCountryBlocked(err error) bool {
	var pe *proto.Error
	return errors.As(err, &pe) && pe.Code == proto.CodeCountryBlocked
}

// Countries returns the caller's restriction (nil: none) and whether the
// server can check one.
func (s *Service) Countries(ctx context.Context, p Principal) ([]string, bool, error) {
	u, err := s.store.User(ctx, p.User.ID)
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return nil, false, errUnauthorized
		}
		return nil, false, err
	}
	return u.Countries, s.GeoIP(), nil
}

// SetCountries sets the caller's restriction: nil removes it, an empty
// list allows no country at all. Without a GeoIP database only removing is
// possible (409 conflict). Setting one re-checks the user's open
// WebSockets at once (Config.OnCountries).
func (s *Service) SetCountries(ctx context.Context, p Principal, allowed []string) error {
	if allowed != nil {
		if s.cfg.Locator == nil {
			return proto.Errorf(proto.CodeConflict, "no GeoIP database configured: this server cannot check a country restriction")
		}
		var err error
		if allowed, err = normalizeCountries(allowed); err != nil {
			return err
		}
	}
	err := s.store.UpdateUser(ctx, p.User.ID, func(u *storage.User) error {
		u.Countries = slices.Clone(allowed)
		if allowed != nil && u.Countries == nil {
			u.Countries = []string{}
		}
		return nil
	})
	if errors.Is(err, storage.ErrNotFound) {
		return errUnauthorized
	}
	if err != nil {
		return err
	}
	if allowed != nil {
		s.log.Info("country restriction set", "user", p.User.ID, "countries", strings.Join(allowed, ","))
		s.cfg.OnCountries(p.User.ID)
	} else {
		s.log.Info("country restriction removed", "user", p.User.ID)
	}
	return nil
}

// Notices returns the caller's notices, newest first.
func (s *Service) Notices(ctx context.Context, p Principal) ([]storage.Notice, error) {
	return s.store.Notices(ctx, p.User.ID)
}
