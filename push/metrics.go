package push

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Outcome is what became of one push (a label of the metrics).
type Outcome string

// Outcomes, counted by provider in klassenfunk_push_total.
const (
	// OutcomeSent: the provider accepted the push.
	OutcomeSent Outcome = "sent"
	// OutcomeRetried: throttled, a server error or a transport failure;
	// tried again after a backoff.
	OutcomeRetried Outcome = "retried"
	// OutcomeDeadToken: the provider says the token is dead; the
	// registration was deleted.
	OutcomeDeadToken Outcome = "dead_token"
	// OutcomeDroppedTTL: the message expired before the push got through.
	OutcomeDroppedTTL Outcome = "dropped_ttl"
	// OutcomeFailed: a permanent error other than a dead token (a
	// rejected request, our own credentials refused); not retried.
	OutcomeFailed Outcome = "failed"
	// OutcomeSkippedOnline: the device had an open WebSocket.
	OutcomeSkippedOnline Outcome = "skipped_online"
	// OutcomeUnregistered: the registration (or the whole trust
	// relationship) was gone by the time the push was due.
	OutcomeUnregistered Outcome = "unregistered"
	// OutcomeProviderOff: an offline device is registered with a provider
	// that has no credentials configured on this node; nothing is sent.
	OutcomeProviderOff Outcome = "provider_off"
	// OutcomeClaimedElsewhere: another node sharing the outbox claimed this
	// push; it sends and acknowledges it.
	OutcomeClaimedElsewhere Outcome = "claimed_elsewhere"
)

type metrics struct {
	outcomes      *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	queued        prometheus.Counter
	intakeDropped prometheus.Counter
	depth         prometheus.Gauge
	inFlight      prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, intakeDepth func() float64) (*metrics, error) {
	m := &metrics{
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "klassenfunk_push_total",
			Help: "Pushes by provider and outcome (sent, retried, dead_token, dropped_ttl, failed, skipped_online, unregistered).",
		}, []string{"provider", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "klassenfunk_push_send_duration_seconds",
			Help:    "Duration of one send to a provider, by provider and outcome.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
		}, []string{"provider", "outcome"}),
		queued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "klassenfunk_push_queued_total",
			Help: "Pushes written to the outbox (before coalescing per device).",
		}),
		intakeDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "klassenfunk_push_intake_dropped_total",
			Help: "New-message events dropped because the relay's intake queue was full (the apps still sync).",
		}),
		depth: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "klassenfunk_push_queue_depth",
			Help: "Devices with a pending push (outbox entries known to the scheduler).",
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "klassenfunk_push_in_flight",
			Help: "Pushes being sent right now.",
		}),
	}
	intake := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "klassenfunk_push_intake_depth",
		Help: "New-message events waiting for the relay's resolver.",
	}, intakeDepth)
	for _, c := range []prometheus.Collector{m.outcomes, m.duration, m.queued, m.intakeDropped, m.depth, m.inFlight, intake} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) count(provider string, o Outcome) {
	m.outcomes.WithLabelValues(provider, string(o)).Inc()
}
