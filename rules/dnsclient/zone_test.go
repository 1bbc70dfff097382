package dnsclient

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matryer/is"
	"github.com/miekg/dns"

	"github.com/smtp-interceptor/smtp-interceptor/internal/testutil"
	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// listWorld makes f list every name of every zone, 127.0.0.1 included:
// a list gone bad.
func listWorld(f *Fake) { f.SetDefault(&Entry{A: []string{"127.0.0.2"}, TTL: 300}) }

// localName is the name a probe asks for 127.0.0.1 in z.
func localName(z string) string { return queryName(z, localhost) }

// nthClient returns a distinct client address for each n.
func nthClient(n int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, byte(n >> 8), byte(n)}) }

// waitProbed waits until no probe of zone is in flight and the server got
// probes questions for 127.0.0.1 in zone.
func waitProbed(t *testing.T, c *Client, queries *Counter, zone string, probes int) {
	t.Helper()
	testutil.WaitFor(t, "the probe of "+zone, func() bool {
		return queries.Of(localName(zone), dns.TypeA) >= probes && !c.Probing(zone)
	})
}

func TestProbeBeforeFirstUse(t *testing.T) {
	t.Run("a list that lists the world from the start is never used", func(t *testing.T) {
		is := is.New(t)
		f := NewFake()
		listWorld(f)
		addr, queries := StartServer(t, f)
		var sus suspensions
		c := newTestClient(t, addr, Options{CacheEntries: 10, MinTTL: time.Hour, OnSuspend: sus.record})
		for i := range 3 {
			ans, err := c.Query(context.Background(), zone, nthClient(i))
			is.True(errors.Is(err, rules.ErrSiteSuspended)) // the first query already
			is.Equal(len(ans.Addrs), 0)                     // no listing returned
		}
		probes, others := queries.Split()
		is.Equal(len(probes), 2) // one probe
		is.Equal(len(others), 0) // and no client asked
		is.Equal(sus.get(), []string{"suspend zen.test"})
	})

	t.Run("concurrent first queries share one probe", func(t *testing.T) {
		is := is.New(t)
		const n = 20
		release := make(chan struct{})
		f := NewFake()
		listWorld(f)
		f.Set(localName(zone), Entry{A: []string{"127.0.0.2"}, TTL: 300, Block: release})
		addr, queries := StartServer(t, f)
		c := newTestClient(t, addr, Options{CacheEntries: 10, Timeout: 10 * time.Second})
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { _, errs[i] = c.Query(context.Background(), zone, nthClient(i)) })
		}
		testutil.WaitFor(t, "every query waiting for the probe", func() bool { return c.probeWaiting(zone) == n })
		close(release)
		wg.Wait()
		for _, err := range errs {
			is.True(errors.Is(err, rules.ErrSiteSuspended))
		}
		is.Equal(queries.Of(localName(zone), dns.TypeA), 1) // one probe for 20 queries
		_, others := queries.Split()
		is.Equal(len(others), 0)
	})

	t.Run("a zone added by a reload is probed before its first answer counts", func(t *testing.T) {
		is := is.New(t)
		f := NewFake()
		listWorld(f)
		f.Set(localName("good.test"), Entry{}) // good.test is healthy
		addr, queries := StartServer(t, f)
		c := newTestClient(t, addr, Options{CacheEntries: 10, Timeout: 5 * time.Second})
		var zones atomic.Pointer[[]string]
		zones.Store(&[]string{"good.test"})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			c.RunProber(ctx, func() []string { return *zones.Load() }, func() time.Duration { return time.Hour })
		}()
		defer func() { cancel(); <-done }()
		waitProbed(t, c, queries, "good.test", 1)

		// The reload adds bad.test; the prober's next round is an hour away.
		zones.Store(&[]string{"good.test", "bad.test"})
		_, err := c.Query(context.Background(), "bad.test", nthClient(1))
		is.True(errors.Is(err, rules.ErrSiteSuspended))
		is.Equal(queries.Of(queryName("bad.test", nthClient(1)), dns.TypeA), 0) // the client was not asked
		ans, err := c.Query(context.Background(), "good.test", nthClient(1))
		is.NoErr(err)
		is.Equal(ans.Addrs, addrs("127.0.0.2"))
		is.Equal(queries.Of(localName("good.test"), dns.TypeA), 1) // probed once, by the prober
	})
}

