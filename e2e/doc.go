// Package e2e holds end-to-end tests: they build the real klassenfunk and
// kfchat binaries, run the server as a subprocess and drive it through the
// CLIs exactly as docs/quickstart.md does, then audit everything the server
// left on disk and in its logs for plaintext and secrets.
package e2e
