//go:build unix

package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime/stime in /proc/PID/stat. It is
// 100 on every Linux architecture Go supports (the kernel ABI fixes it).
const clockTicks = 100

// serverSample is one look at the server process.
type serverSample struct {
	At time.Time `json:"-"`
	// From /proc/PID (when --server-pid is given).
	RSSKiB     int64   `json:"rss_kib,omitempty"`
	RSSAnonKiB int64   `json:"rss_anon_kib,omitempty"` // heap, stacks: what connections cost
	RSSFileKiB int64   `json:"rss_file_kib,omitempty"` // mapped files, e.g. the bbolt database
	HWMKiB     int64   `json:"hwm_kib,omitempty"`
	Threads    int64   `json:"threads,omitempty"`
	CPUSeconds float64 `json:"cpu_seconds,omitempty"`
	// RunqueueWaitS is the time the server's threads were runnable but
	// waited for a CPU (/proc/PID/task/*/schedstat): high means the
	// machine, not the server, was the limit.
	RunqueueWaitS float64 `json:"runqueue_wait_s,omitempty"`
	// From GET /metrics (always tried).
	Metrics *metricsSample `json:"metrics,omitempty"`
}

// metricsSample holds a few values of the server's Prometheus endpoint.
type metricsSample struct {
	RSSBytes       float64 `json:"process_resident_memory_bytes"`
	CPUSeconds     float64 `json:"process_cpu_seconds_total"`
	HeapInuseBytes float64 `json:"go_memstats_heap_inuse_bytes"`
	StackInuse     float64 `json:"go_memstats_stack_inuse_bytes"`
	Goroutines     float64 `json:"go_goroutines"`
	WSConnections  float64 `json:"klassenfunk_ws_connections"`
	SlowConsumers  float64 `json:"klassenfunk_ws_slow_consumers_total"`
	GapFills       float64 `json:"klassenfunk_ws_gap_fills_total"`
	Stored         float64 `json:"klassenfunk_messages_stored_total"`
	Delivered      float64 `json:"klassenfunk_messages_delivered_total"`
	// WSCloses is klassenfunk_ws_closes_total by reason.
	WSCloses map[string]float64 `json:"klassenfunk_ws_closes_total,omitempty"`
}

// sampleServer reads /proc/PID (pid > 0) and /metrics. Errors reading
// /metrics are ignored (the sample then has no Metrics); errors reading
// /proc are returned.
func sampleServer(ctx context.Context, hc *http.Client, baseURL string, pid int) (serverSample, error) {
	s := serverSample{At: time.Now()}
	if pid > 0 {
		if err := readProcStatus(pid, &s); err != nil {
			return s, err
		}
		cpu, err := procCPUSeconds(pid)
		if err != nil {
			return s, err
		}
		s.CPUSeconds = cpu
		s.RunqueueWaitS = runqueueWait(pid).Seconds()
	}
	if m, err := scrapeMetrics(ctx, hc, baseURL); err == nil {
		s.Metrics = m
	}
	return s, nil
}

func readProcStatus(pid int, s *serverSample) error {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return fmt.Errorf("server pid %d: %w", pid, err)
	}
	for line := range strings.Lines(string(b)) {
		name, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		fields := strings.Fields(val)
		if len(fields) == 0 {
			continue
		}
		n, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			continue
		}
		switch name {
		case "VmRSS":
			s.RSSKiB = n
		case "RssAnon":
			s.RSSAnonKiB = n
		case "RssFile":
			s.RSSFileKiB = n
		case "VmHWM":
			s.HWMKiB = n
		case "Threads":
			s.Threads = n
		}
	}
	return nil
}

// procCPUSeconds returns utime+stime of pid.
func procCPUSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("server pid %d: %w", pid, err)
	}
	// The command name (field 2) is in parentheses and may contain
	// spaces; the fields after the last ')' start with field 3 (state).
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64) // field 14
	stime, err2 := strconv.ParseUint(f[12], 10, 64) // field 15
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad utime/stime", pid)
	}
	return float64(utime+stime) / clockTicks, nil
}

// runqueueWait sums, over the threads of pid, the time spent runnable
// but waiting for a CPU (second field of schedstat). Threads that have
// exited are not counted, so compare values only over short windows.
func runqueueWait(pid int) time.Duration {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	var total int64
	for _, e := range ents {
		b, err := os.ReadFile(dir + "/" + e.Name() + "/schedstat")
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		if len(f) < 2 {
			continue
		}
		if v, err := strconv.ParseInt(f[1], 10, 64); err == nil {
			total += v
		}
	}
	return time.Duration(total)
}

