// Package storage holds Klassenfunk's durable records and their backends.
//
// # Records
//
// The record types (School, User, Credential, Conversation, Message, …) are
// plain structs shared by every backend. Message bodies and attachments are
// ciphertext the server never interprets; everything else is routing
// metadata.
//
// # Backends
//
// Bolt (this package) keeps everything in one bbolt file: the embedded
// deployment. Every write is durable when the method returns (bbolt commits
// with fsync). Concurrent small writes from many goroutines are grouped into
// one transaction and one fsync with bbolt's Batch.
//
// # Conformance
//
// Package storagetest holds the conformance suite every backend must pass:
// storagetest.Run(t, factory).
package storage
