package dnsclient

// The helpers here are exported so that the black-box tests of
// engine_test.go (package dnsclient_test) can use them too; they exist only
// in test builds.

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/smtp-interceptor/smtp-interceptor/internal/testutil"
)

// Query is one question the test server received.
type Query struct {
	Name string // lower-case, fully qualified
	Type uint16
	Net  string // "udp" or "tcp"
}

// Counter records the questions a test server received.
type Counter struct {
	mu sync.Mutex
	qs []Query
}

func (c *Counter) add(q Query) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.qs = append(c.qs, q)
}

// All returns the questions received, in order.
func (c *Counter) All() []Query {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Query(nil), c.qs...)
}

// Total returns how many questions were received.
func (c *Counter) Total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.qs)
}

// IsProbe reports whether a question's name is one of the RFC 5782 test
// entries a health probe asks (127.0.0.1 and 127.0.0.2, in any zone).
func IsProbe(name string) bool {
	return strings.HasPrefix(name, "1.0.0.127.") || strings.HasPrefix(name, "2.0.0.127.")
}

// Split returns the questions of health probes and the others, each in
// order.
func (c *Counter) Split() (probes, others []Query) {
	for _, q := range c.All() {
		if IsProbe(q.Name) {
			probes = append(probes, q)
		} else {
			others = append(others, q)
		}
	}
	return probes, others
}

// Of returns how many questions of type qtype for name were received
// (over any transport).
func (c *Counter) Of(name string, qtype uint16) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, q := range c.qs {
		if q.Name == name && q.Type == qtype {
			n++
		}
	}
	return n
}

// StartServer starts a DNS server on 127.0.0.1, UDP and TCP on the same
// ephemeral port, serving h; it is shut down when the test ends. It
// returns the server's address and the record of the questions it got.
func StartServer(t testing.TB, h dns.Handler) (string, *Counter) {
	t.Helper()
	queries := new(Counter)
	counting := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		netw := "udp"
		if _, ok := w.LocalAddr().(*net.TCPAddr); ok {
			netw = "tcp"
		}
		if len(r.Question) == 1 {
			q := r.Question[0]
			queries.add(Query{Name: strings.ToLower(q.Name), Type: q.Qtype, Net: netw})
		}
		h.ServeDNS(w, r)
	})
	pc, ln := listenSamePort(t)
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: counting}, {Listener: ln, Handler: counting}} {
		started := make(chan struct{})
		failed := make(chan error, 1)
		srv.NotifyStartedFunc = func() { close(started) }
		go func() { failed <- srv.ActivateAndServe() }()
		select {
		case <-started:
		case err := <-failed:
			t.Fatalf("dns test server: %v", err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := srv.ShutdownContext(ctx); err != nil {
				t.Logf("dns test server shutdown: %v", err)
			}
		})
	}
	return pc.LocalAddr().String(), queries
}

// listenSamePort opens a UDP socket on 127.0.0.1:0 and a TCP listener on
// the same port, trying again when that TCP port is taken.
func listenSamePort(t testing.TB) (net.PacketConn, net.Listener) {
	t.Helper()
	var lastErr error
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("dns test server: %v", err)
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err == nil {
			return pc, ln
		}
		pc.Close()
		lastErr = err
	}
	t.Fatalf("dns test server: no port free for both UDP and TCP: %v", lastErr)
	return nil, nil
}

