package dnsclient

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matryer/is"
	"github.com/miekg/dns"
)

const zone = "zen.test"

// newTestClient returns a client of the server at addr; opts.Server and a
// nil opts.Logger are filled in.
func newTestClient(t testing.TB, addr string, opts Options) *Client {
	t.Helper()
	opts.Server = addr
	if opts.Logger == nil {
		opts.Logger = NewTestLogger(t)
	}
	c, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(c.Close) // before the server stops: probes in flight end
	return c
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func TestNew(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name       string
		opts       Options
		wantServer string
		wantErr    string
	}{
		{name: "explicit server", opts: Options{Server: "127.0.0.1:5353"}, wantServer: "127.0.0.1:5353"},
		{name: "IPv6 server", opts: Options{Server: "[::1]:53"}, wantServer: "[::1]:53"},
		{name: "first nameserver of resolv.conf",
			opts:       Options{ResolvConf: write("resolv.conf", "search example.com\nnameserver 192.0.2.53\nnameserver 192.0.2.54\n")},
			wantServer: "192.0.2.53:53"},
		{name: "IPv6 nameserver", opts: Options{ResolvConf: write("v6.conf", "nameserver 2001:db8::53\n")}, wantServer: "[2001:db8::53]:53"},
		{name: "resolv.conf without nameserver", opts: Options{ResolvConf: write("empty.conf", "search example.com\n")}, wantErr: "no nameserver in"},
		{name: "resolv.conf missing", opts: Options{ResolvConf: filepath.Join(dir, "missing.conf")}, wantErr: "unreadable"},
		{name: "server without port", opts: Options{Server: "127.0.0.1"}, wantErr: `resolver "127.0.0.1": want host:port`},
		{name: "min_ttl above max_ttl", opts: Options{Server: "127.0.0.1:53", MinTTL: time.Hour, MaxTTL: time.Minute}, wantErr: "min_ttl 1h0m0s is above max_ttl 1m0s"},
		{name: "negative timeout", opts: Options{Server: "127.0.0.1:53", Timeout: -time.Second}, wantErr: "cannot be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			c, err := New(tt.opts)
			if tt.wantErr != "" {
				is.True(err != nil)
				is.True(strings.Contains(err.Error(), tt.wantErr)) // error names the problem
				return
			}
			is.NoErr(err)
			is.Equal(c.Server(), tt.wantServer)
		})
	}
}

func TestQueryName(t *testing.T) {
	tests := []struct {
		zone, ip, want string
	}{
		{"zen.test", "192.0.2.99", "99.2.0.192.zen.test."},
		{"zen.test", "127.0.0.2", "2.0.0.127.zen.test."},
		// RFC 5782 §2.4's example address.
		{"zen.test", "4321:0:1:2:3:4:567:89ab", "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.0.0.0.0.1.2.3.4.zen.test."},
		{"zen.test", "::1", "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.zen.test."},
		{"zen.test", "::ffff:192.0.2.99", "99.2.0.192.zen.test."},
		{"ZEN.Test.", "192.0.2.99", "99.2.0.192.zen.test."},
		{"zen.test", "fe80::1%eth0", "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.e.f.zen.test."},
	}
	for _, tt := range tests {
		t.Run(tt.ip, func(t *testing.T) {
			is := is.New(t)
			is.Equal(queryName(normalizeZone(tt.zone), normalizeAddr(netip.MustParseAddr(tt.ip))), tt.want)
		})
	}
}

