// Command klassenfunk is the Klassenfunk server and its operator tools.
//
//	klassenfunk serve [--config FILE] [--listen ADDR] [--data DIR]
//	klassenfunk admin <task> …   (klassenfunk admin --help)
//	klassenfunk push test …      (klassenfunk push --help)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	stdlog "log"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/term"

	"klassenfunk/internal/httpapi"
	"klassenfunk/server"
)

const usage = `Usage: klassenfunk <command> [flags]

Commands:
  serve    run the server (klassenfunk serve --help)
  admin    operator tasks: schools, users, backups, operator token (klassenfunk admin --help)
  push     push checks: send a test push to a user's devices (klassenfunk push --help)
`

func main() {
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		if err := reexecServe(); err != nil {
			fmt.Fprintln(os.Stderr, "klassenfunk: runtime settings not applied:", err)
		}
	}
	if err := run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) && asksForHelp(os.Args[1:]) {
			os.Exit(0) // --help: the usage was asked for, and printed
		}
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "klassenfunk:", err)
		}
		os.Exit(2)
	}
}

// logConfig says at start which file configured the node and the values
// an operator most needs to confirm (an environment override applied, the
// right data directory).
func logConfig(log *slog.Logger, path string, cfg server.Config) {
	if _, err := os.Stat(path); err != nil {
		log.Warn("no configuration file: built-in defaults and the environment only", "file", path)
	} else {
		log.Info("configuration", "file", path)
	}
	backups := "off"
	if cfg.RedisURL != "" {
		backups = "off (cluster mode: back up Redis)"
	} else if !cfg.Backup.Off {
		backups = cfg.BackupDir()
	}
	log.Info("settings", "data", cfg.DataDir, "retention_messages", cfg.Retention.Messages.String(),
		"retention_attachments", cfg.Retention.Attachments.String(), "sweep_interval", cfg.Retention.SweepInterval.String(),
		"backups", backups)
}

// asksForHelp reports whether args hold -h, -help or --help (before a
// "--"): the usage that follows is what was asked for, not an error.
func asksForHelp(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "-h", "-help", "--help":
			return true
		}
	}
	return false
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return flag.ErrHelp
	}
	switch args[0] {
	case "serve":
		return serve(args[1:], stderr)
	case "admin":
		return admin(args[1:], stdin, stdout, stderr)
	case "push":
		return pushCmd(args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", args[0])
	}
}

