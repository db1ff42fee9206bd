//go:build unix

// Command kfload is a load generator for a running Klassenfunk server. It
// speaks only the public API (API.md), exactly as the apps do: it creates a
// school, users, personal-device logins, keys and one direct conversation
// per sender→receiver pair over HTTP, opens one WebSocket per device, sends
// messages at a fixed total rate and measures end-to-end latency, losses,
// errors and the server's memory and CPU.
//
//	kfload --url http://127.0.0.1:8080 --operator-token TOKEN \
//	       --pairs 5000 --rate 15000 --duration 30s --server-pid PID
//	kfload --pairs 0 --idle 10000 --duration 20s --server-pid PID
//
// See docs/load.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"klassenfunk/internal/ctxtime"
	"klassenfunk/proto"
)

type config struct {
	url          string
	recvURL      string
	opToken      string
	pairs        int
	idle         int
	rate         float64
	duration     time.Duration
	warmup       time.Duration
	settle       time.Duration
	grace        time.Duration
	progress     time.Duration
	payload      int
	sourceIPs    []net.IP
	sourceSpec   string
	serverPID    int
	setupConc    int
	dialConc     int
	readTimeout  time.Duration
	readyTimeout time.Duration
	role         string
	jsonOut      bool
	cpuProfile   string
	sendVia      string // "ws" or "http"
	httpConns    int    // --send-via http: connections for the sends
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "kfload:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "kfload:", err)
			os.Exit(2)
		}
		pprof.StartCPUProfile(f)
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	if err := run(ctx, cfg); err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "kfload: FAILED:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (*config, error) {
	fs := flag.NewFlagSet("kfload", flag.ContinueOnError)
	c := &config{}
	fs.StringVar(&c.url, "url", "http://127.0.0.1:8080", "base URL of the running server")
	fs.StringVar(&c.recvURL, "recv-url", "", "base URL of another node of the same cluster for the receivers' sockets (default: --url); senders and setup use --url")
	fs.StringVar(&c.opToken, "operator-token", "", "operator token (default $KLASSENFUNK_OPERATOR_TOKEN)")
	fs.IntVar(&c.pairs, "pairs", 100, "sender→receiver pairs (2 WebSocket connections each)")
	fs.IntVar(&c.idle, "idle", 0, "extra idle connections (one user each)")
	fs.Float64Var(&c.rate, "rate", 1000, "total messages per second across all senders")
	fs.DurationVar(&c.duration, "duration", 30*time.Second, "measured run time (idle mode: hold time after connecting)")
	fs.DurationVar(&c.warmup, "warmup", 5*time.Second, "sending time before the measured window (not counted)")
	fs.DurationVar(&c.settle, "settle", 5*time.Second, "wait after all connections are open before measuring server memory")
	fs.DurationVar(&c.progress, "progress", 5*time.Second, "how often to print a progress line (rates and the largest latency since the last line)")
	fs.DurationVar(&c.grace, "grace", 5*time.Second, "how long to wait for in-flight deliveries after the senders stop")
	fs.IntVar(&c.payload, "payload", 200, "ciphertext bytes per message (>= 8; the first 8 carry the send time)")
	fs.StringVar(&c.sourceSpec, "source-ips", "", "local source addresses, round-robin: 127.0.0.1-127.0.0.8 or a,b,c (default: any)")
	fs.IntVar(&c.serverPID, "server-pid", 0, "server process id, for RSS and CPU from /proc")
	fs.IntVar(&c.setupConc, "setup-concurrency", 32, "HTTP requests in flight during setup")
	fs.IntVar(&c.dialConc, "dial-concurrency", 200, "WebSocket dials in flight")
	fs.DurationVar(&c.readTimeout, "read-timeout", 90*time.Second, "WebSocket read deadline (moved on by every frame and ping)")
	fs.DurationVar(&c.readyTimeout, "ready-timeout", 30*time.Second, "wait for the ready frame after the upgrade")
	fs.StringVar(&c.role, "role", "student", "role of the created users (student or teacher)")
	fs.BoolVar(&c.jsonOut, "json", false, "print the result as JSON on stdout")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write a CPU profile of kfload itself to this file")
	fs.StringVar(&c.sendVia, "send-via", "ws", "how senders send: ws (a send frame on their socket) or http (POST /conversations/{id}/messages; receivers still get message frames)")
	fs.IntVar(&c.httpConns, "http-conns", 256, "--send-via http: keep-alive connections the senders share (requests beyond wait for one)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if c.opToken == "" {
		c.opToken = os.Getenv("KLASSENFUNK_OPERATOR_TOKEN")
	}
	if c.opToken == "" {
		return nil, errors.New("--operator-token or KLASSENFUNK_OPERATOR_TOKEN is required")
	}
	u, err := url.Parse(c.url)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--url %q: want http(s)://host:port", c.url)
	}
	c.url = strings.TrimRight(c.url, "/")
	c.recvURL = strings.TrimRight(c.recvURL, "/")
	if c.recvURL == "" {
		c.recvURL = c.url
	} else if u, err := url.Parse(c.recvURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--recv-url %q: want http(s)://host:port", c.recvURL)
	}
	switch {
	case c.pairs < 0 || c.idle < 0:
		return nil, errors.New("--pairs and --idle must not be negative")
	case c.pairs == 0 && c.idle == 0:
		return nil, errors.New("nothing to do: --pairs and --idle are both 0")
	case c.pairs > 0 && c.rate <= 0:
		return nil, errors.New("--rate must be positive")
	case c.payload < 8 || c.payload > 64<<10:
		return nil, errors.New("--payload must be 8 to 65536 bytes")
	case c.duration <= 0 || c.warmup < 0 || c.settle < 0 || c.grace < 0 || c.progress <= 0:
		return nil, errors.New("--duration must be positive; --warmup, --settle, --grace not negative")
	case c.setupConc < 1 || c.dialConc < 1:
		return nil, errors.New("concurrency must be at least 1")
	case c.sendVia != "ws" && c.sendVia != "http":
		return nil, fmt.Errorf("--send-via %q: want ws or http", c.sendVia)
	case c.sendVia == "http" && c.httpConns < 1:
		return nil, errors.New("--http-conns must be at least 1")
	}
	if c.sourceIPs, err = parseSourceIPs(c.sourceSpec); err != nil {
		return nil, err
	}
	return c, nil
}

