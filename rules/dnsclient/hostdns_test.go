package dnsclient

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matryer/is"
	"github.com/miekg/dns"
)

// ptrName returns the PTR question name of ip.
func ptrName(ip string) string {
	a := normalizeAddr(netip.MustParseAddr(ip))
	if a.Is4() {
		return queryName(reverseZone4, a)
	}
	return queryName(reverseZone6, a)
}

func TestReverseName(t *testing.T) {
	// The names must be those of miekg/dns and of RFC 3596 §2.5's example.
	tests := []struct{ ip, want string }{
		{"192.0.2.10", "10.2.0.192.in-addr.arpa."},
		{"::ffff:192.0.2.10", "10.2.0.192.in-addr.arpa."},
		{"4321:0:1:2:3:4:567:89ab", "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.0.0.0.0.1.2.3.4.ip6.arpa."},
		{"2001:db8::1", "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa."},
	}
	for _, tt := range tests {
		t.Run(tt.ip, func(t *testing.T) {
			is := is.New(t)
			is.Equal(ptrName(tt.ip), tt.want)
			if !strings.HasPrefix(tt.ip, "::ffff:") {
				arpa, err := dns.ReverseAddr(tt.ip)
				is.NoErr(err)
				is.Equal(ptrName(tt.ip), arpa) // as miekg/dns writes it
			}
		})
	}
}

func TestReverseNames(t *testing.T) {
	const client = "192.0.2.10"
	name := ptrName(client)
	udp := func(n string) Query { return Query{Name: n, Type: dns.TypePTR, Net: "udp"} }
	tcp := func(n string) Query { return Query{Name: n, Type: dns.TypePTR, Net: "tcp"} }
	const v6 = "2001:db8::25"
	v6name := ptrName(v6)

	tests := []struct {
		name      string
		ip        string // default client
		set       func(f *Fake)
		timeout   time.Duration
		wantNames []string
		wantErr   func(is *is.I, err error)
		want      []Query // exactly the questions the server must get
	}{
		{
			name: "PTR present: names normalized, in order, duplicates and the root left out",
			set: func(f *Fake) {
				f.Set(name, Entry{PTR: []string{"Mail.Example.TEST.", "mx2.example.test", "mail.example.test.", "."}, TTL: 300})
			},
			wantNames: []string{"mail.example.test", "mx2.example.test"},
			want:      []Query{udp(name)},
		},
		{
			name:      "IPv6: ip6.arpa nibble name",
			ip:        v6,
			set:       func(f *Fake) { f.Set(v6name, Entry{PTR: []string{"v6.example.test."}, TTL: 300}) },
			wantNames: []string{"v6.example.test"},
			want:      []Query{udp(v6name)},
		},
		{
			name:      "IPv4-mapped address asked as IPv4",
			ip:        "::ffff:" + client,
			set:       func(f *Fake) { f.Set(name, Entry{PTR: []string{"mapped.example.test."}, TTL: 300}) },
			wantNames: []string{"mapped.example.test"},
			want:      []Query{udp(name)},
		},
		{
			name: "RFC 2317 classless delegation: the CNAME's target's names",
			set: func(f *Fake) {
				f.Set(name, Entry{CNAME: "10.0-63.2.0.192.in-addr.arpa.", TTL: 300})
				f.Set("10.0-63.2.0.192.in-addr.arpa.", Entry{PTR: []string{"classless.example.test."}, TTL: 300})
			},
			wantNames: []string{"classless.example.test"},
			want:      []Query{udp(name)},
		},
		{
			name: "NXDOMAIN: no name, no error",
			want: []Query{udp(name)},
		},
		{
			name: "NODATA: NOERROR without PTR, no name, no error",
			set:  func(f *Fake) { f.Set(name, Entry{TXT: [][]string{{"no PTR here"}}, TTL: 300}) },
			want: []Query{udp(name)},
		},
		{
			name: "only a root PTR: no name",
			set:  func(f *Fake) { f.Set(name, Entry{PTR: []string{"."}, TTL: 300}) },
			want: []Query{udp(name)},
		},
		{
			name: "SERVFAIL is an error",
			set:  func(f *Fake) { f.Set(name, Entry{Rcode: dns.RcodeServerFailure}) },
			wantErr: func(is *is.I, err error) {
				var re *RcodeError
				is.True(errors.As(err, &re))
				is.Equal(re.Rcode, dns.RcodeServerFailure)
				is.True(strings.Contains(err.Error(), "reverse lookup of "+client)) // the error names the question
				is.True(strings.Contains(err.Error(), "SERVFAIL"))
			},
			want: []Query{udp(name)},
		},
		{
			name: "REFUSED is an error",
			set:  func(f *Fake) { f.Set(name, Entry{Rcode: dns.RcodeRefused}) },
			wantErr: func(is *is.I, err error) {
				var re *RcodeError
				is.True(errors.As(err, &re))
				is.Equal(re.Rcode, dns.RcodeRefused)
			},
			want: []Query{udp(name)},
		},
		{
			name:    "timeout: the server never answers",
			set:     func(f *Fake) { f.Set(name, Entry{Silent: true}) },
			timeout: 100 * time.Millisecond,
			wantErr: func(is *is.I, err error) {
				is.True(isTimeout(err)) // a timeout
				is.True(strings.Contains(err.Error(), "reverse lookup of "+client))
			},
			want: []Query{udp(name)},
		},
		{
			name:      "truncated UDP answer: asked again over TCP, TCP answer used",
			set:       func(f *Fake) { f.Set(name, Entry{PTR: []string{"big.example.test."}, TTL: 300, Truncate: true}) },
			wantNames: []string{"big.example.test"},
			want:      []Query{udp(name), tcp(name)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			f := NewFake()
			if tt.set != nil {
				tt.set(f)
			}
			addr, queries := StartServer(t, f)
			c := newTestClient(t, addr, Options{Timeout: tt.timeout, CacheEntries: 10, MinTTL: time.Minute})
			ip := client
			if tt.ip != "" {
				ip = tt.ip
			}
			names, err := c.ReverseNames(context.Background(), netip.MustParseAddr(ip))
			if tt.wantErr != nil {
				is.True(err != nil) // want an error
				t.Logf("error: %v", err)
				tt.wantErr(is, err)
				is.Equal(c.CacheLen(), 0) // errors are not cached
			} else {
				is.NoErr(err)
				is.Equal(names, tt.wantNames)
				is.Equal(c.CacheLen(), 1)
			}
			is.Equal(queries.All(), tt.want) // no probe: HostDNS asks no list
		})
	}
}

