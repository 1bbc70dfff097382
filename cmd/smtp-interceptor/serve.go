package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/smtp-interceptor/smtp-interceptor/internal/listen"
	"github.com/smtp-interceptor/smtp-interceptor/milter"
	"github.com/smtp-interceptor/smtp-interceptor/policy"
	"github.com/smtp-interceptor/smtp-interceptor/rules"
	"github.com/smtp-interceptor/smtp-interceptor/rules/dnsclient"
)

// drainTimeout bounds how long serve waits for in-flight requests after
// SIGTERM before it closes what is left.
const drainTimeout = 15 * time.Second

// runServe runs the policy and milter servers until ctx is cancelled (SIGTERM, SIGINT), then
// drains in-flight requests and returns 0.
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
	log, _ := newLogger(stderr, cfg.Log)
	for _, w := range cfg.Warnings {
		log.Warn("configuration: " + w)
	}
	if err := serve(ctx, cfg, log); err != nil {
		log.Error("serve failed", slog.Any("error", err))
		fmt.Fprintf(stderr, "smtp-interceptor: %v\n", err)
		return exitFail
	}
	return exitOK
}

// serve runs every listener of cfg until ctx is done.
func serve(ctx context.Context, cfg *rules.Config, log *slog.Logger) error {
	counters := new(rules.Counters)
	opts := rules.EngineOptions{Logger: log, Counters: counters}
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

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	if client != nil {
		wg.Go(func() {
			client.RunProber(ctx, func() []string { return dnsZones(engine.Config()) },
				func() time.Duration { return engine.Config().DNS.ProbeInterval })
		})
	}

	psrv := policy.New(engine, policy.Options{Logger: log})
	msrv := milter.New(engine, milter.Options{Logger: log})
	errc := make(chan error, len(lns))
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
	drain.Wait()
	wg.Wait()
	log.Info("stopped")
	return failed
}

var _ rules.DNSLists = (*dnsclient.Client)(nil)
