package relay

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the relay's Prometheus metrics (names ferry_relay_*).
// Register them with NewMetrics and pass them in ServerOptions.Metrics;
// serve the registry with promhttp. Nothing in them names a space or a
// key.
type Metrics struct {
	pushes      *prometheus.CounterVec // result: stored, duplicate, refused
	pushedBytes prometheus.Counter
	pulls       prometheus.Counter
	pulled      prometheus.Counter
	waits       prometheus.Counter
	quota       prometheus.Counter
	compactions prometheus.Counter
	compacted   prometheus.Counter
	errors      *prometheus.CounterVec // class: the JSON error code
	requests    *prometheus.HistogramVec

	server *Server // for the stored gauges, set by the server
}

// NewMetrics creates the relay's metrics and registers them with reg.
// One Metrics serves one Server.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := newMetrics()
	reg.MustRegister(m.pushes, m.pushedBytes, m.pulls, m.pulled, m.waits, m.quota, m.compactions, m.compacted, m.errors, m.requests)
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "ferry_relay_bundles_stored", Help: "Sealed bundles the relay holds (all spaces).",
	}, func() float64 { n, _ := m.stored(); return float64(n) }))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "ferry_relay_bytes_stored", Help: "Bytes of sealed bundles the relay holds (all spaces).",
	}, func() float64 { _, b := m.stored(); return float64(b) }))
	return m
}

func newMetrics() *Metrics {
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	return &Metrics{
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_relay_pushes_total", Help: "Pushes by result: stored, duplicate (a retry), refused.",
		}, []string{"result"}),
		pushedBytes: c("ferry_relay_pushed_bytes_total", "Bytes of bundles stored by pushes."),
		pulls:       c("ferry_relay_pulls_total", "Pull requests answered."),
		pulled:      c("ferry_relay_pulled_bundles_total", "Bundles served by pulls."),
		waits:       c("ferry_relay_long_poll_waits_total", "Pulls that waited for a push (long-poll)."),
		quota:       c("ferry_relay_quota_refusals_total", "Requests refused by a quota (507, 413)."),
		compactions: c("ferry_relay_compactions_total", "Compactions that deleted at least one bundle."),
		compacted:   c("ferry_relay_compacted_bundles_total", "Bundles deleted by compaction."),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_relay_errors_total", Help: "Refused or failed requests by class (the error code of the answer).",
		}, []string{"class"}),
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "ferry_relay_request_seconds", Help: "Request durations by route (long-polls included).",
			Buckets: []float64{.001, .005, .01, .05, .1, .5, 1, 5, 30},
		}, []string{"route"}),
	}
}

// discardMetrics are metrics registered nowhere.
func discardMetrics() *Metrics { return newMetrics() }

// stored reads the bundle stream's totals (0 for the Badger baseline).
func (m *Metrics) stored() (bundles, bytes uint64) {
	s := m.server
	if s == nil {
		return 0, 0
	}
	js, ok := s.st.(*jsStore)
	if !ok {
		return 0, 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := js.bundles.Info(ctx)
	if err != nil {
		return 0, 0
	}
	return info.State.Msgs, info.State.Bytes
}