func TestReverseNamesInvalid(t *testing.T) {
	is := is.New(t)
	addr, queries := StartServer(t, NewFake())
	c := newTestClient(t, addr, Options{CacheEntries: 10})
	names, err := c.ReverseNames(context.Background(), netip.Addr{})
	is.True(err != nil) // an invalid address is an error, never "no name"
	is.Equal(names, nil)
	is.Equal(queries.Total(), 0)
}

func TestDomainExists(t *testing.T) {
	const domain = "example.test"
	name := domain + "."
	q := func(n string, qtype uint16) Query { return Query{Name: n, Type: qtype, Net: "udp"} }
	mx, a, aaaa := q(name, dns.TypeMX), q(name, dns.TypeA), q(name, dns.TypeAAAA)
	long := strings.Repeat("a", 64)

	type testCase struct {
		name    string
		domain  string
		set     func(f *Fake)
		timeout time.Duration
		exists  bool
		wantErr func(is *is.I, err error)
		want    []Query // exactly the questions the server must get
	}
	tests := []testCase{
		{
			name: "MX present: exists, no address asked",
			set: func(f *Fake) {
				f.Set(name, Entry{MX: []MXRecord{{10, "mx1.example.test"}, {20, "mx2.example.test"}}, TTL: 300})
			},
			exists: true,
			want:   []Query{mx},
		},
		{
			name:   "null MX (RFC 7505): cannot receive mail, its A record not asked",
			set:    func(f *Fake) { f.Set(name, Entry{MX: []MXRecord{{0, "."}}, A: []string{"192.0.2.1"}, TTL: 300}) },
			exists: false,
			want:   []Query{mx},
		},
		{
			name:   "a null MX beside a real one is ignored",
			set:    func(f *Fake) { f.Set(name, Entry{MX: []MXRecord{{0, "."}, {10, "mx.example.test"}}, TTL: 300}) },
			exists: true,
			want:   []Query{mx},
		},
		{
			name:   "only an A record: exists, AAAA not asked",
			set:    func(f *Fake) { f.Set(name, Entry{A: []string{"192.0.2.1"}, TTL: 300}) },
			exists: true,
			want:   []Query{mx, a},
		},
		{
			name:   "only an AAAA record: exists",
			set:    func(f *Fake) { f.Set(name, Entry{AAAA: []string{"2001:db8::1"}, TTL: 300}) },
			exists: true,
			want:   []Query{mx, a, aaaa},
		},
		{
			name:   "NXDOMAIN on MX: does not exist, addresses not asked",
			exists: false,
			want:   []Query{mx},
		},
		{
			name:   "NODATA for MX, A and AAAA: no record",
			set:    func(f *Fake) { f.Set(name, Entry{TXT: [][]string{{"v=spf1 -all"}}, TTL: 300}) },
			exists: false,
			want:   []Query{mx, a, aaaa},
		},
		{
			name: "MX through a CNAME the resolver followed",
			set: func(f *Fake) {
				f.Set(name, Entry{CNAME: "alias.example.test", TTL: 300})
				f.Set("alias.example.test", Entry{MX: []MXRecord{{10, "mx.example.test"}}, TTL: 300})
			},
			exists: true,
			want:   []Query{mx},
		},
		{
			name: "SERVFAIL on MX is an error, addresses not asked",
			set:  func(f *Fake) { f.Set(name, Entry{Rcode: dns.RcodeServerFailure, A: []string{"192.0.2.1"}}) },
			wantErr: func(is *is.I, err error) {
				var re *RcodeError
				is.True(errors.As(err, &re))
				is.Equal(re.Rcode, dns.RcodeServerFailure)
				is.True(strings.Contains(err.Error(), "domain "+domain)) // the error names the question
			},
			want: []Query{mx},
		},
		{
			name: "SERVFAIL on AAAA after no MX and no A is an error",
			set: func(f *Fake) {
				f.Set(name, Entry{TXT: [][]string{{"x"}}, TTL: 300, Rcodes: map[uint16]int{dns.TypeAAAA: dns.RcodeServerFailure}})
			},
			wantErr: func(is *is.I, err error) {
				var re *RcodeError
				is.True(errors.As(err, &re))
				is.Equal(re.Rcode, dns.RcodeServerFailure)
			},
			want: []Query{mx, a, aaaa},
		},
		{
			name:    "timeout on MX is an error",
			set:     func(f *Fake) { f.Set(name, Entry{Silent: true}) },
			timeout: 100 * time.Millisecond,
			wantErr: func(is *is.I, err error) {
				is.True(isTimeout(err)) // a timeout
				is.True(strings.Contains(err.Error(), "domain "+domain))
			},
			want: []Query{mx},
		},
		{
			name:   "upper case and a trailing dot: asked normalized",
			domain: "Example.TEST.",
			set:    func(f *Fake) { f.Set(name, Entry{MX: []MXRecord{{10, "mx.example.test"}}, TTL: 300}) },
			exists: true,
			want:   []Query{mx},
		},
		{
			name:   "internationalized domain: asked as its A-label",
			domain: "Bücher.test",
			set:    func(f *Fake) { f.Set("xn--bcher-kva.test", Entry{MX: []MXRecord{{10, "mx.example.test"}}, TTL: 300}) },
			exists: true,
			want:   []Query{q("xn--bcher-kva.test.", dns.TypeMX)},
		},
		{
			name:   "underscore allowed",
			domain: "mail_relay.example.test",
			set:    func(f *Fake) { f.Set("mail_relay.example.test", Entry{A: []string{"192.0.2.1"}, TTL: 300}) },
			exists: true,
			want:   []Query{q("mail_relay.example.test.", dns.TypeMX), q("mail_relay.example.test.", dns.TypeA)},
		},
	}
	for i := range tests {
		if tests[i].domain == "" {
			tests[i].domain = domain
		}
	}
	// What cannot be a host name has no record: false, no error, no
	// question sent.
	for _, bad := range []string{"", ".", "[192.0.2.1]", "[IPv6:2001:db8::1]", "a..test", ".example.test",
		long + ".test", strings.Repeat("abcdefghi.", 25) + "test", "exa mple.test", "user@example.test",
		"example.test..", "\xff.test", "xn--.test\u00e9"} {
		tests = append(tests, testCase{name: "not a host name: " + bad, domain: bad})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			f := NewFake()
			if tt.set != nil {
				tt.set(f)
			}
			addr, queries := StartServer(t, f)
			c := newTestClient(t, addr, Options{Timeout: tt.timeout, CacheEntries: 10, MinTTL: time.Minute})
			exists, err := c.DomainExists(context.Background(), tt.domain)
			if tt.wantErr != nil {
				is.True(err != nil) // want an error
				t.Logf("error: %v", err)
				tt.wantErr(is, err)
				is.Equal(c.CacheLen(), 0) // errors are not cached
			} else {
				is.NoErr(err)
				is.Equal(exists, tt.exists)
			}
			is.Equal(queries.All(), tt.want)
		})
	}
}

