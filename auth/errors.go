package auth

import "klassenfunk/proto"

// API errors of this package. They are *proto.Error values, so handlers
// write them as they are.
var (
	errUnauthorized = proto.Errorf(proto.CodeUnauthorized, "invalid or expired credential")
	errBadLogin     = proto.Errorf(proto.CodeUnauthorized, "wrong login or password")
	errNotFound     = proto.Errorf(proto.CodeNotFound, "not found")
	errForbidden    = proto.Errorf(proto.CodeForbidden, "not allowed")
)
