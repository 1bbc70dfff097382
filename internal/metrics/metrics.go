// Package metrics exposes the engine's counters to Prometheus (with
// client_golang) at /metrics, each help text naming the HCL Domino
// statistic it stands for, and Domino's expanded per-IP statistics as
// JSON at /stats (never as Prometheus labels: one series per client IP
// would explode in cardinality).
package metrics

import (
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

const ns = "smtp_interceptor"

// Collector reads rules.Counters at scrape time, so the hot path keeps
// counting with plain atomics and nothing is counted twice.
type Collector struct {
	counters *rules.Counters

	privateWL, privateBL, blacklist *prometheus.Desc
	dnsblHits, dnswlHits, dnsErrors *prometheus.Desc
	dnsQueries, suspended, verdicts *prometheus.Desc
	latency, reloads, controls      *prometheus.Desc
	lastOK, lastLoaded, candDiffs   *prometheus.Desc
	zoneLatency                     *prometheus.Desc
	dirLookups, dirUp, dirLatency   *prometheus.Desc
	rateLimited, rateErrors         *prometheus.Desc
	autobans                        *prometheus.Desc
	greyDelayed, greyPassed         *prometheus.Desc
	greyErrors                      *prometheus.Desc
	score                           *prometheus.Desc
}

var _ prometheus.Collector = (*Collector)(nil)

// NewCollector returns a collector over counters.
func NewCollector(counters *rules.Counters) *Collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(ns+"_"+name, help, labels, nil)
	}
	return &Collector{
		counters:    counters,
		privateWL:   d("privatewl_hits_total", "Clients found in [whitelist] (Domino: SMTP.PrivateWL.TotalHits)."),
		privateBL:   d("privatebl_hits_total", "Clients found in [private_blacklist] (Domino: SMTP.PrivateBL.TotalHits)."),
		blacklist:   d("blacklist_hits_total", "Clients found in [blacklist] and refused (Domino: connections denied by the Configuration Settings' deny list)."),
		dnsblHits:   d("dnsbl_hits_total", "Clients listed by a DNS blacklist, per site (Domino: SMTP.DNSBL.TotalHits and SMTP.DNSBL.<site>.TotalHits).", "site"),
		dnswlHits:   d("dnswl_hits_total", "Clients listed by a DNS whitelist, per site (Domino: SMTP.DNSWL.TotalHits and SMTP.DNSWL.<site>.TotalHits).", "site"),
		dnsErrors:   d("dns_errors_total", "DNS list lookups that failed or returned an error code or an answer outside the site's filter, per site (no Domino statistic).", "site"),
		dnsQueries:  d("dns_lookups_total", "DNS list lookups, per site and kind (dnsbl, dnswl).", "site", "kind"),
		suspended:   d("dns_site_suspended", "1 while a DNS list is suspended (its RFC 5782 health probe failed, or its hit rate jumped), 0 otherwise; every known list is present.", "site"),
		verdicts:    d("verdicts_total", "Verdicts by SMTP stage, action (accept, tag, reject, tempfail) and deciding control (empty when none fired), and mode (enforce: given; shadow: a shadowed refusal, by the action it would have taken, the client accepted); a connect-time or HELO refusal repeated at later commands of a session counts once.", "stage", "action", "control", "mode"),
		latency:     d("dns_query_duration_seconds", "Latency of DNS list queries sent to the resolver (cache misses)."),
		zoneLatency: d("dns_site_query_duration_seconds", "Latency of DNS queries sent to the resolver (cache misses), per zone: each DNS list's zone, in-addr.arpa and ip6.arpa for verify_host_name, \"\" (domains) for verify_domain.", "site"),
		candDiffs:   d("candidate_differences_total", "Messages that [server] candidate decided otherwise than the configuration in force, by the control that made the difference.", "control"),
		lastOK:      d("config_last_reload_success", "1 when the latest configuration reload was applied (or none was tried since start), 0 while the latest was refused and the previous configuration serves."),
		lastLoaded:  d("config_last_reload_success_timestamp_seconds", "When a configuration was last applied (start or reload), in Unix seconds."),
		controls:    d("control_matches_total", "Times each control fired (matched a list entry, refused, tempfailed or tagged), by control: whitelist, blacklist, connections, private_blacklist, dns_whitelist, dns_blacklist, helo, mail_from, recipients, commands, error_limit.", "control"),
		dirLookups:  d("directory_lookups_total", "Recipient lookups of [recipients] verify in the Domino Directory, by result: found, unknown, ambiguous, group, error, and cached for an answer from the cache (no Domino statistic: Domino verifies after the relay accepted).", "result"),
		dirUp:       d("directory_up", "1 while the Domino Directory ([directory] url) answers, 0 while it is unreachable; absent with no [directory]."),
		dirLatency:  d("directory_lookup_duration_seconds", "Latency of recipient lookups in the Domino Directory, cache hits included."),
		rateLimited: d("ratelimit_refusals_total", "Requests refused or tempfailed by a [[ratelimit]] rule, by rule name.", "rule"),
		rateErrors:  d("ratelimit_errors_total", "Requests let through without being counted because the [state] backend could not be asked (rate limits fail open)."),
		autobans:    d("autobans_total", "Clients (or networks) this relay banned by [autoban]."),
		greyDelayed: d("greylist_delayed_total", "Recipients tempfailed by [greylist] (450 4.7.1 Greylisted)."),
		greyPassed:  d("greylist_passed_total", "Greylisting triplets that passed after waiting."),
		greyErrors:  d("greylist_errors_total", "Recipients let through without greylisting because the [state] backend could not be asked (greylisting fails open)."),
		score:       d("dnsbl_score", "DNS list scores of the clients ([dns_blacklist] decision = \"score\": the weights of the listing blacklists, less those of the listing whitelists)."),
		reloads:     d("config_reloads_total", "Configuration reloads by result (ok: applied; error: refused, the old configuration kept serving).", "result"),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.privateWL, c.privateBL, c.blacklist, c.dnsblHits, c.dnswlHits,
		c.dnsErrors, c.dnsQueries, c.suspended, c.verdicts, c.latency, c.reloads, c.controls, c.lastOK, c.lastLoaded, c.candDiffs, c.zoneLatency,
		c.dirLookups, c.dirUp, c.dirLatency, c.rateLimited, c.rateErrors, c.autobans, c.greyDelayed, c.greyPassed, c.greyErrors, c.score} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	s := c.counters.Snapshot()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(c.privateWL, s.WhitelistHits)
	counter(c.privateBL, s.PrivateBlacklistHits)
	counter(c.blacklist, s.BlacklistHits)
	for _, site := range s.Sites {
		hits := c.dnsblHits
		kind := "dnsbl"
		if site.Kind == rules.DNSWL {
			hits, kind = c.dnswlHits, "dnswl"
		}
		counter(hits, site.Hits, site.Site)
		counter(c.dnsQueries, site.Queries, site.Site, kind)
		counter(c.dnsErrors, site.Errors, site.Site)
	}
	for _, z := range s.Zones {
		v := 0.0
		if z.Suspended {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(c.suspended, prometheus.GaugeValue, v, z.Zone)
	}
	for _, v := range s.Verdicts {
		counter(c.verdicts, v.Count, v.Stage.String(), v.Action.String(), string(v.Control), v.Mode)
	}
	for name, n := range s.Controls {
		counter(c.controls, n, name)
	}
	for name, n := range s.CandidateDifferences {
		counter(c.candDiffs, n, name)
	}
	ch <- prometheus.MustNewConstHistogram(c.latency, s.DNSLatency.Count, s.DNSLatency.Sum, histogramBuckets(s.DNSLatency))
	for zone, h := range s.ZoneLatency {
		ch <- prometheus.MustNewConstHistogram(c.zoneLatency, h.Count, h.Sum, histogramBuckets(h), zone)
	}
	if d := s.Directory; d != nil {
		for r, n := range d.Lookups {
			counter(c.dirLookups, n, r)
		}
		up := 0.0
		if d.Up {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(c.dirUp, prometheus.GaugeValue, up)
		ch <- prometheus.MustNewConstHistogram(c.dirLatency, d.Latency.Count, d.Latency.Sum, histogramBuckets(d.Latency))
	}
	for rule, n := range s.State.RateLimited {
		counter(c.rateLimited, n, rule)
	}
	counter(c.rateErrors, s.State.RateLimitErrors)
	counter(c.autobans, s.State.Autobans)
	counter(c.greyDelayed, s.State.GreylistDelayed)
	counter(c.greyPassed, s.State.GreylistPassed)
	counter(c.greyErrors, s.State.GreylistErrors)
	if s.DNSBLScore.Count > 0 {
		sb := make(map[float64]uint64, len(rules.ScoreBuckets))
		for i, le := range rules.ScoreBuckets {
			sb[le] = s.DNSBLScore.Buckets[i]
		}
		ch <- prometheus.MustNewConstHistogram(c.score, s.DNSBLScore.Count, s.DNSBLScore.Sum, sb)
	}
	for _, r := range []string{"ok", "error"} {
		counter(c.reloads, s.ConfigReloads[r], r)
	}
	ok := 0.0
	if s.LastReloadOK {
		ok = 1
	}
	ch <- prometheus.MustNewConstMetric(c.lastOK, prometheus.GaugeValue, ok)
	ch <- prometheus.MustNewConstMetric(c.lastLoaded, prometheus.GaugeValue, float64(s.LastLoaded))
}

// histogramBuckets maps a snapshot's cumulative counts to their upper
// bounds.
func histogramBuckets(h rules.HistogramSnapshot) map[float64]uint64 {
	b := make(map[float64]uint64, len(rules.DNSLatencyBuckets))
	for i, le := range rules.DNSLatencyBuckets {
		b[le] = h.Buckets[i]
	}
	return b
}

// NewRegistry returns a registry with the engine's collector, build_info
// for version (the binary's version, as `version` prints it) and the Go
// and process collectors.
func NewRegistry(counters *rules.Counters, version string) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(counters),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "build_info",
			Help:        "Always 1; the labels say which smtp-interceptor runs: its version (module version, or the VCS revision of a development build) and the Go version that built it.",
			ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()}}, func() float64 { return 1 }),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Stats is the document /stats serves and the stats command reads.