func TestHostDNSCacheTTL(t *testing.T) {
	const client, domain = "192.0.2.11", "example.test"
	ptr, name := ptrName(client), domain+"."
	reverse := func(c *Client) (any, error) {
		return c.ReverseNames(context.Background(), netip.MustParseAddr(client))
	}
	exists := func(c *Client) (any, error) { return c.DomainExists(context.Background(), domain) }
	asked := func(qs *Counter) int { return qs.Total() }
	tests := []struct {
		name           string
		set            func(f *Fake)
		lookup         func(c *Client) (any, error)
		minTTL, maxTTL time.Duration
		// fresh is the age at which the answer is still cached; expiry the
		// age at which it is asked again.
		fresh, expiry time.Duration
	}{
		{
			name:   "PTR positive: the smallest TTL of the answer",
			set:    func(f *Fake) { f.Set(ptr, Entry{PTR: []string{"a.example.test"}, TTL: 200}) },
			lookup: reverse, minTTL: time.Second, maxTTL: time.Hour,
			fresh: 199 * time.Second, expiry: 200 * time.Second,
		},
		{
			name: "PTR through a CNAME: the CNAME's TTL counts too",
			set: func(f *Fake) {
				f.Set(ptr, Entry{CNAME: "11.sub.2.0.192.in-addr.arpa", TTL: 50})
				f.Set("11.sub.2.0.192.in-addr.arpa", Entry{PTR: []string{"a.example.test"}, TTL: 500})
			},
			lookup: reverse, minTTL: time.Second, maxTTL: time.Hour,
			fresh: 49 * time.Second, expiry: 50 * time.Second,
		},
		{
			name:   "PTR NXDOMAIN: the SOA minimum (RFC 2308)",
			set:    func(f *Fake) { f.SOATTL, f.SOAMin = 3600, 120 },
			lookup: reverse, minTTL: time.Second, maxTTL: time.Hour,
			fresh: 119 * time.Second, expiry: 120 * time.Second,
		},
		{
			name:   "PTR NODATA: the SOA TTL when below its minimum",
			set:    func(f *Fake) { f.SOATTL, f.SOAMin = 30, 600; f.Set(ptr, Entry{TXT: [][]string{{"x"}}}) },
			lookup: reverse, minTTL: time.Second, maxTTL: time.Hour,
			fresh: 29 * time.Second, expiry: 30 * time.Second,
		},
		{
			name:   "PTR negative without SOA: min_ttl",
			set:    func(f *Fake) { f.NoSOA = true },
			lookup: reverse, minTTL: 45 * time.Second, maxTTL: time.Hour,
			fresh: 44 * time.Second, expiry: 45 * time.Second,
		},
		{
			name:   "PTR clamped to max_ttl",
			set:    func(f *Fake) { f.Set(ptr, Entry{PTR: []string{"a.example.test"}, TTL: 86400}) },
			lookup: reverse, minTTL: time.Minute, maxTTL: time.Hour,
			fresh: time.Hour - time.Second, expiry: time.Hour,
		},
		{
			name:   "PTR clamped to min_ttl",
			set:    func(f *Fake) { f.Set(ptr, Entry{PTR: []string{"a.example.test"}, TTL: 5}) },
			lookup: reverse, minTTL: time.Minute, maxTTL: time.Hour,
			fresh: 59 * time.Second, expiry: time.Minute,
		},
		{
			name:   "MX: its TTL",
			set:    func(f *Fake) { f.Set(name, Entry{MX: []MXRecord{{10, "mx.example.test"}}, TTL: 250}) },
			lookup: exists, minTTL: time.Second, maxTTL: time.Hour,
			fresh: 249 * time.Second, expiry: 250 * time.Second,
		},
		{
			name:   "null MX: its TTL",
			set:    func(f *Fake) { f.Set(name, Entry{MX: []MXRecord{{0, "."}}, TTL: 900}) },
			lookup: exists, minTTL: time.Second, maxTTL: time.Hour,
			fresh: 899 * time.Second, expiry: 900 * time.Second,
		},
		{
			name:   "A after no MX: the smaller of the MX's negative TTL and the A's TTL",
			set:    func(f *Fake) { f.SOAMin = 300; f.Set(name, Entry{A: []string{"192.0.2.1"}, TTL: 1000}) },
			lookup: exists, minTTL: time.Second, maxTTL: time.Hour,
			fresh: 299 * time.Second, expiry: 300 * time.Second,
		},
		{
			name:   "A after no MX: the A's TTL when smaller",
			set:    func(f *Fake) { f.SOAMin = 300; f.Set(name, Entry{A: []string{"192.0.2.1"}, TTL: 100}) },
			lookup: exists, minTTL: time.Second, maxTTL: time.Hour,
			fresh: 99 * time.Second, expiry: 100 * time.Second,
		},
		{
			name:   "NXDOMAIN: the SOA minimum",
			set:    func(f *Fake) { f.SOATTL, f.SOAMin = 3600, 180 },
			lookup: exists, minTTL: time.Second, maxTTL: time.Hour,
			fresh: 179 * time.Second, expiry: 180 * time.Second,
		},
		{
			name:   "no record of any type: the SOA minimum",
			set:    func(f *Fake) { f.SOATTL, f.SOAMin = 3600, 90; f.Set(name, Entry{TXT: [][]string{{"x"}}}) },
			lookup: exists, minTTL: time.Second, maxTTL: time.Hour,
			fresh: 89 * time.Second, expiry: 90 * time.Second,
		},
		{
			name:   "negative clamped to max_ttl",
			set:    func(f *Fake) { f.SOATTL, f.SOAMin = 86400, 86400 },
			lookup: exists, minTTL: time.Minute, maxTTL: 10 * time.Minute,
			fresh: 10*time.Minute - time.Second, expiry: 10 * time.Minute,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			f := NewFake()
			tt.set(f)
			addr, queries := StartServer(t, f)
			clock := NewFakeClock()
			c := newTestClient(t, addr, Options{CacheEntries: 10, MinTTL: tt.minTTL, MaxTTL: tt.maxTTL, Now: clock.Now})

			first, err := tt.lookup(c)
			is.NoErr(err)
			n := asked(queries)
			is.True(n > 0)

			clock.Advance(tt.fresh)
			again, err := tt.lookup(c)
			is.NoErr(err)
			is.Equal(again, first)      // the cached answer
			is.Equal(asked(queries), n) // still cached: not asked again
			is.Equal(c.CacheLen(), 1)   // one entry for the question
			clock.Advance(tt.expiry - tt.fresh)
			_, err = tt.lookup(c)
			is.NoErr(err)
			is.Equal(asked(queries), 2*n) // expired: asked again, the same questions
		})
	}
}

