package dnsclient

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"
	"github.com/miekg/dns"

	"github.com/smtp-interceptor/smtp-interceptor/internal/testutil"
	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// rateSetup is a client of a fake list, on a fake clock, whose OnSuspend
// calls and logs are recorded.
type rateSetup struct {
	f       *Fake
	queries *Counter
	clock   *FakeClock
	sus     *suspensions
	logs    *testutil.SyncBuffer
	c       *Client
}

func newRateSetup(t *testing.T, cacheEntries int) *rateSetup {
	t.Helper()
	r := &rateSetup{f: NewFake(), clock: NewFakeClock(), sus: new(suspensions), logs: new(testutil.SyncBuffer)}
	r.f.List(zone, "127.0.0.2", "", "127.0.0.2")
	var addr string
	addr, r.queries = StartServer(t, r.f)
	r.c = newTestClient(t, addr, Options{CacheEntries: cacheEntries, MinTTL: time.Hour, Now: r.clock.Now,
		OnSuspend: r.sus.record, Logger: slog.New(slog.NewTextHandler(r.logs, nil))})
	return r
}

// queryUntilTrip queries distinct clients from, from+1, ... and returns
// the first whose query failed because the zone was suspended.
func (r *rateSetup) queryUntilTrip(t *testing.T, from int) int {
	t.Helper()
	for i := from; i < from+HitRateMinClients*2; i++ {
		_, err := r.c.Query(context.Background(), zone, nthClient(i))
		if errors.Is(err, rules.ErrSiteSuspended) {
			return i
		}
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
	}
	t.Fatalf("not suspended after %d clients", HitRateMinClients*2)
	return 0
}

// queryNoTrip queries distinct clients from..to-1: none may fail.
func (r *rateSetup) queryNoTrip(t *testing.T, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		if _, err := r.c.Query(context.Background(), zone, nthClient(i)); err != nil {
			t.Fatalf("client %d: %v (suspended: %v)", i, err, r.c.Suspended(zone))
		}
	}
}

func TestHitRateSuspendsAListThatListsTheWorld(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	r := newRateSetup(t, 1000)

	// Healthy at first: the probe before the first use passes.
	_, err := r.c.Query(ctx, zone, nthClient(0))
	is.NoErr(err)
	is.True(!r.c.Suspended(zone))

	// The list starts listing the world, 127.0.0.1 included. The 50th
	// distinct client looked up (49 of 50 listed: 98%) trips the rule,
	// without waiting for any probe interval; its listing is not
	// returned.
	listWorld(r.f)
	is.Equal(r.queryUntilTrip(t, 1), HitRateMinClients-1)
	is.True(r.c.Suspended(zone))
	is.Equal(r.c.CacheLen(), 0) // its answers are dropped

	// The probe that follows at once finds 127.0.0.1 listed: suspended it
	// stays, reported once, logged once as a hit-rate trip.
	waitProbed(t, r.c, r.queries, zone, 2)
	is.True(r.c.Suspended(zone))
	is.Equal(r.sus.get(), []string{"suspend zen.test"})
	is.Equal(strings.Count(r.logs.String(), "hit rate jumped"), 1)

	// While suspended, nothing is sent: neither queries nor probes.
	sent := r.queries.Total()
	for i := 100; i < 200; i++ {
		_, err := r.c.Query(ctx, zone, nthClient(i))
		is.True(errors.Is(err, rules.ErrSiteSuspended))
	}
	is.Equal(r.queries.Total(), sent)

	// Healed: a later probe restores it, the window starts empty and the
	// rule is armed at once (its trip was confirmed): a list listing the
	// world again trips it after 50 new clients.
	r.f.SetDefault(nil)
	is.True(!r.c.Probe(ctx, zone).Suspended)
	is.Equal(r.sus.get(), []string{"suspend zen.test", "restore zen.test"})
	listWorld(r.f)
	is.Equal(r.queryUntilTrip(t, 200), 200+HitRateMinClients-1)
}

