package messenger

import (
	"github.com/prometheus/client_golang/prometheus"

	"klassenfunk/proto"
)

type metrics struct {
	connections   prometheus.Gauge
	delivered     prometheus.Counter
	stored        prometheus.Counter
	gapFills      prometheus.Counter
	slowConsumers prometheus.Counter
	closes        *prometheus.CounterVec
	sendLatency   prometheus.Histogram
	expired       *prometheus.CounterVec
	catchUps      prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "klassenfunk_ws_connections", Help: "Open WebSocket connections on this node."}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "klassenfunk_messages_delivered_total", Help: "Message frames written to sockets (live, gap fill and sync)."}),
		stored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "klassenfunk_messages_stored_total", Help: "Messages durably stored (not counting idempotent repeats)."}),
		gapFills: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "klassenfunk_ws_gap_fills_total", Help: "Live messages that overtook an earlier one; the gap was filled from the store."}),
		slowConsumers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "klassenfunk_ws_slow_consumers_total", Help: "Connections closed because their send queue was full."}),
		closes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "klassenfunk_ws_closes_total", Help: "Connections closed by the server, by close reason."}, []string{"reason"}),
		sendLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "klassenfunk_send_duration_seconds", Help: "Time from a send's arrival to its durable store and publish.",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 16)}),
		catchUps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "klassenfunk_broker_catchups_total", Help: "Times a part of the broker lost events (e.g. a Redis outage) and the sockets of its users were caught up from the store."}),
		expired: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "klassenfunk_retention_deleted_total", Help: "Records deleted by the retention sweeper, by type."}, []string{"type"}),
	}
	// Every close reason from the start, at 0: a dashboard's rate() and
	// alerts see a series before its first close.
	for _, code := range []proto.CloseCode{proto.CloseGoingAway, proto.CloseMalformed, proto.CloseUnauthorized,
		proto.CloseCountryBlocked, proto.CloseAuthTimeout, proto.CloseReplaced, proto.CloseTooLarge, proto.CloseTooSlow} {
		m.closes.WithLabelValues(code.String())
	}
	m.closes.WithLabelValues(reasonRateLimited)
	for _, c := range []prometheus.Collector{m.connections, m.delivered, m.stored, m.gapFills, m.slowConsumers, m.closes, m.sendLatency, m.expired, m.catchUps} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
