package server

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"klassenfunk/internal/httpapi"
)

type httpMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newHTTPMetrics(reg prometheus.Registerer) *httpMetrics {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "klassenfunk_http_requests_total",
			Help: "HTTP requests by route pattern and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "klassenfunk_http_request_duration_seconds",
			Help:    "HTTP request latency by route pattern.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"route"}),
	}
	reg.MustRegister(m.requests, m.duration)
	return m
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection (WebSocket
// upgrades, deadlines).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// withLogging logs each request with the client address anonymised and
// without the query string (it is never logged: nothing secret belongs
// there, but a careless client might put it there anyway), and counts it.
func (s *Server) withLogging(next http.Handler, proxies []netip.Prefix) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		sw := &statusWriter{ResponseWriter: w}
		aborted := s.serveRecovering(next, sw, r, proxies)
		route := r.Pattern
		if route == "" {
			route = "unmatched"
		}
		status := sw.status
		if status == 0 {
			status = http.StatusOK
		}
		d := time.Since(start)
		s.metrics.requests.WithLabelValues(route, strconv.Itoa(status)).Inc()
		s.metrics.duration.WithLabelValues(route).Observe(d.Seconds())
		level := slog.LevelDebug
		// An unready /readyz (Redis away, a drain) is an answer, not a
		// failure of the request; what made it unready is logged itself.
		if status >= 500 && route != "GET /readyz" {
			level = slog.LevelError
		}
		// The line's values only when it is written: most requests are
		// logged at debug level, which production leaves off.
		if s.log.Enabled(r.Context(), level) {
			s.log.Log(r.Context(), level, "http",
				"method", r.Method, "path", httpapi.LogPath(r.URL.Path), "status", status,
				"dur_ms", float64(d.Microseconds())/1000, "ip", httpapi.Anonymize(httpapi.ClientAddr(r, proxies)))
		}
		if aborted {
			panic(http.ErrAbortHandler) // net/http drops the connection and logs nothing
		}
	})
}

// serveRecovering runs next and turns a panic in it into a 500, logged
// with the anonymised client address (net/http would log the full one); when the answer has begun, or the handler aborted it on
// purpose (http.ErrAbortHandler), the caller drops the connection once
// the request is logged and counted: aborted.
func (s *Server) serveRecovering(next http.Handler, sw *statusWriter, r *http.Request, proxies []netip.Prefix) (aborted bool) {
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		if v != http.ErrAbortHandler {
			s.log.Error("handler panic", "method", r.Method, "path", httpapi.LogPath(r.URL.Path),
				"ip", httpapi.Anonymize(httpapi.ClientAddr(r, proxies)),
				"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			if sw.status == 0 {
				// Nothing of the handler's answer went out: none of its
				// headers (a length, a file name) belongs to the error.
				h := sw.Header()
				clear(h)
				h.Set("X-Content-Type-Options", "nosniff")
				httpapi.WriteError(sw, nil, errors.New("panic"))
				return
			}
		}
		if sw.status == 0 || v != http.ErrAbortHandler {
			sw.status = http.StatusInternalServerError
		}
		aborted = true
	}()
	next.ServeHTTP(sw, r)
	return false
}

// Hijack lets the WebSocket upgrader take the connection over.
func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("server: connection cannot be hijacked")
	}
	if w.status == 0 {
		w.status = http.StatusSwitchingProtocols
	}
	return h.Hijack()
}

// Flush passes flushes through (streamed downloads).
func (w *statusWriter) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK // a flush sends the header
	}
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
