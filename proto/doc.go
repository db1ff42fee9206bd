// Package proto defines the Klassenfunk WebSocket wire format shared by the
// server and its clients: frame types, limits, validation, API error codes
// and WebSocket close codes. It is the single place where the rules of
// API.md ("Messages" and "WebSocket") are turned into code; servers and
// clients both import it. Besides the standard library it imports only
// github.com/valyala/fastjson, with which [DecodeClientFrame] and
// [DecodeSend] parse; they fall back to encoding/json for input fastjson
// would read differently, so that the results are exactly those of
// encoding/json.
//
// # Frames
//
// Every WebSocket text frame is exactly one JSON object of at most
// [MaxFrameSize] bytes with a "type" member. Clients send [TypeAuth],
// [TypeSend], [TypeSync] and [TypePing]; the server answers with
// [TypeReady], [TypeSent], [TypeMessage], [TypeError], [TypePong] and
// [TypeSynced].
//
// The server parses client frames with [DecodeClientFrame], which both
// decodes and validates: a frame it accepts satisfies every limit below. A
// rejected frame yields an [*Error] whose [Code] is [CodeInvalidRequest] or
// [CodePayloadTooLarge], suitable for an error frame built with
// [AppendError]. The body of POST /conversations/{id}/messages is parsed
// with [DecodeSend] under the same rules.
//
// Server frames are written with the hand-written appenders ([AppendReady],
// [AppendSent], [AppendMessage], [AppendError], [AppendPong],
// [AppendSynced]), which produce compact JSON without reflection and, given
// a large enough buffer, without allocating. Clients decode them with
// [DecodeServerFrame] and write their own frames with [AppendAuth],
// [AppendSendFrame], [AppendSync] and [AppendPing].
//
// # Decoding rules
//
// Member names are matched exactly (encoding/json alone would match "TYPE"
// to "type"); unknown members, and members that belong to another frame
// type, are ignored. A member whose value is JSON null counts as absent. If
// a name occurs twice, the last occurrence wins. Frames must be valid UTF-8.
// All length limits on strings count bytes of the decoded (unescaped) UTF-8
// string, except that of a device id, which counts characters.
//
// A key name in a send's "keys" object is "<user id>/<device id>", split at
// the first '/': the user id is non-empty and at most [MaxIDLen] bytes, the
// device id is non-empty, at most [MaxIDLen] characters (the app chose it at
// login, where API.md counts characters) and may contain any character,
// including '/'. See [KeyName], [SplitKeyName] and [ValidDeviceID].
//
// Sync cursors must be JSON integers written as plain digits: negative
// numbers, fractions and exponents (even 1e2 or 1.0) are invalid, as are
// values above the uint64 range.
//
// # Binary values
//
// Binary values (ciphertext and wrapped keys) travel as standard base64
// with padding (RFC 4648 section 4). [DecodeClientFrame] and [DecodeSend]
// decode them strictly: the URL-safe alphabet, missing padding, embedded
// CR/LF and non-zero trailing padding bits are all rejected with
// [CodeInvalidRequest], so every accepted value has exactly one encoding.
//
// This is stricter than encoding/json's []byte decoding, which (checked
// with Go 1.26) accepts padded standard base64 and rejects the URL-safe
// alphabet and unpadded input, but silently skips '\r' and '\n' anywhere in
// the string and accepts non-zero trailing bits ("QUJ=" decodes like
// "QUI="). Code that decodes a [Send] or [Message] with encoding/json
// instead of this package inherits that leniency; servers should therefore
// use [DecodeSend] for request bodies. Encoders in this package always emit
// canonical padded standard base64.
//
// # Limits
//
// A send carries a non-empty ciphertext of at most [MaxCiphertextSize]
// decoded bytes, between 1 and [MaxKeys] wrapped keys of 1 to
// [MaxWrappedKeySize] decoded bytes each, and at most [MaxAttachments]
// distinct attachment ids. Ids (ref, client_id, conversation ids,
// attachment ids, user and device ids in key names) are 1 to [MaxIDLen]
// bytes. A sync names at most [MaxCursors] conversations; an auth token is
// 1 to [MaxTokenLen] bytes. The largest valid send with plain ASCII ids
// fits in one frame.
//
// Exceeding a size or count limit is [CodePayloadTooLarge]; every other
// violation is [CodeInvalidRequest]. When a frame breaks several rules, the
// code reported never depends on map iteration order: members are checked
// in a fixed order, and among the entries of keys an invalid one is
// reported before an oversized one.
//
// # Errors and close codes
//
// [Code] names the API error codes and maps them to HTTP statuses; [Error]
// carries a code and a human-readable message and implements error.
// [CloseCode] lists the WebSocket close codes the server uses; its String
// method gives the short reason used as close text and metric label.
//
// # Encoding details
//
// The appenders escape strings as encoding/json does, except that '<', '>'
// and '&' are not HTML-escaped: '"', '\\' and control characters are
// escaped, U+2028 and U+2029 are written as \u2028 and \u2029, and each
// byte of invalid UTF-8 becomes U+FFFD. Times are written in UTC with
// [time.RFC3339Nano]; they must lie within the years 0 to 9999.
package proto
