package dnsclient

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// DefaultProbeInterval is the time between two probe rounds when the
// interval function of RunProber returns 0 or less.
const DefaultProbeInterval = 10 * time.Minute

// The RFC 5782 §5 test entries: every IPv4 list lists 127.0.0.2 and must
// not list 127.0.0.1.
var (
	testEntry = netip.AddrFrom4([4]byte{127, 0, 0, 2})
	localhost = netip.AddrFrom4([4]byte{127, 0, 0, 1})
)

// ProbeResult is the outcome of one health probe of a DNS list.
type ProbeResult struct {
	// Zone is the list probed, normalized.
	Zone string
	// ListsTestEntry is true when the list lists 127.0.0.2, as it must.
	ListsTestEntry bool
	// ListsLocalhost is true when the list answered for 127.0.0.1, which it
	// must not: a listing (it lists everyone) or an error code (it refuses
	// our queries, e.g. 127.255.255.254 for a public resolver).
	ListsLocalhost bool
	// Answer127_0_0_1 are the A records the list returned for 127.0.0.1.
	Answer127_0_0_1 []netip.Addr
	// Err is set when the probe could not ask the list; the zone's state
	// is then left as it was.
	Err error
	// Suspended is the zone's state after the probe.
	Suspended bool
}

// String describes the result in one line for people, e.g.
// "zen.spamhaus.org: ok (127.0.0.2 listed, 127.0.0.1 not listed)".
func (r ProbeResult) String() string {
	switch {
	case r.Err != nil:
		s := r.Zone + ": probe failed: " + r.Err.Error()
		if r.Suspended {
			s += " (still suspended)"
		}
		return s
	case r.ListsLocalhost && allErrorCodes(r.Answer127_0_0_1):
		return r.Zone + ": SUSPENDED: answers 127.0.0.1 with error code " + joinAddrs(r.Answer127_0_0_1) +
			", it refuses our queries (public resolver, or over quota?)"
	case r.ListsLocalhost:
		return r.Zone + ": SUSPENDED: lists 127.0.0.1 (" + joinAddrs(r.Answer127_0_0_1) + "), it would refuse everyone"
	case !r.ListsTestEntry:
		return r.Zone + ": warning: does not list the test entry 127.0.0.2"
	}
	return r.Zone + ": ok (127.0.0.2 listed, 127.0.0.1 not listed)"
}

func allErrorCodes(addrs []netip.Addr) bool {
	for _, a := range addrs {
		if !rules.IsDNSListErrorCode(a) {
			return false
		}
	}
	return len(addrs) > 0
}

func joinAddrs(addrs []netip.Addr) string {
	parts := make([]string, len(addrs))
	for i, a := range addrs {
		parts[i] = a.String()
	}
	return strings.Join(parts, ", ")
}

// Probe checks zone's health with the RFC 5782 §5 test entries, bypassing
// the cache, and updates its suspension: a zone that answers for
// 127.0.0.1 is suspended, one that does not is restored. A zone that does
// not list 127.0.0.2 only gets a warning. A probe that cannot ask the list
// changes nothing (the query path then waits ProbeRetryHold before it
// probes the zone again).
//
// There is one probe per zone at a time: a caller arriving while one is in
// flight (the prober, a query waiting to use a new zone, a hit-rate trip)
// shares its result. The probe asks both test entries at once and is
// bounded by the client timeout; ctx bounds only this caller's wait.
func (c *Client) Probe(ctx context.Context, zone string) ProbeResult {
	zone = normalizeZone(zone)
	if zone == "" {
		return ProbeResult{Err: fmt.Errorf("dns list probe: empty zone")}
	}
	z := c.zone(zone)
	pc := c.startProbe(z)
	select {
	case <-pc.done:
		return pc.res
	case <-ctx.Done():
		return ProbeResult{Zone: zone, Err: ctx.Err(), Suspended: z.state.Load() == zoneSuspended}
	}
}

