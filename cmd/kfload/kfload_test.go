package main

import (
	"context"
	"math"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestHistBuckets(t *testing.T) {
	prev := -1
	for v := uint64(0); v < 1<<20; v++ {
		b := histBucket(v)
		if b != prev && b != prev+1 {
			t.Fatalf("bucket(%d) = %d after %d: not contiguous", v, b, prev)
		}
		low, w := histRange(b)
		if v < low || v >= low+w {
			t.Fatalf("value %d in bucket %d = [%d,%d)", v, b, low, low+w)
		}
		if w > 1 && float64(w)/float64(low) > 1.0/histSub+1e-9 {
			t.Fatalf("bucket %d too wide: %d at %d", b, w, low)
		}
		prev = b
	}
	if b := histBucket(histMaxUS); b != histBuckets-1 {
		t.Fatalf("bucket(max) = %d, want %d", b, histBuckets-1)
	}
}

func TestHistQuantiles(t *testing.T) {
	var hs [4]hist
	for i := 1; i <= 100000; i++ {
		hs[i%4].record(time.Duration(i) * time.Microsecond)
	}
	var m mergedHist
	for i := range hs {
		m.add(&hs[i])
	}
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		got, want := float64(m.quantile(q)), q*100000
		if math.Abs(got-want)/want > 0.03 {
			t.Errorf("q%.3f = %.0f, want about %.0f", q, got, want)
		}
	}
	if m.max != 100000 || m.min != 1 || m.n != 100000 {
		t.Errorf("min %d max %d n %d", m.min, m.max, m.n)
	}
}

func TestParseSourceIPs(t *testing.T) {
	ips, err := parseSourceIPs("127.0.0.1-127.0.0.8")
	if err != nil || len(ips) != 8 || ips[0].String() != "127.0.0.1" || ips[7].String() != "127.0.0.8" {
		t.Fatalf("range: %v %v", ips, err)
	}
	ips, err = parseSourceIPs("10.0.0.255-10.0.1.1, 127.0.0.2")
	if err != nil || len(ips) != 4 || ips[1].String() != "10.0.1.0" || ips[3].String() != "127.0.0.2" {
		t.Fatalf("list: %v %v", ips, err)
	}
	for _, bad := range []string{"x", "127.0.0.8-127.0.0.1", "::1-::2"} {
		if _, err := parseSourceIPs(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if ips, err := parseSourceIPs(""); err != nil || len(ips) != 0 {
		t.Errorf("empty: %v %v", ips, err)
	}
}

func TestVerifyLost(t *testing.T) {
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		switch r.URL.Path {
		case "/api/v1/messages/stored":
			w.Write([]byte(`{"id":"stored"}`))
		case "/api/v1/messages/gone":
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"error":{"code":"not_found","message":"no"}}`))
		default:
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	defer hs.Close()
	rcv := &user{token: "tok"}
	r := &result{Messages: &msgReport{}, lostSample: []lostMsg{{"stored", rcv}, {"gone", rcv}, {"gone", rcv}, {"odd", rcv}}}
	r.verifyLost(context.Background(), &api{base: hs.URL, hc: hs.Client()}, 2)
	m := r.Messages
	if m.LostChecked != 4 || m.LostStored != 1 || m.LostMissing != 2 || m.LostCheckErrs["HTTP 500"] != 1 {
		t.Fatalf("got %+v", m)
	}
}
