package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"time"

	"github.com/smtp-interceptor/smtp-interceptor/internal/metrics"
	"github.com/smtp-interceptor/smtp-interceptor/rules"
	"github.com/smtp-interceptor/smtp-interceptor/state"
)

// statsInterval is how often a relay publishes its counters for
// stats --cluster; they live three intervals, so a relay that stops drops
// out of the fleet's totals within half a minute.
const statsInterval = 10 * time.Second

// stateBans adapts the state backend's bans to the engine's BanList.
type stateBans struct{ b state.Backend }

// Banned implements rules.BanList: the backend's local replica.
func (s stateBans) Banned(ip netip.Addr) (rules.Ban, bool) {
	b, ok := s.b.Banned(ip)
	return rules.Ban{Prefix: b.Prefix, Reason: b.Reason, Creator: b.Creator, Expires: b.Expires}, ok
}

// stateLimiter adapts the state backend's GCRA to the engine's
// RateLimiter.
type stateLimiter struct{ b state.Backend }

// Allow implements rules.RateLimiter.
func (s stateLimiter) Allow(ctx context.Context, key string, limit int, per time.Duration, cost int) (rules.RateDecision, error) {
	d, err := s.b.Allow(ctx, key, limit, per, cost)
	return rules.RateDecision{Allowed: d.Allowed, RetryAfter: d.RetryAfter}, err
}

// stateGreylist adapts the state backend's triplets to the engine's
// Greylister.
type stateGreylist struct{ b state.Backend }

// Greylist implements rules.Greylister.
func (s stateGreylist) Greylist(ctx context.Context, key string, delay, retry, keep time.Duration) (rules.GreyAnswer, error) {
	g, err := s.b.Greylist(ctx, key, delay, retry, keep)
	return rules.GreyAnswer{Pass: g.Pass, New: g.New, FirstPass: g.FirstPass, Wait: g.Wait, Delayed: g.Delayed}, err
}

// GreylistPassed implements rules.Greylister.
func (s stateGreylist) GreylistPassed(ctx context.Context, network string, add int, keep time.Duration) (int, error) {
	return s.b.GreylistPassed(ctx, network, add, keep)
}

// publishStats publishes this relay's counters to the state backend every
// interval (for stats --cluster), until ctx is done. A backend that fails
// is tried again at the next interval.
func publishStats(ctx context.Context, b state.Backend, relay string, counters *rules.Counters, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		doc, err := json.Marshal(metrics.Stats{Snapshot: counters.Snapshot()})
		if err == nil {
			_ = b.PublishStats(ctx, relay, doc, 3*interval)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// relayName is this relay's name in the fleet: [state] relay, else the
// host name.
func relayName(cfg *rules.Config) string {
	if cfg.State.Relay != "" {
		return cfg.State.Relay
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "relay"
}

// openState opens the [state] backend. onUp (nil: none) hears the Redis
// backend's reachability changes. It does not fail because Redis is down:
// the backend keeps trying.
func openState(cfg *rules.Config, log *slog.Logger, onUp func(bool)) (state.Backend, error) {
	sc := &cfg.State
	switch sc.Backend {
	case "redis":
		if log == nil {
			log = slog.New(slog.DiscardHandler)
		}
		state.RouteLibraryLog(log)
		o := state.RedisOptions{Addrs: sc.Addrs, MasterName: sc.MasterName, DB: sc.DB, Username: sc.Username,
			Password: string(sc.Password), Prefix: sc.Prefix, Timeout: sc.Timeout, Relay: relayName(cfg), Logger: log, OnUp: onUp}
		if sc.TLS {
			tc := &tls.Config{MinVersion: tls.VersionTLS12}
			if sc.CAFile != "" {
				pem, err := os.ReadFile(sc.CAFile)
				if err != nil {
					return nil, fmt.Errorf("[state] ca_file: %w", err)
				}
				tc.RootCAs = x509.NewCertPool()
				if !tc.RootCAs.AppendCertsFromPEM(pem) {
					return nil, fmt.Errorf("[state] ca_file %s: no PEM certificate in it", sc.CAFile)
				}
			}
			o.TLS = tc
		}
		r, err := state.OpenRedis(o)
		if err != nil {
			return nil, fmt.Errorf("[state]: %w", err)
		}
		return r, nil
	default:
		m, err := state.OpenMemory(state.MemoryOptions{File: sc.File, Logger: log})
		if err != nil {
			return nil, fmt.Errorf("[state] file: %w", err)
		}
		if onUp != nil {
			onUp(true)
		}
		return m, nil
	}
}
