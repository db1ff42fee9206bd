// Package redistest starts real redis-server processes for tests: one node
// (Start) or a Redis Cluster of several masters (StartCluster), each on a
// free loopback port with its own temporary directory, append-only file on
// and fsync on every write, stopped when the test ends.
//
// A missing redis-server (or, for a cluster, redis-cli) fails the test: the
// Redis tests are part of `make test`, which installs them.
package redistest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// startTimeout bounds how long a server may take to answer PING.
	startTimeout = 15 * time.Second
	// stopTimeout bounds how long SHUTDOWN may take before SIGKILL.
	stopTimeout = 5 * time.Second
	// portAttempts is how often Start tries another port after a
	// collision with some other process.
	portAttempts = 5
)

const missingServer = "redis-server not found: run `make test` (it installs it) or apt-get install redis-server"

// Option changes how a server is started.
type Option func(*options)

type options struct {
	args []string
}

// Args appends command-line arguments to redis-server's (for example
// "--appendfsync", "everysec"); later arguments win over the defaults.
func Args(args ...string) Option {
	return func(o *options) { o.args = append(o.args, args...) }
}

// Server is one running redis-server. Its methods are safe for concurrent
// use.
type Server struct {
	t    testing.TB
	bin  string
	dir  string
	args []string

	mu   sync.Mutex // guards the fields below
	port int
	cmd  *exec.Cmd
	exit chan struct{} // closed when cmd has been waited for
}

// Start starts a redis-server on a free loopback port with
// --save "" --appendonly yes --appendfsync always in a fresh temporary
// directory, waits until it answers PING and stops it when the test ends.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("%s (%v)", missingServer, err)
	}
	s := &Server{t: t, bin: bin, dir: t.TempDir(), args: o.args}
	t.Cleanup(s.stop)
	var errs []error
	for range portAttempts {
		port, err := freePort()
		if err != nil {
			t.Fatalf("redistest: %v", err)
		}
		err = s.start(port)
		if err == nil {
			return s
		}
		errs = append(errs, err)
		if !errors.Is(err, errExited) {
			break
		}
	}
	t.Fatalf("redistest: start redis-server: %v", errors.Join(errs...))
	return nil
}

// Addr returns the server's host:port.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
}

// URL returns redis://127.0.0.1:PORT/0.
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

// Dir returns the server's working directory (the append-only file lives
// there).
func (s *Server) Dir() string { return s.dir }

// Kill ends the server with SIGKILL, as a crash would, and waits for the
// process. Writes it acknowledged with fsync on are on disk.
func (s *Server) Kill() {
	s.t.Helper()
	s.mu.Lock()
	cmd, exit := s.cmd, s.exit
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-exit
}

// Freeze stops the server with SIGSTOP, as a Redis that hangs: it keeps
// its connections and answers nothing until Thaw. The end of the test
// thaws it before stopping it.
func (s *Server) Freeze() { s.signal(syscall.SIGSTOP) }

// Thaw resumes a frozen server (SIGCONT).
func (s *Server) Thaw() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		s.t.Fatalf("redistest: %v: the server is not running", sig)
	}
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("redistest: %v: %v", sig, err)
	}
}

// Restart kills the server (if it runs) and starts it again on the same
// port and directory, so that it loads its append-only file.
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	s.mu.Lock()
	port := s.port
	s.mu.Unlock()
	var err error
	// The port is ours until another process takes it; redis-server
	// binds with SO_REUSEADDR, so TIME_WAIT does not get in the way.
	for range 3 {
		if err = s.start(port); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.t.Fatalf("redistest: restart redis-server on port %d: %v", port, err)
}

var errExited = errors.New("redis-server exited")

