package server

import (
	"context"
	"time"

	"klassenfunk/push"
	"klassenfunk/storage"
)

// openPush starts the push relay over the node's store, with the
// messenger's presence (this node's sockets, and in cluster mode the
// others'). A store without a push outbox leaves push off.
func (s *Server) openPush(ctx context.Context) error {
	st, ok := s.store.(push.Store)
	if !ok {
		s.log.Warn("push off: this storage backend keeps no push outbox")
		return nil
	}
	p := s.cfg.Push
	tuning := p.Tuning
	if s.cfg.RedisURL != "" && tuning.Rescan == 0 {
		// The outbox is shared: pick up what a node that died had queued.
		tuning.Rescan = time.Minute
	}
	relay, err := push.New(ctx, push.Config{
		Store:      st,
		Presence:   s.Msg,
		Log:        s.log.With("component", "push"),
		Registerer: s.reg,
		FCM:        push.FCMConfig{CredentialsFile: p.FCMCredentials, Endpoint: p.FCMEndpoint},
		APNs: push.APNsConfig{
			KeyFile: p.APNSKeyFile, KeyID: p.APNSKeyID, TeamID: p.APNSTeamID, Endpoint: p.APNSEndpoint,
		},
		CAFile: p.CAFile,
		Tuning: tuning,
		Now:    s.cfg.Now,
	})
	if err != nil {
		return err
	}
	s.Push = relay
	return nil
}

// onMessage is the messenger's OnMessage: it hands a stored message to the
// relay without blocking.
func (s *Server) onMessage(conv *storage.Conversation, m *storage.Message) {
	if s.Push != nil {
		s.Push.Notify(conv, m)
	}
}
