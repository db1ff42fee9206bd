// Package auth owns identity and trust: schools, users and roles, login
// with a client-side pre-hashed password, trust relationships (long-lived
// device tokens) and sessions (short-lived tokens of shared devices), the
// login history and the brute-force defence.
//
// # Passwords
//
// Clients never send the password. They send client_hash =
// PBKDF2-HMAC-SHA256(password, "klassenfunk/v1/"+lowercase(login), 600000,
// 32) (see ClientHash). The server stores Argon2id of the client_hash with a
// random salt, encoded as
//
//	$argon2id$v=19$m=<KiB>,t=<passes>,p=<lanes>$<salt b64>$<hash b64>
//
// so parameters can be raised later without breaking stored hashes.
//
// # Tokens
//
// Credentials are 256-bit random tokens, handed out once and stored only as
// their SHA-256. Checking one is a hash and one indexed read: no Argon2 per
// request. Use of a credential is written back at most once per
// TouchInterval, which is also the granularity of a session's idle deadline.
//
// # Brute force
//
// Failed logins are counted per login and per client address in a sliding
// window. While either is over its limit every attempt gets 429 with
// Retry-After, even one with the right password. The counters live in the
// node's memory: a restart forgets them, and in a cluster each node counts
// on its own.
package auth
