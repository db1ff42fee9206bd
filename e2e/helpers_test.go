package e2e_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"klassenfunk/internal/testenv"
)

// buildBinaries builds klassenfunk and kfchat into dir.
func buildBinaries(t *testing.T, ctx context.Context, dir string) (server, chat string) {
	t.Helper()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", dir+string(filepath.Separator),
		"klassenfunk/cmd/klassenfunk", "klassenfunk/cmd/kfchat")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return filepath.Join(dir, "klassenfunk"), filepath.Join(dir, "kfchat")
}

// baseEnv is the environment without anything that configures Klassenfunk
// or kfchat, with HOME and XDG_CONFIG_HOME in home.
func baseEnv(home string) []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "KLASSENFUNK_") || strings.HasPrefix(k, "KFCHAT_") || k == "HOME" || k == "XDG_CONFIG_HOME" {
			continue
		}
		out = append(out, kv)
	}
	return append(out, "HOME="+home, "XDG_CONFIG_HOME="+filepath.Join(home, ".config"))
}

// lockedBuffer collects output from several goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

// proc is a background process whose output is read line by line.
type proc struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	stdout chan string
	stderr chan string
	all    lockedBuffer // everything, for failure messages and audits
	exited chan struct{}
	err    error // valid after exited is closed
}

func startProc(t *testing.T, ctx context.Context, name string, env []string, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: name, stdout: make(chan string, 1000), stderr: make(chan string, 1000), exited: make(chan struct{})}
	p.cmd = exec.CommandContext(ctx, bin, args...)
	p.cmd.Env = env
	p.cmd.Cancel = func() error { return p.cmd.Process.Signal(syscall.SIGTERM) }
	p.cmd.WaitDelay = 10 * time.Second
	outPipe, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	errPipe, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	var readers sync.WaitGroup
	readers.Add(2)
	go p.readLines(outPipe, p.stdout, &readers)
	go p.readLines(errPipe, p.stderr, &readers)
	go func() {
		readers.Wait() // Wait must not run before the pipes are drained
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.signal(syscall.SIGKILL)
		<-p.exited
	})
	return p
}

func (p *proc) readLines(r io.Reader, ch chan string, wg *sync.WaitGroup) {
	defer wg.Done()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		fmt.Fprintln(&p.all, line)
		select {
		case ch <- line:
		default: // nobody waits for this stream; the transcript has it
		}
	}
	io.Copy(io.Discard, r)
}

func (p *proc) signal(sig os.Signal) {
	select {
	case <-p.exited:
	default:
		p.cmd.Process.Signal(sig)
	}
}

// waitLine waits until a line on ch satisfies match and returns it.
func (p *proc) waitLine(ch chan string, within time.Duration, what string, match func(string) bool) string {
	p.t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		select {
		case line := <-ch:
			if match(line) {
				return line
			}
		case <-p.exited:
			// The readers are done: what is left is buffered in ch.
			for len(ch) > 0 {
				if line := <-ch; match(line) {
					return line
				}
			}
			p.t.Fatalf("%s exited (%v) before %s; output:\n%s", p.name, p.err, what, p.all.Bytes())
		case <-deadline.C:
			p.t.Fatalf("%s: no %s within %v; output:\n%s", p.name, what, within, p.all.Bytes())
		}
	}
}

// stop sends SIGTERM and waits for the process to end; it returns its
// exit error.
func (p *proc) stop(within time.Duration) error {
	p.t.Helper()
	p.signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return p.err
	case <-time.After(within):
		p.t.Fatalf("%s did not stop within %v after SIGTERM", p.name, within)
		return nil
	}
}

// runCmd runs a command to completion with stdin and returns its stdout;
// a failure ends the test with the command's stderr.
func runCmd(t *testing.T, ctx context.Context, env []string, stdin string, bin string, args ...string) string {
	t.Helper()
	out, errOut, err := tryCmd(ctx, env, stdin, bin, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", filepath.Base(bin), strings.Join(args, " "), err, out, errOut)
	}
	return out
}

func tryCmd(ctx context.Context, env []string, stdin string, bin string, args ...string) (stdout, stderr string, err error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	cmd.Stdin = strings.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// serving waits for srv's "serving" log line and for /readyz, and returns
// the address it listens on (host:port).
func serving(t *testing.T, srv *proc) string {
	t.Helper()
	addr := logAddr(srv.waitLine(srv.stderr, 20*time.Second, `"serving" log line`, func(l string) bool { return logAddr(l) != "" }))
	waitReady(t, "http://"+addr, 10*time.Second)
	return addr
}

// waitReady polls /readyz until it answers 200.
func waitReady(t *testing.T, base string, within time.Duration) {
	t.Helper()
	testenv.Eventually(t, within, "the server to be ready", func() bool {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// logAddr extracts the listen address from the server's JSON "serving" log
// line, "" for other lines.
func logAddr(line string) string {
	var l struct {
		Msg  string `json:"msg"`
		Addr string `json:"addr"`
	}
	if json.Unmarshal([]byte(line), &l) != nil || l.Msg != "serving" {
		return ""
	}
	return l.Addr
}

// forms returns byte strings that must not occur in the audited data for a
// secret s: s itself, its hex, and its standard and URL-safe base64 at
// each of the three byte alignments it may have inside a longer encoded
// value (the edges that depend on neighbouring bytes are left out).
func forms(s []byte) [][]byte {
	out := [][]byte{s, []byte(hex.EncodeToString(s)), []byte(strings.ToUpper(hex.EncodeToString(s)))}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
		for k := 0; k < 3; k++ {
			e := enc.EncodeToString(append(make([]byte, k), s...))
			start := 0
			if k > 0 {
				start = 4
			}
			if end := len(e) - 4; end-start >= 8 {
				out = append(out, []byte(e[start:end]))
			}
		}
	}
	return out
}

// leaks returns the names of the secrets found in data.
func leaks(data []byte, secrets map[string][]byte) []string {
	var found []string
	for name, s := range secrets {
		for _, f := range forms(s) {
			if bytes.Contains(data, f) {
				found = append(found, fmt.Sprintf("%s (as %q)", name, shorten(f)))
				break
			}
		}
	}
	return found
}

func shorten(b []byte) string {
	if len(b) > 24 {
		return string(b[:24]) + "…"
	}
	return string(b)
}

// fileMode fails the test unless path has exactly mode perm.
func fileMode(t *testing.T, path string, perm os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != perm {
		t.Fatalf("%s has mode %04o, want %04o", path, fi.Mode().Perm(), perm)
	}
}
