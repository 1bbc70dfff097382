package dnsclient

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"
)

// A dead resolver would add the full timeout to every new session. Like
// rspamd with its upstreams, the client marks the resolver down after
// ResolverDownAfter consecutive network timeouts; while it is down, queries
// fail at once with [ErrResolverDown]. After ResolverDownHold one query is
// let through (half-open): an answer marks the resolver up, another
// timeout holds it down again. Only timeouts count: NXDOMAIN, SERVFAIL and
// every other answer prove the resolver alive. Health probes are queries
// like any other here.
const (
	ResolverDownAfter = 3
	ResolverDownHold  = 30 * time.Second
)

// resolverHealth is the state of the resolver as the client sees it.
type resolverHealth struct {
	mu       sync.Mutex
	timeouts int       // consecutive timeouts
	down     bool      // queries fail at once
	until    time.Time // end of the hold, when down
	trial    bool      // the half-open query is out
}

// admitQuery decides whether a question may be sent. It fails with
// ErrResolverDown while the resolver is down; after the hold it lets one
// question through, reported as the trial.
func (c *Client) admitQuery() (trial bool, err error) {
	h := &c.health
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.down {
		return false, nil
	}
	if h.trial || c.now().Before(h.until) {
		return false, ErrResolverDown
	}
	h.trial = true
	return true, nil
}

// noteQuery records how a question sent went: err is the network error,
// nil for any DNS answer whatever its response code.
func (c *Client) noteQuery(trial bool, err error) {
	h := &c.health
	var wentDown, cameBack bool
	h.mu.Lock()
	switch {
	case err == nil:
		h.timeouts = 0
		if h.down {
			h.down, h.trial, cameBack = false, false, true
		}
	case timedOut(err):
		switch {
		case h.down && trial:
			// The half-open question failed too: hold again.
			h.trial, h.until = false, c.now().Add(ResolverDownHold)
		case !h.down:
			h.timeouts++
			if h.timeouts >= ResolverDownAfter {
				h.down, h.until, wentDown = true, c.now().Add(ResolverDownHold), true
			}
		}
	case trial:
		// Neither an answer nor a timeout (cancelled, refused): no
		// verdict, the next question may try.
		h.trial = false
	}
	n := h.timeouts
	h.mu.Unlock()
	switch {
	case wentDown:
		c.log.Warn("dns resolver down: consecutive queries timed out; DNS list queries fail at once (DNS list clients count as not listed; verify_host_name and verify_domain answer 450) until one is answered again",
			slog.String("resolver", c.server), slog.Int("timeouts", n), slog.Duration("hold", ResolverDownHold))
	case cameBack:
		c.log.Info("dns resolver answers again: DNS list queries resume", slog.String("resolver", c.server))
	}
}

// ResolverUp reports whether the resolver is considered up: false from
// ResolverDownAfter consecutive timeouts until a question is answered again
// (the smtp_interceptor_dns_resolver_up gauge).
func (c *Client) ResolverUp() bool {
	c.health.mu.Lock()
	defer c.health.mu.Unlock()
	return !c.health.down
}

// timedOut reports whether err is a network timeout (the question got no
// answer in time), not an answer nor a cancellation.
func timedOut(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded)
}
