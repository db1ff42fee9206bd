package testenv

import (
	"time"

	dto "github.com/prometheus/client_model/go"
)

// Metric returns the sum of all series of a metric of the node (0 when it
// has none).
func (e *Env) Metric(name string) float64 {
	e.T.Helper()
	return e.MetricWith(name, "", "")
}

// MetricWith returns the sum of the series of a metric whose label has
// value (all series when label is empty).
func (e *Env) MetricWith(name, label, value string) float64 {
	e.T.Helper()
	mfs, err := e.Srv.Registry().Gather()
	if err != nil {
		e.T.Fatalf("gather: %v", err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label != "" && !hasLabel(m, label, value) {
				continue
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			case m.Histogram != nil:
				sum += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return sum
}

func hasLabel(m *dto.Metric, label, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == label {
			return l.GetValue() == value
		}
	}
	return false
}

// Eventually polls cond until it holds or the timeout passes.
func Eventually(t interface {
	Helper()
	Fatalf(string, ...any)
}, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