func serve(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", defaultConfigFile, "configuration file (YAML)")
	listen := fs.String("listen", "", "listen address (overrides config and KLASSENFUNK_LISTEN)")
	data := fs.String("data", "", "data directory (overrides config and KLASSENFUNK_DATA)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("serve takes no arguments, got %q (flags: --config, --listen, --data)", fs.Args())
	}
	explicit := false
	fs.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "config" })
	cfg, err := loadConfig(*configPath, explicit)
	if err != nil {
		return err
	}
	if *listen != "" {
		cfg.Listen = *listen
	}
	if *data != "" {
		cfg.DataDir = *data
	}
	cfg.Defaults()
	log := newLogger(cfg, stderr)
	logConfig(log, *configPath, cfg)
	// With a single P, every fdatasync of a commit parks the only P in a
	// syscall until the runtime's sysmon hands it over (up to ~10 ms), and
	// all sockets stall meanwhile. A second P costs no CPU (taskset or a
	// CPU quota still bound the process); it lets the scheduler run other
	// goroutines while a commit syncs. Measured: p99 5 s → 95 ms at
	// 4,000 msgs/s on one core (docs/performance.md).
	if n := runtime.GOMAXPROCS(0); n < 2 {
		runtime.GOMAXPROCS(2)
		log.Info("GOMAXPROCS raised to 2 so that fsyncs do not stall the scheduler", "was", n)
	}
	// The garbage collector marks the whole live heap (10,000 sockets and
	// the messages waiting for a checkpoint: ~110 MB at 15,000 msgs/s) in
	// each cycle, on the same core as the senders; at the default GOGC=100
	// that was a cycle every 1.2 s, and each one a latency spike. 500 makes
	// them about five times rarer for about 1.5× the memory under load;
	// idle memory per socket is unchanged (docs/performance.md). (It was
	// 400 while every socket had a reader goroutine, whose stacks counted
	// towards the heap goal.) GOGC and GOMEMLIMIT in the environment still
	// decide.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGOGC)
	}
	// That growth must not run into the OOM killer on a small machine or
	// in a container with a memory limit: a soft limit makes the collector
	// run earlier there (availableMemory).
	if os.Getenv("GOMEMLIMIT") == "" {
		if mem, source := availableMemory("/"); mem > 0 {
			lim := int64(float64(mem) * gcMemoryShare)
			debug.SetMemoryLimit(lim)
			log.Info("garbage collector's soft memory limit set", "bytes", lim, "share_of", source)
		}
	}
	if cfg.NoSync {
		log.Warn("KLASSENFUNK_UNSAFE_NO_FSYNC=1: commits are not fsync'd; a crash loses acknowledged messages. For benchmarks only.")
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	srv, err := server.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer srv.Close()
	checkOperatorTokenFile(cfg.DataDir, srv.Auth.IsOperator, log)
	if tok := srv.OperatorTokenGenerated; tok != "" {
		if err := showOperatorToken(stderr, cfg.DataDir, tok, log); err != nil {
			return err
		}
	}
	if empty, err := srv.Empty(ctx); err == nil && empty {
		fmt.Fprint(stderr, firstSteps)
	}

	tlsCfg, err := tlsConfig(cfg.TLSCertFile, cfg.TLSKeyFile, log)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	hs := &http.Server{
		Handler:           srv.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          stdlog.New(&anonymizedLog{log: log, now: time.Now}, "", 0),
		TLSConfig:         tlsCfg,
	}
	if dl := os.Getenv("KLASSENFUNK_DEBUG_LISTEN"); dl != "" {
		// Profiling for operators, on its own loopback address only: it
		// shows the process's memory and stacks.
		dln, err := listenLoopback(dl)
		if err != nil {
			return fmt.Errorf("KLASSENFUNK_DEBUG_LISTEN: %w", err)
		}
		defer dln.Close()
		log.Warn("debug listener (pprof) on", "addr", dln.Addr().String())
		go func() {
			if err := http.Serve(dln, debugMux()); err != nil && !errors.Is(err, net.ErrClosed) {
				log.Error("debug listener", "err", err)
			}
		}()
	}
	srv.Start()
	log.Info("serving", "addr", ln.Addr().String(), "data", cfg.DataDir, "mode", srv.Mode(), "tls", tlsCfg != nil)
	errc := make(chan error, 1)
	go func() {
		if tlsCfg != nil {
			errc <- hs.ServeTLS(ln, "", "") // the certificate comes from TLSConfig
			return
		}
		errc <- hs.Serve(ln)
	}()

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down")
	shutCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second+cfg.DrainDelay)
	defer cancel()
	srv.Drain(shutCtx) // closes WebSockets with 1001
	if d := cfg.DrainDelay; d > 0 {
		// A second SIGINT or SIGTERM ends the wait.
		again := make(chan os.Signal, 1)
		signal.Notify(again, syscall.SIGINT, syscall.SIGTERM)
		log.Info("draining: the listener stays open", "for", d.String())
		select {
		case <-time.After(d):
		case <-again:
			log.Info("draining cut short by a second signal")
		}
		signal.Stop(again)
	}
	if err := hs.Shutdown(shutCtx); err != nil {
		log.Warn("http shutdown", "err", err)
	}
	return srv.Close()
}

const firstSteps = `
The database is empty. Create the first school and its admin:

    klassenfunk admin create-school "Gymnasium Musterstadt"
    klassenfunk admin create-user --school <school id> --login admin --name "Admin" --role admin

(with the server running, admin talks to it: export KLASSENFUNK_OPERATOR_TOKEN=<token> first;
 with the server stopped, add --offline to work on the data directory directly)

`