// probe runs one probe of z, records its verdict and reports it.
func (c *Client) probe(ctx context.Context, z *zoneState) ProbeResult {
	zone := z.name
	res := ProbeResult{Zone: zone}
	var (
		test    []netip.Addr
		testErr error
		wg      sync.WaitGroup
	)
	wg.Go(func() {
		defer func() {
			if p := recover(); p != nil {
				testErr = fmt.Errorf("probe of 127.0.0.2 panicked: %v", p)
			}
		}()
		test, testErr = c.probeAddr(ctx, zone, testEntry)
	})
	local, err := c.probeAddr(ctx, zone, localhost)
	wg.Wait()
	if err == nil {
		err = testErr
	}
	if err != nil {
		res.Err = err
		res.Suspended = c.probeFailed(z)
		level := slog.LevelWarn
		if c.bgCtx.Err() != nil {
			level = slog.LevelDebug // closing
		}
		c.log.Log(ctx, level, "dns list probe failed, state unchanged",
			slog.String("zone", zone), slog.Bool("suspended", res.Suspended), slog.String("error", err.Error()))
		return res
	}
	res.Answer127_0_0_1 = local
	res.ListsLocalhost = len(local) > 0
	res.ListsTestEntry = len(test) > 0
	res.Suspended = res.ListsLocalhost
	v := c.setVerdict(z, res.Suspended)

	switch {
	case res.Suspended:
		c.log.Error("dns list suspended: it answers for 127.0.0.1 (RFC 5782 test entry), queries to it are not sent until a probe passes",
			slog.String("zone", zone), slog.String("answer", joinAddrs(local)), slog.String("probe", res.String()))
	case v.falseTrip:
		c.log.Info("dns list restored: its probe passes, the hit-rate trip was a false alarm (a spam wave?); the hit-rate rule rests",
			slog.String("zone", zone), slog.Duration("rest", v.rest))
	case v.changed:
		c.log.Info("dns list restored: its probe passes", slog.String("zone", zone))
	case !z.announced.Swap(true):
		c.log.Info("dns list probe passed", slog.String("zone", zone), slog.String("result", res.String()))
	default:
		c.log.Debug("dns list probe", slog.String("zone", zone), slog.String("result", res.String()))
	}
	if !res.ListsTestEntry {
		c.log.Warn("dns list does not list its test entry 127.0.0.2 (RFC 5782): is the zone right?", slog.String("zone", zone))
	}
	if v.changed && c.onSuspend != nil {
		c.onSuspend(zone, res.Suspended)
	}
	return res
}

// probeAddr returns zone's A records for ip, asked on the network.
func (c *Client) probeAddr(ctx context.Context, zone string, ip netip.Addr) ([]netip.Addr, error) {
	r, err := c.ask(ctx, zone, queryName(zone, ip), dns.TypeA)
	if err != nil {
		return nil, err
	}
	addrs, _ := aRecords(r)
	return addrs, nil
}

// RunProber probes every zone at once, then again every interval, until
// ctx is done. zones and interval are called before each round and each
// wait, so a configuration reload is seen at the next round; an interval
// of 0 or less means DefaultProbeInterval. A panic in a round is logged
// and the loop goes on. The zones of a round are probed concurrently.
func (c *Client) RunProber(ctx context.Context, zones func() []string, interval func() time.Duration) {
	for ctx.Err() == nil {
		c.probeRound(ctx, zones)
		t := time.NewTimer(c.nextInterval(interval))
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
	}
}

// probeRound probes each zone once, concurrently.
func (c *Client) probeRound(ctx context.Context, zones func() []string) {
	defer c.recoverPanic("dns list prober")
	seen := map[string]bool{}
	var wg sync.WaitGroup
	for _, z := range zones() {
		z = normalizeZone(z)
		if z == "" || seen[z] {
			continue
		}
		seen[z] = true
		wg.Go(func() {
			defer c.recoverPanic("dns list probe of " + z)
			c.Probe(ctx, z)
		})
	}
	wg.Wait()
}

// nextInterval returns the wait before the next round.
func (c *Client) nextInterval(interval func() time.Duration) (d time.Duration) {
	defer func() {
		if p := recover(); p != nil {
			c.log.Error("dns list probe interval panicked", slog.String("panic", fmt.Sprint(p)))
			d = DefaultProbeInterval
		}
	}()
	if interval != nil {
		d = interval()
	}
	if d <= 0 {
		d = DefaultProbeInterval
	}
	return d
}

// recoverPanic, deferred (directly: recover works only there), logs a
// panic instead of crashing the process.
func (c *Client) recoverPanic(what string) {
	if p := recover(); p != nil {
		c.log.Error(what+" panicked", slog.String("panic", fmt.Sprint(p)), slog.String("stack", string(debug.Stack())))
	}
}