// selfCPU returns the CPU time this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// scrapeMetrics reads the unlabelled (or summed) values of a few series
// from GET /metrics.
func scrapeMetrics(ctx context.Context, hc *http.Client, baseURL string) (*metricsSample, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", baseURL+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, resp.Body)
		return nil, fmt.Errorf("GET /metrics: HTTP %d", resp.StatusCode)
	}
	m := &metricsSample{}
	targets := map[string]*float64{
		"process_resident_memory_bytes":        &m.RSSBytes,
		"process_cpu_seconds_total":            &m.CPUSeconds,
		"go_memstats_heap_inuse_bytes":         &m.HeapInuseBytes,
		"go_memstats_stack_inuse_bytes":        &m.StackInuse,
		"go_goroutines":                        &m.Goroutines,
		"klassenfunk_ws_connections":           &m.WSConnections,
		"klassenfunk_ws_slow_consumers_total":  &m.SlowConsumers,
		"klassenfunk_ws_gap_fills_total":       &m.GapFills,
		"klassenfunk_messages_stored_total":    &m.Stored,
		"klassenfunk_messages_delivered_total": &m.Delivered,
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		name := line[:sp]
		if j := strings.IndexByte(name, '{'); j >= 0 {
			name = name[:j]
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			continue
		}
		if name == "klassenfunk_ws_closes_total" {
			reason := "?"
			if _, rest, ok := strings.Cut(line[:sp], `reason="`); ok {
				reason, _, _ = strings.Cut(rest, `"`)
			}
			if m.WSCloses == nil {
				m.WSCloses = map[string]float64{}
			}
			m.WSCloses[reason] += v
			continue
		}
		p, ok := targets[name]
		if !ok {
			continue
		}
		*p += v // labelled series are summed
	}
	return m, sc.Err()
}

// machineSample is the machine-wide CPU state: per-CPU busy and total
// jiffies from /proc/stat and the CPU pressure stall total.
type machineSample struct {
	busy, total []uint64 // index 0 = all CPUs, i+1 = cpu i
	psiSomeUS   uint64
	ok          bool
}

func sampleMachine() machineSample {
	var m machineSample
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return m
	}
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) < 5 || !strings.HasPrefix(f[0], "cpu") {
			continue
		}
		var total, idle uint64
		for i, s := range f[1:] {
			v, _ := strconv.ParseUint(s, 10, 64)
			if i >= 8 { // guest time is already counted in user
				break
			}
			total += v
			if i == 3 || i == 4 { // idle, iowait
				idle += v
			}
		}
		m.busy = append(m.busy, total-idle)
		m.total = append(m.total, total)
	}
	if b, err := os.ReadFile("/proc/pressure/cpu"); err == nil {
		for line := range strings.Lines(string(b)) {
			if !strings.HasPrefix(line, "some ") {
				continue
			}
			if _, t, ok := strings.Cut(line, "total="); ok {
				m.psiSomeUS, _ = strconv.ParseUint(strings.TrimSpace(t), 10, 64)
			}
		}
	}
	m.ok = len(m.total) > 0
	return m
}

// machineReport is how busy the whole machine was during the window.
type machineReport struct {
	// CPUBusy is the busy fraction of all CPUs together, then of each.
	CPUBusy    float64   `json:"cpu_busy"`
	PerCPUBusy []float64 `json:"per_cpu_busy"`
	// CPUPressure is the share of the window in which at least one task
	// waited for a CPU (PSI "some"); near 1 means other work on the
	// machine was competing with the server and the tool.
	CPUPressure float64 `json:"cpu_pressure_some"`
}

func machineDelta(a, b machineSample, wall time.Duration) *machineReport {
	if !a.ok || !b.ok || len(a.total) != len(b.total) {
		return nil
	}
	r := &machineReport{}
	for i := range a.total {
		dt := b.total[i] - a.total[i]
		frac := 0.0
		if dt > 0 {
			frac = float64(b.busy[i]-a.busy[i]) / float64(dt)
		}
		if i == 0 {
			r.CPUBusy = frac
		} else {
			r.PerCPUBusy = append(r.PerCPUBusy, frac)
		}
	}
	if wall > 0 && b.psiSomeUS >= a.psiSomeUS {
		r.CPUPressure = float64(b.psiSomeUS-a.psiSomeUS) / float64(wall.Microseconds())
	}
	return r
}
