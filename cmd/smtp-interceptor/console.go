package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/smtp-interceptor/smtp-interceptor/internal/console"
	"github.com/smtp-interceptor/smtp-interceptor/internal/history"
	"github.com/smtp-interceptor/smtp-interceptor/internal/metrics"
	"github.com/smtp-interceptor/smtp-interceptor/internal/sessionstore"
	"github.com/smtp-interceptor/smtp-interceptor/internal/webauth"
	"github.com/smtp-interceptor/smtp-interceptor/rules"
	"github.com/smtp-interceptor/smtp-interceptor/state"
)

// historyMinutes is how far back the console's charts go: 24 hours.
const historyMinutes = 24 * 60

// adminSummary is check's line for [admin].
func adminSummary(a rules.AdminConfig) string {
	switch {
	case a.Listen == "":
		return "off"
	case a.Token == "" && a.UsersFile == "":
		return "off (neither token_file nor users_file)"
	}
	s := "http://" + a.Listen
	if a.TLSCert != "" {
		s = "https://" + a.Listen
	}
	if a.Token != "" {
		s += ", API token"
	}
	if a.UsersFile != "" {
		s += ", console users in " + a.UsersFile
	}
	return s
}

// adminOn reports whether serve opens the admin listener: with a token or
// console users; without either, nobody could use it.
func adminOn(a rules.AdminConfig) bool {
	return a.Listen != "" && (a.Token != "" || a.UsersFile != "")
}

// loadUsers reads [admin] users_file; nil, nil when it is not set.
func loadUsers(cfg *rules.Config, log *slog.Logger) (*webauth.Users, error) {
	if cfg.Admin.UsersFile == "" {
		return nil, nil
	}
	u, err := webauth.LoadUsers(cfg.Admin.UsersFile, webauth.UsersOptions{Logger: log})
	if err != nil {
		return nil, fmt.Errorf("admin.users_file: %w (create it with smtp-interceptor admin-user add NAME)", err)
	}
	return u, nil
}

// checkConsole reports a users file that serve could not read.
func checkConsole(cfg *rules.Config, stderr io.Writer) bool {
	if _, err := loadUsers(cfg, slog.New(slog.DiscardHandler)); err != nil {
		fmt.Fprintf(stderr, "smtp-interceptor: %v\n", err)
		return false
	}
	return true
}

// openStore opens [log] store. A store that cannot be opened does not
// stop the server: mail goes on, the history is off, and the error is
// logged (check reports it before a start).
func openStore(cfg *rules.Config, log *slog.Logger) *sessionstore.Store {
	if cfg.Log.Store == "" {
		return nil
	}
	st, err := sessionstore.Open(sessionstore.Options{Path: cfg.Log.Store, Retention: cfg.Log.Retention, Logger: log})
	if err != nil {
		log.Error("session store off: it cannot be opened", slog.String("key", "log.store"), slog.Any("error", err))
		return nil
	}
	log.Info("session store", slog.String("path", cfg.Log.Store), slog.Duration("retention", cfg.Log.Retention))
	return st
}

// storeMetrics exports the session store's counters.
func storeMetrics(ops *metrics.Ops, st *sessionstore.Store) {
	if st == nil {
		return
	}
	for _, c := range []struct {
		name, help string
		f          func(sessionstore.Stats) uint64
	}{
		{"session_store_written_total", "Session records written to the session store ([log] store).", func(s sessionstore.Stats) uint64 { return s.Written }},
		{"session_store_dropped_total", "Session records dropped because the session store's queue was full.", func(s sessionstore.Stats) uint64 { return s.Dropped }},
		{"session_store_failed_total", "Session records lost to a failed write (a full disk, a damaged file).", func(s sessionstore.Stats) uint64 { return s.Failed }},
		{"session_store_pruned_total", "Session records deleted by [log] retention.", func(s sessionstore.Stats) uint64 { return s.Pruned }},
	} {
		ops.Counter(c.name, c.help, nil, func() float64 { return float64(c.f(st.Stats())) })
	}
	ops.Gauge("session_store_pending", "Session records waiting for the session store's writer.", nil,
		func() float64 { return float64(st.Stats().Pending) })
}

