package proto

// Limits of the wire format. Sizes are in bytes; see the package
// documentation for how they are applied.
const (
	// MaxFrameSize is the largest WebSocket text frame either side may send.
	// The server closes the connection with [CloseTooLarge] when a client
	// exceeds it.
	MaxFrameSize = 1 << 20

	// MaxCiphertextSize is the largest ciphertext of a message, counted in
	// decoded bytes.
	MaxCiphertextSize = 64 << 10

	// MaxWrappedKeySize is the largest wrapped key of a message, counted in
	// decoded bytes.
	MaxWrappedKeySize = 256

	// MaxKeys is the largest number of wrapped keys in one message.
	MaxKeys = 1024

	// MaxAttachments is the largest number of attachment ids in one message.
	MaxAttachments = 32

	// MaxIDLen is the longest ref, client_id, conversation id, attachment
	// id or user id. A device id may have as many characters (API.md: "max
	// 128 chars"), which is up to four times as many bytes; see
	// [ValidDeviceID].
	MaxIDLen = 128

	// MaxCursors is the largest number of conversations named in one sync
	// frame.
	MaxCursors = 10000

	// MaxTokenLen is the longest credential accepted in an auth frame.
	MaxTokenLen = 512
)