// TestHitRateFalseTrip is a genuine spam wave: a healthy list that lists
// 95% of the clients. The rule trips, the probe passes, and the list is
// restored; each false trip rests the rule, longer each time.
func TestHitRateFalseTrip(t *testing.T) {
	is := is.New(t)
	r := newRateSetup(t, 1000)
	r.f.SetDefault(&Entry{A: []string{"127.0.0.2"}, TTL: 300})
	r.f.Set(localName(zone), Entry{}) // 127.0.0.1 not listed: healthy
	for i := 0; i < 2000; i += 20 {
		r.f.SetIP(zone, nthClient(i).String(), Entry{}) // one client in 20 not listed
	}
	restored := func(n int) {
		t.Helper()
		waitProbed(t, r.c, r.queries, zone, n)
		is.True(!r.c.Suspended(zone))
	}

	// Clients 1..50: 20 and 40 are not listed, 96% are.
	is.Equal(r.queryUntilTrip(t, 1), HitRateMinClients)
	restored(2) // probed before first use, then after the trip
	is.Equal(r.sus.get(), []string{"suspend zen.test", "restore zen.test"})
	is.True(strings.Contains(r.logs.String(), "false alarm"))

	// The window restarted empty and the rule rests one window.
	r.queryNoTrip(t, 100, 300)
	r.clock.Advance(HitRateWindow)
	is.Equal(r.queryUntilTrip(t, 300), 300+HitRateMinClients-1) // 300, 320, 340 unlisted: 94%
	restored(3)

	// The second false trip in a row rests it two windows.
	r.clock.Advance(HitRateWindow)
	r.queryNoTrip(t, 400, 600)
	r.clock.Advance(HitRateWindow)
	is.Equal(r.queryUntilTrip(t, 600), 600+HitRateMinClients-1)
	restored(4)
	is.Equal(len(r.sus.get()), 6) // three trips, three restores
}

// TestHitRateCountsDistinctNetworkLookups: a client looked up again in the
// window, from the cache or not, counts once.
func TestHitRateCountsDistinctNetworkLookups(t *testing.T) {
	for _, cacheEntries := range []int{0, 1000} {
		name := "cache off"
		if cacheEntries > 0 {
			name = "cache on"
		}
		t.Run(name, func(t *testing.T) {
			is := is.New(t)
			r := newRateSetup(t, cacheEntries)
			listWorld(r.f)
			r.f.Set(localName(zone), Entry{}) // healthy for its probe
			for range 5 {
				r.queryNoTrip(t, 0, HitRateMinClients-1) // 49 distinct clients, again and again
			}
			asked := r.queries.Of(queryName(zone, nthClient(0)), dns.TypeA)
			if cacheEntries == 0 {
				is.Equal(asked, 5) // every lookup sent, yet counted once
			} else {
				is.Equal(asked, 1)
			}
			is.True(!r.c.Suspended(zone))
			is.Equal(r.queryUntilTrip(t, HitRateMinClients-1), HitRateMinClients-1) // the 50th distinct one trips it
		})
	}
}

func TestRateWindow(t *testing.T) {
	at := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name     string
		listed   int // listed distinct clients, then
		unlisted int // unlisted ones, all at the same time
		later    time.Duration
		extra    int // listed clients added later
		want     bool
	}{
		{name: "49 listed: too few clients", listed: 49},
		{name: "50 listed", listed: 50, want: true},
		{name: "45 of 50 listed is 90%: not more than 90%", listed: 45, unlisted: 5},
		{name: "46 of 50 listed", listed: 46, unlisted: 4, want: true},
		{name: "old clients leave the window", listed: 49, later: HitRateWindow, extra: 1},
		{name: "within the window they count", listed: 49, later: HitRateWindow - time.Second, extra: 1, want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			var r rateWindow
			var trip bool
			n := 0
			add := func(when time.Time, listed bool) {
				trip = r.observe(when, nthClient(n), listed) || trip
				n++
			}
			for range tt.unlisted {
				add(at, false)
			}
			for range tt.listed {
				add(at, true)
			}
			for range tt.extra {
				add(at.Add(tt.later), true)
			}
			is.Equal(trip, tt.want)
		})
	}
}
