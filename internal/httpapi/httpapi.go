// Package httpapi holds the small pieces every JSON handler of API v1 shares:
// the error shape, body decoding with limits, bearer credentials and client
// addresses.
package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"path"
	"reflect"
	"strconv"
	"strings"

	"klassenfunk/proto"
)

// MaxBody is the cap on JSON request bodies (API.md: 1 MiB).
const MaxBody = 1 << 20

type errorBody struct {
	Error struct {
		Code    proto.Code `json:"code"`
		Message string     `json:"message"`
	} `json:"error"`
}

// WriteError writes err in the API's error shape. A *proto.Error keeps its
// code and message; anything else becomes 500 internal with a generic
// message, and is logged (never sent: it may hold details of the store).
func WriteError(w http.ResponseWriter, log *slog.Logger, err error) {
	var pe *proto.Error
	if !errors.As(err, &pe) {
		if log != nil {
			log.Error("internal error", "err", err)
		}
		pe = proto.Errorf(proto.CodeInternal, "internal error")
	}
	if pe.Code == proto.CodeRateLimited {
		secs := int((pe.RetryAfter + 999_999_999) / 1_000_000_000)
		if secs < 1 {
			secs = 1
		}
		w.Header().Set("Retry-After", strconv.Itoa(secs))
	}
	var body errorBody
	body.Error.Code = pe.Code
	body.Error.Message = pe.Message
	WriteJSON(w, pe.Code.HTTPStatus(), body)
}

// WriteJSON writes v as JSON with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, `{"error":{"code":"internal","message":"encoding failed"}}`, http.StatusInternalServerError)
		return
	}
	WriteRaw(w, status, b)
}

// WriteRaw writes an already encoded JSON body.
func WriteRaw(w http.ResponseWriter, status int, b []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(b)
}

// Decode reads one JSON value from the request body into v, capped at
// MaxBody. Malformed JSON, bytes that are not UTF-8 and wrong types are
// invalid_request; a larger body is payload_too_large. Unknown fields are
// ignored, and names match exactly: "LOGIN" is an unknown field, not the
// login (exactkeys.go).
func Decode(w http.ResponseWriter, r *http.Request, v any) error {
	body, err := ReadBody(w, r)
	if err != nil {
		return err
	}
	// encoding/json would replace each invalid byte (or lone surrogate
	// escape) with U+FFFD and store the result: a login or name the client
	// never sent.
	if !proto.ValidText(body) {
		return proto.Errorf(proto.CodeInvalidRequest, "request body is not valid UTF-8")
	}
	body = withoutCaseVariants(body, reflect.TypeOf(v))
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		return decodeError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return proto.Errorf(proto.CodeInvalidRequest, "request body must be one JSON value")
	}
	return nil
}

func decodeError(err error) error {
	var ute *json.UnmarshalTypeError
	switch {
	case errors.As(err, &ute):
		if ute.Field != "" {
			return proto.Errorf(proto.CodeInvalidRequest, "field %q has the wrong type", ute.Field)
		}
		return proto.Errorf(proto.CodeInvalidRequest, "request body has the wrong type")
	case errors.Is(err, io.EOF):
		return proto.Errorf(proto.CodeInvalidRequest, "request body is empty")
	default:
		return proto.Errorf(proto.CodeInvalidRequest, "malformed JSON")
	}
}

// Bearer returns the credential of an "Authorization: Bearer" header, or "".
// Credentials are read from nowhere else: a token in the URL is ignored.
func Bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	const p = "Bearer "
	if len(h) <= len(p) || !strings.EqualFold(h[:len(p)], p) {
		return ""
	}
	return strings.TrimSpace(h[len(p):])
}

// NotFound answers every path of the API that no route claims.
func NotFound(w http.ResponseWriter, r *http.Request) {
	WriteError(w, nil, proto.Errorf(proto.CodeNotFound, "no such endpoint"))
}

// CleanAPIPaths answers a path that is not clean ("//", "/./", "/../")
// with 404, and so does "/api/v1" without its slash: http.ServeMux would
// redirect it to the clean path with an HTML body, and a client that
// follows a 307 repeats its POST elsewhere. A path of the API (under /api
// as sent, or once cleaned) gets NotFound, the JSON error of API.md; any
// other a plain 404.
func CleanAPIPaths(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		c := path.Clean(p)
		if strings.HasSuffix(p, "/") && c != "/" {
			c += "/"
		}
		switch {
		case p == "/api/v1" || c != p && (isAPIPath(p) || isAPIPath(c)):
			NotFound(w, r)
		case c != p:
			http.NotFound(w, r)
		default:
			next.ServeHTTP(w, r)
		}
	})
}

func isAPIPath(p string) bool { return p == "/api" || strings.HasPrefix(p, "/api/") }

// ReadBody reads the whole request body, capped at MaxBody
// (payload_too_large beyond).
func ReadBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, proto.Errorf(proto.CodePayloadTooLarge, "request body exceeds %d bytes", mbe.Limit)
		}
		return nil, proto.Errorf(proto.CodeInvalidRequest, "cannot read the request body")
	}
	return b, nil
}