func TestQuery(t *testing.T) {
	const client = "192.0.2.99"
	name := queryName(zone, netip.MustParseAddr(client))
	udp := func(n string, qtype uint16) Query { return Query{Name: n, Type: qtype, Net: "udp"} }
	tcp := func(n string, qtype uint16) Query { return Query{Name: n, Type: qtype, Net: "tcp"} }
	const v6 = "4321:0:1:2:3:4:567:89ab"
	v6name := "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.0.0.0.0.1.2.3.4." + zone + "."

	tests := []struct {
		name      string
		zone      string // default zone
		ip        string // default client
		set       func(f *Fake)
		timeout   time.Duration
		wantAddrs []netip.Addr
		wantTXT   string
		wantErr   func(is *is.I, err error)
		want      []Query // exactly the questions the server must get
	}{
		{
			name: "listed: every A record in order, TXT records joined",
			set: func(f *Fake) {
				f.Set(name, Entry{A: []string{"127.0.0.4", "127.0.0.2"}, TTL: 300,
					TXT: [][]string{{"https://zen.test/", "query?ip=192.0.2.99"}, {"second"}}})
			},
			wantAddrs: addrs("127.0.0.4", "127.0.0.2"),
			wantTXT:   "https://zen.test/query?ip=192.0.2.99 second",
			want:      []Query{udp(name, dns.TypeA), udp(name, dns.TypeTXT)},
		},
		{
			name:      "listed without TXT",
			set:       func(f *Fake) { f.Set(name, Entry{A: []string{"127.0.0.2"}, TTL: 300}) },
			wantAddrs: addrs("127.0.0.2"),
			want:      []Query{udp(name, dns.TypeA), udp(name, dns.TypeTXT)},
		},
		{
			name: "listed, TXT query fails: still listed, no TXT",
			set: func(f *Fake) {
				f.Set(name, Entry{A: []string{"127.0.0.2"}, TTL: 300, TXTRcode: dns.RcodeServerFailure})
			},
			wantAddrs: addrs("127.0.0.2"),
			want:      []Query{udp(name, dns.TypeA), udp(name, dns.TypeTXT)},
		},
		{
			name: "not listed: NXDOMAIN, no TXT query",
			want: []Query{udp(name, dns.TypeA)},
		},
		{
			name: "not listed: NOERROR without A record",
			set:  func(f *Fake) { f.Set(name, Entry{TXT: [][]string{{"only a TXT"}}, TTL: 300}) },
			want: []Query{udp(name, dns.TypeA)},
		},
		{
			name: "SERVFAIL is an error",
			set:  func(f *Fake) { f.Set(name, Entry{Rcode: dns.RcodeServerFailure}) },
			wantErr: func(is *is.I, err error) {
				var re *RcodeError
				is.True(errors.As(err, &re))
				is.Equal(re.Rcode, dns.RcodeServerFailure)
				is.True(strings.Contains(err.Error(), "SERVFAIL"))
				is.True(strings.Contains(err.Error(), zone)) // the error names the zone
			},
			want: []Query{udp(name, dns.TypeA)},
		},
		{
			name: "REFUSED is an error",
			set:  func(f *Fake) { f.Set(name, Entry{Rcode: dns.RcodeRefused}) },
			wantErr: func(is *is.I, err error) {
				var re *RcodeError
				is.True(errors.As(err, &re))
				is.Equal(re.Rcode, dns.RcodeRefused)
			},
			want: []Query{udp(name, dns.TypeA)},
		},
		{
			name:    "timeout: the server never answers",
			set:     func(f *Fake) { f.Set(name, Entry{Silent: true}) },
			timeout: 100 * time.Millisecond,
			wantErr: func(is *is.I, err error) {
				is.True(isTimeout(err)) // a timeout
				is.True(strings.Contains(err.Error(), zone))
			},
			want: []Query{udp(name, dns.TypeA)},
		},
		{
			name: "truncated UDP answer: asked again over TCP, TCP answer used",
			set: func(f *Fake) {
				f.Set(name, Entry{A: []string{"127.0.0.2"}, TTL: 300, TXT: [][]string{{"big"}}, Truncate: true})
			},
			wantAddrs: addrs("127.0.0.2"),
			wantTXT:   "big",
			want:      []Query{udp(name, dns.TypeA), tcp(name, dns.TypeA), udp(name, dns.TypeTXT), tcp(name, dns.TypeTXT)},
		},
		{
			name:      "IPv6 client: RFC 5782 nibble name",
			ip:        v6,
			set:       func(f *Fake) { f.Set(v6name, Entry{A: []string{"127.0.0.2"}, TTL: 300}) },
			wantAddrs: addrs("127.0.0.2"),
			want:      []Query{udp(v6name, dns.TypeA), udp(v6name, dns.TypeTXT)},
		},
		{
			name:      "IPv4-mapped client queried as IPv4",
			ip:        "::ffff:" + client,
			set:       func(f *Fake) { f.Set(name, Entry{A: []string{"127.0.0.2"}, TTL: 300}) },
			wantAddrs: addrs("127.0.0.2"),
			want:      []Query{udp(name, dns.TypeA), udp(name, dns.TypeTXT)},
		},
		{
			name:      "zone in upper case with a trailing dot",
			zone:      "ZEN.Test.",
			set:       func(f *Fake) { f.Set(name, Entry{A: []string{"127.0.0.2"}, TTL: 300}) },
			wantAddrs: addrs("127.0.0.2"),
			want:      []Query{udp(name, dns.TypeA), udp(name, dns.TypeTXT)},
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
			z, ip := zone, client
			if tt.zone != "" {
				z = tt.zone
			}
			if tt.ip != "" {
				ip = tt.ip
			}
			ans, err := c.Query(context.Background(), z, netip.MustParseAddr(ip))
			if tt.wantErr != nil {
				is.True(err != nil) // want an error
				t.Logf("error: %v", err)
				tt.wantErr(is, err)
				is.Equal(c.CacheLen(), 0) // errors are not cached
			} else {
				is.NoErr(err)
				is.Equal(ans.Addrs, tt.wantAddrs)
				is.Equal(ans.TXT, tt.wantTXT)
				is.Equal(c.CacheLen(), 1)
			}
			// First the health probe of the zone, never probed by this
			// client: both test entries, asked at once.
			probes, others := queries.Split()
			is.Equal(len(probes), 2)
			is.True(probes[0].Name != probes[1].Name)
			for _, q := range probes {
				is.True(q.Name == "1.0.0.127.zen.test." || q.Name == "2.0.0.127.zen.test.")
				is.Equal(q.Type, dns.TypeA)
			}
			is.Equal(others, tt.want)
		})
	}
}