// Entry is how the fake DNS list answers one name.
type Entry struct {
	// A are the A records (answers to A queries); TTL their TTL, or TTLs
	// one per record.
	A    []string
	TTL  uint32
	TTLs []uint32
	// TXT are the TXT records, each a list of strings.
	TXT [][]string
	// Rcode, when set, is the response code of every answer for the name;
	// TXTRcode only of TXT queries.
	Rcode, TXTRcode int
	// Silent names are never answered.
	Silent bool
	// Truncate answers over UDP with the TC bit and a bogus A record
	// 127.0.0.99; TCP gets the real answer.
	Truncate bool
	// Block, when set, delays every answer for the name until it is
	// closed.
	Block <-chan struct{}

	// PTR are the PTR targets, MX the MX records and AAAA the AAAA
	// records of the name (the HostDNS questions), with TTL.
	PTR  []string
	MX   []MXRecord
	AAAA []string
	// Rcodes, when set, are the response codes of the query types listed
	// (e.g. SERVFAIL for AAAA only); Rcode and TXTRcode come first.
	Rcodes map[uint16]int
	// CNAME, when set, makes the name an alias: every answer is a CNAME
	// record (with TTL) to CNAME, followed by the target's records of the
	// type asked, as a recursive resolver answers; a target not set is
	// NXDOMAIN.
	CNAME string
}

// MXRecord is one MX record of an Entry; Host "." is a null MX (RFC 7505).
type MXRecord struct {
	Pref uint16
	Host string
}

// Fake is an in-memory DNS list server; it answers the HostDNS questions
// (PTR, MX, A, AAAA) too. A name it does not know is NXDOMAIN with a SOA
// in the authority section (unless NoSOA); a known name without records
// of the type asked is NOERROR with no data and the same SOA.
type Fake struct {
	mu      sync.Mutex
	entries map[string]Entry
	// SOATTL and SOAMin are the TTL and MINIMUM of the SOA of negative
	// answers; NoSOA leaves it out.
	SOATTL, SOAMin uint32
	NoSOA          bool
	// def, when set, answers every name not set (SetDefault); silent
	// drops every question (SetSilent).
	def    *Entry
	silent bool
}

// SetDefault makes e the answer of every name not set; nil restores
// NXDOMAIN. A default of Entry{A: []string{"127.0.0.2"}} lists the world,
// 127.0.0.1 included.
func (f *Fake) SetDefault(e *Entry) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.def = e
}

// SetSilent makes the server drop every question (a dead resolver), or
// answer again.
func (f *Fake) SetSilent(silent bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.silent = silent
}

// NewFake returns a fake list server with a negative TTL of 300s.
func NewFake() *Fake {
	return &Fake{entries: map[string]Entry{}, SOATTL: 3600, SOAMin: 300}
}

// Set sets the answers for name (fully qualified or not).
func (f *Fake) Set(name string, e Entry) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.entries[dns.Fqdn(strings.ToLower(name))] = e
}

// List lists ip in zone with the given answers and TXT (RFC 5782 names).
func (f *Fake) List(zone, ip string, txt string, answers ...string) {
	e := Entry{A: answers, TTL: 300}
	if txt != "" {
		e.TXT = [][]string{{txt}}
	}
	f.Set(queryName(zone, netip.MustParseAddr(ip)), e)
}

// SetIP sets the entry for ip in zone.
func (f *Fake) SetIP(zone, ip string, e Entry) {
	f.Set(queryName(zone, netip.MustParseAddr(ip)), e)
}

// Delete forgets name: it becomes NXDOMAIN.
func (f *Fake) Delete(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.entries, dns.Fqdn(strings.ToLower(name)))
}

