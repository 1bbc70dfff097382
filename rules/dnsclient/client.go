package dnsclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// Defaults for the Options fields left zero.
const (
	DefaultResolvConf = "/etc/resolv.conf"
	DefaultTimeout    = 2 * time.Second
)

// ednsBufferSize is the UDP payload size advertised with EDNS0 (RFC 6891):
// 1232 bytes, the DNS Flag Day 2020 value, which avoids IP fragmentation.
// A list's A and TXT answers fit easily; a larger answer comes back
// truncated and is asked again over TCP.
const ednsBufferSize = 1232

// Options configure a Client. Every field may be left zero.
type Options struct {
	// Server is the recursive resolver, "host:port". "" takes the first
	// nameserver of ResolvConf.
	Server string
	// ResolvConf is the resolv.conf(5) file read when Server is "";
	// "" means DefaultResolvConf.
	ResolvConf string
	// Timeout bounds each query sent: the UDP try, and the TCP retry after
	// a truncated answer, each get Timeout. A caller's context deadline
	// is respected too. 0 means DefaultTimeout.
	Timeout time.Duration
	// MinTTL and MaxTTL clamp how long answers are cached; MaxTTL 0 sets
	// no upper bound. An answer cached for 0 is not cached.
	MinTTL, MaxTTL time.Duration
	// CacheEntries bounds the cache, least recently used answers going
	// first; 0 turns the cache off. DNS list answers and the answers of
	// ReverseNames and DomainExists share it and its bound.
	CacheEntries int
	// Now is the clock of the cache, of the hit-rate window and of the
	// holds (ResolverDownHold, ProbeRetryHold); nil means time.Now.
	Now func() time.Time
	// Logger receives probe results and debug details; nil discards.
	Logger *slog.Logger
	// Observe is called after every DNS question sent to the network (an A
	// or TXT query, including health probes, and the PTR, MX, A and AAAA
	// queries of ReverseNames and DomainExists; a TCP retry is part of its
	// question), not for cache hits, with the zone, the latency and the
	// error (nil on success, NXDOMAIN included). The zone of a PTR query
	// is "in-addr.arpa" or "ip6.arpa"; that of a sender domain's query is
	// "" (a domain is no list, and would make an unbounded label). nil
	// ignores them.
	Observe func(zone string, d time.Duration, err error)
	// OnSuspend is called when a zone is suspended (true: by a health
	// probe or by the hit-rate rule) or restored (false: by a probe). A
	// zone of InitialSuspended is not reported again. nil ignores them.
	OnSuspend func(zone string, suspended bool)
	// InitialSuspended are zones suspended from the start: the last
	// verdict of the client this one replaces (its SuspendedZones), so
	// that a configuration reload does not forget a known-bad list. They
	// stay suspended until a probe passes; the first query of one starts
	// its probe (and so does RunProber's first round).
	InitialSuspended []string
}

// Client queries DNS lists through one recursive resolver, caches the
// answers and probes the lists' health. It implements [rules.DNSLists] and
// [rules.HostDNS], and is safe for concurrent use. Build it with New.
type Client struct {
	server         string
	udp, tcp       *dns.Client
	timeout        time.Duration
	minTTL, maxTTL time.Duration
	now            func() time.Time
	log            *slog.Logger
	observe        func(zone string, d time.Duration, err error)
	onSuspend      func(zone string, suspended bool)

	cache  *cache
	flight flight
	health resolverHealth

	zonesMu sync.Mutex                            // serializes writers of zones
	zones   atomic.Pointer[map[string]*zoneState] // copied on write: read without a lock

	// Probes run in goroutines the client owns: bgCtx ends them, bg
	// waits for them (Close).
	bgCtx  context.Context
	stopBg context.CancelFunc
	bgMu   sync.Mutex // guards closed and bg.Add
	closed bool
	bg     sync.WaitGroup
	// cacheHits and cacheMisses count DNS list queries answered from the
	// cache and not.
	cacheHits, cacheMisses atomic.Uint64
}

var _ rules.DNSLists = (*Client)(nil)