func TestQueryInvalid(t *testing.T) {
	is := is.New(t)
	c := newTestClient(t, "127.0.0.1:1", Options{})
	_, err := c.Query(context.Background(), "", netip.MustParseAddr("192.0.2.1"))
	is.True(err != nil)
	_, err = c.Query(context.Background(), zone, netip.Addr{})
	is.True(err != nil)
}

func TestCacheTTL(t *testing.T) {
	const client = "192.0.2.7"
	name := queryName(zone, netip.MustParseAddr(client))
	tests := []struct {
		name           string
		set            func(f *Fake)
		minTTL, maxTTL time.Duration
		// fresh is the age at which the answer is still cached; expiry the
		// age at which it is asked again.
		fresh, expiry time.Duration
	}{
		{
			name:   "positive: the smallest TTL of the A records",
			set:    func(f *Fake) { f.Set(name, Entry{A: []string{"127.0.0.2", "127.0.0.4"}, TTLs: []uint32{300, 200}}) },
			minTTL: time.Second, maxTTL: time.Hour,
			fresh: 199 * time.Second, expiry: 200 * time.Second,
		},
		{
			name:   "negative: the SOA minimum",
			set:    func(f *Fake) { f.SOATTL, f.SOAMin = 3600, 120 },
			minTTL: time.Second, maxTTL: time.Hour,
			fresh: 119 * time.Second, expiry: 120 * time.Second,
		},
		{
			name:   "negative: the SOA TTL when below its minimum (RFC 2308)",
			set:    func(f *Fake) { f.SOATTL, f.SOAMin = 30, 600 },
			minTTL: time.Second, maxTTL: time.Hour,
			fresh: 29 * time.Second, expiry: 30 * time.Second,
		},
		{
			name: "negative: NOERROR without A uses the SOA minimum too",
			set: func(f *Fake) {
				f.SOATTL, f.SOAMin = 3600, 90
				f.Set(name, Entry{TXT: [][]string{{"x"}}})
			},
			minTTL: time.Second, maxTTL: time.Hour,
			fresh: 89 * time.Second, expiry: 90 * time.Second,
		},
		{
			name:   "negative without SOA: min_ttl",
			set:    func(f *Fake) { f.NoSOA = true },
			minTTL: 45 * time.Second, maxTTL: time.Hour,
			fresh: 44 * time.Second, expiry: 45 * time.Second,
		},
		{
			name:   "clamped to min_ttl",
			set:    func(f *Fake) { f.Set(name, Entry{A: []string{"127.0.0.2"}, TTL: 5}) },
			minTTL: time.Minute, maxTTL: time.Hour,
			fresh: 59 * time.Second, expiry: time.Minute,
		},
		{
			name:   "clamped to max_ttl",
			set:    func(f *Fake) { f.Set(name, Entry{A: []string{"127.0.0.2"}, TTL: 86400}) },
			minTTL: time.Minute, maxTTL: time.Hour,
			fresh: time.Hour - time.Second, expiry: time.Hour,
		},
		{
			name:   "negative clamped to max_ttl",
			set:    func(f *Fake) { f.SOATTL, f.SOAMin = 86400, 86400 },
			minTTL: time.Minute, maxTTL: 10 * time.Minute,
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
			ctx, ip := context.Background(), netip.MustParseAddr(client)

			first, err := c.Query(ctx, zone, ip)
			is.NoErr(err)
			is.Equal(queries.Of(name, dns.TypeA), 1)

			clock.Advance(tt.fresh)
			again, err := c.Query(ctx, zone, ip)
			is.NoErr(err)
			is.Equal(again, first)                   // the cached answer
			is.Equal(queries.Of(name, dns.TypeA), 1) // still cached

			clock.Advance(tt.expiry - tt.fresh)
			_, err = c.Query(ctx, zone, ip)
			is.NoErr(err)
			is.Equal(queries.Of(name, dns.TypeA), 2) // expired: asked again
		})
	}
}