// ServeDNS implements dns.Handler.
func (f *Fake) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	if len(r.Question) != 1 {
		return
	}
	q := r.Question[0]
	f.mu.Lock()
	e, known := f.entries[strings.ToLower(q.Name)]
	if !known && f.def != nil {
		e, known = *f.def, true
	}
	soaTTL, soaMin, noSOA, silent := f.SOATTL, f.SOAMin, f.NoSOA, f.silent
	f.mu.Unlock()
	if silent {
		return
	}

	if e.Block != nil {
		<-e.Block
	}
	if e.Silent {
		return
	}
	m := new(dns.Msg)
	m.SetReply(r)
	m.RecursionAvailable = true
	aliased := e.CNAME != "" && q.Qtype != dns.TypeCNAME
	if aliased {
		target := dns.Fqdn(strings.ToLower(e.CNAME))
		m.Answer = append(m.Answer, &dns.CNAME{Hdr: hdr(q.Name, dns.TypeCNAME, e.TTL), Target: target})
		f.mu.Lock()
		e, known = f.entries[target]
		f.mu.Unlock()
		q.Name = target
	}
	_, overTCP := w.LocalAddr().(*net.TCPAddr)
	rcode, hasRcode := e.Rcodes[q.Qtype]
	switch {
	case !known:
		m.Rcode = dns.RcodeNameError
	case e.Rcode != 0:
		m.Rcode = e.Rcode
	case q.Qtype == dns.TypeTXT && e.TXTRcode != 0:
		m.Rcode = e.TXTRcode
	case hasRcode:
		m.Rcode = rcode
	case e.Truncate && !overTCP:
		m.Truncated = true
		m.Answer = append(m.Answer, aRR(q.Name, "127.0.0.99", 300))
	case q.Qtype == dns.TypeA:
		for i, a := range e.A {
			ttl := e.TTL
			if i < len(e.TTLs) {
				ttl = e.TTLs[i]
			}
			m.Answer = append(m.Answer, aRR(q.Name, a, ttl))
		}
	case q.Qtype == dns.TypeTXT:
		for _, txt := range e.TXT {
			m.Answer = append(m.Answer, &dns.TXT{Hdr: hdr(q.Name, dns.TypeTXT, e.TTL), Txt: txt})
		}
	case q.Qtype == dns.TypePTR:
		for _, p := range e.PTR {
			m.Answer = append(m.Answer, &dns.PTR{Hdr: hdr(q.Name, dns.TypePTR, e.TTL), Ptr: dns.Fqdn(p)})
		}
	case q.Qtype == dns.TypeMX:
		for _, mx := range e.MX {
			m.Answer = append(m.Answer, &dns.MX{Hdr: hdr(q.Name, dns.TypeMX, e.TTL), Preference: mx.Pref, Mx: dns.Fqdn(mx.Host)})
		}
	case q.Qtype == dns.TypeAAAA:
		for _, a := range e.AAAA {
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr(q.Name, dns.TypeAAAA, e.TTL), AAAA: net.ParseIP(a)})
		}
	}
	if (m.Rcode == dns.RcodeNameError || m.Rcode == dns.RcodeSuccess && (len(m.Answer) == 0 || aliased && !hasType(m.Answer, q.Qtype))) && !noSOA {
		m.Ns = append(m.Ns, &dns.SOA{
			Hdr: hdr("test.", dns.TypeSOA, soaTTL), Ns: "ns.test.", Mbox: "hostmaster.test.",
			Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: soaMin,
		})
	}
	_ = w.WriteMsg(m)
}

// hasType reports whether an answer has a record of type qtype.
func hasType(answer []dns.RR, qtype uint16) bool {
	for _, rr := range answer {
		if rr.Header().Rrtype == qtype {
			return true
		}
	}
	return false
}

func hdr(name string, rrtype uint16, ttl uint32) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: rrtype, Class: dns.ClassINET, Ttl: ttl}
}

func aRR(name, addr string, ttl uint32) *dns.A {
	return &dns.A{Hdr: hdr(name, dns.TypeA, ttl), A: net.ParseIP(addr).To4()}
}

// FakeClock is a settable clock for cache expiry.
type FakeClock = testutil.Clock

// NewFakeClock returns a clock set to a fixed date.
func NewFakeClock() *FakeClock { return testutil.NewClock(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)) }

// NewTestLogger routes logs to t.Log.
var NewTestLogger = testutil.Logger

// QueryName exports queryName to the black-box tests.
func QueryName(zone, ip string) string { return queryName(zone, netip.MustParseAddr(ip)) }

// Probing reports whether a probe of zone is in flight.
func (c *Client) Probing(zone string) bool {
	z := c.lookupZone(normalizeZone(zone))
	if z == nil {
		return false
	}
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.probe != nil
}

// Waiting exports the number of callers waiting for a lookup in flight.
func (c *Client) Waiting(zone string, ip netip.Addr) int { return c.waiting(zone, ip) }

// isTimeout reports whether err is a network timeout.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded)
}
