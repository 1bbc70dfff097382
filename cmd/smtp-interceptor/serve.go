package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/smtp-interceptor/smtp-interceptor/internal/autoban"
	"github.com/smtp-interceptor/smtp-interceptor/internal/fail2ban"
	"github.com/smtp-interceptor/smtp-interceptor/internal/history"
	"github.com/smtp-interceptor/smtp-interceptor/internal/listen"
	"github.com/smtp-interceptor/smtp-interceptor/internal/logfile"
	"github.com/smtp-interceptor/smtp-interceptor/internal/metrics"
	"github.com/smtp-interceptor/smtp-interceptor/internal/sessionlog"
	"github.com/smtp-interceptor/smtp-interceptor/internal/sessionstore"
	"github.com/smtp-interceptor/smtp-interceptor/milter"
	"github.com/smtp-interceptor/smtp-interceptor/policy"
	"github.com/smtp-interceptor/smtp-interceptor/rules"
	"github.com/smtp-interceptor/smtp-interceptor/rules/dnsclient"
	"github.com/smtp-interceptor/smtp-interceptor/state"
)

// drainTimeout bounds how long serve waits for in-flight requests after
// SIGTERM before it closes what is left.
const drainTimeout = 15 * time.Second

// runServe runs the policy and milter servers until ctx is cancelled
// (SIGTERM, SIGINT), then drains in-flight requests and returns 0. SIGHUP
// reloads the configuration; SIGUSR1 reopens the log files.
func runServe(ctx context.Context, args []string, e env) int {
	stdout, stderr := e.stdout, e.stderr
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	given := e.configFlag(fs, "configuration `file`")
	if code, done := parseFlags(fs, "smtp-interceptor serve [-c FILE]", args, stdout, stderr); done {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "serve: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	path := e.configPath(fs, *given)
	cfg, ok := loadConfig(path, stderr)
	if !ok {
		return exitUsage
	}
	hup, usr1 := make(chan struct{}, 1), make(chan struct{}, 1)
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGUSR1)
	defer func() {
		signal.Stop(sigs)
		close(sigs) // ends the forwarding goroutine
	}()
	go func() {
		for sig := range sigs {
			ch := hup
			if sig == syscall.SIGUSR1 {
				ch = usr1
			}
			select {
			case ch <- struct{}{}:
			default: // one pending is enough
			}
		}
	}()
	return serveWith(ctx, serveOptions{path: path, cfg: cfg, stdout: stdout, stderr: stderr, hup: hup, usr1: usr1,
		notify: systemdNotifier{}})
}

// serveOptions are what serve runs with; tests fill them directly.
type serveOptions struct {
	path           string
	cfg            *rules.Config
	stdout, stderr io.Writer
	hup, usr1      <-chan struct{}
	reloaded       chan<- error // receives each reload's result (tests)
	notify         notifier     // tells systemd (sd_notify); nil: no one
}

func serveWith(ctx context.Context, o serveOptions) int {
	cfg := o.cfg
	// The process log is written out every FlushInterval rather than a
	// system call per line: a flood of refusals must not slow the server.
	stderr := logfile.NewBuffered(o.stderr)
	defer stderr.Close()
	log, level := newLogger(stderr, cfg.Log)
	for _, w := range cfg.Warnings {
		log.Warn("configuration: " + w)
	}
	if err := serve(ctx, o, log, level, stderr); err != nil {
		log.Error("serve failed", slog.Any("error", err))
		fmt.Fprintf(o.stderr, "smtp-interceptor: %v\n", err)
		return exitFail
	}
	return exitOK
}