func TestHostDNSErrorsNotCached(t *testing.T) {
	for _, rcode := range []int{dns.RcodeServerFailure, dns.RcodeRefused} {
		t.Run(dns.RcodeToString[rcode], func(t *testing.T) {
			is := is.New(t)
			const client, domain = "192.0.2.12", "example.test"
			f := NewFake()
			f.Set(ptrName(client), Entry{Rcode: rcode})
			f.Set(domain, Entry{Rcode: rcode})
			addr, queries := StartServer(t, f)
			c := newTestClient(t, addr, Options{CacheEntries: 10, MinTTL: time.Minute})
			for range 2 {
				_, err := c.ReverseNames(context.Background(), netip.MustParseAddr(client))
				var re *RcodeError
				is.True(errors.As(err, &re))
				_, err = c.DomainExists(context.Background(), domain)
				is.True(errors.As(err, &re))
			}
			is.Equal(queries.Of(ptrName(client), dns.TypePTR), 2) // asked every time
			is.Equal(queries.Of(domain+".", dns.TypeMX), 2)
			is.Equal(c.CacheLen(), 0)
		})
	}
}

func TestHostDNSCacheHitSendsNothing(t *testing.T) {
	is := is.New(t)
	const client, domain = "192.0.2.13", "example.test"
	f := NewFake()
	f.Set(ptrName(client), Entry{PTR: []string{"host.example.test"}, TTL: 300})
	f.Set(domain, Entry{AAAA: []string{"2001:db8::1"}, TTL: 300})
	addr, queries := StartServer(t, f)
	c := newTestClient(t, addr, Options{CacheEntries: 10})
	ctx, ip := context.Background(), netip.MustParseAddr(client)
	for range 5 {
		names, err := c.ReverseNames(ctx, ip)
		is.NoErr(err)
		is.Equal(names, []string{"host.example.test"})
		ok, err := c.DomainExists(ctx, domain)
		is.NoErr(err)
		is.True(ok)
		// The same questions in another form hit the same entries.
		_, err = c.ReverseNames(ctx, netip.MustParseAddr("::ffff:"+client))
		is.NoErr(err)
		_, err = c.DomainExists(ctx, "EXAMPLE.test.")
		is.NoErr(err)
	}
	is.Equal(queries.Total(), 1+3) // PTR once; MX, A and AAAA once
	is.Equal(c.CacheLen(), 2)
}

