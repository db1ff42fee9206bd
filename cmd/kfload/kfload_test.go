//go:build unix

package main

import (
	"bytes"
	"context"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"klassenfunk/proto"
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

func TestSendBodyDecodes(t *testing.T) {
	want := &proto.Send{
		ClientID:   `id "quoted" ü`,
		Ciphertext: []byte{0, 1, 2, 250, 251, 252, 253, 254, 255},
		Keys:       map[string][]byte{"u1/gerät": {1, 2, 3}, "u2/d\"2": {4, 5}},
	}
	got, perr := proto.DecodeSend(appendSendBody(nil, want))
	if perr != nil {
		t.Fatalf("DecodeSend: %v", perr)
	}
	if got.ClientID != want.ClientID || !bytes.Equal(got.Ciphertext, want.Ciphertext) || len(got.Keys) != len(want.Keys) {
		t.Fatalf("decoded %+v, want %+v", got, want)
	}
	for k, v := range want.Keys {
		if !bytes.Equal(got.Keys[k], v) {
			t.Fatalf("key %q: %v, want %v", k, got.Keys[k], v)
		}
	}
}

// TestHTTPSenderAnswers checks how --send-via http counts the server's
// answers: a stored message is an ack with its seq and id, an error body
// counts under its code, and a transport error is unanswered.
func TestHTTPSenderAnswers(t *testing.T) {
	var status int
	var body string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" || r.Method != "POST" {
			t.Errorf("request %s with %q", r.Method, r.Header.Get("Authorization"))
		}
		if _, perr := proto.DecodeSend(mustRead(t, r)); perr != nil {
			t.Errorf("body does not decode: %v", perr)
		}
		w.WriteHeader(status)
		io.WriteString(w, body)
	}))
	rs := newRunState()
	p := &pairState{snd: &user{token: "tok"}, errs: map[proto.Code]uint64{}}
	h := &httpSender{hc: srv.Client(), url: srv.URL + "/api/v1/conversations/c/messages"}
	send := &proto.Send{ClientID: "k-1", Ciphertext: make([]byte, 8), Keys: map[string][]byte{"a/b": {1}}}

	status, body = 201, `{"id":"m1","seq":7,"keys":{"a/b":"AQ=="}}`
	h.post(context.Background(), rs, p, send, true, time.Now())
	if p.acked != 1 || p.ackedM != 1 || len(p.acks) != 1 || p.acks[0].seq != 7 || string(p.ackIDs) != "m1" || p.ackHist == nil {
		t.Fatalf("after 201: acked %d/%d acks %+v ids %q", p.acked, p.ackedM, p.acks, p.ackIDs)
	}
	status, body = 403, `{"error":{"code":"forbidden","message":"no"}}`
	h.post(context.Background(), rs, p, send, true, time.Now())
	status, body = 502, `<html>`
	h.post(context.Background(), rs, p, send, false, time.Now())
	status, body = 201, `{"id":""}`
	h.post(context.Background(), rs, p, send, false, time.Now())
	if p.errs["forbidden"] != 1 || p.errs["http_502"] != 1 || p.errs["undecodable_answer"] != 1 || p.errsM != 1 || rs.decodeErrors.Load() != 1 {
		t.Fatalf("errors %v (measured %d), decode errors %d", p.errs, p.errsM, rs.decodeErrors.Load())
	}
	srv.Close()
	if !h.post(context.Background(), rs, p, send, false, time.Now()) || len(rs.writeErrors) != 1 {
		t.Fatalf("transport error: write errors %v", rs.writeErrors)
	}
	if got := rs.respTotal.Load(); got != 5 || rs.ackedTotal.Load() != 1 {
		t.Fatalf("answers %d acked %d, want 5 and 1", got, rs.ackedTotal.Load())
	}
	// An interrupted run stops its senders.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if h.post(ctx, rs, p, send, false, time.Now()) || len(rs.writeErrors) != 1 {
		t.Fatalf("interrupted: the sender goes on, or it counts a write error: %v", rs.writeErrors)
	}
}

func mustRead(t *testing.T, r *http.Request) []byte {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		t.Error(err)
	}
	return b
}
