package main

import (
	"os"
	"path/filepath"
	"testing"
)

func writeFiles(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestAvailableMemory(t *testing.T) {
	const meminfo = "MemTotal:        2000000 kB\nMemFree:          100000 kB\n"
	for name, tc := range map[string]struct {
		files      map[string]string
		want       int64
		wantSource string
	}{
		"nothing readable": {files: map[string]string{}, want: 0},
		"machine only": {files: map[string]string{"proc/meminfo": meminfo},
			want: 2000000 << 10, wantSource: "MemTotal"},
		"cgroup v2 below the machine": {files: map[string]string{
			"proc/meminfo":     meminfo,
			"proc/self/cgroup": "0::/system.slice/kf.service\n",
			"sys/fs/cgroup/system.slice/kf.service/memory.max": "536870912\n",
		}, want: 512 << 20, wantSource: "cgroup /system.slice/kf.service/memory.max"},
		"cgroup v2 unlimited, a parent limited": {files: map[string]string{
			"proc/meminfo":     meminfo,
			"proc/self/cgroup": "0::/system.slice/kf.service\n",
			"sys/fs/cgroup/system.slice/kf.service/memory.max": "max\n",
			"sys/fs/cgroup/system.slice/memory.max":            "1073741824\n",
		}, want: 1 << 30, wantSource: "cgroup /system.slice/memory.max"},
		"cgroup v2 above the machine": {files: map[string]string{
			"proc/meminfo":             meminfo,
			"proc/self/cgroup":         "0::/\n",
			"sys/fs/cgroup/memory.max": "99999999999\n",
		}, want: 2000000 << 10, wantSource: "MemTotal"},
		"cgroup v1": {files: map[string]string{
			"proc/meminfo":     meminfo,
			"proc/self/cgroup": "5:cpu,cpuacct:/x\n4:memory:/docker/abc\n0::/\n",
			"sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": "268435456\n",
			"sys/fs/cgroup/memory/memory.limit_in_bytes":            "9223372036854771712\n",
		}, want: 256 << 20, wantSource: "cgroup /docker/abc/memory.limit_in_bytes"},
		"garbage ignored": {files: map[string]string{
			"proc/meminfo":               "MemTotal: lots kB\n",
			"proc/self/cgroup":           "nonsense\n0::/a\n",
			"sys/fs/cgroup/a/memory.max": "-5\n",
		}, want: 0},
	} {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			writeFiles(t, root, tc.files)
			got, source := availableMemory(root)
			if got != tc.want || (tc.want != 0 && source != tc.wantSource) {
				t.Fatalf("availableMemory = %d from %q, want %d from %q", got, source, tc.want, tc.wantSource)
			}
		})
	}
}