// parseSourceIPs parses "a-b" (an IPv4 range) or "a,b,c" (a list, each
// element may be a range).
func parseSourceIPs(spec string) ([]net.IP, error) {
	var out []net.IP
	for part := range strings.SplitSeq(spec, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a := net.ParseIP(strings.TrimSpace(lo))
		if a == nil {
			return nil, fmt.Errorf("--source-ips: bad address %q", lo)
		}
		if !isRange {
			out = append(out, a)
			continue
		}
		b := net.ParseIP(strings.TrimSpace(hi))
		a4, b4 := a.To4(), b.To4()
		if a4 == nil || b4 == nil {
			return nil, fmt.Errorf("--source-ips: range %q must be two IPv4 addresses", part)
		}
		x, y := ip4ToUint(a4), ip4ToUint(b4)
		if y < x || y-x > 1<<16 {
			return nil, fmt.Errorf("--source-ips: bad range %q", part)
		}
		for v := x; v <= y; v++ {
			out = append(out, net.IPv4(byte(v>>24), byte(v>>16), byte(v>>8), byte(v)).To4())
		}
	}
	return out, nil
}

func ip4ToUint(ip net.IP) uint32 {
	return uint32(ip[0])<<24 | uint32(ip[1])<<16 | uint32(ip[2])<<8 | uint32(ip[3])
}