func TestHostDNSSharesTheCache(t *testing.T) {
	is := is.New(t)
	f := NewFake()
	f.List(zone, "192.0.2.20", "", "127.0.0.2")
	addr, queries := StartServer(t, f)
	c := newTestClient(t, addr, Options{CacheEntries: 2, MinTTL: time.Hour})
	ctx := context.Background()
	ip1, ip2 := netip.MustParseAddr("192.0.2.21"), netip.MustParseAddr("192.0.2.22")

	_, err := c.ReverseNames(ctx, ip1)
	is.NoErr(err)
	_, err = c.DomainExists(ctx, zone) // a domain named like the list
	is.NoErr(err)
	_, err = c.ReverseNames(ctx, ip1) // hit: ip1 the most recently used
	is.NoErr(err)
	_, err = c.Query(ctx, zone, netip.MustParseAddr("192.0.2.20")) // evicts the domain
	is.NoErr(err)
	is.Equal(c.CacheLen(), 2)          // one bound for all answers
	_, err = c.DomainExists(ctx, zone) // evicts ip1's names
	is.NoErr(err)
	is.Equal(queries.Of(zone+".", dns.TypeMX), 2) // evicted: asked again

	// A list's suspension purges its answers, not a domain's of the same
	// name.
	is.Equal(c.cache.purgeZone(zone), 1) // the list's answer
	is.Equal(c.CacheLen(), 1)
	_, err = c.DomainExists(ctx, zone)
	is.NoErr(err)
	is.Equal(queries.Of(zone+".", dns.TypeMX), 2) // still cached
	_, err = c.ReverseNames(ctx, ip1)
	is.NoErr(err)
	is.Equal(queries.Of(ptrName("192.0.2.21"), dns.TypePTR), 2) // evicted: asked again
	_, err = c.ReverseNames(ctx, ip2)
	is.NoErr(err)
	is.Equal(c.CacheLen(), 2)
}

