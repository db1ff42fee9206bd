package auth

import (
	"context"

	"klassenfunk/storage"
)

// Stats are the operator's statistics: counts only, nothing that names or
// singles out a person, a school or a device (API.md, GET /admin/stats).
type Stats struct {
	Schools  int `json:"schools"`
	Accounts struct {
		ByRole   map[storage.Role]int `json:"by_role"`
		ByStatus map[string]int       `json:"by_status"`
	} `json:"accounts"`
	TrustRelationships int            `json:"trust_relationships"`
	Sessions           int            `json:"sessions"`
	PushRegistrations  map[string]int `json:"push_registrations"`
	MessagesStored     int            `json:"messages_stored"`
	ErasedAccounts     int            `json:"erased_accounts"`
}

// registrationCounter is the part of storage.PushOutbox the statistics
// read; a store without it reports no registrations.
type registrationCounter interface {
	CountRegistrations(ctx context.Context) (map[string]int, error)
}

// Stats counts. Every key is present, zeros included, so that the shape
// does not depend on the data. Messages count until the sweep removes
// them (an expired message may count for up to one sweep interval).
func (s *Service) Stats(ctx context.Context) (Stats, error) {
	var st Stats
	schools, err := s.store.Schools(ctx)
	if err != nil {
		return st, err
	}
	st.Schools = len(schools)
	byRole, byStatus, err := s.store.CountUsers(ctx)
	if err != nil {
		return st, err
	}
	st.Accounts.ByRole = map[storage.Role]int{}
	for _, r := range []storage.Role{storage.RoleAdmin, storage.RoleTeacher, storage.RoleStudent, storage.RoleParent} {
		st.Accounts.ByRole[r] = byRole[r]
	}
	st.Accounts.ByStatus = map[string]int{"active": byStatus["active"], "disabled": byStatus["disabled"]}
	kinds, err := s.store.CountCredentials(ctx)
	if err != nil {
		return st, err
	}
	st.TrustRelationships, st.Sessions = kinds[storage.CredTrust], kinds[storage.CredSession]
	st.PushRegistrations = map[string]int{"fcm": 0, "apns": 0}
	if rc, ok := s.store.(registrationCounter); ok {
		regs, err := rc.CountRegistrations(ctx)
		if err != nil {
			return st, err
		}
		for p, n := range regs {
			if _, known := st.PushRegistrations[p]; known {
				st.PushRegistrations[p] = n
			}
		}
	}
	if st.MessagesStored, err = s.store.CountMessages(ctx); err != nil {
		return st, err
	}
	tombs, err := s.store.Tombstones(ctx)
	if err != nil {
		return st, err
	}
	st.ErasedAccounts = len(tombs)
	return st, nil
}
