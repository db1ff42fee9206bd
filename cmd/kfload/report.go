//go:build unix

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// result is everything kfload reports (the --json output).
type result struct {
	RunID       string       `json:"run_id"`
	Interrupted bool         `json:"interrupted,omitempty"`
	Config      configReport `json:"config"`
	Setup       setupReport  `json:"setup"`
	Connections connReport   `json:"connections"`

	Messages   *msgReport      `json:"messages,omitempty"`
	Latency    *latencySummary `json:"latency_e2e,omitempty"` // send → message frame at the receiver
	AckLatency *latencySummary `json:"latency_ack,omitempty"` // send → sent frame at the sender

	Errors      map[string]uint64 `json:"errors"`             // error frames by code, all windows
	Closes      map[string]uint64 `json:"closes"`             // connections ended by the other side, by close code
	ClosedConns map[string]uint64 `json:"closed_connections"` // the same, by connection kind
	WriteErrors map[string]uint64 `json:"write_errors"`       // send frames that could not be written
	Anomalies   anomalies         `json:"anomalies"`
	GraceWaitS  float64           `json:"grace_wait_s"`

	Server  serverReport   `json:"server"`
	Tool    toolReport     `json:"tool"`
	Machine *machineReport `json:"machine,omitempty"` // over the same window

	lostSample []lostMsg // for verifyLost
}

// lostMsg is an acked message its receiver did not get.
type lostMsg struct {
	id  string
	rcv *user
}

// maxVerify caps the lost messages checked over HTTP.
const maxVerify = 1000

type configReport struct {
	URL          string   `json:"url"`
	Pairs        int      `json:"pairs"`
	Idle         int      `json:"idle"`
	Rate         float64  `json:"rate"`
	DurationS    float64  `json:"duration_s"`
	WarmupS      float64  `json:"warmup_s"`
	PayloadBytes int      `json:"payload_bytes"`
	SendVia      string   `json:"send_via"`
	SourceIPs    []string `json:"source_ips,omitempty"`
	ServerPID    int      `json:"server_pid,omitempty"`
}

type setupReport struct {
	SchoolS        float64 `json:"school_s"`
	UsersS         float64 `json:"users_s"`
	LoginsS        float64 `json:"logins_s"`
	KeysS          float64 `json:"keys_s"`
	ConversationsS float64 `json:"conversations_s"`
	ConnectS       float64 `json:"connect_s"`
	TotalS         float64 `json:"total_s"`
}

func (st setupTimes) report() setupReport {
	s := func(d time.Duration) float64 { return d.Seconds() }
	return setupReport{s(st.School), s(st.Users), s(st.Logins), s(st.Keys), s(st.Conversations), s(st.Connect), s(st.Total)}
}

type connReport struct {
	Total     int `json:"total"`
	Senders   int `json:"senders"`
	Receivers int `json:"receivers"`
	Idle      int `json:"idle"`
}

// msgReport: the plain names count messages sent inside the measured
// window; *_total count warmup too.
type msgReport struct {
	TargetRate     float64 `json:"target_rate"`
	SentTotal      uint64  `json:"sent_total"`
	AckedTotal     uint64  `json:"acked_total"`
	DeliveredTotal uint64  `json:"delivered_total"`
	Sent           uint64  `json:"sent"`
	Acked          uint64  `json:"acked"`
	ErrorFrames    uint64  `json:"error_frames"`
	Unanswered     int64   `json:"unanswered"` // sent − acked − error frames
	Delivered      uint64  `json:"delivered"`  // unique by message id
	Lost           uint64  `json:"lost"`       // acked but never delivered to the receiver
	// LostLateAck: the part of Lost whose ack arrived less than a second
	// before kfload stopped waiting (possibly just still in flight).
	LostLateAck uint64 `json:"lost_late_ack"`
	// Up to maxVerify lost messages are fetched with GET /messages/{id} as
	// the receiver: stored (200) means the server kept it but did not
	// deliver it live; missing (404) means an acked message is gone.
	LostChecked    int               `json:"lost_checked"`
	LostStored     int               `json:"lost_stored"`
	LostMissing    int               `json:"lost_missing"`
	LostCheckErrs  map[string]uint64 `json:"lost_check_errors,omitempty"`
	DeliveredNoAck int64             `json:"delivered_not_acked"`
	SendRate       float64           `json:"send_rate"`       // sent / duration
	DeliveredPerS  float64           `json:"delivered_per_s"` // deliveries received inside the window / duration

	// Sender health, all windows: writes blocked by back-pressure (the
	// server is not reading), sends made more than one period late (caught
	// up at once), and sends skipped because a sender was more than
	// max(1 s, 2 periods) behind schedule. Only skips lower the send rate.
	WriteStalls uint64  `json:"write_stalls"` // writes that took > 10 ms
	WriteStallS float64 `json:"write_stall_s"`
	MaxWriteMS  float64 `json:"max_write_ms"`
	LateSends   uint64  `json:"late_sends"`
	Skipped     uint64  `json:"skipped_sends"`
}