func TestInitialSuspended(t *testing.T) {
	tests := []struct {
		name          string
		healed        bool // the list is healed when the new client starts
		wantSuspended bool // after the new client's first probe
		wantCalls     []string
	}{
		{name: "still broken: stays suspended, not reported again", wantSuspended: true},
		{name: "healed: restored by the probe its first query starts", healed: true, wantCalls: []string{"restore zen.test"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			ctx := context.Background()
			client := nthClient(7)
			f := NewFake()
			listWorld(f)
			addr, queries := StartServer(t, f)
			old := newTestClient(t, addr, Options{CacheEntries: 10})
			is.True(old.Probe(ctx, zone).Suspended)
			is.Equal(old.SuspendedZones(), []string{zone})

			var sus suspensions
			c := newTestClient(t, addr, Options{CacheEntries: 10, InitialSuspended: old.SuspendedZones(), OnSuspend: sus.record})
			is.True(c.Suspended(zone)) // starts suspended
			if tt.healed {
				f.SetDefault(nil)
				f.List(zone, client.String(), "", "127.0.0.2")
			}
			_, err := c.Query(ctx, zone, client)
			is.True(errors.Is(err, rules.ErrSiteSuspended))             // the inherited verdict holds
			is.Equal(queries.Of(queryName(zone, client), dns.TypeA), 0) // the client was not asked
			waitProbed(t, c, queries, zone, 2)                          // the query started a probe
			is.Equal(c.Suspended(zone), tt.wantSuspended)               // which decided
			is.Equal(sus.get(), tt.wantCalls)

			_, err = c.Query(ctx, zone, client)
			if tt.wantSuspended {
				is.True(errors.Is(err, rules.ErrSiteSuspended))
				is.Equal(queries.Of(localName(zone), dns.TypeA), 2) // confirmed: not probed again
			} else {
				is.NoErr(err)
				is.Equal(queries.Of(queryName(zone, client), dns.TypeA), 1)
			}
		})
	}
}

func TestProbeRetryHold(t *testing.T) {
	tests := []struct {
		name      string
		inherited bool // the zone starts suspended
	}{
		{name: "an unprobed zone is treated as healthy"},
		{name: "an inherited suspension is kept", inherited: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			ctx := context.Background()
			f := NewFake()
			f.Set(localName(zone), Entry{Rcode: dns.RcodeServerFailure}) // the probe cannot ask the list
			for i := range 3 {
				f.List(zone, nthClient(i).String(), "", "127.0.0.2")
			}
			addr, queries := StartServer(t, f)
			clock := NewFakeClock()
			opts := Options{CacheEntries: 10, Now: clock.Now}
			if tt.inherited {
				opts.InitialSuspended = []string{zone}
			}
			c := newTestClient(t, addr, opts)
			query := func(i int) {
				t.Helper()
				ans, err := c.Query(ctx, zone, nthClient(i))
				if tt.inherited {
					is.True(errors.Is(err, rules.ErrSiteSuspended))
					return
				}
				is.NoErr(err)
				is.Equal(ans.Addrs, addrs("127.0.0.2")) // used, as healthy
			}

			query(0)
			waitProbed(t, c, queries, zone, 1)
			query(1)
			waitProbed(t, c, queries, zone, 1)
			is.Equal(queries.Of(localName(zone), dns.TypeA), 1) // not probed on every query
			is.Equal(c.Suspended(zone), tt.inherited)

			clock.Advance(ProbeRetryHold)
			query(2)
			waitProbed(t, c, queries, zone, 2) // after the hold, probed again
			is.Equal(queries.Of(localName(zone), dns.TypeA), 2)
			is.Equal(c.Suspended(zone), tt.inherited)
		})
	}
}
