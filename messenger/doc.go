// Package messenger is the real-time heart of Klassenfunk: conversations
// and their policy, the public-key directory, the message service, the
// WebSocket gateway with its hub, the broker that carries events between
// nodes, presence, and the retention sweeper for messages and attachments.
//
// # The path of one message
//
// A send (WebSocket frame or HTTP POST) is validated (package proto),
// authorised (member with can_write), appended to the store (durable,
// seq allocated, idempotent by client id) and only then acknowledged with
// "sent" and published through the Broker to every member user. Each node's
// Hub hands the event to the user's connections on that node; each
// connection's writer filters the wrapped keys down to its own device.
//
// # Ordering and at-least-once
//
// The store is the truth; the broker is a fast path. Every connection's
// writer remembers the last seq it wrote per conversation: a duplicate is
// dropped, and a gap (a later seq overtook an earlier one between nodes or
// goroutines) is filled from the store before the later message is
// written. A client that missed anything (slow reader, node restart, broker
// outage) recovers it with sync.
//
// # Goroutines and ownership
//
// A connection has at most one reader (a poller worker while the socket
// has data, or a goroutine of its own while it closes; it runs sends
// synchronously so a client's sends keep their order) and at most one
// writer at a time, which owns the socket's write side, the
// per-conversation seq map and all store reads for sync and gap filling.
// The writer is a pool goroutine while the queue has work, or, for one
// frame, the goroutine that had it to send while the socket was idle: the
// reader for its own "sent" frames (it may wait for its own socket), a
// local publisher for a live message that is the next of its
// conversation (conn.deliver; it never waits: a writer finishes what the
// socket did not take). Everyone else only enqueues into the connection's
// bounded queue and never blocks; a full queue disconnects the client
// with 4429.
package messenger