type anomalies struct {
	Duplicates      uint64 `json:"duplicates"`       // message frames with a seq seen before
	OutOfOrder      uint64 `json:"out_of_order"`     // seq not above the last one seen
	KeyAnomalies    uint64 `json:"key_anomalies"`    // keys other than exactly the receiver's entry
	Foreign         uint64 `json:"foreign"`          // messages of another conversation or sender
	SenderMessages  uint64 `json:"sender_messages"`  // message frames on a sender's socket
	ShortCiphertext uint64 `json:"short_ciphertext"` // no 8-byte timestamp
	DecodeErrors    int64  `json:"decode_errors"`    // frames proto.DecodeServerFrame rejected
	IdleFrames      int64  `json:"idle_frames"`      // frames on idle sockets after ready
}

type serverReport struct {
	PID           int           `json:"pid,omitempty"`
	Start         *serverSample `json:"start,omitempty"`
	BeforeConnect *serverSample `json:"before_connect,omitempty"`
	Connected     *serverSample `json:"connected,omitempty"`
	Connected2    *serverSample `json:"connected_2,omitempty"`
	End           *serverSample `json:"end,omitempty"`

	// Per connection, from connected_2 (and connected) minus before_connect.
	RSSPerConnKiB      float64 `json:"rss_per_conn_kib"`
	RSSPerConnKiBFirst float64 `json:"rss_per_conn_kib_first"`
	HeapPerConnBytes   float64 `json:"heap_stack_per_conn_bytes,omitempty"`
	GoroutinesPerConn  float64 `json:"goroutines_per_conn,omitempty"`
	RSSSource          string  `json:"rss_source,omitempty"`

	// Over the measured window (idle mode: the hold time).
	WindowS    float64 `json:"window_s"`
	CPUSeconds float64 `json:"cpu_seconds"`
	CPUUtil    float64 `json:"cpu_util"` // CPU seconds per wall second (1.0 = one core)
	CPUSource  string  `json:"cpu_source,omitempty"`
	// CPUPerMsgUS: CPU microseconds per message received in the window,
	// a figure less bent by the machine's noise than the latency tail.
	CPUPerMsgUS float64 `json:"cpu_us_per_msg,omitempty"`
	// RunqueueWaitS: time its threads waited for a CPU in the window.
	RunqueueWaitS float64 `json:"runqueue_wait_s,omitempty"`
	// Anonymous RSS (heap, stacks; no mapped files) per connection.
	AnonPerConnKiB float64 `json:"rss_anon_per_conn_kib,omitempty"`
}

type toolReport struct {
	CPUSeconds float64 `json:"cpu_seconds"` // over the same window
	CPUUtil    float64 `json:"cpu_util"`
	// RunqueueWaitS: time the tool's threads waited for a CPU in the
	// window; large values mean it was starved and the rate suffers.
	RunqueueWaitS float64 `json:"runqueue_wait_s"`
	MaxRSSKiB     int64   `json:"max_rss_kib"`
}

