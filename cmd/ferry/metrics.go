package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/ferrysync/ferry/errkind"
	"github.com/ferrysync/ferry/replica"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Observability for the long-running commands (relay, serve): /metrics
// in the Prometheus format when --metrics ADDR asks for it, and slog
// lines on stderr at --log-level.

// parseLevel reads --log-level.
func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, usagef("--log-level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// newRegistry is a registry with the Go runtime and process collectors.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// serveMetrics serves reg on http://addr/metrics until ctx ends or stop
// is called; it returns the URL.
func serveMetrics(ctx context.Context, addr string, reg *prometheus.Registry, log *slog.Logger) (url string, stop func(), err error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return "", nil, usagef("--metrics %s: %v", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	stopped := false
	return "http://" + ln.Addr().String() + "/metrics", func() {
		if !stopped {
			stopped = true
			_ = srv.Close()
			<-done
		}
	}, nil
}

// syncMetrics are ferry serve's counters, fed from the replica's events
// (Watch) and the relay sync results.
type syncMetrics struct {
	sessions  *prometheus.CounterVec // result: the state a session ended in
	sent      prometheus.Counter
	received  prometheus.Counter
	conflicts prometheus.Counter
	errors    *prometheus.CounterVec // class: the errkind of a failed session
}

func newSyncMetrics(reg prometheus.Registerer) *syncMetrics {
	m := &syncMetrics{
		sessions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_sync_sessions_total", Help: "Sync sessions ended, by the state they ended in (up-to-date, conflict, error, offline, stale).",
		}, []string{"result"}),
		sent:      prometheus.NewCounter(prometheus.CounterOpts{Name: "ferry_sync_records_sent_total", Help: "Records sent to peers or pushed to a relay."}),
		received:  prometheus.NewCounter(prometheus.CounterOpts{Name: "ferry_sync_records_received_total", Help: "Records received from peers or applied from a relay."}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{Name: "ferry_conflicts_total", Help: "Conflicts queued for the user."}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_sync_errors_total", Help: "Failed syncs by class (network, refused, protocol, corrupt, ...).",
		}, []string{"class"}),
	}
	reg.MustRegister(m.sessions, m.sent, m.received, m.conflicts, m.errors)
	return m
}

// watch counts sessions and conflicts from the replica's events until
// ctx ends; log gets a line per session.
func (m *syncMetrics) watch(ctx context.Context, r *replica.Replica, log *slog.Logger) {
	for ev := range r.Watch(ctx) {
		switch {
		case ev.Kind == replica.EventStatus && ev.Status != nil && ev.Status.Peer != "" && ev.Status.State != replica.Syncing:
			s := ev.Status
			m.sessions.WithLabelValues(s.State.String()).Inc()
			m.sent.Add(float64(s.Progress.RecordsSent))
			m.received.Add(float64(s.Progress.RecordsReceived))
			lvl := slog.LevelInfo
			if s.State == replica.Error || s.State == replica.Offline {
				lvl = slog.LevelWarn
				m.errors.WithLabelValues(strings.ToLower(s.State.String())).Inc()
			}
			log.Log(ctx, lvl, "sync session ended", "peer", short(s.Peer), "state", s.State.String(),
				"sent", s.Progress.RecordsSent, "received", s.Progress.RecordsReceived, "err", s.LastError)
		case ev.Kind == replica.EventConflict && ev.Reason == "queued":
			m.conflicts.Inc()
		}
	}
}

// relaySync counts one sync through a relay.
func (m *syncMetrics) relaySync(st replica.RelayStats, err error) {
	if err != nil {
		m.sessions.WithLabelValues("error").Inc()
		m.errors.WithLabelValues(errClass(err)).Inc()
		return
	}
	m.sessions.WithLabelValues("up-to-date").Inc()
	m.sent.Add(float64(st.RecordsPushed))
	m.received.Add(float64(st.RecordsApplied))
	m.conflicts.Add(float64(st.Conflicts))
}

// errClass names an error's kind for the errors metric ("network" for
// unavailable, "internal" when it has no kind).
func errClass(err error) string {
	if errors.Is(err, errkind.Unavailable) || isNetErr(err) {
		return "network"
	}
	if k := errkind.Of(err); k != nil {
		return strings.ReplaceAll(k.ErrorKind(), " ", "_")
	}
	return "internal"
}