type Stats struct {
	rules.Snapshot
	// Expanded are the hits per site per client IP, busiest first.
	Expanded []rules.ExpandedHit `json:"expanded"`
	// Entries are the list entries of the configuration in force, with
	// their hits and last hit.
	Entries []rules.EntryHit `json:"entries"`
}

// HandlerOptions are what Handler serves besides the counters; each field
// may be nil.
type HandlerOptions struct {
	// Pprof reports whether Go's profiler is on ([server] pprof), asked
	// at each request.
	Pprof func() bool
	// Entries returns the list entries with their hits, for /stats.
	Entries func() []rules.EntryHit
}

// Handler serves /metrics from reg, /stats from counters (and the list
// entries' hits), and, while opts.Pprof reports true ([server] pprof, read
// at each request so a reload turns it on or off), Go's profiler at
// /debug/pprof/.
func Handler(reg *prometheus.Registry, counters *rules.Counters, opts HandlerOptions) http.Handler {
	mux := http.NewServeMux()
	gate := func(h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if opts.Pprof == nil || !opts.Pprof() {
				http.Error(w, "pprof is off ([server] pprof = false)", http.StatusNotFound)
				return
			}
			h(w, r)
		}
	}
	mux.HandleFunc("GET /debug/pprof/", gate(pprof.Index))
	mux.HandleFunc("GET /debug/pprof/cmdline", gate(pprof.Cmdline))
	mux.HandleFunc("GET /debug/pprof/profile", gate(pprof.Profile))
	mux.HandleFunc("GET /debug/pprof/symbol", gate(pprof.Symbol))
	mux.HandleFunc("GET /debug/pprof/trace", gate(pprof.Trace))
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		st := Stats{Snapshot: counters.Snapshot(), Expanded: counters.Expanded()}
		if opts.Entries != nil {
			st.Entries = opts.Entries()
		}
		json.NewEncoder(w).Encode(st)
	})
	return mux
}
