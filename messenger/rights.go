package messenger

import (
	"context"
	"errors"
	"time"

	"klassenfunk/auth"
	"klassenfunk/proto"
)

// Account-wide socket control for the users' data rights and the country
// restriction (auth's OnErase and OnCountries).

// CloseUser closes every socket of the user on every node with code (an
// erased account: 4401).
func (n *Node) CloseUser(userID string, code proto.CloseCode) {
	if err := n.broker.Publish(context.Background(), []string{userID}, &Event{Kind: EventClose, Code: code}); err != nil {
		n.log.Error("publish close", "err", err)
	}
}

// CheckCountry makes every node check each socket of the user against the
// account's country restriction at once: a socket from an address the
// restriction refuses closes with 4403. Wire it to auth's OnCountries.
func (n *Node) CheckCountry(userID string) {
	if err := n.broker.Publish(context.Background(), []string{userID}, &Event{Kind: EventCountryCheck}); err != nil {
		n.log.Error("publish country check", "err", err)
	}
}

// checkCountry runs on its own goroutine (the hub must not block).
func (c *conn) checkCountry() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := c.n.auth.CheckCountry(ctx, c.userID, c.addr)
	var pe *proto.Error
	switch {
	case err == nil:
	case errors.As(err, &pe):
		c.closeWith(closeCodeOf(err))
	default:
		c.n.log.Warn("country check", "err", err)
	}
}

// closeCodeOf maps an authentication failure to its close code: 4403 for a
// country restriction, 4401 for everything else.
func closeCodeOf(err error) proto.CloseCode {
	if auth.IsCountryBlocked(err) {
		return proto.CloseCountryBlocked
	}
	return proto.CloseUnauthorized
}
