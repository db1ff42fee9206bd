package e2e_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestServeRuntimeSettings: serve raises GOMAXPROCS to 2, runs the
// garbage collector at GOGC=500 and without stack shrinking unless the
// environment says otherwise (docs/api.md), as the Go runtime's own
// metrics and the running process's environment (which the runtime read
// at start: serve starts itself again with the setting) report them.
func TestServeRuntimeSettings(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tmp := t.TempDir()
	serverBin, _ := buildBinaries(t, ctx, filepath.Join(tmp, "bin"))
	var env []string
	for _, kv := range baseEnv(filepath.Join(tmp, "home")) {
		if !strings.HasPrefix(kv, "GOGC=") && !strings.HasPrefix(kv, "GOMAXPROCS=") {
			env = append(env, kv)
		}
	}
	for _, c := range []struct {
		name             string
		env              []string
		gogc, gomaxprocs string
		godebug          string
	}{
		{"defaults", []string{"GOMAXPROCS=1"}, "500", "2", "gcshrinkstackoff=1"},
		{"set", []string{"GOMAXPROCS=3", "GOGC=150", "GODEBUG=gctrace=0,gcshrinkstackoff=0"}, "150", "3", "gctrace=0,gcshrinkstackoff=0"},
	} {
		t.Run(c.name, func(t *testing.T) {
			srvEnv := append(env[:len(env):len(env)], c.env...)
			srvEnv = append(srvEnv, "KLASSENFUNK_DATA="+filepath.Join(tmp, c.name), "KLASSENFUNK_OPERATOR_TOKEN="+operatorToken, "KLASSENFUNK_LISTEN=127.0.0.1:0")
			srv := startProc(t, ctx, "klassenfunk serve", srvEnv, serverBin, "serve")
			addr := serving(t, srv)
			environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", srv.cmd.Process.Pid))
			if err != nil {
				t.Fatal(err)
			}
			if got := envValue(environ, "GODEBUG"); got != c.godebug {
				t.Errorf("GODEBUG of the running server = %q, want %q", got, c.godebug)
			}
			resp, err := http.Get("http://" + addr + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			for metric, want := range map[string]string{"go_gc_gogc_percent": c.gogc, "go_sched_gomaxprocs_threads": c.gomaxprocs} {
				m := regexp.MustCompile(`(?m)^` + metric + ` (\S+)$`).FindSubmatch(body)
				if m == nil || string(m[1]) != want {
					t.Errorf("%s = %q, want %s", metric, m, want)
				}
			}
			if err := srv.stop(20 * time.Second); err != nil {
				t.Errorf("serve exited with %v", err)
			}
		})
	}
}

// envValue returns the first value of key in a NUL-separated environment
// (/proc/<pid>/environ).
func envValue(environ []byte, key string) string {
	for _, kv := range bytes.Split(environ, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte(key+"=")); ok {
			return string(v)
		}
	}
	return ""
}
