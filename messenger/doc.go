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
// Each connection has exactly two goroutines: the reader (the HTTP
// handler's goroutine, which also runs sends synchronously so a client's
// sends keep their order) and the writer, which owns the socket's write
// side, the per-conversation seq map and all store reads for sync and gap
// filling. Everyone else only enqueues into the connection's bounded queue
// and never blocks; a full queue disconnects the client with 4429.
package messenger