// New returns a client for opts. It fails when no resolver can be
// determined or an option is out of range.
func New(opts Options) (*Client, error) {
	server, err := resolver(opts.Server, opts.ResolvConf)
	if err != nil {
		return nil, err
	}
	if opts.Timeout < 0 || opts.MinTTL < 0 || opts.MaxTTL < 0 {
		return nil, errors.New("dns client: timeout, min_ttl and max_ttl cannot be negative")
	}
	if opts.MaxTTL > 0 && opts.MinTTL > opts.MaxTTL {
		return nil, fmt.Errorf("dns client: min_ttl %s is above max_ttl %s", opts.MinTTL, opts.MaxTTL)
	}
	c := &Client{
		server:    server,
		timeout:   opts.Timeout,
		minTTL:    opts.MinTTL,
		maxTTL:    opts.MaxTTL,
		now:       opts.Now,
		log:       opts.Logger,
		observe:   opts.Observe,
		onSuspend: opts.OnSuspend,
		cache:     newCache(opts.CacheEntries),
		flight:    flight{calls: make(map[cacheKey]*call)},
	}
	if c.timeout == 0 {
		c.timeout = DefaultTimeout
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.udp = &dns.Client{Net: "udp", Timeout: c.timeout}
	c.tcp = &dns.Client{Net: "tcp", Timeout: c.timeout}
	c.bgCtx, c.stopBg = context.WithCancel(context.Background())
	zones := map[string]*zoneState{}
	for _, name := range opts.InitialSuspended {
		if name = normalizeZone(name); name != "" {
			z := &zoneState{name: name}
			z.state.Store(zoneSuspended)
			zones[name] = z
		}
	}
	c.zones.Store(&zones)
	return c, nil
}

// resolver returns the resolver's "host:port": server when set, else the
// first nameserver of the resolv.conf file.
func resolver(server, resolvConf string) (string, error) {
	if server != "" {
		if _, _, err := net.SplitHostPort(server); err != nil {
			return "", fmt.Errorf("dns client: resolver %q: want host:port, e.g. \"127.0.0.1:53\": %w", server, err)
		}
		return server, nil
	}
	if resolvConf == "" {
		resolvConf = DefaultResolvConf
	}
	cc, err := dns.ClientConfigFromFile(resolvConf)
	if err != nil {
		return "", fmt.Errorf("dns client: no resolver configured and %s unreadable: %w", resolvConf, err)
	}
	if len(cc.Servers) == 0 {
		return "", fmt.Errorf("dns client: no resolver configured and no nameserver in %s", resolvConf)
	}
	return net.JoinHostPort(cc.Servers[0], cc.Port), nil
}

// Server returns the resolver the client asks, "host:port".
func (c *Client) Server() string { return c.server }

// Query implements [rules.DNSLists]: it returns zone's A records for ip
// (empty when not listed) and, when listed, its TXT record. An error means
// the list could not be asked: the zone is suspended (wrapping
// [rules.ErrSiteSuspended]), the resolver is down ([ErrResolverDown]), the
// resolver answered an error rcode ([*RcodeError]), or the network failed
// or timed out.
//
// A zone this client has not probed yet is probed before its first query
// is answered (see Probe), so a list that lists the world is never used.
//
// Answers may come from the cache and are shared between callers: the
// Addrs slice must not be modified.
func (c *Client) Query(ctx context.Context, zone string, ip netip.Addr) (rules.DNSAnswer, error) {
	zone = normalizeZone(zone)
	ip = normalizeAddr(ip)
	if zone == "" || !ip.IsValid() {
		return rules.DNSAnswer{}, fmt.Errorf("dns list query: invalid zone %q or address %v", zone, ip)
	}
	z := c.lookupZone(zone)
	if z == nil {
		z = c.zone(zone)
	}
	if z.state.Load() != zoneHealthy {
		if err := c.admit(ctx, z); err != nil {
			return rules.DNSAnswer{}, err
		}
	}
	k := cacheKey{zone: zone, ip: ip}
	if ans, ok := c.cache.get(k, c.now()); ok {
		c.cacheHits.Add(1)
		return ans, nil
	}
	c.cacheMisses.Add(1)
	return c.miss(ctx, k, z)
}

// miss looks k up on the network, joining the lookup in flight for k if
// there is one. The lookup runs in its own goroutine with its own timeout:
// a caller whose ctx ends returns at once, without cancelling it for the
// others.
func (c *Client) miss(ctx context.Context, k cacheKey, z *zoneState) (rules.DNSAnswer, error) {
	c.flight.mu.Lock()
	cl, ok := c.flight.calls[k]
	if !ok {
		// The lookup that filled the cache may have finished since our
		// cache miss; it stores before it leaves the flight map.
		if ans, hit := c.cache.get(k, c.now()); hit {
			c.flight.mu.Unlock()
			return ans, nil
		}
		cl = &call{done: make(chan struct{})}
		c.flight.calls[k] = cl
		go c.fly(context.WithoutCancel(ctx), k, z, cl)
	}
	cl.waiters++
	c.flight.mu.Unlock()

	select {
	case <-cl.done:
		return cl.ans, cl.err
	case <-ctx.Done():
		c.flight.mu.Lock()
		cl.waiters--
		c.flight.mu.Unlock()
		return rules.DNSAnswer{}, fmt.Errorf("dns list %s: query for %s: %w", k.zone, k.ip, ctx.Err())
	}
}

// fly runs the shared lookup of k, feeds the hit-rate rule, caches a good
// answer and hands the result to every waiter. An answer of a zone
// suspended while it was asked (by this very answer's trip, perhaps) is
// neither cached nor returned: the waiters get rules.ErrSiteSuspended.
func (c *Client) fly(ctx context.Context, k cacheKey, z *zoneState, cl *call) {
	var (
		ans rules.DNSAnswer
		err error
	)
	defer func() {
		if p := recover(); p != nil {
			c.log.Error("dns list query panicked", slog.String("zone", k.zone), slog.Any("panic", p))
			ans, err = rules.DNSAnswer{}, fmt.Errorf("dns list %s: query panicked: %v", k.zone, p)
		}
		c.flight.finish(k, cl, ans, err)
	}()
	// Worst case: A and TXT, each over UDP then TCP.
	ctx, cancel := context.WithTimeout(ctx, 4*c.timeout)
	defer cancel()
	gen := z.gen.Load()
	var ttl time.Duration
	ans, ttl, err = c.lookup(ctx, k)
	if err != nil {
		// Error answers are never cached: the next lookup asks again.
		return
	}
	c.observeLookup(z, k.ip, len(ans.Addrs) > 0)
	if ttl > 0 && z.gen.Load() == gen {
		c.cache.add(k, ans, c.now().Add(ttl))
	}
	// A suspension bumps gen before it purges the cache: an answer added
	// after that purge is removed here.
	if z.gen.Load() != gen {
		c.cache.remove(k)
		ans, err = rules.DNSAnswer{}, fmt.Errorf("%s: %w", k.zone, rules.ErrSiteSuspended)
	}
}

// lookup asks the resolver for k (RFC 5782 §2.1): the A query decides the
// listing; a listed address's TXT record is fetched as its reason. It
// returns the answer and how long to cache it.
func (c *Client) lookup(ctx context.Context, k cacheKey) (rules.DNSAnswer, time.Duration, error) {
	name := queryName(k.zone, k.ip)
	r, err := c.ask(ctx, k.zone, name, dns.TypeA)
	if err != nil {
		return rules.DNSAnswer{}, 0, err
	}
	addrs, ttl := aRecords(r)
	if len(addrs) == 0 {
		// NXDOMAIN, or NOERROR without an A record: not listed.
		return rules.DNSAnswer{}, c.clamp(negativeTTL(r)), nil
	}
	ans := rules.DNSAnswer{Addrs: addrs}
	if tr, err := c.ask(ctx, k.zone, name, dns.TypeTXT); err != nil {
		// The listing stands without its reason.
		c.log.Debug("dns list TXT query failed", slog.String("zone", k.zone), slog.String("error", err.Error()))
	} else {
		ans.TXT = txtRecords(tr)
	}
	return ans, c.clamp(ttl), nil
}

// ask sends one question to the resolver and checks the response code:
// NOERROR and NXDOMAIN are answers, any other code is an *RcodeError. It
// fails at once with ErrResolverDown while the resolver is marked down.
func (c *Client) ask(ctx context.Context, zone, name string, qtype uint16) (*dns.Msg, error) {
	trial, err := c.admitQuery()
	if err != nil {
		return nil, fmt.Errorf("query %s %s: %w", name, dns.TypeToString[qtype], err)
	}
	m := new(dns.Msg)
	m.SetQuestion(name, qtype) // RD set: the resolver recurses for us
	m.SetEdns0(ednsBufferSize, false)
	start := time.Now()
	r, err := c.exchange(ctx, m)
	c.noteQuery(trial, err)
	if err == nil && r.Rcode != dns.RcodeSuccess && r.Rcode != dns.RcodeNameError {
		err = &RcodeError{Rcode: r.Rcode}
	}
	if c.observe != nil {
		c.observe(zone, time.Since(start), err)
	}
	if err != nil {
		return nil, fmt.Errorf("query %s %s: %w", name, dns.TypeToString[qtype], err)
	}
	return r, nil
}

// exchange sends m over UDP and, when the answer is truncated (TC bit),
// again over TCP (RFC 7766 §5).
func (c *Client) exchange(ctx context.Context, m *dns.Msg) (*dns.Msg, error) {
	r, err := c.exchangeOver(ctx, c.udp, m)
	if err != nil {
		return nil, err
	}
	if r.Truncated {
		if r, err = c.exchangeOver(ctx, c.tcp, m); err != nil {
			return nil, fmt.Errorf("tcp retry after a truncated answer: %w", err)
		}
	}
	return r, nil
}

// exchangeOver sends m with dc and reads the answer. The query is bounded
// by dc's timeout and ctx's deadline, and cancelling ctx ends it at once.
func (c *Client) exchangeOver(ctx context.Context, dc *dns.Client, m *dns.Msg) (*dns.Msg, error) {
	co, err := dc.DialContext(ctx, c.server)
	if err != nil {
		return nil, err
	}
	defer co.Close()
	// miekg/dns only honours a context's deadline; closing the connection
	// makes a cancellation end the read too.
	stop := context.AfterFunc(ctx, func() { co.Close() })
	defer stop()
	r, _, err := dc.ExchangeWithConnContext(ctx, m, co)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, ctxErr
		}
		return nil, err
	}
	return r, nil
}