func (r *result) fillConfig(cfg *config) {
	r.Config = configReport{
		URL: cfg.url, Pairs: cfg.pairs, Idle: cfg.idle, Rate: cfg.rate,
		DurationS: cfg.duration.Seconds(), WarmupS: cfg.warmup.Seconds(),
		PayloadBytes: cfg.payload, ServerPID: cfg.serverPID, SendVia: cfg.sendVia,
	}
	for _, ip := range cfg.sourceIPs {
		r.Config.SourceIPs = append(r.Config.SourceIPs, ip.String())
	}
	r.Server.PID = cfg.serverPID
}

// rssKiB is the RSS of a sample: /proc when there, else /metrics.
func rssKiB(s *serverSample) (float64, string) {
	switch {
	case s == nil:
		return 0, ""
	case s.RSSKiB > 0:
		return float64(s.RSSKiB), "proc"
	case s.Metrics != nil:
		return s.Metrics.RSSBytes / 1024, "metrics"
	}
	return 0, ""
}

// window records the server's and the tool's CPU use between two samples.
func (r *result) window(a, b *serverSample, wall, toolCPU, toolWait time.Duration) {
	r.Server.WindowS = wall.Seconds()
	r.Tool.RunqueueWaitS = toolWait.Seconds()
	r.Tool.CPUSeconds = toolCPU.Seconds()
	if wall > 0 {
		r.Tool.CPUUtil = toolCPU.Seconds() / wall.Seconds()
	}
	if a == nil || b == nil {
		return
	}
	switch {
	case r.Server.PID > 0:
		r.Server.CPUSeconds, r.Server.CPUSource = b.CPUSeconds-a.CPUSeconds, "proc"
		r.Server.RunqueueWaitS = b.RunqueueWaitS - a.RunqueueWaitS
	case a.Metrics != nil && b.Metrics != nil:
		r.Server.CPUSeconds, r.Server.CPUSource = b.Metrics.CPUSeconds-a.Metrics.CPUSeconds, "metrics"
	default:
		return
	}
	if wall > 0 {
		r.Server.CPUUtil = r.Server.CPUSeconds / wall.Seconds()
	}
}

