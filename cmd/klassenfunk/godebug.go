package main

import (
	"fmt"
	"os"
	"strings"
	"syscall"
)

// serveGODEBUG are the Go runtime settings serve runs with unless the
// environment's GODEBUG names them. The runtime reads them only at start,
// so serve starts itself again with them (reexecServe).
//
// gcshrinkstackoff=1: a goroutine that handles sends (a poller worker)
// parks with little of its stack in use, but handling a send needs more
// than 4 KiB (the frames of handle, Send and AppendMessage alone are 4
// KiB), so its stack is 8 KiB. Every garbage-collection cycle shrank such
// stacks while marking, and each grew back with a copy at the next send.
// When every socket had a reader goroutine, that was ≈ 30 ms of CPU per
// cycle for the 5,000 senders of a load run, all of it inside the cycle's
// latency spike. The poller's workers are far fewer (about the sends in
// flight), and each one's stack is wanted again at once; keeping it costs
// nothing for idle sockets (docs/performance.md).
var serveGODEBUG = []string{"gcshrinkstackoff=1"}

// withGODEBUG returns env with settings added to its GODEBUG, each unless
// GODEBUG already names its key; changed is false when nothing was added.
func withGODEBUG(env, settings []string) (out []string, changed bool) {
	cur, seen := "", false
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "GODEBUG="); ok && !seen {
			cur, seen = v, true // the first one counts, as for the runtime
		}
	}
	have := map[string]bool{}
	for _, f := range strings.Split(cur, ",") {
		if k, _, ok := strings.Cut(f, "="); ok {
			have[strings.TrimSpace(k)] = true
		}
	}
	fields := []string{}
	if cur != "" {
		fields = append(fields, cur)
	}
	for _, s := range settings {
		k, _, _ := strings.Cut(s, "=")
		if !have[k] {
			fields = append(fields, s)
			changed = true
		}
	}
	if !changed {
		return env, false
	}
	out = make([]string, 0, len(env)+1)
	for _, kv := range env {
		if !strings.HasPrefix(kv, "GODEBUG=") {
			out = append(out, kv)
		}
	}
	return append(out, "GODEBUG="+strings.Join(fields, ",")), true
}

// reexecServe replaces the process with itself under serveGODEBUG (same
// pid, arguments and open files) when the environment lacks one of them.
// It returns only when there is nothing to do or the exec failed; serve
// then runs with the runtime's defaults.
func reexecServe() error {
	env, changed := withGODEBUG(os.Environ(), serveGODEBUG)
	if !changed {
		return nil
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own executable: %w", err)
	}
	return fmt.Errorf("exec %s: %w", exe, syscall.Exec(exe, os.Args, env))
}
