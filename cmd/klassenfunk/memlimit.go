package main

import (
	"bufio"
	"bytes"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
)

// availableMemory returns the memory the process may use: the smallest of
// the machine's (MemTotal) and the limits of its memory cgroup and that
// cgroup's ancestors (v2 memory.max, v1 memory.limit_in_bytes), read
// under root ("/" outside tests). source names where it came from; 0 when
// nothing could be read.
//
// serve gives the garbage collector a soft limit below it: at GOGC=500 the
// heap may grow to six times what is live under load, which on a small
// machine or in a container with a memory limit would end in the OOM
// killer instead of an earlier collection.
func availableMemory(root string) (limit int64, source string) {
	if b, err := os.ReadFile(filepath.Join(root, "proc/meminfo")); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) == 3 && f[0] == "MemTotal:" && f[2] == "kB" {
				if kb, err := strconv.ParseInt(f[1], 10, 64); err == nil && kb > 0 {
					limit, source = kb<<10, "MemTotal"
				}
			}
		}
	}
	cg, err := os.ReadFile(filepath.Join(root, "proc/self/cgroup"))
	if err != nil {
		return limit, source
	}
	sc := bufio.NewScanner(bytes.NewReader(cg))
	for sc.Scan() {
		// hierarchy-ID:controllers:path; v2 is "0::path".
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		var dir, file string
		switch {
		case parts[0] == "0" && parts[1] == "":
			dir, file = "sys/fs/cgroup", "memory.max"
		case strings.Contains(","+parts[1]+",", ",memory,"):
			dir, file = "sys/fs/cgroup/memory", "memory.limit_in_bytes"
		default:
			continue
		}
		for p := path.Clean("/" + parts[2]); ; p = path.Dir(p) {
			if n, ok := readLimit(filepath.Join(root, dir, p, file)); ok && (limit == 0 || n < limit) {
				limit, source = n, "cgroup "+path.Join(p, file)
			}
			if p == "/" {
				break
			}
		}
	}
	return limit, source
}

// readLimit reads a cgroup memory limit; "max" and v1's "no limit" (a
// value near 2^63) are no limit.
func readLimit(file string) (int64, bool) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || n <= 0 || n >= 1<<62 {
		return 0, false
	}
	return n, true
}

// gcMemoryShare is the part of availableMemory that serve gives the
// garbage collector as its soft limit (debug.SetMemoryLimit) when
// GOMEMLIMIT is not set: the rest is for the bbolt file's page cache,
// thread stacks and whatever else runs on the machine.
const gcMemoryShare = 0.5