// finish merges the per-connection state. It runs after every goroutine
// that owned that state has ended.
func (r *result) finish(cfg *config, rs *runState, pairs []*pairState, end time.Time) {
	lateCut := end.Add(-time.Second).UnixNano()
	rs.mu.Lock()
	r.Closes = maps.Clone(rs.closes)
	r.ClosedConns = maps.Clone(rs.closedConns)
	r.WriteErrors = maps.Clone(rs.writeErrors)
	rs.mu.Unlock()
	r.Errors = map[string]uint64{}
	r.Anomalies.DecodeErrors = rs.decodeErrors.Load()
	r.Anomalies.IdleFrames = rs.idleFrames.Load()

	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		r.Tool.MaxRSSKiB = ru.Maxrss
	}

	// Memory per connection.
	n := float64(r.Connections.Total)
	base, src := rssKiB(r.Server.BeforeConnect)
	if n > 0 && base > 0 {
		r.Server.RSSSource = src
		if v, _ := rssKiB(r.Server.Connected2); v > 0 {
			r.Server.RSSPerConnKiB = (v - base) / n
		}
		if v, _ := rssKiB(r.Server.Connected); v > 0 {
			r.Server.RSSPerConnKiBFirst = (v - base) / n
		}
	}
	if b, c := r.Server.BeforeConnect, r.Server.Connected2; n > 0 && b != nil && c != nil && b.RSSAnonKiB > 0 && c.RSSAnonKiB > 0 {
		r.Server.AnonPerConnKiB = float64(c.RSSAnonKiB-b.RSSAnonKiB) / n
	}
	if b, c := r.Server.BeforeConnect, r.Server.Connected2; n > 0 && b != nil && c != nil && b.Metrics != nil && c.Metrics != nil {
		r.Server.HeapPerConnBytes = (c.Metrics.HeapInuseBytes + c.Metrics.StackInuse - b.Metrics.HeapInuseBytes - b.Metrics.StackInuse) / n
		r.Server.GoroutinesPerConn = (c.Metrics.Goroutines - b.Metrics.Goroutines) / n
	}

	if cfg.pairs == 0 {
		return
	}
	m := &msgReport{TargetRate: cfg.rate}
	var lat, ack mergedHist
	var deliveredWin uint64
	for _, p := range pairs {
		m.SentTotal += p.sent
		m.AckedTotal += p.acked
		m.DeliveredTotal += p.delivered
		m.Sent += p.sentM
		m.Acked += p.ackedM
		m.ErrorFrames += p.errsM
		m.Delivered += p.deliveredM
		m.WriteStalls += p.stalls
		m.WriteStallS += p.stallTime.Seconds()
		m.MaxWriteMS = max(m.MaxWriteMS, float64(p.maxWrite)/float64(time.Millisecond))
		m.LateSends += p.lateSends
		m.Skipped += p.skipped
		deliveredWin += p.deliveredWin
		var lost uint64
		for _, a := range p.acks {
			if _, ok := p.seen[a.seq]; !ok {
				lost++
				if a.at >= lateCut {
					m.LostLateAck++
				}
				if len(r.lostSample) < maxVerify {
					r.lostSample = append(r.lostSample, lostMsg{string(p.ackIDs[a.idOff : a.idOff+a.idLen]), p.rcv})
				}
			}
		}
		m.Lost += lost
		m.DeliveredNoAck += int64(p.deliveredM) - int64(p.ackedM-lost)
		for code, c := range p.errs {
			r.Errors[string(code)] += c
		}
		r.Anomalies.Duplicates += p.dups
		r.Anomalies.OutOfOrder += p.outOfOrder
		r.Anomalies.KeyAnomalies += p.keyBad
		r.Anomalies.Foreign += p.foreign
		r.Anomalies.SenderMessages += p.sndForeign
		r.Anomalies.ShortCiphertext += p.short
		lat.add(p.hist)
		ack.add(p.ackHist)
	}
	m.Unanswered = int64(m.Sent) - int64(m.Acked) - int64(m.ErrorFrames)
	if d := cfg.duration.Seconds(); d > 0 {
		m.SendRate = float64(m.Sent) / d
		m.DeliveredPerS = float64(deliveredWin) / d
	}
	r.Messages = m
	if n := float64(deliveredWin); n > 0 && r.Server.CPUSeconds > 0 {
		r.Server.CPUPerMsgUS = r.Server.CPUSeconds / n * 1e6
	}
	ls, as := lat.summary(), ack.summary()
	r.Latency, r.AckLatency = &ls, &as
}

// verifyLost fetches the sampled lost messages as their receivers.
func (r *result) verifyLost(ctx context.Context, a *api, conc int) {
	m := r.Messages
	if m == nil || len(r.lostSample) == 0 {
		return
	}
	var mu sync.Mutex
	m.LostCheckErrs = map[string]uint64{}
	parallel(ctx, len(r.lostSample), conc, nil, func(ctx context.Context, i int) error {
		l := r.lostSample[i]
		_, err := a.do(ctx, "GET", "/messages/"+url.PathEscape(l.id), l.rcv.token, nil, nil)
		mu.Lock()
		defer mu.Unlock()
		m.LostChecked++
		var ae *apiError
		switch {
		case err == nil:
			m.LostStored++
		case errors.As(err, &ae) && ae.status == 404:
			m.LostMissing++
		case errors.As(err, &ae):
			m.LostCheckErrs[fmt.Sprintf("HTTP %d", ae.status)]++
		default:
			m.LostCheckErrs[shortErr(err)]++
		}
		return nil
	})
}

