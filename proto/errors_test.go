package proto

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"
)

func TestCodeHTTPStatus(t *testing.T) {
	tests := map[Code]int{
		CodeInvalidRequest:  http.StatusBadRequest,
		CodeUnauthorized:    http.StatusUnauthorized,
		CodeForbidden:       http.StatusForbidden,
		CodeCountryBlocked:  http.StatusForbidden,
		CodeNotFound:        http.StatusNotFound,
		CodeConflict:        http.StatusConflict,
		CodePayloadTooLarge: http.StatusRequestEntityTooLarge,
		CodeRateLimited:     http.StatusTooManyRequests,
		CodeInternal:        http.StatusInternalServerError,
		Code("bogus"):       http.StatusInternalServerError,
		Code(""):            http.StatusInternalServerError,
	}
	for code, want := range tests {
		t.Run(string(code), func(t *testing.T) {
			if got := code.HTTPStatus(); got != want {
				t.Errorf("%q.HTTPStatus() = %d, want %d", code, got, want)
			}
		})
	}
}

func TestError(t *testing.T) {
	err := Errorf(CodeNotFound, "conversation %s not found", "c1")
	if err.Code != CodeNotFound || err.Message != "conversation c1 not found" {
		t.Errorf("Errorf = %+v", err)
	}
	if got, want := err.Error(), "not_found: conversation c1 not found"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if got, want := (&Error{Code: CodeInternal}).Error(), "internal"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}

	var target *Error
	wrapped := fmt.Errorf("handler: %w", error(err))
	if !errors.As(wrapped, &target) || target != err {
		t.Errorf("errors.As did not find the *Error in %v", wrapped)
	}
}

func TestRetryAfterSeconds(t *testing.T) {
	tests := map[string]struct {
		d    time.Duration
		want string
	}{
		"zero":          {d: 0, want: "1"},
		"sub-second":    {d: 10 * time.Millisecond, want: "1"},
		"exact":         {d: 3 * time.Second, want: "3"},
		"rounded up":    {d: 3*time.Second + 1, want: "4"},
		"negative":      {d: -time.Second, want: "1"},
		"several hours": {d: 2 * time.Hour, want: "7200"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			e := &Error{Code: CodeRateLimited, RetryAfter: tc.d}
			if got := e.RetryAfterSeconds(); got != tc.want {
				t.Errorf("RetryAfterSeconds() = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestAppendErrorBody(t *testing.T) {
	raw := AppendErrorBody(nil, CodeConflict, "login \"jana\" is taken")
	var body struct {
		Error struct {
			Code    Code   `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		t.Fatalf("%s: %v", raw, err)
	}
	if body.Error.Code != CodeConflict || body.Error.Message != `login "jana" is taken` {
		t.Errorf("decoded %+v from %s", body, raw)
	}
}

func TestCloseCodeString(t *testing.T) {
	tests := map[CloseCode]string{
		CloseNormal:         "normal",
		CloseGoingAway:      "going_away",
		CloseMalformed:      "malformed",
		CloseUnauthorized:   "unauthorized",
		CloseCountryBlocked: "country_blocked",
		CloseAuthTimeout:    "auth_timeout",
		CloseTooLarge:       "too_large",
		CloseTooSlow:        "too_slow",
		CloseCode(1006):     "unknown",
		CloseCode(0):        "unknown",
	}
	for code, want := range tests {
		t.Run(want, func(t *testing.T) {
			if got := code.String(); got != want {
				t.Errorf("CloseCode(%d).String() = %q, want %q", int(code), got, want)
			}
		})
	}
	// The numeric values are part of the API.
	values := map[CloseCode]int{
		CloseGoingAway: 1001, CloseMalformed: 4400, CloseUnauthorized: 4401, CloseCountryBlocked: 4403,
		CloseAuthTimeout: 4408, CloseTooLarge: 4413, CloseTooSlow: 4429,
	}
	for code, want := range values {
		if int(code) != want {
			t.Errorf("%s = %d, want %d", code, int(code), want)
		}
	}
}