// aRecords returns the A records of an answer, in answer order, and the
// smallest of their TTLs. A records anywhere in the answer section count,
// so that a CNAME the resolver followed leads to its target's records.
func aRecords(r *dns.Msg) ([]netip.Addr, time.Duration) {
	var addrs []netip.Addr
	minTTL := uint32(math.MaxUint32)
	for _, rr := range r.Answer {
		a, ok := rr.(*dns.A)
		if !ok {
			continue
		}
		addr, ok := netip.AddrFromSlice(a.A)
		if !ok {
			continue
		}
		addrs = append(addrs, addr.Unmap())
		minTTL = min(minTTL, a.Hdr.Ttl)
	}
	if len(addrs) == 0 {
		return nil, 0
	}
	return addrs, time.Duration(minTTL) * time.Second
}

// negativeTTL returns how long a negative answer may be cached: RFC 2308
// §5, the smaller of the SOA record's TTL and its MINIMUM field. It
// returns 0 when the authority section has no SOA; the clamp then applies
// MinTTL.
func negativeTTL(r *dns.Msg) time.Duration {
	for _, rr := range r.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			return time.Duration(min(soa.Hdr.Ttl, soa.Minttl)) * time.Second
		}
	}
	return 0
}

// txtRecords joins the TXT records of an answer: a record's strings are
// concatenated (RFC 7208 §3.3 reads them that way too), records are
// separated by a space.
func txtRecords(r *dns.Msg) string {
	var parts []string
	for _, rr := range r.Answer {
		if t, ok := rr.(*dns.TXT); ok {
			parts = append(parts, strings.Join(t.Txt, ""))
		}
	}
	return strings.Join(parts, " ")
}

// clamp bounds a cache lifetime to [MinTTL, MaxTTL].
func (c *Client) clamp(ttl time.Duration) time.Duration {
	if ttl < c.minTTL {
		ttl = c.minTTL
	}
	if c.maxTTL > 0 && ttl > c.maxTTL {
		ttl = c.maxTTL
	}
	return ttl
}

// CacheLen returns the number of cached answers, expired ones not yet
// evicted included.
func (c *Client) CacheLen() int { return c.cache.len() }

// waiting returns how many callers wait for the lookup of (zone, ip) in
// flight; tests poll it.
func (c *Client) waiting(zone string, ip netip.Addr) int {
	return c.flight.waiting(cacheKey{zone: normalizeZone(zone), ip: normalizeAddr(ip)})
}

// CacheStats returns how many DNS list queries the cache answered and how
// many it did not.
func (c *Client) CacheStats() (hits, misses uint64) {
	return c.cacheHits.Load(), c.cacheMisses.Load()
}
