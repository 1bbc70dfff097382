package metrics

import "github.com/prometheus/client_golang/prometheus"

// Ops are the operational counters of the servers around the engine:
// malformed requests, refused connections, accept errors and log drops.
// They are plain Prometheus vectors: the events are rare, so they need
// none of the engine counters' care for the hot path. Gauges that read a
// live value (open connections, resolver state) are added with GaugeFunc.
type Ops struct {
	reg *prometheus.Registry
	// Malformed counts requests that broke their protocol, by protocol
	// (policy, milter) and reason (a fixed text without client data).
	Malformed *prometheus.CounterVec
	// Refused counts connections closed at accept, by protocol and reason
	// (max_connections, max_connections_per_ip, not_allowed).
	Refused *prometheus.CounterVec
	// AcceptErrors counts temporary accept errors retried (EMFILE...).
	AcceptErrors *prometheus.CounterVec
	// BadAddresses counts sessions whose client address could not be
	// parsed, by protocol.
	BadAddresses *prometheus.CounterVec
	// Requests times each policy request and milter callback, by
	// protocol; its _count is the request counter.
	Requests *prometheus.HistogramVec
}

// NewOps registers the operational counters on reg.
func NewOps(reg *prometheus.Registry) *Ops {
	o := &Ops{
		reg: reg,
		Malformed: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "malformed_requests_total",
			Help: "Requests that broke their protocol (each ends its connection), by protocol and reason."}, []string{"protocol", "reason"}),
		Refused: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "connections_refused_total",
			Help: "Connections closed at once when accepted, by protocol and reason (max_connections, max_connections_per_ip, not_allowed)."}, []string{"protocol", "reason"}),
		AcceptErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "accept_errors_total",
			Help: "Temporary errors accepting connections (too many open files, ...), retried with back-off, by protocol."}, []string{"protocol"}),
		BadAddresses: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "bad_client_addresses_total",
			Help: "Sessions whose client address the MTA sent but that could not be parsed (host lists did not apply), by protocol."}, []string{"protocol"}),
	}
	o.Requests = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "request_duration_seconds",
		Help:    "Time to decide each policy request and each milter callback (engine and DNS lookups), by protocol; _count counts them.",
		Buckets: []float64{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}},
		[]string{"protocol"})
	for _, p := range []string{"policy", "milter"} {
		o.BadAddresses.WithLabelValues(p) // exported at 0 from the start
		o.Requests.WithLabelValues(p)
	}
	reg.MustRegister(o.Malformed, o.Refused, o.AcceptErrors, o.BadAddresses, o.Requests)
	return o
}

// Gauge registers a gauge whose value is read from f at every scrape.
func (o *Ops) Gauge(name, help string, labels prometheus.Labels, f func() float64) {
	o.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: name, Help: help, ConstLabels: labels}, f))
}

// Counter registers a counter whose value is read from f at every scrape.
func (o *Ops) Counter(name, help string, labels prometheus.Labels, f func() float64) {
	o.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Name: name, Help: help, ConstLabels: labels}, f))
}

// LogStats are the losses of one log destination.
type LogStats interface {
	// Dropped counts records lost (queue full, destination gone).
	Dropped() uint64
	// WriteErrors counts failed writes and opens, retries included.
	WriteErrors() uint64
}

// Log exports a log destination's losses, labelled log=name.
func (o *Ops) Log(name string, l LogStats) {
	labels := prometheus.Labels{"log": name}
	o.Counter("log_dropped_total", "Log records dropped (the disk was full or the file could not be opened for too long), by log (process, sessions, fail2ban).", labels,
		func() float64 { return float64(l.Dropped()) })
	o.Counter("log_write_errors_total", "Failed log writes and opens, each retry counted, by log.", labels,
		func() float64 { return float64(l.WriteErrors()) })
}