func newLogger(cfg server.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// anonymizedLog passes net/http's own error lines (a failed TLS
// handshake, a bad HTTP/2 preface) to the log with the client addresses
// in them anonymized, as every address the node logs. Anyone can make
// such lines, so at most httpLogBurst of them a second are written; the
// next line written says how many were left out.
type anonymizedLog struct {
	log *slog.Logger
	now func() time.Time

	mu      sync.Mutex
	second  int64 // the unix second of the lines counted
	count   int   // lines in that second
	dropped int   // left out since the last line written
}

const httpLogBurst = 20

func (l *anonymizedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	if sec := l.now().Unix(); sec != l.second {
		l.second, l.count = sec, 0
	}
	l.count++
	if l.count > httpLogBurst {
		l.dropped++
		l.mu.Unlock()
		return len(p), nil
	}
	dropped := l.dropped
	l.dropped = 0
	l.mu.Unlock()
	if dropped > 0 {
		l.log.Warn("http server: lines left out (more than 20 a second)", "count", dropped)
	}
	l.log.Warn(httpapi.AnonymizeText(strings.TrimSpace(string(p))))
	return len(p), nil
}

// listenLoopback listens on addr, which must name a loopback address
// (127.0.0.1:6060, [::1]:6060, localhost:6060).
func listenLoopback(addr string) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if ip, err := netip.ParseAddr(host); host != "localhost" && (err != nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("%q is not a loopback address (pprof shows the process's memory)", addr)
	}
	return net.Listen("tcp", addr)
}

// debugMux serves net/http/pprof (KLASSENFUNK_DEBUG_LISTEN).
func debugMux() *http.ServeMux {
	m := http.NewServeMux()
	m.HandleFunc("/debug/pprof/", pprof.Index)
	m.HandleFunc("/debug/pprof/profile", pprof.Profile)
	m.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	m.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return m
}

// defaultGOGC is serve's GC percentage when GOGC is not set.
const defaultGOGC = 500

// showOperatorToken hands a generated operator token to whoever started
// the server, once. On a terminal it is printed. Otherwise stderr goes to
// a log collector (systemd, Docker), which would keep the token in clear
// text: it is written to <data dir>/operator-token instead, readable only
// by the server's user, and the log says where.
func showOperatorToken(stderr io.Writer, dataDir, tok string, log *slog.Logger) error {
	if f, ok := stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprintf(stderr, "\nOperator token (shown once, stored only hashed; keep it safe):\n\n    %s\n\n", tok)
		return nil
	}
	path := filepath.Join(dataDir, operatorTokenFile)
	// A file from an earlier token: this one replaces it, created anew so
	// that nobody else can hold it open.
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("operator token: %w (set a new one with: klassenfunk admin --offline operator-token --reset)", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		_, err = f.WriteString(tok + "\n")
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return fmt.Errorf("operator token: %w (set a new one with: klassenfunk admin --offline operator-token --reset)", err)
	}
	log.Warn("operator token generated: stderr is no terminal, so it was written to a file only this user can read; read it, keep it safe, delete the file", "file", path)
	return nil
}

// checkOperatorTokenFile looks at a token file that showOperatorToken
// left in the data directory. While it holds the operator token, the log
// reminds the operator to read and delete it. Once its token no longer is
// the operator token (KLASSENFUNK_OPERATOR_TOKEN, a reset or a new
// database replaced it), it is removed: an operator who found it would
// only be refused.
func checkOperatorTokenFile(dataDir string, isOperator func(string) bool, log *slog.Logger) {
	path := filepath.Join(dataDir, operatorTokenFile)
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		log.Warn("cannot read the operator token file", "file", path, "error", err)
	case isOperator(strings.TrimSpace(string(b))):
		log.Warn("the generated operator token is still in a file: read it, then delete the file (backups of the data directory would keep it)",
			"file", path)
	default:
		if err := os.Remove(path); err != nil {
			log.Warn("the operator token file holds a token that is no longer the operator token, and cannot be removed", "file", path, "error", err)
			return
		}
		log.Warn("removed the operator token file: its token is no longer the operator token (KLASSENFUNK_OPERATOR_TOKEN or operator-token --reset replaced it)",
			"file", path)
	}
}

// operatorTokenFile is where showOperatorToken writes a generated token
// when stderr is no terminal.
const operatorTokenFile = "operator-token"
