package rules

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
)

// DNSAnswer is a DNS list's raw answer for one client.
type DNSAnswer struct {
	// Addrs are the A records for the client's name in the zone; empty when
	// the client is not listed (NXDOMAIN or no A record).
	Addrs []netip.Addr
	// TXT is the TXT record, kept as the listing's reason; "" when none.
	TXT string
}

// DNSLists queries DNS lists. The engine decides what an answer means
// (filters, error codes); an implementation only fetches it. An error means
// the list could not be asked: the engine counts the client as not listed.
type DNSLists interface {
	Query(ctx context.Context, zone string, ip netip.Addr) (DNSAnswer, error)
}

// ErrSiteSuspended is returned (wrapped) by a DNSLists whose health probes
// found the zone misbehaving; the engine treats it like any DNS error.
var ErrSiteSuspended = errors.New("dns list suspended by health probe")

// MemoryDNS is an in-memory DNSLists for tests and examples. The zero value
// is not usable; call NewMemoryDNS.
type MemoryDNS struct {
	mu      sync.RWMutex
	answers map[string]DNSAnswer
	errs    map[string]error
	queries atomic.Int64

	ptr        map[netip.Addr][]string
	ptrErrs    map[netip.Addr]error
	domains    map[string]bool
	domainErrs map[string]error
}

// NewMemoryDNS returns an empty in-memory DNS list server: every query is
// "not listed" until Set or Fail says otherwise. It implements HostDNS
// too: no address has a PTR name and no domain exists until SetReverse or
// SetDomain says otherwise.
func NewMemoryDNS() *MemoryDNS {
	return &MemoryDNS{answers: map[string]DNSAnswer{}, errs: map[string]error{},
		ptr: map[netip.Addr][]string{}, ptrErrs: map[netip.Addr]error{},
		domains: map[string]bool{}, domainErrs: map[string]error{}}
}

func memKey(zone string, ip netip.Addr) string {
	return strings.ToLower(strings.TrimSuffix(zone, ".")) + "|" + NormalizeIP(ip).String()
}

// Set lists ip in zone with the given A records (e.g. 127.0.0.2) and TXT.
func (m *MemoryDNS) Set(zone string, ip netip.Addr, txt string, addrs ...netip.Addr) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.answers[memKey(zone, ip)] = DNSAnswer{Addrs: addrs, TXT: txt}
}

// Fail makes queries for ip in zone return err (a timeout, SERVFAIL...).
func (m *MemoryDNS) Fail(zone string, ip netip.Addr, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.errs[memKey(zone, ip)] = err
}

// Queries returns how many queries were made.
func (m *MemoryDNS) Queries() int64 { return m.queries.Load() }

// Query implements DNSLists.
func (m *MemoryDNS) Query(ctx context.Context, zone string, ip netip.Addr) (DNSAnswer, error) {
	m.queries.Add(1)
	if err := ctx.Err(); err != nil {
		return DNSAnswer{}, err
	}
	k := memKey(zone, ip)
	m.mu.RLock()
	defer m.mu.RUnlock()
	if err, ok := m.errs[k]; ok {
		return DNSAnswer{}, err
	}
	return m.answers[k], nil
}
