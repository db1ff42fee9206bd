// Package push is the push relay: it wakes the apps of offline devices
// through FCM and APNs with content-free pushes (API.md, "What Google and
// Apple receive").
//
// # The path of a push
//
//	messenger OnMessage ──▶ Relay.Notify (never blocks; bounded intake, drops counted)
//	    ──▶ resolver: member devices with a registration, not the sender's device,
//	        not online (Presence) ──▶ outbox (storage.PushOutbox, one durable write per batch)
//	    ──▶ scheduler: one pending push per device (the newest message), due times,
//	        coalesce window, backoff ──▶ per provider: bounded work channel ──▶ workers
//	    ──▶ re-check (expiry, registration, presence) ──▶ seal ──▶ FCM / APNs
//	    ──▶ acker: the outbox entry is deleted (one durable write per batch)
//
// The outbox is keyed by device (trust credential), so the messages of a
// burst that wait for a device's coalesce window to end become one push,
// for the newest message; the burst's first message is pushed at once. Providers collapse what is still undelivered: FCM by
// collapse key, APNs by apns-collapse-id, both the service ID (one key per
// device: FCM keeps at most four per device).
//
// # Delivery
//
// A push is accepted for sending once its outbox entry is written; it
// survives a restart. The entry is deleted only after the provider took the
// push (or the push was dropped), and only if it still names that message:
// a newer message that arrived meanwhile stays pending. Close waits for the
// sends in flight and flushes the deletions, so a restart does not send a
// push twice; only a crash between the provider's answer and the deletion
// can (and then the provider's collapse key folds the two), or a send that
// Close cancelled after Tuning.CloseGrace which the provider had taken.
//
// Throttling (429), server errors (5xx) and transport failures are retried
// with exponential backoff and jitter, never sooner than a Retry-After
// says, until the message expires (then the push is dropped and counted).
// The FCM SDK retries 503 and transport failures itself within one send
// (up to four times, honouring Retry-After); Tuning.SendTimeout bounds such
// a burst, which counts as one attempt of the relay. A dead token (FCM
// UNREGISTERED or an invalid-token INVALID_ARGUMENT, APNs 410,
// BadDeviceToken, Unregistered, ExpiredToken) deletes the registration.
//
// # What leaves the server
//
// FCM gets a data-only message {"sid": service ID, "p": blob}, Android
// priority high, TTL = the message's remaining retention (at most FCM's
// four weeks). APNs gets {"aps":{"alert":{"loc-key":"NEW_MESSAGE"},
// "mutable-content":1,"sound":"default"},"sid":…,"p":…}, push type alert,
// priority 10, apns-expiration = the message's expires_at. The blob is
// Seal's AES-256-GCM of {"t":"message","c":…,"m":…,"s":…} under the
// device's push secret with the service ID as additional data. Logs never
// hold a token (only a fingerprint), a secret or a blob.
package push
