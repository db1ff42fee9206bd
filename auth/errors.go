package auth

import "klassenfunk/proto"

// API errors of this package. They are *proto.Error values, so handlers
// write them as they are.
var (
	errUnauthorized = proto.Errorf(proto.CodeUnauthorized, "invalid or expired credential")
	errBadLogin     = proto.Errorf(proto.CodeUnauthorized, "wrong login or password")
	errNotFound     = proto.Errorf(proto.CodeNotFound, "not found")
	errForbidden    = proto.Errorf(proto.CodeForbidden, "not allowed")
	errNotOperator  = proto.Errorf(proto.CodeForbidden, "only the operator token may do this")
	// errCountryBlocked: the account's country restriction refuses the
	// client's address (geo.go).
	errCountryBlocked = proto.Errorf(proto.CodeCountryBlocked, "the account's country restriction does not allow access from this address")
	errWrongPassword  = proto.Errorf(proto.CodeUnauthorized, "wrong password")
)
