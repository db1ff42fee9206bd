package push

import "klassenfunk/proto"

// API errors of this package.
var (
	// errSessionPush: sessions (shared devices) never get push.
	errSessionPush = proto.Errorf(proto.CodeForbidden, "only the trust credential of a personal device can register for push")
	// errUnauthorized: the credential vanished during the request.
	errUnauthorized = proto.Errorf(proto.CodeUnauthorized, "invalid or expired credential")
	// errNotFound: an unknown user (operator push test).
	errNotFound = proto.Errorf(proto.CodeNotFound, "not found")
)