func TestHostDNSConcurrentLookupsShareOneQuery(t *testing.T) {
	const n = 50
	const client, domain = "192.0.2.14", "shared.example.test"
	tests := []struct {
		name   string
		lookup func(ctx context.Context, c *Client) (string, error)
		key    cacheKey
		qname  string
		qtype  uint16
		want   string
	}{
		{
			name: "ReverseNames",
			lookup: func(ctx context.Context, c *Client) (string, error) {
				names, err := c.ReverseNames(ctx, netip.MustParseAddr(client))
				return strings.Join(names, " "), err
			},
			key:   cacheKey{ip: netip.MustParseAddr(client), kind: kindPTR},
			qname: ptrName(client), qtype: dns.TypePTR,
			want: "one.example.test two.example.test",
		},
		{
			name: "DomainExists",
			lookup: func(ctx context.Context, c *Client) (string, error) {
				ok, err := c.DomainExists(ctx, domain)
				if ok {
					return "exists", err
				}
				return "none", err
			},
			key:   cacheKey{zone: domain, kind: kindDomain},
			qname: domain + ".", qtype: dns.TypeMX,
			want: "exists",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			release := make(chan struct{})
			f := NewFake()
			f.Set(ptrName(client), Entry{PTR: []string{"one.example.test", "two.example.test"}, TTL: 300, Block: release})
			f.Set(domain, Entry{MX: []MXRecord{{10, "mx.example.test"}}, TTL: 300, Block: release})
			addr, queries := StartServer(t, f)
			c := newTestClient(t, addr, Options{CacheEntries: 10, Timeout: 5 * time.Second})

			answers := make([]string, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() { answers[i], errs[i] = tt.lookup(context.Background(), c) })
			}
			// A caller whose ctx ends leaves at once, without ending the
			// lookup for the others.
			ctx, cancel := context.WithCancel(context.Background())
			var cancelledErr error
			wg.Go(func() { _, cancelledErr = tt.lookup(ctx, c) })
			waitFor(t, "every caller waiting", func() bool { return c.flight.waiting(tt.key) == n+1 })
			cancel()
			waitFor(t, "the cancelled caller to leave", func() bool { return c.flight.waiting(tt.key) == n })
			close(release)
			wg.Wait()

			is.True(errors.Is(cancelledErr, context.Canceled))
			for i := range n {
				is.NoErr(errs[i])
				is.Equal(answers[i], tt.want)
			}
			is.Equal(queries.Of(tt.qname, tt.qtype), 1) // one query for every lookup
			is.Equal(queries.Total(), 1)
			is.Equal(c.flight.waiting(tt.key), 0)
			is.Equal(c.CacheLen(), 1) // and the answer was cached
		})
	}
}