func TestErrorsNotCached(t *testing.T) {
	for _, rcode := range []int{dns.RcodeServerFailure, dns.RcodeRefused, dns.RcodeFormatError, dns.RcodeNotImplemented} {
		t.Run(dns.RcodeToString[rcode], func(t *testing.T) {
			is := is.New(t)
			ip := netip.MustParseAddr("192.0.2.8")
			name := queryName(zone, ip)
			f := NewFake()
			f.Set(name, Entry{Rcode: rcode})
			addr, queries := StartServer(t, f)
			c := newTestClient(t, addr, Options{CacheEntries: 10, MinTTL: time.Minute})
			for range 2 {
				_, err := c.Query(context.Background(), zone, ip)
				var re *RcodeError
				is.True(errors.As(err, &re))
				is.Equal(re.Rcode, rcode)
			}
			is.Equal(queries.Of(name, dns.TypeA), 2) // asked every time
			is.Equal(c.CacheLen(), 0)
		})
	}
}

func TestCacheOff(t *testing.T) {
	is := is.New(t)
	ip := netip.MustParseAddr("192.0.2.8")
	f := NewFake()
	addr, queries := StartServer(t, f)
	c := newTestClient(t, addr, Options{CacheEntries: 0, MinTTL: time.Hour})
	for range 3 {
		_, err := c.Query(context.Background(), zone, ip)
		is.NoErr(err)
	}
	is.Equal(queries.Of(queryName(zone, ip), dns.TypeA), 3) // asked every time
	is.Equal(queries.Total(), 3+2)                          // and the zone probed once
	is.Equal(c.CacheLen(), 0)
}

func TestCacheLRU(t *testing.T) {
	is := is.New(t)
	f := NewFake()
	addr, queries := StartServer(t, f)
	c := newTestClient(t, addr, Options{CacheEntries: 2, MinTTL: time.Hour})
	ctx := context.Background()
	ip1, ip2, ip3 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.3")
	asked := func(ip netip.Addr) int { return queries.Of(queryName(zone, ip), dns.TypeA) }
	query := func(ip netip.Addr) {
		t.Helper()
		_, err := c.Query(ctx, zone, ip)
		is.NoErr(err)
	}

	query(ip1)
	query(ip2)
	query(ip1) // hit: ip1 is now the most recently used
	is.Equal(asked(ip1), 1)
	query(ip3) // evicts ip2, the least recently used
	is.Equal(c.CacheLen(), 2)
	query(ip1)
	query(ip3)
	is.Equal(asked(ip1), 1) // still cached
	is.Equal(asked(ip3), 1)
	query(ip2)
	is.Equal(asked(ip2), 2) // evicted: asked again
	is.Equal(c.CacheLen(), 2)
}

