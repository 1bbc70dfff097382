package rules

import (
	"context"
	"net/netip"
	"strings"
)

// HostDNS answers the DNS questions of two controls that are not DNS
// lists: [connections] verify_host_name (does the client's address have a
// PTR name?) and [mail_from] verify_domain (can the sender's domain
// receive mail?). A DNSLists that also implements HostDNS answers them; the
// engine finds it by a type assertion, so one client, one resolver and one
// cache serve all DNS.
//
// An error means the question could not be answered (a timeout, SERVFAIL,
// the resolver marked down): the engine then answers with a temporary
// failure (4xx), never a refusal.
type HostDNS interface {
	// ReverseNames returns the PTR names of ip (RFC 1035 §3.5, in-addr.arpa
	// or ip6.arpa), normalized as host names; none, with a nil error,
	// when the address has no PTR record (NXDOMAIN or no PTR data).
	ReverseNames(ctx context.Context, ip netip.Addr) ([]string, error)
	// DomainExists reports whether domain has an MX, A or AAAA record
	// (RFC 5321 §5.1: a domain without MX falls back to its address
	// records); false with a nil error when it has none or does not exist.
	DomainExists(ctx context.Context, domain string) (bool, error)
}

// SetReverse gives ip the PTR names names (none: no PTR record).
func (m *MemoryDNS) SetReverse(ip netip.Addr, names ...string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ptr[NormalizeIP(ip)] = names
}

// FailReverse makes PTR lookups of ip return err.
func (m *MemoryDNS) FailReverse(ip netip.Addr, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ptrErrs[NormalizeIP(ip)] = err
}

// SetDomain says whether domain has an MX, A or AAAA record.
func (m *MemoryDNS) SetDomain(domain string, exists bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.domains[normDomain(domain)] = exists
}

// FailDomain makes lookups of domain return err.
func (m *MemoryDNS) FailDomain(domain string, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.domainErrs[normDomain(domain)] = err
}

func normDomain(d string) string { return strings.ToLower(strings.TrimSuffix(d, ".")) }

// ReverseNames implements HostDNS: an address never set has no PTR.
func (m *MemoryDNS) ReverseNames(ctx context.Context, ip netip.Addr) ([]string, error) {
	m.queries.Add(1)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	ip = NormalizeIP(ip)
	if err, ok := m.ptrErrs[ip]; ok {
		return nil, err
	}
	return m.ptr[ip], nil
}

// DomainExists implements HostDNS: a domain never set does not exist.
func (m *MemoryDNS) DomainExists(ctx context.Context, domain string) (bool, error) {
	m.queries.Add(1)
	if err := ctx.Err(); err != nil {
		return false, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	d := normDomain(domain)
	if err, ok := m.domainErrs[d]; ok {
		return false, err
	}
	return m.domains[d], nil
}