func run(ctx context.Context, cfg *config) error {
	debug.SetGCPercent(200) // the tool runs on one core; trade memory for less GC
	startAll := time.Now()
	runID := randHex(4)
	nConns := 2*cfg.pairs + cfg.idle

	// Open files: every WebSocket is one descriptor; leave room for the
	// setup pool, /proc reads and the runtime. Go has already raised the
	// soft limit to the hard limit.
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil {
		need := uint64(nConns + 2*cfg.setupConc + 64)
		if cfg.sendVia == "http" {
			need += uint64(cfg.httpConns)
		}
		if need > rl.Cur {
			return fmt.Errorf("%d connections need about %d open files, but the limit is %d (hard %d): use fewer --pairs/--idle",
				nConns, need, rl.Cur, rl.Max)
		}
	}

	pool := newDialerPool(cfg.sourceIPs)
	hc := newHTTPClient(cfg.setupConc, pool.DialContext)
	a := &api{base: cfg.url, op: cfg.opToken, hc: hc}
	rs := newRunState()
	res := &result{RunID: runID}
	res.fillConfig(cfg)

	sample := func(label string) *serverSample {
		s, err := sampleServer(ctx, hc, cfg.url, cfg.serverPID)
		if err != nil {
			fmt.Fprintf(os.Stderr, "kfload: server sample %s: %v\n", label, err)
			return nil
		}
		return &s
	}
	res.Server.Start = sample("start")

	fmt.Fprintf(os.Stderr, "kfload %s: %d pairs (%d sockets) + %d idle → %s, rate %.0f/s, payload %d B, warmup %s, duration %s\n",
		runID, cfg.pairs, 2*cfg.pairs, cfg.idle, cfg.url, cfg.rate, cfg.payload, cfg.warmup, cfg.duration)

	// --- setup over HTTP ---
	var st setupTimes
	users, convs, err := setupAccounts(ctx, a, runID, cfg.role, cfg.pairs, cfg.idle, cfg.setupConc, &st)
	if err != nil {
		return err
	}
	hc.CloseIdleConnections()
	pairs := make([]*pairState, cfg.pairs)
	var sendHC *http.Client
	if cfg.sendVia == "http" {
		sendHC = newSendClient(cfg.httpConns, pool.DialContext)
		defer sendHC.CloseIdleConnections()
	}
	for i := range pairs {
		pairs[i] = &pairState{idx: i, conv: convs[i], snd: users[2*i], rcv: users[2*i+1], errs: map[proto.Code]uint64{}}
		if sendHC != nil {
			pairs[i].http = &httpSender{hc: sendHC, url: cfg.url + "/api/v1/conversations/" + url.PathEscape(convs[i]) + "/messages"}
		}
	}

	// Let the server close the setup connections before the baseline.
	if err := ctxtime.Sleep(ctx, time.Second); err != nil {
		return err
	}
	res.Server.BeforeConnect = sample("before connect")
	hc.CloseIdleConnections()

	// --- WebSockets ---
	wsURL := "ws" + strings.TrimPrefix(cfg.url, "http") + "/api/v1/ws"
	recvWS := "ws" + strings.TrimPrefix(cfg.recvURL, "http") + "/api/v1/ws"
	d := newWSDialer(pool)
	conns := make([]*websocket.Conn, nConns)
	var readers sync.WaitGroup
	connStart := time.Now()
	// Dial receivers first, then senders, then idle users, so that a
	// receiver is online before its sender starts.
	order := make([]int, 0, nConns)
	for i := range cfg.pairs {
		order = append(order, 2*i+1)
	}
	for i := range cfg.pairs {
		order = append(order, 2*i)
	}
	for i := 2 * cfg.pairs; i < nConns; i++ {
		order = append(order, i)
	}
	_, err = phase(ctx, "websockets", nConns, cfg.dialConc, func(ctx context.Context, k int) error {
		i := order[k]
		u := users[i]
		target := wsURL
		if i < 2*cfg.pairs && i%2 == 1 {
			target = recvWS // receivers may sit on another node
		}
		c, err := dialReady(ctx, d, target, u, cfg.readyTimeout)
		if err != nil {
			return err
		}
		conns[i] = c
		switch {
		case i < 2*cfg.pairs && i%2 == 1:
			p := pairs[i/2]
			p.rconn = c
			h := p.receiverRead(rs)
			readers.Go(func() { readLoop(c, rs, "receiver", cfg.readTimeout, h) })
		case i < 2*cfg.pairs:
			p := pairs[i/2]
			p.sconn = c
			h := p.senderRead(rs)
			readers.Go(func() { readLoop(c, rs, "sender", cfg.readTimeout, h) })
		default:
			readers.Go(func() {
				readLoop(c, rs, "idle", cfg.readTimeout, func(*proto.ServerFrame, time.Time) { rs.idleFrames.Add(1) })
			})
		}
		return nil
	})
	st.Connect = time.Since(connStart)
	st.Total = time.Since(startAll)
	res.Setup = st.report()
	closeAll := func() {
		rs.stopping.Store(true)
		parallel(context.Background(), len(conns), 256, nil, func(_ context.Context, i int) error {
			if c := conns[i]; c != nil {
				c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""),
					time.Now().Add(time.Second))
				c.Close()
			}
			return nil
		})
		if !waitTimeout(&readers, 10*time.Second) {
			fmt.Fprintln(os.Stderr, "kfload: warning: some readers did not end within 10s of closing; counts may be incomplete")
		}
	}
	if err != nil {
		closeAll()
		return err
	}
	res.Connections = connReport{Total: nConns, Senders: cfg.pairs, Receivers: cfg.pairs, Idle: cfg.idle}

	// --- memory with everything connected ---
	fmt.Fprintf(os.Stderr, "connected %d sockets; settling %s\n", nConns, cfg.settle)
	if err := ctxtime.Sleep(ctx, cfg.settle); err != nil {
		closeAll()
		return err
	}
	res.Server.Connected = sample("connected")
	if err := ctxtime.Sleep(ctx, 2*time.Second); err != nil {
		closeAll()
		return err
	}
	res.Server.Connected2 = sample("connected (2nd)")

	// --- run ---
	if cfg.pairs == 0 {
		fmt.Fprintf(os.Stderr, "idle mode: --rate, --warmup and --payload are not used\n")
		holdStart := time.Now()
		cpu0, wait0, mach0 := selfCPU(), runqueueWait(os.Getpid()), sampleMachine()
		a0 := res.Server.Connected2
		left := cfg.duration - cfg.settle - 2*time.Second
		if left > 0 {
			fmt.Fprintf(os.Stderr, "holding %d idle sockets for %s\n", nConns, left)
			ctxtime.Sleep(ctx, left)
		}
		res.Server.End = sample("end")
		res.window(a0, res.Server.End, time.Since(holdStart), selfCPU()-cpu0, runqueueWait(os.Getpid())-wait0)
		res.Machine = machineDelta(mach0, sampleMachine(), time.Since(holdStart))
		closeAll()
		res.finish(cfg, rs, pairs, time.Now())
		return res.print(cfg)
	}

	period := time.Duration(float64(time.Second) * float64(cfg.pairs) / cfg.rate)
	if per := cfg.rate / float64(cfg.pairs); per > 20 {
		fmt.Fprintf(os.Stderr, "note: %.0f sends/s per connection; the server's default limit is 20/s (burst 100): expect rate_limited unless messenger.send_rate is raised\n", per)
	}
	runStart := time.Now().Add(50 * time.Millisecond)
	mStart := runStart.Add(cfg.warmup)
	mEnd := mStart.Add(cfg.duration)
	rs.mStart.Store(mStart.UnixNano())
	rs.mEnd.Store(mEnd.UnixNano())
	sendCtx, stopSend := context.WithCancel(ctx)
	var senders sync.WaitGroup
	for _, p := range pairs {
		start := runStart.Add(time.Duration(rand.Int64N(int64(period))))
		senders.Go(func() { p.sendLoop(sendCtx, rs, runID, cfg.payload, period, start) })
	}
	fmt.Fprintf(os.Stderr, "sending: %d senders, one message every %s each; warmup %s, measuring %s\n",
		cfg.pairs, period, cfg.warmup, cfg.duration)

	interrupted := sleepUntil(ctx, mStart) != nil
	var wStart time.Time
	var cpuA, waitA time.Duration
	var machA machineSample
	var sA *serverSample
	if !interrupted {
		wStart, cpuA, waitA, machA = time.Now(), selfCPU(), runqueueWait(os.Getpid()), sampleMachine()
		sA = sample("window start")
		progressUntil(ctx, rs, mEnd, cfg.progress)
		interrupted = ctx.Err() != nil
	}
	wEnd, cpuB, waitB, machB := time.Now(), selfCPU(), runqueueWait(os.Getpid()), sampleMachine()
	sB := sample("window end")
	if interrupted {
		stopSend()
	}
	senders.Wait()
	stopSend()
	if sA != nil {
		res.window(sA, sB, wEnd.Sub(wStart), cpuB-cpuA, waitB-waitA)
		res.Machine = machineDelta(machA, machB, wEnd.Sub(wStart))
	}

	// In-flight: until every send is answered and every ack delivered.
	graceStart := time.Now()
	for time.Since(graceStart) < cfg.grace {
		if rs.respTotal.Load() >= rs.sentTotal.Load() && rs.deliveredTotal.Load() >= rs.ackedTotal.Load() {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	res.GraceWaitS = time.Since(graceStart).Seconds()
	res.Server.End = sample("end")
	graceEnd := time.Now()
	closeAll()
	res.finish(cfg, rs, pairs, graceEnd)
	res.verifyLost(context.WithoutCancel(ctx), a, cfg.setupConc)
	if interrupted {
		res.Interrupted = true
	}
	return res.print(cfg)
}

// progressUntil prints a progress line every interval until t.
func progressUntil(ctx context.Context, rs *runState, t time.Time, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	end := time.NewTimer(time.Until(t))
	defer end.Stop()
	lastSent, lastDel, last := rs.sentTotal.Load(), rs.deliveredTotal.Load(), time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-end.C:
			return
		case now := <-tick.C:
			s, dl := rs.sentTotal.Load(), rs.deliveredTotal.Load()
			el := now.Sub(last).Seconds()
			fmt.Fprintf(os.Stderr, "  %s sent %d (%.0f/s) acked %d delivered %d (%.0f/s) max latency %v\n",
				now.Format("15:04:05.0"), s, float64(s-lastSent)/el, rs.ackedTotal.Load(), dl, float64(dl-lastDel)/el,
				time.Duration(rs.maxLatency.Swap(0)).Round(time.Millisecond))
			lastSent, lastDel, last = s, dl, now
		}
	}
}

func sleepUntil(ctx context.Context, t time.Time) error { return ctxtime.Sleep(ctx, time.Until(t)) }

func waitTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}