// waitFor spins until cond holds; it fails the test after a generous
// deadline rather than hang. No test outcome depends on the time taken.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		runtime.Gosched()
	}
}

func TestConcurrentLookupsShareOneQuery(t *testing.T) {
	is := is.New(t)
	const n = 100
	ip := netip.MustParseAddr("192.0.2.50")
	name := queryName(zone, ip)
	release := make(chan struct{})
	f := NewFake()
	f.Set(name, Entry{A: []string{"127.0.0.2"}, TTL: 300, TXT: [][]string{{"shared"}}, Block: release})
	addr, queries := StartServer(t, f)
	c := newTestClient(t, addr, Options{CacheEntries: 10, Timeout: 5 * time.Second})

	answers := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			ans, err := c.Query(context.Background(), zone, ip)
			errs[i] = err
			if err == nil {
				answers[i] = ans.Addrs[0].String() + " " + ans.TXT
			}
		})
	}
	// Every caller waits on the one lookup before the server may answer.
	waitFor(t, "100 callers waiting", func() bool { return c.Waiting(zone, ip) == n })
	close(release)
	wg.Wait()

	for i := range n {
		is.NoErr(errs[i])
		is.Equal(answers[i], "127.0.0.2 shared")
	}
	is.Equal(queries.Of(name, dns.TypeA), 1) // one query for 100 lookups
	is.Equal(queries.Of(name, dns.TypeTXT), 1)
	is.Equal(c.Waiting(zone, ip), 0)
}

func TestCancelledWaiterDoesNotCancelOthers(t *testing.T) {
	is := is.New(t)
	ip := netip.MustParseAddr("192.0.2.51")
	name := queryName(zone, ip)
	release := make(chan struct{})
	f := NewFake()
	f.Set(name, Entry{A: []string{"127.0.0.3"}, TTL: 300, Block: release})
	addr, queries := StartServer(t, f)
	c := newTestClient(t, addr, Options{CacheEntries: 10, Timeout: 5 * time.Second, MinTTL: time.Minute})

	ctx1, cancel1 := context.WithCancel(context.Background())
	var err1, err2 error
	var ans2 []netip.Addr
	var wg sync.WaitGroup
	wg.Go(func() { _, err1 = c.Query(ctx1, zone, ip) })
	wg.Go(func() {
		a, err := c.Query(context.Background(), zone, ip)
		ans2, err2 = a.Addrs, err
	})
	waitFor(t, "2 callers waiting", func() bool { return c.Waiting(zone, ip) == 2 })

	cancel1()
	waitFor(t, "the cancelled caller to leave", func() bool { return c.Waiting(zone, ip) == 1 })
	close(release)
	wg.Wait()

	is.True(errors.Is(err1, context.Canceled)) // the cancelled caller gets its ctx's error
	is.NoErr(err2)                             // the other one its answer
	is.Equal(ans2, addrs("127.0.0.3"))
	is.Equal(queries.Of(name, dns.TypeA), 1)
	is.Equal(c.CacheLen(), 1) // and the answer was cached
}

func TestObserve(t *testing.T) {
	is := is.New(t)
	ip := netip.MustParseAddr("192.0.2.52")
	name := queryName(zone, ip)
	f := NewFake()
	f.Set(name, Entry{A: []string{"127.0.0.2"}, TTL: 300, TXTRcode: dns.RcodeServerFailure})
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
	for range 2 { // the second is a cache hit: not observed
		_, err := c.Query(context.Background(), "ZEN.test", ip)
		is.NoErr(err)
	}
	mu.Lock()
	defer mu.Unlock()
	// The probe's two questions, then A, then the failed TXT.
	is.Equal(seen, []obs{{zone, false}, {zone, false}, {zone, false}, {zone, true}})
}
