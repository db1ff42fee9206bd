package messenger

import (
	"context"
	"sync"

	"klassenfunk/proto"
	"klassenfunk/storage"
)

// EventKind tells what an Event carries.
type EventKind uint8

// Event kinds.
const (
	// EventMessage carries a stored message to its members' devices.
	EventMessage EventKind = iota + 1
	// EventClose closes a credential's sockets (revocation) or, with an
	// empty CredID, every socket of the user (erasure, country block).
	EventClose
	// EventCountryCheck re-checks every socket of the user against the
	// account's country restriction, which has just been set (rights.go).
	EventCountryCheck
)

// Event is what travels through the Broker.
type Event struct {
	Kind EventKind `json:"k"`
	// Message is the whole stored message (every wrapped key); each
	// connection writes only its own device's key.
	Message *storage.Message `json:"m,omitempty"`
	// ExcludeDevice is "<user>/<device>" of the sending device, which got
	// "sent" instead.
	ExcludeDevice string `json:"x,omitempty"`
	// CredID and Code are for EventClose.
	CredID string          `json:"c,omitempty"`
	Code   proto.CloseCode `json:"cc,omitempty"`

	// queued makes the hub queue the event's message for the sockets'
	// writers rather than have the publishing goroutine write it
	// (Hub.deliver, conn.deliver): for an event from another node, which
	// arrives on the broker's one goroutine, and for one to more than
	// inlineFanout users, whose sockets one goroutine would write one
	// after the other while the sender waits for its "sent".
	queued bool
}

// Broker carries events to the nodes holding a user's connections.
//
// A broker is a fast path, not a store: an event published while a node is
// cut off is lost for that node, and its clients recover through sync.
type Broker interface {
	// Publish delivers ev to every node subscribed to one of the users.
	Publish(ctx context.Context, userIDs []string, ev *Event) error
	// Subscribe makes this node receive the events of userID. The hub
	// calls it when the user's first connection arrives.
	Subscribe(userID string) error
	// Unsubscribe stops that when the user's last connection leaves.
	Unsubscribe(userID string) error
	// SetDeliver sets where this node's events go (the hub). Called once,
	// before the first Subscribe.
	SetDeliver(d DeliverFunc)
}

// Recoverer is a Broker that can lose events (a network broker) and says
// when it is whole again, so that the hub catches its sockets up from the
// store: those of the users for which lost reports true (the users whose
// events went through the part of the broker that failed).
type Recoverer interface {
	SetOnRecover(func(lost func(userID string) bool))
	// SubscriptionFailures counts the times a part of the broker lost its
	// subscription or failed to subscribe again (a metric).
	SubscriptionFailures() uint64
}

// DeliverFunc receives the events of subscribed users on this node. It
// must not block.
type DeliverFunc func(userID string, ev *Event)

// MemoryBroker is the in-process broker of the embedded deployment: Publish
// calls the node's deliver function directly.
type MemoryBroker struct {
	mu      sync.RWMutex
	deliver DeliverFunc // guarded by mu
}

var _ Broker = (*MemoryBroker)(nil)

// NewMemoryBroker returns an in-process broker.
func NewMemoryBroker() *MemoryBroker { return &MemoryBroker{} }

// SetDeliver implements Broker.
func (b *MemoryBroker) SetDeliver(d DeliverFunc) {
	b.mu.Lock()
	b.deliver = d
	b.mu.Unlock()
}

// Publish implements Broker.
func (b *MemoryBroker) Publish(ctx context.Context, userIDs []string, ev *Event) error {
	b.mu.RLock()
	d := b.deliver
	b.mu.RUnlock()
	if d == nil {
		return nil
	}
	for _, u := range userIDs {
		d(u, ev)
	}
	return nil
}

// Subscribe implements Broker; the hub filters by itself.
func (b *MemoryBroker) Subscribe(string) error { return nil }

// Unsubscribe implements Broker.
func (b *MemoryBroker) Unsubscribe(string) error { return nil }
