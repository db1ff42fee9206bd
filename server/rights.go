package server

import (
	"klassenfunk/auth"
	"klassenfunk/proto"
)

// Wiring of the users' data rights and the country restriction.

// openGeoIP opens the configured GeoIP database. A configured file that
// cannot be opened stops the start: running without it would refuse every
// user who set a restriction.
func (s *Server) openGeoIP() error {
	if s.cfg.GeoIPDB == "" {
		s.log.Info("country restriction off: no GeoIP database configured (geoip_db)")
		return nil
	}
	g, err := auth.OpenGeoIP(s.cfg.GeoIPDB)
	if err != nil {
		return err
	}
	s.geo = g
	s.log.Info("country restriction on", "geoip", g.Describe())
	return nil
}

// locator is the GeoIP database as an auth.Locator, nil (not a nil
// pointer) without one.
func (s *Server) locator() auth.Locator {
	if s.geo == nil {
		return nil
	}
	return s.geo
}

func (s *Server) closeGeoIP() {
	if s.geo != nil {
		s.geo.Close()
	}
}

// onErase is called by auth after an account was erased: every socket of
// the user still open on any node closes with 4401.
// (auth logs the erasure itself.)
func (s *Server) onErase(userID string) {
	if s.Msg != nil {
		s.Msg.CloseUser(userID, proto.CloseUnauthorized)
	}
}

// onCountries is called by auth after a user set a country restriction:
// the user's open sockets are checked against it at once (4403).
func (s *Server) onCountries(userID string) {
	if s.Msg != nil {
		s.Msg.CheckCountry(userID)
	}
}
