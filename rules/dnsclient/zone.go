package dnsclient

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// ProbeRetryHold is how long a zone whose probe could not ask the list
// (resolver down, timeout) keeps the verdict it had (the inherited one, or
// healthy) before a query probes it again.
const ProbeRetryHold = 30 * time.Second

// The states of a zone, for this client.
const (
	// zoneUnprobed: no probe of this client has judged the zone yet. It
	// is treated as healthy, but a query probes it first (unless the last
	// probe failed less than ProbeRetryHold ago).
	zoneUnprobed int32 = iota
	// zoneHealthy: a probe found the zone healthy. The fast path.
	zoneHealthy
	// zoneSuspended: queries fail with rules.ErrSiteSuspended, unsent.
	zoneSuspended
)

// zoneState is what the client knows of one list.
type zoneState struct {
	name  string
	state atomic.Int32  // zoneUnprobed, zoneHealthy or zoneSuspended; written under mu
	gen   atomic.Uint64 // bumped by every suspension, before the cache purge
	// announced is set once a probe result of this zone was logged at
	// info (the first one: what the operator wants to see at start).
	announced atomic.Bool

	mu sync.Mutex
	// confirmed is true when a probe of this client set the state; an
	// inherited or tripped suspension is not, and a query starts a probe
	// of it (at most every ProbeRetryHold).
	confirmed bool
	retryAt   time.Time  // no probe from the query path before this
	tripped   bool       // suspended by the hit-rate rule, not by a probe
	probe     *probeCall // the probe in flight, shared by every caller
	rate      rateWindow
}

// probeCall is one probe in flight.
type probeCall struct {
	done    chan struct{} // closed once res is set
	res     ProbeResult
	waiters atomic.Int32 // queries waiting for it; tests poll it
}

// zone returns the state of a normalized zone, creating it on first use.
// The map is copied on write: the query path reads it without a lock.
func (c *Client) zone(name string) *zoneState {
	if z := (*c.zones.Load())[name]; z != nil {
		return z
	}
	c.zonesMu.Lock()
	defer c.zonesMu.Unlock()
	old := *c.zones.Load()
	if z := old[name]; z != nil {
		return z
	}
	m := maps.Clone(old)
	if m == nil {
		m = map[string]*zoneState{}
	}
	z := &zoneState{name: name}
	m[name] = z
	c.zones.Store(&m)
	return z
}

// lookupZone returns the state of a normalized zone, nil when unknown.
func (c *Client) lookupZone(name string) *zoneState { return (*c.zones.Load())[name] }

// admit is the query path's gate for a zone not known healthy. An unprobed
// zone is probed first, the query waiting for the probe (shared with every
// other caller, bounded by the client timeout and ctx); a suspended zone
// fails at once, and starts a probe when its suspension is unconfirmed and
// due for one.
func (c *Client) admit(ctx context.Context, z *zoneState) error {
	now := c.now()
	z.mu.Lock()
	switch z.state.Load() {
	case zoneHealthy:
		z.mu.Unlock()
		return nil
	case zoneSuspended:
		due := !z.confirmed && !now.Before(z.retryAt)
		z.mu.Unlock()
		if due {
			c.startProbe(z)
		}
		return fmt.Errorf("%s: %w", z.name, rules.ErrSiteSuspended)
	}
	hold := now.Before(z.retryAt)
	z.mu.Unlock()
	if hold {
		// The last probe could not ask the list: healthy until the hold ends.
		return nil
	}
	pc := c.startProbe(z)
	pc.waiters.Add(1)
	defer pc.waiters.Add(-1)
	select {
	case <-pc.done:
	case <-ctx.Done():
		return fmt.Errorf("dns list %s: waiting for its health probe: %w", z.name, ctx.Err())
	}
	if z.state.Load() == zoneSuspended {
		return fmt.Errorf("%s: %w", z.name, rules.ErrSiteSuspended)
	}
	return nil
}

// startProbe returns the probe of z in flight, starting one if there is
// none. The probe runs in its own goroutine, owned by the client (Close
// stops it), bounded by the client timeout.
func (c *Client) startProbe(z *zoneState) *probeCall {
	z.mu.Lock()
	defer z.mu.Unlock()
	if z.probe != nil {
		return z.probe
	}
	pc := &probeCall{done: make(chan struct{})}
	c.bgMu.Lock()
	if c.closed {
		c.bgMu.Unlock()
		pc.res = ProbeResult{Zone: z.name, Err: errClosed, Suspended: z.state.Load() == zoneSuspended}
		close(pc.done)
		return pc
	}
	c.bg.Add(1)
	c.bgMu.Unlock()
	z.probe = pc
	go c.runProbe(z, pc)
	return pc
}

