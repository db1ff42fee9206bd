package messenger

// MaskedFrame builds a masked client frame for the external tests
// (clientFrame with a fixed key).
func MaskedFrame(b0 byte, payload string) []byte { return clientFrame(b0, []byte(payload), testKey) }