// start launches the process on port and waits for PING.
func (s *Server) start(port int) error {
	args := []string{
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--dir", s.dir,
		"--save", "",
		"--appendonly", "yes",
		"--appendfsync", "always",
		"--daemonize", "no",
		"--protected-mode", "no",
		"--logfile", "",
		"--loglevel", "warning",
	}
	args = append(args, s.args...)
	logf, err := os.OpenFile(filepath.Join(s.dir, "redis.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(s.bin, args...)
	cmd.Dir = s.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("%s: %w", s.bin, err)
	}
	exit := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(exit)
	}()
	s.mu.Lock()
	s.port, s.cmd, s.exit = port, cmd, exit
	s.mu.Unlock()

	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(startTimeout)
	backoff := time.Millisecond
	for {
		select {
		case <-exit:
			s.mu.Lock()
			s.cmd = nil
			s.mu.Unlock()
			return fmt.Errorf("%w on port %d: %s", errExited, port, s.logTail())
		default:
		}
		// The server must be ours: another process may hold the port
		// while ours fails to bind and exits.
		// INFO answers while the append-only file loads; PING does not.
		if pid, err := serverPID(addr); err == nil && pid == cmd.Process.Pid {
			if v, err := Do(addr, "PING"); err == nil && v == "PONG" {
				return nil
			}
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Signal(syscall.SIGKILL)
			<-exit
			return fmt.Errorf("redis-server on port %d did not answer PING within %v: %s", port, startTimeout, s.logTail())
		}
		select {
		case <-exit:
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 50*time.Millisecond)
	}
}

// stop shuts the server down without saving and waits for the process.
func (s *Server) stop() {
	s.mu.Lock()
	cmd, exit, port := s.cmd, s.exit, s.port
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGCONT) // a frozen server (Freeze) answers again
	// SHUTDOWN NOSAVE closes the connection without a reply.
	_, _ = Do(net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), "SHUTDOWN", "NOSAVE")
	select {
	case <-exit:
	case <-time.After(stopTimeout):
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-exit
	}
}

func (s *Server) logTail() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
	b = bytes.TrimSpace(b)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	if len(b) == 0 {
		return "(empty log)"
	}
	return string(b)
}

// freePort asks the kernel for a free port. Redis cannot listen on port 0,
// so the port is released again before redis-server binds it; Start
// retries on the rare collision.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	return port, l.Close()
}

// serverPID returns the process_id of INFO server at addr.
func serverPID(addr string) (int, error) {
	v, err := Do(addr, "INFO", "server")
	if err != nil {
		return 0, err
	}
	info, ok := v.(string)
	if !ok {
		return 0, fmt.Errorf("INFO: unexpected reply %T", v)
	}
	pid, ok := infoField(info, "process_id")
	if !ok {
		return 0, errors.New("INFO: no process_id")
	}
	return strconv.Atoi(pid)
}

// infoField returns the value of "name:value" in an INFO reply.
func infoField(info, name string) (string, bool) {
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return v, true
		}
	}
	return "", false
}

// Do sends one command to addr on a new connection and returns the reply:
// string for simple and bulk strings, int64 for integers, nil for a null,
// []any for arrays, and an error for an error reply. It exists so that the
// helpers need no client library; tests normally use go-redis.
func Do(addr string, args ...string) (any, error) {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := conn.Write(b.Bytes()); err != nil {
		return nil, err
	}
	return readReply(bufio.NewReader(conn))
}

func readReply(r *bufio.Reader) (any, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return nil, errors.New("empty reply line")
	}
	switch kind, rest := line[0], line[1:]; kind {
	case '+':
		return rest, nil
	case '-':
		return nil, fmt.Errorf("redis: %s", rest)
	case ':':
		return strconv.ParseInt(rest, 10, 64)
	case '$':
		n, err := strconv.Atoi(rest)
		if err != nil || n < 0 {
			return nil, err
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(rest)
		if err != nil || n < 0 {
			return nil, err
		}
		out := make([]any, 0, n)
		for range n {
			v, err := readReply(r)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	}
	return nil, fmt.Errorf("unexpected reply %q", line)
}