func (r *result) print(cfg *config) error {
	if cfg.jsonOut {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	r.printText(os.Stdout)
	return nil
}

func countsString(m map[string]uint64) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

func mib(kib float64) string { return fmt.Sprintf("%.1f MiB", kib/1024) }

func (r *result) printText(w io.Writer) {
	c := r.Config
	fmt.Fprintf(w, "kfload %s → %s\n", r.RunID, c.URL)
	if r.Interrupted {
		fmt.Fprintln(w, "INTERRUPTED: the figures cover only part of the window")
	}
	if c.Pairs > 0 {
		fmt.Fprintf(w, "  %d pairs + %d idle = %d sockets; rate %.0f/s; payload %d B; warmup %gs; duration %gs; sends via %s\n",
			c.Pairs, c.Idle, r.Connections.Total, c.Rate, c.PayloadBytes, c.WarmupS, c.DurationS, c.SendVia)
	} else {
		fmt.Fprintf(w, "  idle mode: %d sockets held %gs\n", r.Connections.Total, c.DurationS)
	}
	s := r.Setup
	fmt.Fprintf(w, "setup: school %.3fs, users %.1fs, logins %.1fs, keys %.1fs, conversations %.1fs, websockets %.1fs; total %.1fs\n",
		s.SchoolS, s.UsersS, s.LoginsS, s.KeysS, s.ConversationsS, s.ConnectS, s.TotalS)
	if m := r.Messages; m != nil {
		fmt.Fprintf(w, "messages (sent in the %gs window; warmup excluded):\n", c.DurationS)
		fmt.Fprintf(w, "  sent       %9d  (%.1f/s, target %.0f/s)   [incl. warmup: sent %d, acked %d, delivered %d]\n",
			m.Sent, m.SendRate, m.TargetRate, m.SentTotal, m.AckedTotal, m.DeliveredTotal)
		fmt.Fprintf(w, "  acked      %9d  (error frames %d, unanswered %d)\n", m.Acked, m.ErrorFrames, m.Unanswered)
		fmt.Fprintf(w, "  delivered  %9d  (%.1f/s received in the window)\n", m.Delivered, m.DeliveredPerS)
		fmt.Fprintf(w, "  lost       %9d  (acked, never delivered; of these acked in the last second: %d; delivered without ack: %d)\n",
			m.Lost, m.LostLateAck, m.DeliveredNoAck)
		if m.LostChecked > 0 {
			fmt.Fprintf(w, "             checked %d lost with GET /messages/{id} as the receiver: stored %d, missing (404) %d, errors %s\n",
				m.LostChecked, m.LostStored, m.LostMissing, countsString(m.LostCheckErrs))
		}
		fmt.Fprintf(w, "  senders    writes blocked >10ms: %d (%.1fs total, max %.0fms); late sends %d; skipped sends %d\n",
			m.WriteStalls, m.WriteStallS, m.MaxWriteMS, m.LateSends, m.Skipped)
		l := r.Latency
		fmt.Fprintf(w, "latency e2e: p50 %.2fms  p90 %.2fms  p99 %.2fms  p99.9 %.2fms  max %.2fms  mean %.2fms  (n=%d)\n",
			l.P50MS, l.P90MS, l.P99MS, l.P999MS, l.MaxMS, l.MeanMS, l.Count)
		l = r.AckLatency
		fmt.Fprintf(w, "latency ack: p50 %.2fms  p90 %.2fms  p99 %.2fms  p99.9 %.2fms  max %.2fms  mean %.2fms  (n=%d)\n",
			l.P50MS, l.P90MS, l.P99MS, l.P999MS, l.MaxMS, l.MeanMS, l.Count)
		fmt.Fprintf(w, "error frames: %s\n", countsString(r.Errors))
	}
	fmt.Fprintf(w, "closes by server/network: %s", countsString(r.Closes))
	if len(r.ClosedConns) > 0 {
		fmt.Fprintf(w, " (%s)", countsString(r.ClosedConns))
	}
	fmt.Fprintln(w)
	if len(r.WriteErrors) > 0 {
		fmt.Fprintf(w, "write errors: %s\n", countsString(r.WriteErrors))
	}
	a := r.Anomalies
	if a != (anomalies{}) {
		fmt.Fprintf(w, "anomalies: duplicates %d, out of order %d, key anomalies %d, foreign %d, messages on sender sockets %d, short ciphertext %d, decode errors %d, frames on idle sockets %d\n",
			a.Duplicates, a.OutOfOrder, a.KeyAnomalies, a.Foreign, a.SenderMessages, a.ShortCiphertext, a.DecodeErrors, a.IdleFrames)
	}

	sv := r.Server
	fmt.Fprintf(w, "server")
	if sv.PID > 0 {
		fmt.Fprintf(w, " (pid %d)", sv.PID)
	}
	fmt.Fprintln(w, ":")
	var parts []string
	for _, x := range []struct {
		name string
		s    *serverSample
	}{{"start", sv.Start}, {"before connect", sv.BeforeConnect}, {"connected", sv.Connected}, {"connected+2s", sv.Connected2}, {"end", sv.End}} {
		if v, _ := rssKiB(x.s); v > 0 {
			parts = append(parts, fmt.Sprintf("%s %s", x.name, mib(v)))
		}
	}
	if len(parts) > 0 {
		fmt.Fprintf(w, "  RSS: %s", strings.Join(parts, ", "))
		if sv.End != nil && sv.End.HWMKiB > 0 {
			fmt.Fprintf(w, "; peak %s", mib(float64(sv.End.HWMKiB)))
		}
		fmt.Fprintln(w)
		if e := sv.End; e != nil && e.RSSAnonKiB > 0 {
			fmt.Fprintf(w, "  RSS at end: anon %s, file %s\n", mib(float64(e.RSSAnonKiB)), mib(float64(e.RSSFileKiB)))
		}
		fmt.Fprintf(w, "  per connection: %.1f KiB RSS (first sample %.1f KiB; source %s)", sv.RSSPerConnKiB, sv.RSSPerConnKiBFirst, sv.RSSSource)
		if sv.AnonPerConnKiB != 0 {
			fmt.Fprintf(w, ", %.1f KiB anon RSS", sv.AnonPerConnKiB)
		}
		if sv.HeapPerConnBytes != 0 {
			fmt.Fprintf(w, ", %.1f KiB Go heap+stack in use (incl. uncollected garbage), %.2f goroutines", sv.HeapPerConnBytes/1024, sv.GoroutinesPerConn)
		}
		fmt.Fprintln(w)
	}
	if sv.CPUSource != "" {
		fmt.Fprintf(w, "  CPU: %.2fs in %.1fs = %.0f%% of one core (source %s); waited for a CPU %.2fs",
			sv.CPUSeconds, sv.WindowS, 100*sv.CPUUtil, sv.CPUSource, sv.RunqueueWaitS)
		if sv.CPUPerMsgUS > 0 {
			fmt.Fprintf(w, "; %.1f µs per message received", sv.CPUPerMsgUS)
		}
		fmt.Fprintln(w)
	}
	if e := sv.End; e != nil && e.Metrics != nil {
		mt := e.Metrics
		fmt.Fprintf(w, "  metrics at end: ws_connections %.0f, goroutines %.0f, stored %.0f, delivered %.0f, slow consumers %.0f, gap fills %.0f",
			mt.WSConnections, mt.Goroutines, mt.Stored, mt.Delivered, mt.SlowConsumers, mt.GapFills)
		if len(mt.WSCloses) > 0 {
			var cs []string
			for _, k := range slices.Sorted(maps.Keys(mt.WSCloses)) {
				cs = append(cs, fmt.Sprintf("%s=%.0f", k, mt.WSCloses[k]))
			}
			fmt.Fprintf(w, ", ws closes %s", strings.Join(cs, " "))
		}
		fmt.Fprintln(w)
	}
	if mc := r.Machine; mc != nil {
		var per []string
		for i, v := range mc.PerCPUBusy {
			per = append(per, fmt.Sprintf("cpu%d %.0f%%", i, 100*v))
		}
		fmt.Fprintf(w, "machine: CPU busy %.0f%% (%s); CPU pressure (some task waiting) %.0f%% of the window\n",
			100*mc.CPUBusy, strings.Join(per, ", "), 100*mc.CPUPressure)
	}
	fmt.Fprintf(w, "tool: CPU %.2fs = %.0f%% of one core over the window; waited for a CPU %.2fs; max RSS %s\n",
		r.Tool.CPUSeconds, 100*r.Tool.CPUUtil, r.Tool.RunqueueWaitS, mib(float64(r.Tool.MaxRSSKiB)))
}