func TestHostDNSResolverDown(t *testing.T) {
	is := is.New(t)
	f := NewFake()
	f.Set("example.test", Entry{MX: []MXRecord{{10, "mx.example.test"}}, TTL: 300})
	f.SetSilent(true)
	addr, queries := StartServer(t, f)
	clock := NewFakeClock()
	c := newTestClient(t, addr, Options{CacheEntries: 10, Timeout: 100 * time.Millisecond, Now: clock.Now})
	ctx := context.Background()

	// Three questions time out: the resolver is marked down.
	for i, ip := range []string{"192.0.2.15", "192.0.2.16", "192.0.2.17"} {
		_, err := c.ReverseNames(ctx, netip.MustParseAddr(ip))
		is.True(isTimeout(err)) // a timeout
		is.Equal(queries.Total(), i+1)
	}
	is.True(!c.ResolverUp())

	// Now every question fails at once, unsent.
	f.SetSilent(false)
	_, err := c.ReverseNames(ctx, netip.MustParseAddr("192.0.2.18"))
	is.True(errors.Is(err, ErrResolverDown))
	is.True(strings.Contains(err.Error(), "reverse lookup of 192.0.2.18"))
	ok, err := c.DomainExists(ctx, "example.test")
	is.True(errors.Is(err, ErrResolverDown))
	is.True(!ok)
	_, err = c.Query(ctx, zone, netip.MustParseAddr("192.0.2.18")) // the DNS lists too
	is.True(errors.Is(err, ErrResolverDown))
	is.Equal(queries.Total(), 3) // nothing sent

	// After the hold, one question is let through; its answer brings the
	// resolver back.
	clock.Advance(ResolverDownHold)
	ok, err = c.DomainExists(ctx, "example.test")
	is.NoErr(err)
	is.True(ok)
	is.True(c.ResolverUp())
}

