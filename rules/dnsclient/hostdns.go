package dnsclient

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/miekg/dns"
	"golang.org/x/net/idna"

	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

var _ rules.HostDNS = (*Client)(nil)

// The reverse zones of RFC 1035 §3.5 (IPv4) and RFC 3596 §2.5 (IPv6).
const (
	reverseZone4 = "in-addr.arpa"
	reverseZone6 = "ip6.arpa"
)

// ReverseNames implements [rules.HostDNS]: it returns the PTR names of ip
// (in-addr.arpa or ip6.arpa), lower case, without the trailing dot, in
// answer order, duplicates and the root name left out. PTR records
// anywhere in the answer count, so that a CNAME the resolver followed (RFC
// 2317 classless delegation) leads to its target's names. NXDOMAIN, or an
// answer without a PTR record, is no name: nil and a nil error.
//
// An error means the question could not be answered: the resolver is
// down ([ErrResolverDown]), answered an error rcode ([*RcodeError]:
// SERVFAIL, REFUSED...), or the network failed or timed out; ip is not a
// valid address.
//
// The answer is cached, and shared with every caller: the returned slice
// must not be modified.
func (c *Client) ReverseNames(ctx context.Context, ip netip.Addr) ([]string, error) {
	ip = normalizeAddr(ip)
	if !ip.IsValid() {
		return nil, fmt.Errorf("reverse lookup: invalid address %v", ip)
	}
	k := cacheKey{ip: ip, kind: kindPTR}
	if h, ok := c.cache.getHost(k, c.now()); ok {
		return h.names, nil
	}
	h, err := c.hostMiss(ctx, k)
	return h.names, err
}

// DomainExists implements [rules.HostDNS]: it reports whether domain has
// an MX, A or AAAA record (RFC 5321 §5.1). The MX query decides when it
// has MX records: true when one names a host; false for a null MX (RFC
// 7505: a single MX record of host ".", "this domain accepts no mail"),
// without asking for addresses. NXDOMAIN on the MX query is false at once.
// With no MX record, an A record, then an AAAA record, makes it true;
// NXDOMAIN or no record for all three is false.
//
// domain is a host name, in any case, with or without its trailing dot; an
// internationalized name (RFC 6531 SMTPUTF8, UTF-8) is asked as its
// A-label (IDNA 2008 lookup, e.g. xn--bcher-kva.example). What cannot be a
// host name (empty, an address literal like [192.0.2.1], an empty label,
// a label over 63 octets, a name over 253, a character other than a
// letter, digit, '-' or '_', invalid UTF-8 or IDN) has no record: false and a
// nil error, no query sent. A caller that exempts address literals, as
// Postfix's reject_unknown_sender_domain does, checks before asking.
//
// An error means the question could not be answered, by any of the three
// queries asked: the resolver is down ([ErrResolverDown]), answered an
// error rcode ([*RcodeError]), or the network failed or timed out.
//
// The answer is cached under the normalized name: a name already lower
// case, as the engine passes it, costs no allocation.
func (c *Client) DomainExists(ctx context.Context, domain string) (bool, error) {
	name, ok := hostDomain(domain)
	if !ok {
		return false, nil
	}
	k := cacheKey{zone: name, kind: kindDomain}
	if h, ok := c.cache.getHost(k, c.now()); ok {
		return h.exists, nil
	}
	h, err := c.hostMiss(ctx, k)
	return h.exists, err
}