// sampler returns the per-minute history's sample: the refusals by
// control, the DNS list hits by site and the request latency by
// protocol, all cumulative.
func sampler(counters *rules.Counters, requests *prometheus.HistogramVec) func() history.Point {
	return func() history.Point {
		snap := counters.Snapshot()
		p := history.Point{Time: time.Now(), Refusals: map[string]uint64{}, DNSHits: map[string]uint64{}, Requests: map[string]history.Latency{}}
		for _, v := range snap.Verdicts {
			if v.Mode == "enforce" && v.Action.Refuses() {
				ctl := string(v.Control)
				if ctl == "" {
					ctl = "none"
				}
				p.Refusals[ctl] += v.Count
			}
		}
		for _, s := range snap.Sites {
			p.DNSHits[string(s.Kind)+" "+s.Site] = s.Hits
		}
		for _, protocol := range []string{"policy", "milter"} {
			m, ok := requests.WithLabelValues(protocol).(prometheus.Metric)
			if !ok {
				continue
			}
			var d dto.Metric
			if err := m.Write(&d); err != nil || d.Histogram == nil {
				continue
			}
			h := d.Histogram
			l := history.Latency{Count: h.GetSampleCount(), Sum: h.GetSampleSum()}
			for _, b := range h.Bucket {
				l.Bounds = append(l.Bounds, b.GetUpperBound())
				l.Buckets = append(l.Buckets, b.GetCumulativeCount())
			}
			p.Requests[protocol] = l
		}
		return p
	}
}

// consoleDeps are what the console needs from serve.
type consoleDeps struct {
	cfg      *rules.Config
	engine   *rules.Engine
	backend  state.Backend
	store    *sessionstore.Store
	history  *history.History
	relay    string
	started  time.Time
	log      *slog.Logger
	stats    func() metrics.Stats
	resolver func() bool
}

// newConsole builds the admin listener's handler: the web console, with
// the admin API under /api/.
func newConsole(d consoleDeps) (http.Handler, error) {
	users, err := loadUsers(d.cfg, d.log)
	if err != nil {
		return nil, err
	}
	o := console.Options{
		Version: buildVersion(), Started: d.started, Relay: d.relay, Engine: d.engine, Backend: d.backend,
		History: d.history, Token: string(d.cfg.Admin.Token), Stats: d.stats, TLS: d.cfg.Admin.TLSCert != "", Logger: d.log,
		Health: func() console.Health {
			h := console.Health{DNSResolverUp: d.resolver()}
			if d.store != nil {
				st := d.store.Stats()
				h.Store = &st
			}
			return h
		},
		Explain: func(ctx context.Context, s *rules.Session, tx rules.Transaction) rules.Explanation {
			// Its own counters, and no rate limiter or greylisting: a
			// test must count nowhere.
			e := rules.NewEngine(d.engine.Config(), rules.EngineOptions{Counters: new(rules.Counters),
				DNS: d.engine.DNS(), Directory: d.engine.Directory(), Bans: stateBans{d.backend}})
			return e.Explain(ctx, s, tx)
		},
		Trace: func(ctx context.Context, r *rules.MessageRecord) rules.Explanation {
			return rules.ExplainRecord(ctx, d.engine.Config(), r, d.engine.Directory())
		},
	}
	if users != nil {
		o.Users = users
	}
	if d.store != nil {
		o.Store = d.store
	}
	return console.New(o)
}

// adminListener wraps the admin listener in TLS when [admin] tls_cert
// and tls_key are set.
func adminListener(ln net.Listener, a rules.AdminConfig) (net.Listener, error) {
	if a.TLSCert == "" {
		return ln, nil
	}
	cert, err := tls.LoadX509KeyPair(a.TLSCert, a.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("admin.tls_cert: %w", err)
	}
	return tls.NewListener(ln, &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}), nil
}