func TestHostDNSObserve(t *testing.T) {
	is := is.New(t)
	f := NewFake()
	f.Set(ptrName("192.0.2.19"), Entry{PTR: []string{"a.example.test"}, TTL: 300})
	f.Set(ptrName("2001:db8::19"), Entry{Rcode: dns.RcodeServerFailure})
	f.Set("example.test", Entry{AAAA: []string{"2001:db8::1"}, TTL: 300})
	addr, _ := StartServer(t, f)
	type obs struct {
		zone string
		err  bool
	}
	var mu sync.Mutex
	var seen []obs
	c := newTestClient(t, addr, Options{CacheEntries: 10, MinTTL: time.Minute, Observe: func(z string, d time.Duration, err error) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, obs{z, err != nil})
	}})
	ctx := context.Background()
	for range 2 { // the second round hits the cache (but for the error): not observed
		_, err := c.ReverseNames(ctx, netip.MustParseAddr("192.0.2.19"))
		is.NoErr(err)
		_, err = c.DomainExists(ctx, "example.test")
		is.NoErr(err)
	}
	_, err := c.ReverseNames(ctx, netip.MustParseAddr("2001:db8::19"))
	is.True(err != nil)
	mu.Lock()
	defer mu.Unlock()
	is.Equal(seen, []obs{{"in-addr.arpa", false}, {"", false}, {"", false}, {"", false}, {"ip6.arpa", true}})
}

func TestHostDomain(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"example.test", "example.test", true},
		{"Example.TEST.", "example.test", true},
		{"a", "a", true},
		{"xn--bcher-kva.test", "xn--bcher-kva.test", true},
		{"BÜCHER.test", "xn--bcher-kva.test", true},
		{"mail_relay.example.test", "mail_relay.example.test", true},
		{strings.Repeat("a", 63) + ".test", strings.Repeat("a", 63) + ".test", true},
		{strings.Repeat("abcdefgh.", 28) + "a", strings.Repeat("abcdefgh.", 28) + "a", true}, // 253 octets
		{strings.Repeat("abcdefgh.", 28) + "ab", "", false},                                  // 254
		{strings.Repeat("a", 64) + ".test", "", false},
		{"", "", false},
		{".", "", false},
		{"..", "", false},
		{"[192.0.2.1]", "", false},
		{"a..b", "", false},
		{"a b", "", false},
		{"a@b", "", false},
		{"\xff", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			is := is.New(t)
			got, ok := hostDomain(tt.in)
			is.Equal(ok, tt.ok)
			is.Equal(got, tt.want)
		})
	}
}

func TestHostDNSCacheHitAllocatesNothing(t *testing.T) {
	is := is.New(t)
	const client, domain = "192.0.2.42", "example.test"
	f := NewFake()
	f.Set(ptrName(client), Entry{PTR: []string{"mail.example.test"}, TTL: 300})
	f.Set(domain, Entry{A: []string{"192.0.2.1"}, TTL: 300})
	addr, queries := StartServer(t, f)
	c := newTestClient(t, addr, Options{CacheEntries: 10, MinTTL: time.Hour})
	ctx, ip := context.Background(), netip.MustParseAddr(client)
	_, err := c.ReverseNames(ctx, ip)
	is.NoErr(err)
	_, err = c.DomainExists(ctx, domain)
	is.NoErr(err)
	sent := queries.Total()
	allocs := testing.AllocsPerRun(1000, func() {
		names, err := c.ReverseNames(ctx, ip)
		if err != nil || len(names) != 1 {
			t.Fatal("not a cache hit", names, err)
		}
		if ok, err := c.DomainExists(ctx, domain); err != nil || !ok {
			t.Fatal("not a cache hit", ok, err)
		}
	})
	is.Equal(allocs, 0.0)
	is.Equal(queries.Total(), sent) // hits only
}