// hostMiss looks the HostDNS question k up on the network, joining the
// lookup in flight for k if there is one; as miss does for a DNS list.
func (c *Client) hostMiss(ctx context.Context, k cacheKey) (hostAnswer, error) {
	c.flight.mu.Lock()
	cl, ok := c.flight.calls[k]
	if !ok {
		// The lookup that filled the cache may have finished since our
		// cache miss; it stores before it leaves the flight map.
		if h, hit := c.cache.getHost(k, c.now()); hit {
			c.flight.mu.Unlock()
			return h, nil
		}
		cl = &call{done: make(chan struct{})}
		c.flight.calls[k] = cl
		go c.hostFly(context.WithoutCancel(ctx), k, cl)
	}
	cl.waiters++
	c.flight.mu.Unlock()

	select {
	case <-cl.done:
		return cl.host, cl.err
	case <-ctx.Done():
		c.flight.mu.Lock()
		cl.waiters--
		c.flight.mu.Unlock()
		return hostAnswer{}, fmt.Errorf("%s: %w", k.question(), ctx.Err())
	}
}

// question names a HostDNS question for errors and logs.
func (k cacheKey) question() string {
	if k.kind == kindPTR {
		return "reverse lookup of " + k.ip.String()
	}
	return "domain " + k.zone
}

// hostFly runs the shared lookup of the HostDNS question k, caches a good
// answer and hands the result to every waiter.
func (c *Client) hostFly(ctx context.Context, k cacheKey, cl *call) {
	var (
		h   hostAnswer
		err error
	)
	defer func() {
		if p := recover(); p != nil {
			c.log.Error("dns host query panicked", slog.String("question", k.question()), slog.Any("panic", p))
			h, err = hostAnswer{}, fmt.Errorf("%s: query panicked: %v", k.question(), p)
		}
		c.flight.finishHost(k, cl, h, err)
	}()
	// Worst case: each question over UDP then TCP; PTR is one question,
	// a domain up to three (MX, A, AAAA).
	budget := 2 * c.timeout
	if k.kind == kindDomain {
		budget = 6 * c.timeout
	}
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	var ttl time.Duration
	if k.kind == kindPTR {
		h, ttl, err = c.lookupPTR(ctx, k.ip)
	} else {
		h, ttl, err = c.lookupDomain(ctx, k.zone)
	}
	if err != nil {
		// Error answers are never cached: the next lookup asks again.
		err = fmt.Errorf("%s: %w", k.question(), err)
		return
	}
	if ttl > 0 {
		c.cache.addHost(k, h, c.now().Add(ttl))
	}
}

