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
	"github.com/smtp-interceptor/smtp-interceptor/policy"
	"github.com/smtp-interceptor/smtp-interceptor/rules"
	"github.com/smtp-interceptor/smtp-interceptor/rules/dnsclient"
)

// drainTimeout bounds how long serve waits for in-flight requests after
// SIGTERM before it closes what is left.
const drainTimeout = 15 * time.Second

// runServe runs the servers until ctx is cancelled (SIGTERM, SIGINT), then
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
	for _, addr := range cfg.Server.Policy {
		ln, err := listen.Listen(addr, cfg.Server.SocketMode)
		if err != nil {
			closeAll()
			return fmt.Errorf("policy listener: %w", err)
		}
		lns = append(lns, ln)
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
	errc := make(chan error, len(lns))
	for _, ln := range lns {
		log.Info("policy server listening", slog.String("addr", ln.Addr().String()))
		wg.Go(func() {
			if err := psrv.Serve(ln); err != nil && !errors.Is(err, policy.ErrServerClosed) {
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
	if err := psrv.Shutdown(dctx); err != nil {
		log.Warn("drain timed out; closed the remaining connections", slog.Any("error", err))
	}
	wg.Wait()
	log.Info("stopped")
	return failed
}

var _ rules.DNSLists = (*dnsclient.Client)(nil)
