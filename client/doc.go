// Package client is the reference client of Klassenfunk: it logs in, keeps
// a device key pair, encrypts and decrypts messages and attachments end to
// end, and holds a WebSocket session that reconnects and resyncs on its
// own. The server never sees a plaintext; everything it stores is opaque to
// it. The kfchat command (cmd/kfchat) is a thin CLI over this package.
//
// # Pieces
//
//   - [Client] speaks the HTTP API of API.md (login, keys, conversations,
//     messages, attachments, trust relationships).
//   - [DeviceKey] is the device's X25519 key pair. [DeviceKey.SealMessage]
//     and [DeviceKey.OpenMessage] implement the message format of
//     docs/e2ee.md: a random content key, the body sealed with
//     AES-256-GCM, the content key wrapped for every member device with
//     HPKE (RFC 9180, DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 /
//     AES-256-GCM, from crypto/hpke). [SealAttachment] and
//     [OpenAttachment] do the same for attachment bytes, whose keys travel
//     inside the encrypted message.
//   - [Chat] is a logged-in device (API client, key, own address): it
//     encrypts for a conversation's devices, sends, and decrypts.
//   - [Session] is the WebSocket: it syncs from persisted cursors after
//     every (re)connect, reconnects with capped, jittered backoff, stops on
//     revocation (4401) and country blocks (4403), deduplicates by message
//     id and advances cursors only over contiguous seqs.
//   - [State] is the per-user state directory (0700) with its 0600 files:
//     account and credential, device private key, cursors.
//   - [OpenPushBlob] decrypts the sealed blob of a push notification.
//
// # Errors
//
// Sentinel errors live in errors.go and are compared with errors.Is; API
// errors are [*APIError]. Decryption failures are deliberately coarse
// ([ErrNotForDevice], [ErrKeyUnwrap], [ErrBodyAuth], [ErrFormat]) and never
// say more than which step failed.
package client