// lookupPTR asks the resolver for ip's PTR records. It returns the names
// and how long to cache them: the smallest TTL of the answer's PTR and
// CNAME records, or the negative TTL (RFC 2308 §5) when there is no name.
func (c *Client) lookupPTR(ctx context.Context, ip netip.Addr) (hostAnswer, time.Duration, error) {
	zone := reverseZone4
	if !ip.Is4() {
		zone = reverseZone6
	}
	r, err := c.ask(ctx, zone, queryName(zone, ip), dns.TypePTR)
	if err != nil {
		return hostAnswer{}, 0, err
	}
	var names []string
	for _, rr := range r.Answer {
		p, ok := rr.(*dns.PTR)
		if !ok {
			continue
		}
		if n := normalizeHost(p.Ptr); n != "" && !contains(names, n) {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		// NXDOMAIN, or NOERROR without a PTR record: no name.
		return hostAnswer{}, c.clamp(negativeTTL(r)), nil
	}
	return hostAnswer{names: names}, c.clamp(answerTTL(r, dns.TypePTR)), nil
}

// lookupDomain asks the resolver whether domain (normalized, valid) has an
// MX, A or AAAA record, as DomainExists describes. The answer is cached
// for the smallest lifetime of the answers it rests on: a domain found
// by its A record after no MX keeps both the MX query's negative TTL and
// the A records' TTL.
func (c *Client) lookupDomain(ctx context.Context, domain string) (hostAnswer, time.Duration, error) {
	name := domain + "."
	r, err := c.ask(ctx, "", name, dns.TypeMX)
	if err != nil {
		return hostAnswer{}, 0, err
	}
	if r.Rcode == dns.RcodeNameError {
		return hostAnswer{}, c.clamp(negativeTTL(r)), nil
	}
	if hosts, nulls := mxRecords(r); hosts+nulls > 0 {
		// A null MX alone says the domain accepts no mail; beside a real
		// MX (which RFC 7505 §3 forbids) it is ignored.
		return hostAnswer{exists: hosts > 0}, c.clamp(answerTTL(r, dns.TypeMX)), nil
	}
	ttl := negativeTTL(r)
	for _, qtype := range [...]uint16{dns.TypeA, dns.TypeAAAA} {
		r, err := c.ask(ctx, "", name, qtype)
		if err != nil {
			return hostAnswer{}, 0, err
		}
		if r.Rcode == dns.RcodeNameError {
			// Gone between two questions: no record of any type.
			return hostAnswer{}, c.clamp(min(ttl, negativeTTL(r))), nil
		}
		if countRecords(r, qtype) > 0 {
			return hostAnswer{exists: true}, c.clamp(min(ttl, answerTTL(r, qtype))), nil
		}
		ttl = min(ttl, negativeTTL(r))
	}
	return hostAnswer{}, c.clamp(ttl), nil
}

// mxRecords counts the MX records of an answer that name a host, and the
// null MX records (host ".", RFC 7505).
func mxRecords(r *dns.Msg) (hosts, nulls int) {
	for _, rr := range r.Answer {
		mx, ok := rr.(*dns.MX)
		if !ok {
			continue
		}
		if mx.Mx == "." {
			nulls++
		} else {
			hosts++
		}
	}
	return hosts, nulls
}

// countRecords counts the records of type qtype in an answer.
func countRecords(r *dns.Msg, qtype uint16) int {
	n := 0
	for _, rr := range r.Answer {
		if rr.Header().Rrtype == qtype {
			n++
		}
	}
	return n
}

// answerTTL returns the smallest TTL of an answer's records of type qtype
// and of the CNAME records that led to them; 0 when there are none.
func answerTTL(r *dns.Msg, qtype uint16) time.Duration {
	ttl := uint32(math.MaxUint32)
	found := false
	for _, rr := range r.Answer {
		if h := rr.Header(); h.Rrtype == qtype || h.Rrtype == dns.TypeCNAME {
			ttl, found = min(ttl, h.Ttl), true
		}
	}
	if !found {
		return 0
	}
	return time.Duration(ttl) * time.Second
}

// normalizeHost returns a DNS name lower-cased without its trailing dot;
// "" for the root.
func normalizeHost(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, "."))
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// hostDomain returns domain normalized for DomainExists (lower case, no
// trailing dot, an internationalized name as its A-label) and whether it
// can be a host name at all. It allocates only when domain needs
// changing.
func hostDomain(domain string) (string, bool) {
	domain = strings.TrimSuffix(domain, ".")
	upper := false
	for i := 0; i < len(domain); i++ {
		if b := domain[i]; b >= utf8.RuneSelf {
			if !utf8.ValidString(domain) {
				return "", false
			}
			a, err := idna.Lookup.ToASCII(domain)
			if err != nil || a == domain {
				return "", false
			}
			return hostDomain(a)
		} else if 'A' <= b && b <= 'Z' {
			upper = true
		}
	}
	if !validHostName(domain) {
		return "", false
	}
	if upper {
		domain = strings.ToLower(domain)
	}
	return domain, true
}

// validHostName reports whether name (ASCII, without a trailing dot) is a
// DNS host name: 1 to 253 octets, labels of 1 to 63 letters, digits, '-'
// or '_' (RFC 1035 §2.3.4; '_' is lenient, it appears in real names).
func validHostName(name string) bool {
	if name == "" || len(name) > 253 {
		return false
	}
	label := 0
	for i := 0; i < len(name); i++ {
		switch b := name[i]; {
		case b == '.':
			if label == 0 {
				return false
			}
			label = 0
			continue
		case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9', b == '-', b == '_':
		default:
			return false
		}
		if label++; label > 63 {
			return false
		}
	}
	return label > 0
}