// serve runs every listener of the configuration until ctx is done.
// procLog is the process log's writer, whose losses are counted.
func serve(ctx context.Context, o serveOptions, log *slog.Logger, level *slog.LevelVar, procLog *logfile.Buffered) error {
	cfg := o.cfg
	notify := newServiceNotifier(o.notify)
	// A log file that cannot be opened does not stop the server: its
	// lines are queued (bounded) and the open is retried.
	sessions := logfile.Open(cfg.Log.Sessions, logfile.Options{Stdout: o.stdout, Logger: log, Name: "sessions"})
	defer sessions.Close()
	f2b := logfile.Open(cfg.Log.Fail2ban, logfile.Options{Stdout: o.stdout, Logger: log, Name: "fail2ban"})
	defer f2b.Close()
	// The session store ([log] store) writes off the request path; it
	// closes last, after the servers drained, writing what is queued.
	store := openStore(cfg, log)
	if store != nil {
		defer store.Close()
	}
	started := time.Now()

	counters := new(rules.Counters)
	counters.ConfigLoaded()
	// fail2ban lines of DNS blacklist refusals wait until it is clear that
	// the list was not suspended right after (it may have been listing
	// the world).
	f2bObs := fail2ban.New(f2b, log, &fail2ban.Options{Suspensions: counters})
	defer f2bObs.Close() // before f2b is closed: deferred calls run last first
	// The dynamic state ([state]): bans, automatic bans, rate limits.
	backend, err := openState(cfg, log, counters.SetStateUp)
	if err != nil {
		return err
	}
	defer backend.Close()
	var engine *rules.Engine // set below; the observers read its configuration
	relay := relayName(cfg)
	ab := autoban.New(autoban.Options{Backend: backend, Relay: relay, Logger: log,
		Config: func() rules.AutobanConfig { return engine.Config().Autoban },
		OnBan: func(b state.Ban) {
			counters.Autobanned()
			f2bObs.WriteBan(b.Prefix, b.Reason)
		}})
	opts := rules.EngineOptions{
		Logger:   log,
		Counters: counters,
		Observer: observers(sessionlog.New(sessions, log), f2bObs, ab, store),
		Bans:     stateBans{backend},
		Limiter:  stateLimiter{backend},
		Greylist: stateGreylist{backend},
	}
	reg := metrics.NewRegistry(counters, buildVersion())
	ops := metrics.NewOps(reg)
	storeMetrics(ops, store)
	// The console's charts: the last 24 hours, a point a minute.
	hist := history.New(historyMinutes)
	dnsc := &dnsClients{}
	defer dnsc.close()
	client, err := newDNSClient(cfg, counters, log, nil)
	switch {
	case err == nil:
		opts.DNS = client
		dnsc.set(client)
	case dnsNeeded(cfg):
		return err
	default:
		log.Warn("no DNS resolver; DNS lists, verify_host_name and verify_domain cannot be enabled", slog.Any("error", err))
	}
	dirc := &directoryClients{}
	defer dirc.close()
	dir, err := newDirectoryClient(cfg, counters, log)
	if err != nil {
		return err
	}
	dirc.set(dir)
	opts.Directory = engineDirectory(dir)
	engine = rules.NewEngine(cfg, opts)
	if err := setCandidate(engine, cfg, log); err != nil {
		return err
	}
	tuneMemory(log)
	logStartup(log, cfg, opts.DNS != nil)
	allowed := func(ip netip.Addr) bool {
		_, ok := engine.Config().Server.Allow.Match(ip, "")
		return ok
	}

	// Open every listener before serving any, so a bad address fails the
	// start instead of leaving a half-running server.
	var lns []net.Listener
	closeAll := func() {
		for _, ln := range lns {
			ln.Close()
		}
	}
	openAll := func(kind string, addrs []string) ([]net.Listener, error) {
		var out []net.Listener
		for _, addr := range addrs {
			ln, err := listen.Listen(addr, cfg.Server.SocketMode)
			if err != nil {
				return nil, fmt.Errorf("%s listener: %w", kind, err)
			}
			lns = append(lns, ln)
			out = append(out, ln)
		}
		return out, nil
	}
	policyLns, err := openAll("policy", cfg.Server.Policy)
	if err != nil {
		closeAll()
		return err
	}
	milterLns, err := openAll("milter", cfg.Server.Milter)
	if err != nil {
		closeAll()
		return err
	}
	var metricsLn net.Listener
	if cfg.Server.Metrics != "" {
		ln, err := listen.Listen(cfg.Server.Metrics, 0)
		if err != nil {
			closeAll()
			return fmt.Errorf("metrics listener: %w", err)
		}
		metricsLn = listen.Allow(ln, func(ip netip.Addr) bool {
			if allowed(ip) {
				return true
			}
			_, ok := engine.Config().Server.MetricsAllow.Match(ip, "")
			return ok
		}, nil)
	}

	// The admin listener (the web console and the API) is served only
	// with a token or console users: without either nobody could log in.
	var adminLn net.Listener
	var adminHandler http.Handler
	switch {
	case adminOn(cfg.Admin):
		fail := func(err error) error {
			closeAll()
			if metricsLn != nil {
				metricsLn.Close()
			}
			if adminLn != nil {
				adminLn.Close()
			}
			return err
		}
		if adminHandler, err = newConsole(consoleDeps{cfg: cfg, engine: engine, backend: backend, store: store, history: hist,
			relay: relay, started: started, log: log, resolver: dnsc.resolverUp,
			stats: func() metrics.Stats {
				return metrics.Stats{Snapshot: counters.Snapshot(), Expanded: counters.Expanded(), Entries: engine.Config().EntryHits()}
			}}); err != nil {
			return fail(err)
		}
		ln, err := listen.Listen(cfg.Admin.Listen, 0)
		if err != nil {
			return fail(fmt.Errorf("admin listener: %w", err))
		}
		adminLn = ln
		if adminLn, err = adminListener(ln, cfg.Admin); err != nil {
			ln.Close()
			return fail(err)
		}
	case cfg.Admin.Listen != "":
		log.Info("admin listener off: neither [admin] token_file nor users_file is set", slog.String("listen", cfg.Admin.Listen))
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	probes := &prober{parent: ctx, engine: engine}
	defer probes.stop()
	if client != nil {
		probes.start(client)
	}
	rl := &reloader{path: o.path, engine: engine, counters: counters, log: log, level: level,
		sessions: sessions, fail2ban: f2b, done: o.reloaded, notify: notify.reloads(),
		newDNS: func(cfg *rules.Config) error {
			// The lists the old client found bad stay suspended until
			// the new client's own probes say otherwise.
			c, err := newDNSClient(cfg, counters, log, counters.SuspendedZones())
			if err != nil {
				return err
			}
			engine.SetDNS(c)
			probes.start(c)
			dnsc.set(c)
			return nil
		},
		newDirectory: func(cfg *rules.Config) error {
			c, err := newDirectoryClient(cfg, counters, log)
			if err != nil {
				return err
			}
			engine.SetDirectory(engineDirectory(c))
			dirc.set(c)
			return nil
		}}
	wg.Go(func() { rl.run(ctx, o.hup, o.usr1) })
	wg.Go(func() { f2bObs.Run(ctx) })
	wg.Go(func() { ab.Run(ctx) })
	wg.Go(func() { publishStats(ctx, backend, relay, counters, statsInterval) })
	wg.Go(func() { hist.Run(ctx, time.Minute, sampler(counters, ops.Requests)) })
	ops.Gauge("state_backend_up", "1 while the [state] backend answers (the memory backend always does), 0 while Redis is unreachable: bans are then enforced from the local copy, rate limits and automatic-ban counting pause.", nil,
		func() float64 { return boolGauge(backend.Up()) })
	ops.Gauge("bans", "Bans in force (dynamic, from ban, the admin API and [autoban]), in this relay's copy.", nil,
		func() float64 { return float64(len(backend.Bans())) })
	ops.Gauge("greylist_triplets", "Greylisting triplets remembered by the [state] backend (pending and passed); -1 while it cannot be asked.", nil,
		func() float64 {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			n, err := backend.GreylistTriplets(ctx)
			if err != nil {
				return -1
			}
			return float64(n)
		})
	ops.Counter("autoban_dropped_total", "Refusals not counted towards [autoban] because the queue to the state backend was full.", nil,
		func() float64 { return float64(ab.Dropped()) })
	ops.Log("process", procLog)
	ops.Log("sessions", sessions)
	ops.Log("fail2ban", f2b)
	ops.Counter("dns_cache_hits_total", "DNS list queries answered from the cache.", nil,
		func() float64 { h, _ := dnsc.cacheStats(); return float64(h) })
	ops.Counter("dns_cache_misses_total", "DNS list queries the cache could not answer (asked of the resolver, or joined a query in flight).", nil,
		func() float64 { _, m := dnsc.cacheStats(); return float64(m) })
	ops.Gauge("dns_resolver_up", "1 while the DNS resolver answers, 0 while it is marked down after repeated timeouts (DNS lists are then not applied).", nil,
		func() float64 { return boolGauge(dnsc.resolverUp()) })

	// One guard for every policy and milter listener: the allow list, the
	// connection limits, and accept errors retried rather than fatal.
	guard := listen.NewGuard(listen.GuardOptions{
		Logger: log,
		Allow:  allowed,
		Limits: func() listen.Limits {
			s := engine.Config().Server
			return listen.Limits{MaxConnections: s.MaxConnections, MaxConnectionsPerIP: s.MaxConnectionsPerIP}
		},
		OnAcceptError: func(protocol string, _ error) { ops.AcceptErrors.WithLabelValues(protocol).Inc() },
		OnRefused: func(protocol string, reason listen.Reason) {
			ops.Refused.WithLabelValues(protocol, string(reason)).Inc()
		},
	})
	for _, protocol := range []string{"policy", "milter"} {
		ops.Gauge("connections", "Policy and milter connections open now, by protocol.",
			map[string]string{"protocol": protocol}, func() float64 { return float64(guard.Connections(protocol)) })
	}
	psrv := policy.New(engine, policy.Options{Logger: log,
		OnBadRequest: func(reason string) { ops.Malformed.WithLabelValues("policy", reason).Inc() },
		OnBadAddress: func() { ops.BadAddresses.WithLabelValues("policy").Inc() },
		OnRequest:    seconds(ops.Requests.WithLabelValues("policy"))})
	milter.RouteLibraryWarnings(log)
	msrv := milter.New(engine, milter.Options{Logger: log,
		OnMalformed:  func(reason string) { ops.Malformed.WithLabelValues("milter", reason).Inc() },
		OnBadAddress: func() { ops.BadAddresses.WithLabelValues("milter").Inc() },
		OnCallback:   seconds(ops.Requests.WithLabelValues("milter"))})
	errc := make(chan error, len(lns)+1)
	for _, ln := range policyLns {
		log.Info("policy server listening", slog.String("addr", ln.Addr().String()))
		wg.Go(func() {
			if err := psrv.Serve(guard.Wrap(ln, "policy")); err != nil && !errors.Is(err, policy.ErrServerClosed) {
				errc <- err
			}
		})
	}
	for _, ln := range milterLns {
		log.Info("milter listening", slog.String("addr", ln.Addr().String()))
		wg.Go(func() {
			if err := msrv.Serve(guard.Wrap(ln, "milter")); err != nil && !errors.Is(err, milter.ErrServerClosed) {
				errc <- err
			}
		})
	}
	var hsrv *http.Server
	if metricsLn != nil {
		hsrv = metricsServer(metrics.Handler(reg, counters, metrics.HandlerOptions{
			Pprof:   func() bool { return engine.Config().Server.Pprof },
			Entries: func() []rules.EntryHit { return engine.Config().EntryHits() },
		}))
		log.Info("metrics listening", slog.String("addr", metricsLn.Addr().String()))
		wg.Go(func() {
			if err := hsrv.Serve(metricsLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("metrics: %w", err)
			}
		})
	}

	var asrv *http.Server
	if adminLn != nil {
		asrv = metricsServer(adminHandler)
		scheme := "http"
		if cfg.Admin.TLSCert != "" {
			scheme = "https"
		}
		log.Info("admin listener (web console and API)", slog.String("url", scheme+"://"+adminLn.Addr().String()),
			slog.Bool("console_users", cfg.Admin.UsersFile != ""), slog.Bool("api_token", cfg.Admin.Token != ""))
		wg.Go(func() {
			if err := asrv.Serve(adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("admin: %w", err)
			}
		})
	}

	tell(notify, log, notifyReady) // every listener is open and served

	var failed error
	select {
	case <-ctx.Done():
		log.Info("shutting down: draining in-flight requests")
	case failed = <-errc:
		log.Error("listener failed; shutting down", slog.Any("error", failed))
	}
	tell(notify, log, notifyStopping)
	cancel()
	dctx, dcancel := context.WithTimeout(context.Background(), drainTimeout)
	defer dcancel()
	var drain sync.WaitGroup
	drain.Go(func() {
		if err := psrv.Shutdown(dctx); err != nil {
			log.Warn("policy drain timed out; closed the remaining connections", slog.Any("error", err))
		}
	})
	drain.Go(func() {
		// Requests in flight get their reply; idle MTA connections are
		// closed at once (the MTA applies its milter default action to
		// the rest of those SMTP sessions).
		if err := msrv.Shutdown(dctx); err != nil {
			log.Warn("milter drain timed out; closed the remaining connections", slog.Any("error", err))
		}
	})
	if hsrv != nil {
		drain.Go(func() { hsrv.Shutdown(dctx) })
	}
	if asrv != nil {
		drain.Go(func() { asrv.Shutdown(dctx) })
	}
	drain.Wait()
	wg.Wait()
	log.Info("stopped")
	return failed
}

// prober runs the health probes of the DNS list client in use, and
// restarts them when a reload brings a new client.
type prober struct {
	parent context.Context
	engine *rules.Engine
	mu     sync.Mutex
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// start stops the probes of the previous client, if any, and probes c.
func (p *prober) start(c *dnsclient.Client) {
	p.stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	ctx, cancel := context.WithCancel(p.parent)
	p.cancel = cancel
	p.wg.Go(func() {
		c.RunProber(ctx, func() []string { return dnsZones(p.engine.Config()) },
			func() time.Duration { return p.engine.Config().DNS.ProbeInterval })
	})
}

// stop ends the probes and waits for them.
func (p *prober) stop() {
	p.mu.Lock()
	if p.cancel != nil {
		p.cancel()
		p.cancel = nil
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// metricsServer returns the HTTP server of the metrics listener, with
// timeouts so that an idle or slow scraper cannot hold a connection for
// ever; WriteTimeout leaves room for a 90-second CPU profile.
func metricsServer(h http.Handler) *http.Server {
	return &http.Server{Handler: h,
		ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 2 * time.Minute, IdleTimeout: 2 * time.Minute}
}

// dnsClients holds the DNS list client in use, so that a reload's new
// client can replace it and the old one be closed (its probes stopped).
type dnsClients struct {
	mu  sync.Mutex
	cur *dnsclient.Client
	// hits and misses of the clients replaced, so the totals go on.
	hits, misses uint64
}

// cacheStats returns the DNS list cache's hits and misses since start,
// over every client used.
func (d *dnsClients) cacheStats() (hits, misses uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	hits, misses = d.hits, d.misses
	if d.cur != nil {
		h, m := d.cur.CacheStats()
		hits, misses = hits+h, misses+m
	}
	return hits, misses
}

// set makes c the client in use and closes the previous one.
func (d *dnsClients) set(c *dnsclient.Client) {
	d.mu.Lock()
	old := d.cur
	d.cur = c
	if old != nil && old != c {
		h, m := old.CacheStats()
		d.hits, d.misses = d.hits+h, d.misses+m
	}
	d.mu.Unlock()
	if old != nil && old != c {
		old.Close()
	}
}

// resolverUp reports whether the client in use finds its resolver up
// (true when there is no client).
func (d *dnsClients) resolverUp() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cur == nil || d.cur.ResolverUp()
}

func (d *dnsClients) close() { d.set(nil) }

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// setCandidate loads [server] candidate, if any, into a candidate engine
// beside engine: same DNS client, its own counters, no observers, so it
// decides every session but never answers, logs or writes a line.
func setCandidate(engine *rules.Engine, cfg *rules.Config, log *slog.Logger) error {
	if cfg.Server.Candidate == "" {
		engine.SetCandidate(nil)
		return nil
	}
	cand, err := rules.Load(cfg.Server.Candidate)
	if err != nil {
		return fmt.Errorf("[server] candidate: %w", err)
	}
	// The candidate asks the live directory: one cache, one pool. A
	// candidate [directory] that differs is noted, not connected to.
	engine.SetCandidate(rules.NewEngine(cand, rules.EngineOptions{DNS: engine.DNS(), Directory: engine.Directory()}))
	if cand.Directory.Enabled() && directoryChanged(cfg, cand) {
		log.Warn("the candidate's [directory] differs from the running one; the candidate is decided with the running directory",
			slog.String("file", cfg.Server.Candidate))
	}
	log.Info("candidate configuration loaded: every session is also decided under it, never answering",
		slog.String("file", cfg.Server.Candidate))
	return nil
}

// logStartup says at start what runs: version, configuration, what is
// enabled and how big each list is, and the resolver (each DNS list's
// probe result is logged by the DNS client as it comes).
func logStartup(log *slog.Logger, cfg *rules.Config, dnsClient bool) {
	src := cfg.Path
	if src == "" {
		src = "built-in defaults"
	}
	mode := "enforce"
	if cfg.Server.Shadow {
		mode = "shadow"
	}
	log.Info("starting", slog.String("version", buildVersion()), slog.String("config", src), slog.String("mode", mode),
		slog.Bool("delay_reject", cfg.Server.DelayReject), slog.Bool("check_authenticated", cfg.Server.CheckAuthenticated))
	var sizes []any
	counts := map[string]int{}
	var keys []string
	for _, h := range cfg.EntryHits() {
		if counts[h.Key] == 0 {
			keys = append(keys, h.Key)
		}
		counts[h.Key]++
	}
	for _, k := range keys {
		sizes = append(sizes, slog.Int(k, counts[k]))
	}
	log.Info("lists", sizes...)
	var dnsl []string
	if cfg.DNSWhitelist.Enabled {
		for _, s := range cfg.DNSWhitelist.Sites {
			dnsl = append(dnsl, "wl:"+s.Name)
		}
	}
	if cfg.DNSBlacklist.Enabled {
		for _, s := range cfg.DNSBlacklist.Sites {
			dnsl = append(dnsl, "bl:"+s.Name)
		}
	}
	resolver := cfg.DNS.Resolver
	if resolver == "" {
		resolver = "/etc/resolv.conf"
	}
	log.Info("dns", slog.Bool("client", dnsClient), slog.String("resolver", resolver), slog.String("lists", strings.Join(dnsl, " ")),
		slog.Bool("verify_host_name", cfg.Connections.VerifyHostName), slog.Bool("verify_domain", cfg.MailFrom.VerifyDomain))
	if d := &cfg.Directory; d.Enabled() {
		log.Info("directory", slog.String("directory", d.String()), slog.Bool("verify", cfg.Recipients.Verify),
			slog.Bool("reject_ambiguous", cfg.Recipients.RejectAmbiguous), slog.Bool("deny_groups", cfg.Recipients.DenyGroups))
	}
}

// seconds adapts a Prometheus observer to a duration callback.
func seconds(o prometheus.Observer) func(time.Duration) {
	return func(d time.Duration) { o.Observe(d.Seconds()) }
}

// observers are the engine's observers; the session store only when it
// is open.
func observers(log, f2b, ab rules.Observer, store *sessionstore.Store) rules.Observers {
	o := rules.Observers{log, f2b, ab}
	if store != nil {
		o = append(o, store)
	}
	return o
}
