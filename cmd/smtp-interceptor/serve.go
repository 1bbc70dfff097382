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
	"sync"
	"syscall"
	"time"

	"github.com/smtp-interceptor/smtp-interceptor/internal/fail2ban"
	"github.com/smtp-interceptor/smtp-interceptor/internal/listen"
	"github.com/smtp-interceptor/smtp-interceptor/internal/logfile"
	"github.com/smtp-interceptor/smtp-interceptor/internal/metrics"
	"github.com/smtp-interceptor/smtp-interceptor/internal/sessionlog"
	"github.com/smtp-interceptor/smtp-interceptor/milter"
	"github.com/smtp-interceptor/smtp-interceptor/policy"
	"github.com/smtp-interceptor/smtp-interceptor/rules"
	"github.com/smtp-interceptor/smtp-interceptor/rules/dnsclient"
)

// drainTimeout bounds how long serve waits for in-flight requests after
// SIGTERM before it closes what is left.
const drainTimeout = 15 * time.Second

// runServe runs the policy and milter servers until ctx is cancelled
// (SIGTERM, SIGINT), then drains in-flight requests and returns 0. SIGHUP
// reloads the configuration; SIGUSR1 reopens the log files.
func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", "", "configuration `file` (default: built-in defaults)")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "serve: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	cfg, ok := loadConfig(*path, stderr)
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
	return serveWith(ctx, serveOptions{path: *path, cfg: cfg, stdout: stdout, stderr: stderr, hup: hup, usr1: usr1})
}

// serveOptions are what serve runs with; tests fill them directly.
type serveOptions struct {
	path           string
	cfg            *rules.Config
	stdout, stderr io.Writer
	hup, usr1      <-chan struct{}
	reloaded       chan<- error // receives each reload's result (tests)
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
	if err := serve(ctx, o, log, level); err != nil {
		log.Error("serve failed", slog.Any("error", err))
		fmt.Fprintf(o.stderr, "smtp-interceptor: %v\n", err)
		return exitFail
	}
	return exitOK
}

// serve runs every listener of the configuration until ctx is done.
func serve(ctx context.Context, o serveOptions, log *slog.Logger, level *slog.LevelVar) error {
	cfg := o.cfg
	sessions, err := logfile.New(cfg.Log.Sessions, o.stdout)
	if err != nil {
		return fmt.Errorf("[log] sessions: %w", err)
	}
	defer sessions.Close()
	f2b, err := logfile.New(cfg.Log.Fail2ban, o.stdout)
	if err != nil {
		return fmt.Errorf("[log] fail2ban: %w", err)
	}
	defer f2b.Close()

	counters := new(rules.Counters)
	opts := rules.EngineOptions{
		Logger:   log,
		Counters: counters,
		Observer: rules.Observers{sessionlog.New(sessions, log), fail2ban.New(f2b, log, nil)},
	}
	client, err := newDNSClient(cfg, counters, log)
	switch {
	case err == nil:
		opts.DNS = client
	case dnsListsEnabled(cfg):
		return err
	default:
		log.Warn("no DNS resolver; DNS lists cannot be enabled", slog.Any("error", err))
	}
	engine := rules.NewEngine(cfg, opts)
	tuneMemory(log)
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
		metricsLn = listen.Allow(ln, allowed, nil)
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
		sessions: sessions, fail2ban: f2b, done: o.reloaded,
		newDNS: func(cfg *rules.Config) error {
			c, err := newDNSClient(cfg, counters, log)
			if err != nil {
				return err
			}
			counters.ClearSuspended()
			engine.SetDNS(c)
			probes.start(c)
			return nil
		}}
	wg.Go(func() { rl.run(ctx, o.hup, o.usr1) })

	psrv := policy.New(engine, policy.Options{Logger: log})
	msrv := milter.New(engine, milter.Options{Logger: log})
	errc := make(chan error, len(lns)+1)
	for _, ln := range policyLns {
		log.Info("policy server listening", slog.String("addr", ln.Addr().String()))
		wg.Go(func() {
			if err := psrv.Serve(ln); err != nil && !errors.Is(err, policy.ErrServerClosed) {
				errc <- err
			}
		})
	}
	for _, ln := range milterLns {
		log.Info("milter listening", slog.String("addr", ln.Addr().String()))
		wg.Go(func() {
			if err := msrv.Serve(ln); err != nil && !errors.Is(err, milter.ErrServerClosed) {
				errc <- err
			}
		})
	}
	var hsrv *http.Server
	if metricsLn != nil {
		hsrv = metricsServer(metrics.Handler(metrics.NewRegistry(counters), counters))
		log.Info("metrics listening", slog.String("addr", metricsLn.Addr().String()))
		wg.Go(func() {
			if err := hsrv.Serve(metricsLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("metrics: %w", err)
			}
		})
	}

	var failed error
	select {
	case <-ctx.Done():
		log.Info("shutting down: draining in-flight requests")
	case failed = <-errc:
		log.Error("listener failed; shutting down", slog.Any("error", failed))
	}
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
		// Each MTA connection ends with its SMTP session.
		if err := msrv.Shutdown(dctx); err != nil {
			log.Warn("milter drain timed out; closed the remaining connections", slog.Any("error", err))
		}
	})
	if hsrv != nil {
		drain.Go(func() { hsrv.Shutdown(dctx) })
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
