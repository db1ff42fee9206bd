package messenger

import (
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestCloseReasonsFromTheStart: every reason of the closes metric is a
// series at 0 before the first close, so that dashboards and alerts see
// it (docs/api.md lists the reasons).
func TestCloseReasonsFromTheStart(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := newMetrics(reg); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var reasons []string
	for _, mf := range mfs {
		if mf.GetName() != "klassenfunk_ws_closes_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetCounter().GetValue() != 0 {
				t.Fatalf("%v starts at %v", m.GetLabel(), m.GetCounter().GetValue())
			}
			for _, l := range m.GetLabel() {
				reasons = append(reasons, l.GetValue())
			}
		}
	}
	slices.Sort(reasons)
	want := []string{"auth_timeout", "country_blocked", "going_away", "malformed", "rate_limited", "replaced", "too_large", "too_slow", "unauthorized"}
	if !slices.Equal(reasons, want) {
		t.Fatalf("closes_total reasons at start %v, want %v", reasons, want)
	}
}
