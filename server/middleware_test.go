package server

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// TestHandlerPanic: a panic in a handler is answered with 500 internal
// (or, once the answer has begun, a dropped connection) and logged with
// the anonymised address; net/http would log the full one. The server
// goes on serving.
func TestHandlerPanic(t *testing.T) {
	// One handler for both logs: its lock orders their writes, and the
	// buffer is read only once the server has closed.
	var logs bytes.Buffer
	lh := slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})
	s := &Server{log: slog.New(lh), metrics: newHTTPMetrics(prometheus.NewRegistry())}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /early", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Disposition", "attachment; filename=x.zip")
		panic("early boom")
	})
	mux.HandleFunc("GET /abort", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("partial"))
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	})
	mux.HandleFunc("GET /late", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte(strings.Repeat("x", 64<<10)))
		w.(http.Flusher).Flush()
		panic("late boom")
	})
	mux.HandleFunc("GET /ok", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok")) })
	srv := httptest.NewUnstartedServer(s.withLogging(mux, nil))
	srv.Config.ErrorLog = slog.NewLogLogger(lh, slog.LevelWarn)
	srv.Start()
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/early")
	if err != nil {
		t.Fatal(err)
	}
	var body struct{ Error struct{ Code string } }
	json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusInternalServerError || body.Error.Code != "internal" || resp.Header.Get("Content-Disposition") != "" {
		t.Fatalf("early panic: %d %+v %v", resp.StatusCode, body, resp.Header)
	}

	for _, path := range []string{"/late", "/abort"} {
		resp, err = http.Get(srv.URL + path)
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		if err == nil {
			t.Fatalf("%s: the truncated answer was read without an error", path)
		}
	}

	resp, err = http.Get(srv.URL + "/ok")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("after the panics: %v %v", resp, err)
	}
	resp.Body.Close()
	srv.Close() // waits for the handlers: the log is complete

	out := logs.String()
	if strings.Count(out, `"msg":"handler panic"`) != 2 || !strings.Contains(out, "early boom") || !strings.Contains(out, "late boom") {
		t.Fatalf("the panics are not logged:\n%s", out)
	}
	if strings.Contains(out, "127.0.0.1") || !strings.Contains(out, `"ip":"127.0.0.0"`) {
		t.Fatalf("a full address in the log, or none:\n%s", out)
	}
	// Every request is logged and counted: the panics as 500, the
	// deliberate abort with the status it had sent.
	for route, code := range map[string]string{"GET /early": "500", "GET /late": "500", "GET /abort": "200", "GET /ok": "200"} {
		var m dto.Metric
		if err := s.metrics.requests.WithLabelValues(route, code).Write(&m); err != nil || m.Counter.GetValue() != 1 {
			t.Errorf("requests_total{%s,%s} = %v (%v), want 1", route, code, m.Counter.GetValue(), err)
		}
	}
	for _, path := range []string{"/early", "/late", "/abort", "/ok"} {
		if !strings.Contains(out, `"msg":"http","method":"GET","path":"`+path+`"`) {
			t.Errorf("no request line for %s:\n%s", path, out)
		}
	}
	if strings.Contains(out, "http: panic serving") {
		t.Errorf("net/http logged a panic itself:\n%s", out)
	}
}