// runProbe runs the shared probe pc of z and hands its result to every
// waiter.
func (c *Client) runProbe(z *zoneState, pc *probeCall) {
	defer c.bg.Done()
	defer func() {
		if p := recover(); p != nil {
			c.log.Error("dns list probe panicked", slog.String("zone", z.name), slog.Any("panic", p))
			pc.res = ProbeResult{Zone: z.name, Err: fmt.Errorf("probe panicked: %v", p), Suspended: z.state.Load() == zoneSuspended}
		}
		z.mu.Lock()
		z.probe = nil
		z.mu.Unlock()
		close(pc.done)
	}()
	ctx, cancel := context.WithTimeout(c.bgCtx, c.timeout)
	defer cancel()
	pc.res = c.probe(ctx, z)
}

// probeFailed records a probe that could not ask the list: the state is
// kept, and the query path does not probe again before ProbeRetryHold. It
// returns whether the zone is suspended.
func (c *Client) probeFailed(z *zoneState) bool {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.retryAt = c.now().Add(ProbeRetryHold)
	return z.state.Load() == zoneSuspended
}

// verdict is what a probe's verdict changed.
type verdict struct {
	changed   bool          // suspended or restored
	falseTrip bool          // restored after a hit-rate trip
	rest      time.Duration // the hit-rate rule's rest after a false trip
}

// setVerdict records a probe's verdict on z. A zone being suspended loses
// its cached answers: they may have come from the list while it
// misbehaved.
func (c *Client) setVerdict(z *zoneState, suspended bool) verdict {
	var v verdict
	z.mu.Lock()
	was := z.state.Load() == zoneSuspended
	z.confirmed = true
	switch {
	case suspended:
		if z.tripped {
			z.rate.confirmed()
		}
		z.tripped = false
		if !was {
			z.gen.Add(1)
			v.changed = true
		}
		z.state.Store(zoneSuspended)
	default:
		if was {
			v.changed = true
			if z.tripped {
				v.falseTrip = true
				v.rest = z.rate.falseTrip(c.now())
			} else {
				z.rate.reset()
			}
		}
		z.tripped = false
		z.state.Store(zoneHealthy)
	}
	z.mu.Unlock()
	if v.changed && suspended {
		c.cache.purgeZone(z.name)
	}
	return v
}

// observeLookup feeds a network lookup of ip in z to the hit-rate rule,
// and suspends z when the rule trips.
func (c *Client) observeLookup(z *zoneState, ip netip.Addr, listed bool) {
	now := c.now()
	z.mu.Lock()
	if z.state.Load() == zoneSuspended || !z.rate.observe(now, ip, listed) {
		z.mu.Unlock()
		return
	}
	clients, hits := z.rate.clients(), z.rate.listed
	z.rate.reset()
	z.gen.Add(1)
	z.state.Store(zoneSuspended)
	z.confirmed, z.tripped = false, true
	z.mu.Unlock()

	c.cache.purgeZone(z.name)
	c.log.Error("dns list suspended: its hit rate jumped, it may be listing every client; probing it now (RFC 5782 test entries)",
		slog.String("zone", z.name), slog.Int("listed", hits), slog.Int("clients", clients),
		slog.Duration("window", HitRateWindow))
	if c.onSuspend != nil {
		c.onSuspend(z.name, true)
	}
	c.startProbe(z)
}

// Suspended reports whether zone is suspended, by a health probe, by the
// hit-rate rule or as inherited from Options.InitialSuspended.
func (c *Client) Suspended(zone string) bool {
	z := c.lookupZone(normalizeZone(zone))
	return z != nil && z.state.Load() == zoneSuspended
}

// SuspendedZones returns the zones suspended now, sorted: what a client
// replacing this one takes as Options.InitialSuspended.
func (c *Client) SuspendedZones() []string {
	var out []string
	for name, z := range *c.zones.Load() {
		if z.state.Load() == zoneSuspended {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// Close stops the client's probes in flight and waits for them. Queries
// still work after Close, but zones are no longer probed: an unprobed zone
// is then treated as healthy. It is safe to call more than once.
func (c *Client) Close() {
	c.bgMu.Lock()
	c.closed = true
	c.bgMu.Unlock()
	c.stopBg()
	c.bg.Wait()
}

// probeWaiting returns how many queries wait for the probe of zone in
// flight; 0 when none is. Tests poll it.
func (c *Client) probeWaiting(zone string) int {
	z := c.lookupZone(normalizeZone(zone))
	if z == nil {
		return 0
	}
	z.mu.Lock()
	defer z.mu.Unlock()
	if z.probe == nil {
		return 0
	}
	return int(z.probe.waiters.Load())
}
