package state

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/smtp-interceptor/smtp-interceptor/internal/testutil"
	redistest "github.com/smtp-interceptor/smtp-interceptor/internal/testutil/redis"
)

// fixture is a fresh backend for one conformance case, with the clock it
// was given.
type fixture struct {
	b     Backend
	clock *fakeClock
	// advance moves the backend's clock; with serverClock it moves the
	// server's clock too (rate limits and statistics TTLs), otherwise
	// those follow real time.
	advance     func(time.Duration)
	serverClock bool
}

// runConformance runs the behaviour every Backend must have against the
// backends that open makes, one fresh backend per case.
func runConformance(t *testing.T, open func(t *testing.T) fixture) {
	ctx := context.Background()
	pfx := netip.MustParsePrefix
	addr := netip.MustParseAddr

	cases := []struct {
		name string
		run  func(t *testing.T, f fixture)
	}{
		{"identity", func(t *testing.T, f fixture) {
			is := is.New(t)
			is.True(f.b.Up())
			is.True(f.b.Name() == "memory" || f.b.Name() == "redis")
		}},
		{"add and remove bans, IPv4 and IPv6", func(t *testing.T, f fixture) {
			for _, tc := range []struct{ ban, in, out string }{
				{"192.0.2.7/32", "192.0.2.7", "192.0.2.8"},
				{"2001:db8::7/128", "2001:db8::7", "2001:db8::8"},
				{"198.51.100.0/24", "198.51.100.255", "198.51.101.0"},
				{"2001:db8:aa::/48", "2001:db8:aa:ffff::1", "2001:db8:ab::1"},
			} {
				t.Run(tc.ban, func(t *testing.T) {
					is := is.New(t)
					is.NoErr(f.b.AddBan(ctx, Ban{Prefix: pfx(tc.ban), Reason: "spam", Creator: "admin@relay-a"}))
					b, ok := f.b.Banned(addr(tc.in))
					is.True(ok)
					is.Equal(b.Prefix, pfx(tc.ban))
					is.Equal(b.Reason, "spam")
					is.Equal(b.Creator, "admin@relay-a")
					is.True(b.Created.Equal(f.clock.Now())) // Created filled in
					_, ok = f.b.Banned(addr(tc.out))
					is.True(!ok)

					removed, err := f.b.RemoveBan(ctx, pfx(tc.ban))
					is.NoErr(err)
					is.True(removed)
					_, ok = f.b.Banned(addr(tc.in))
					is.True(!ok)
					removed, err = f.b.RemoveBan(ctx, pfx(tc.ban))
					is.NoErr(err)
					is.True(!removed) // nothing left to remove
				})
			}
		}},
		{"replace ban on same prefix", func(t *testing.T, f fixture) {
			is := is.New(t)
			is.NoErr(f.b.AddBan(ctx, Ban{Prefix: pfx("203.0.113.0/24"), Reason: "first"}))
			is.NoErr(f.b.AddBan(ctx, Ban{Prefix: pfx("203.0.113.9/24"), Reason: "second",
				Refusals: []string{"r1", "r2"}})) // same prefix once masked
			bans := f.b.Bans()
			is.Equal(len(bans), 1)
			is.Equal(bans[0].Reason, "second")
			is.Equal(bans[0].Prefix, pfx("203.0.113.0/24"))
			is.Equal(bans[0].Refusals, []string{"r1", "r2"})
		}},
		{"IPv4-mapped addresses and prefixes", func(t *testing.T, f fixture) {
			is := is.New(t)
			is.NoErr(f.b.AddBan(ctx, Ban{Prefix: pfx("::ffff:192.0.2.0/120"), Reason: "mapped"}))
			b, ok := f.b.Banned(addr("192.0.2.9"))
			is.True(ok)
			is.Equal(b.Prefix, pfx("192.0.2.0/24")) // stored as IPv4
			_, ok = f.b.Banned(addr("::ffff:192.0.2.10"))
			is.True(ok) // mapped address matches the IPv4 ban
		}},
		{"invalid bans", func(t *testing.T, f fixture) {
			is := is.New(t)
			is.True(f.b.AddBan(ctx, Ban{Reason: "no prefix"}) != nil)
			is.True(f.b.AddBan(ctx, Ban{Prefix: pfx("::ffff:0.0.0.0/80")}) != nil)
			is.True(f.b.AddBan(ctx, Ban{Prefix: pfx("192.0.2.1/32"), Expires: f.clock.Now().Add(-time.Second)}) != nil)
			_, err := f.b.RemoveBan(ctx, netip.Prefix{})
			is.True(err != nil)
			is.Equal(len(f.b.Bans()), 0)
			_, ok := f.b.Banned(netip.Addr{})
			is.True(!ok)
		}},
		{"longest prefix wins", func(t *testing.T, f fixture) {
			for _, p := range []string{
				"10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.1.2.3/32",
				"2001:db8::/32", "2001:db8:1::/48", "2001:db8:1::1/128", "0.0.0.0/0",
			} {
				if p == "0.0.0.0/0" {
					continue // a default ban would hide the misses below
				}
				is.New(t).NoErr(f.b.AddBan(ctx, Ban{Prefix: pfx(p), Reason: p}))
			}
			for _, tc := range []struct{ ip, want string }{
				{"10.200.0.1", "10.0.0.0/8"},
				{"10.1.200.1", "10.1.0.0/16"},
				{"10.1.2.4", "10.1.2.0/24"},
				{"10.1.2.3", "10.1.2.3/32"},
				{"11.0.0.1", ""},
				{"2001:db8:ffff::1", "2001:db8::/32"},
				{"2001:db8:1::2", "2001:db8:1::/48"},
				{"2001:db8:1::1", "2001:db8:1::1/128"},
				{"2001:db9::1", ""},
				{"::ffff:10.1.2.3", "10.1.2.3/32"},
			} {
				t.Run(tc.ip, func(t *testing.T) {
					is := is.New(t)
					b, ok := f.b.Banned(addr(tc.ip))
					is.Equal(ok, tc.want != "")
					is.Equal(b.Reason, tc.want)
				})
			}
		}},
		{"bans sorted by prefix", func(t *testing.T, f fixture) {
			is := is.New(t)
			in := []string{"2001:db8::/32", "192.0.2.0/24", "10.0.0.0/8", "192.0.2.0/25", "2001:db8::1/128", "10.0.0.1/32"}
			for _, p := range in {
				is.NoErr(f.b.AddBan(ctx, Ban{Prefix: pfx(p)}))
			}
			var got []string
			for _, b := range f.b.Bans() {
				got = append(got, b.Prefix.String())
			}
			is.Equal(got, []string{"10.0.0.0/8", "10.0.0.1/32", "192.0.2.0/24", "192.0.2.0/25", "2001:db8::/32", "2001:db8::1/128"})
		}},
		{"expiry", func(t *testing.T, f fixture) {
			is := is.New(t)
			now := f.clock.Now()
			is.NoErr(f.b.AddBan(ctx, Ban{Prefix: pfx("192.0.2.0/24"), Reason: "net"}))
			is.NoErr(f.b.AddBan(ctx, Ban{Prefix: pfx("192.0.2.1/32"), Reason: "host", Expires: now.Add(time.Minute)}))
			is.NoErr(f.b.AddBan(ctx, Ban{Prefix: pfx("2001:db8::/64"), Reason: "v6", Expires: now.Add(2 * time.Minute)}))
			b, ok := f.b.Banned(addr("192.0.2.1"))
			is.True(ok)
			is.Equal(b.Reason, "host")
			is.True(b.Expires.Equal(now.Add(time.Minute)))
			is.Equal(len(f.b.Bans()), 3)

			f.advance(time.Minute) // the host ban expires exactly now
			b, ok = f.b.Banned(addr("192.0.2.1"))
			is.True(ok)
			is.Equal(b.Reason, "net") // the expired longer prefix does not hide the shorter one
			_, ok = f.b.Banned(addr("2001:db8::1"))
			is.True(ok)
			is.Equal(len(f.b.Bans()), 2)

			f.advance(time.Minute)
			_, ok = f.b.Banned(addr("2001:db8::1"))
			is.True(!ok)
			bans := f.b.Bans()
			is.Equal(len(bans), 1)
			is.Equal(bans[0].Reason, "net")
		}},
		{"refusal window", func(t *testing.T, f fixture) {
			is := is.New(t)
			const w = 10 * time.Minute
			for i := 1; i <= 3; i++ {
				n, recent, err := f.b.CountRefusal(ctx, "ip:192.0.2.1", w, fmt.Sprintf("d%d", i))
				is.NoErr(err)
				is.Equal(n, i)
				is.Equal(recent[len(recent)-1], fmt.Sprintf("d%d", i)) // this one last
				f.advance(time.Minute)
			}
			// Now at +3m; the refusals are at +0, +1m, +2m. At +10m the
			// first one is exactly at the window's edge: out.
			f.advance(7 * time.Minute)
			n, recent, err := f.b.CountRefusal(ctx, "ip:192.0.2.1", w, "d4")
			is.NoErr(err)
			is.Equal(n, 3)
			is.Equal(recent, []string{"d2", "d3", "d4"})

			// Another key is counted apart.
			n, _, err = f.b.CountRefusal(ctx, "ip:2001:db8::1", w, "x")
			is.NoErr(err)
			is.Equal(n, 1)

			f.advance(w)
			n, recent, err = f.b.CountRefusal(ctx, "ip:192.0.2.1", w, "d5")
			is.NoErr(err)
			is.Equal(n, 1) // all the others left the window
			is.Equal(recent, []string{"d5"})
		}},
		{"refusal details and reset", func(t *testing.T, f fixture) {
			is := is.New(t)
			var n int
			var recent []string
			var err error
			for i := 1; i <= 12; i++ {
				n, recent, err = f.b.CountRefusal(ctx, "k", time.Hour, fmt.Sprintf("rcpt <u%d@example.org> | 550", i))
				is.NoErr(err)
			}
			is.Equal(n, 12)
			is.Equal(len(recent), 10) // at most 10 details, oldest first
			is.Equal(recent[0], "rcpt <u3@example.org> | 550")
			is.Equal(recent[9], "rcpt <u12@example.org> | 550")

			is.NoErr(f.b.ResetRefusals(ctx, "k"))
			n, _, err = f.b.CountRefusal(ctx, "k", time.Hour, "again")
			is.NoErr(err)
			is.Equal(n, 1)
			is.NoErr(f.b.ResetRefusals(ctx, "never-counted"))

			_, _, err = f.b.CountRefusal(ctx, "", time.Hour, "x")
			is.True(err != nil)
			_, _, err = f.b.CountRefusal(ctx, "k", 0, "x")
			is.True(err != nil)
		}},
		{"rate limit burst and deny", func(t *testing.T, f fixture) {
			is := is.New(t)
			for i := 1; i <= 10; i++ {
				d, err := f.b.Allow(ctx, "burst", 10, time.Minute, 1)
				is.NoErr(err)
				is.True(d.Allowed)
				is.Equal(d.Remaining, 10-i)
				is.Equal(d.RetryAfter, time.Duration(0))
			}
			for range 2 { // a denial takes nothing
				d, err := f.b.Allow(ctx, "burst", 10, time.Minute, 1)
				is.NoErr(err)
				is.True(!d.Allowed)
				is.Equal(d.Remaining, 0)
				is.True(d.RetryAfter > 0)
				is.True(d.RetryAfter <= 6*time.Second) // one emission interval
			}
			// Other keys are not affected.
			d, err := f.b.Allow(ctx, "other", 10, time.Minute, 4)
			is.NoErr(err)
			is.True(d.Allowed)
			is.Equal(d.Remaining, 6)
			d, err = f.b.Allow(ctx, "other", 10, time.Minute, 0)
			is.NoErr(err)
			is.True(d.Allowed) // cost 0 only looks
			is.Equal(d.Remaining, 6)
			d, err = f.b.Allow(ctx, "other", 10, time.Minute, 7)
			is.NoErr(err)
			is.True(!d.Allowed) // more than remains
			is.Equal(d.Remaining, 6)
			d, err = f.b.Allow(ctx, "fresh", 10, time.Minute, 11)
			is.NoErr(err)
			is.True(!d.Allowed) // more than the limit: never

			for _, bad := range []struct {
				limit int
				per   time.Duration
				cost  int
			}{{0, time.Minute, 1}, {10, 0, 1}, {10, time.Minute, -1}} {
				_, err := f.b.Allow(ctx, "bad", bad.limit, bad.per, bad.cost)
				is.True(err != nil)
			}
		}},
		{"rate limit recovers", func(t *testing.T, f fixture) {
			is := is.New(t)
			if !f.serverClock {
				// The server's clock runs on its own: a short period,
				// and wait for the limit to let a request through again.
				var denied bool
				for range 100 {
					d, err := f.b.Allow(ctx, "short", 2, 400*time.Millisecond, 1)
					is.NoErr(err)
					if !d.Allowed {
						denied = true
						is.True(d.RetryAfter > 0)
						is.True(d.RetryAfter <= 200*time.Millisecond)
						break
					}
				}
				is.True(denied)
				testutil.WaitFor(t, "rate limit to allow again", func() bool {
					d, err := f.b.Allow(ctx, "short", 2, 400*time.Millisecond, 1)
					is.NoErr(err)
					return d.Allowed
				})
				return
			}
			for range 10 {
				d, err := f.b.Allow(ctx, "rec", 10, time.Minute, 1)
				is.NoErr(err)
				is.True(d.Allowed)
			}
			d, err := f.b.Allow(ctx, "rec", 10, time.Minute, 1)
			is.NoErr(err)
			is.True(!d.Allowed)
			is.Equal(d.RetryAfter, 6*time.Second)

			f.advance(5 * time.Second)
			d, err = f.b.Allow(ctx, "rec", 10, time.Minute, 1)
			is.NoErr(err)
			is.True(!d.Allowed)
			is.Equal(d.RetryAfter, time.Second)

			f.advance(time.Second) // one emission interval since the burst
			d, err = f.b.Allow(ctx, "rec", 10, time.Minute, 1)
			is.NoErr(err)
			is.True(d.Allowed)
			is.Equal(d.Remaining, 0)

			f.advance(time.Hour) // back to a full burst
			d, err = f.b.Allow(ctx, "rec", 10, time.Minute, 1)
			is.NoErr(err)
			is.True(d.Allowed)
			is.Equal(d.Remaining, 9)
		}},
		{"greylist delay then pass", func(t *testing.T, f fixture) {
			is := is.New(t)
			g := greyTimes(f)
			const key = "192.0.2.0/24|a@example.org|b@example.net"
			start := time.Now()
			gr, err := f.b.Greylist(ctx, key, g.delay, g.retry, g.keep)
			is.NoErr(err)
			is.Equal(gr, Grey{New: true, Wait: g.delay}) // first attempt
			if f.serverClock {
				f.advance(g.delay / 4)
				gr, err = f.b.Greylist(ctx, key, g.delay, g.retry, g.keep)
				is.NoErr(err)
				is.Equal(gr, Grey{Wait: g.delay - g.delay/4}) // too early: the wait shrinks
				f.advance(g.delay - g.delay/4)                // exactly the delay
				gr, err = f.b.Greylist(ctx, key, g.delay, g.retry, g.keep)
				is.NoErr(err)
				is.Equal(gr, Grey{Pass: true, Delayed: g.delay, FirstPass: true})
			} else {
				gr, err = f.b.Greylist(ctx, key, g.delay, g.retry, g.keep)
				is.NoErr(err)
				is.True(!gr.Pass && !gr.New && !gr.FirstPass)
				is.True(gr.Wait > 0 && gr.Wait < g.delay) // the wait shrinks
				gr = greyUntilPass(t, f, key, g)
				is.True(gr.FirstPass && !gr.New)
				is.Equal(gr.Wait, time.Duration(0))
				is.True(gr.Delayed >= g.delay)
				// At most the time since the first attempt, give or take
				// the difference between Redis's clock (TIME, which Redis
				// reads once per event-loop turn) and ours.
				is.True(gr.Delayed <= time.Since(start)+10*time.Millisecond)
			}
			first := gr.Delayed
			for range 2 { // later attempts pass at once, and say how long the first waited
				gr, err = f.b.Greylist(ctx, key, g.delay, g.retry, g.keep)
				is.NoErr(err)
				is.Equal(gr, Grey{Pass: true, Delayed: first})
			}
			// Another triplet of the same network is greylisted apart.
			gr, err = f.b.Greylist(ctx, "192.0.2.0/24|a@example.org|c@example.net", g.delay, g.retry, g.keep)
			is.NoErr(err)
			is.Equal(gr, Grey{New: true, Wait: g.delay})
		}},
		{"greylist keep", func(t *testing.T, f fixture) {
			is := is.New(t)
			g := greyTimes(f)
			const key = "2001:db8::/64|{odd}@example.org|b@example.net"
			greyPass(t, f, key, g)
			if f.serverClock {
				for range 2 { // every use renews keep: 2·(keep−1s) after the pass, still known
					f.advance(g.keep - time.Second)
					gr, err := f.b.Greylist(ctx, key, g.delay, g.retry, g.keep)
					is.NoErr(err)
					is.True(gr.Pass && !gr.FirstPass && !gr.New)
				}
				f.advance(g.keep) // unused for keep: forgotten
			} else {
				testutil.WaitFor(t, "the passed triplet to be forgotten", func() bool {
					n, err := f.b.GreylistTriplets(ctx)
					is.NoErr(err)
					return n == 0
				})
			}
			gr, err := f.b.Greylist(ctx, key, g.delay, g.retry, g.keep)
			is.NoErr(err)
			is.Equal(gr, Grey{New: true, Wait: g.delay}) // a first attempt again
		}},
		{"greylist retry window", func(t *testing.T, f fixture) {
			is := is.New(t)
			g := greyTimes(f)
			const early, late = "198.51.100.0/24|x@example.org|y@example.net", "198.51.100.0/24|x@example.org|z@example.net"
			for _, k := range []string{early, late} {
				gr, err := f.b.Greylist(ctx, k, g.delay, g.retry, g.keep)
				is.NoErr(err)
				is.True(gr.New)
			}
			if f.serverClock {
				f.advance(g.retry - time.Second) // the last second of the window
				gr, err := f.b.Greylist(ctx, early, g.delay, g.retry, g.keep)
				is.NoErr(err)
				is.Equal(gr, Grey{Pass: true, Delayed: g.retry - time.Second, FirstPass: true})
				f.advance(time.Second) // the window is over
			} else {
				testutil.WaitFor(t, "the window to end", func() bool {
					n, err := f.b.GreylistTriplets(ctx)
					is.NoErr(err)
					return n == 0
				})
			}
			gr, err := f.b.Greylist(ctx, late, g.delay, g.retry, g.keep)
			is.NoErr(err)
			is.Equal(gr, Grey{New: true, Wait: g.delay}) // too late: a first attempt again
			if f.serverClock {
				f.advance(g.delay) // the new window counts from the new first attempt
				gr, err = f.b.Greylist(ctx, late, g.delay, g.retry, g.keep)
				is.NoErr(err)
				is.Equal(gr, Grey{Pass: true, Delayed: g.delay, FirstPass: true})
			}
		}},
		{"greylist triplets count", func(t *testing.T, f fixture) {
			is := is.New(t)
			g := greyTimes(f)
			count := func() int {
				n, err := f.b.GreylistTriplets(ctx)
				is.NoErr(err)
				return n
			}
			is.Equal(count(), 0)
			keys := []string{
				"192.0.2.0/24|a@example.org|b@example.net",
				"2001:db8::/64|<>|postmaster@example.net", // null sender
				"203.0.113.0/24|{x}y@example.org|b@example.net",
			}
			for i, k := range keys {
				_, err := f.b.Greylist(ctx, k, g.delay, g.retry, g.keep)
				is.NoErr(err)
				is.Equal(count(), i+1)
			}
			_, err := f.b.Greylist(ctx, keys[0], g.delay, g.retry, g.keep) // a retry is no new triplet
			is.NoErr(err)
			is.Equal(count(), 3)
			greyPass(t, f, "192.0.2.0/24|a@example.org|d@example.net", g) // a first attempt, then a pass
			is.Equal(count(), 4)
			_, err = f.b.Greylist(ctx, "192.0.2.0/24|a@example.org|d@example.net", g.delay, g.retry, g.keep)
			is.NoErr(err)
			is.Equal(count(), 4)
		}},
		{"greylist passed per network", func(t *testing.T, f fixture) {
			is := is.New(t)
			g := greyTimes(f)
			const netA, netB = "192.0.2.0/24", "2001:db8::/64"
			passed := func(network string, add int) int {
				n, err := f.b.GreylistPassed(ctx, network, add, g.keep)
				is.NoErr(err)
				return n
			}
			is.Equal(passed(netA, 0), 0) // nothing yet, and reading adds nothing
			is.Equal(passed(netA, 0), 0)
			is.Equal(passed(netA, 1), 1)
			is.Equal(passed(netA, 1), 2)
			is.Equal(passed(netB, 1), 1) // counted apart
			is.Equal(passed(netA, 0), 2)
			is.Equal(passed(netA, 3), 5)
			is.Equal(passed("203.0.113.0/24", maxGreyPassed+5), maxGreyPassed) // saturates
			is.Equal(passed("203.0.113.0/24", 1), maxGreyPassed)
			if f.serverClock {
				f.advance(g.keep / 2)
				is.Equal(passed(netA, 1), 6)
				f.advance(g.keep / 2) // the first five are at the window's edge: out
				is.Equal(passed(netA, 0), 1)
				is.Equal(passed(netB, 0), 0)
				f.advance(g.keep / 2)
				is.Equal(passed(netA, 0), 0)
			} else {
				testutil.WaitFor(t, "the passes to leave the window", func() bool { return passed(netA, 0) == 0 })
			}
			is.Equal(passed(netA, 1), 1)
		}},
		{"greylist invalid arguments", func(t *testing.T, f fixture) {
			is := is.New(t)
			for _, tc := range []struct {
				key                string
				delay, retry, keep time.Duration
			}{
				{"", time.Minute, time.Hour, time.Hour},
				{"k", 0, time.Hour, time.Hour},
				{"k", time.Hour, time.Hour, time.Hour}, // the window must be longer than the delay
				{"k", time.Minute, time.Hour, 0},
			} {
				_, err := f.b.Greylist(ctx, tc.key, tc.delay, tc.retry, tc.keep)
				is.True(err != nil)
			}
			for _, tc := range []struct {
				network string
				add     int
				keep    time.Duration
			}{{"", 1, time.Hour}, {"n", -1, time.Hour}, {"n", 1, 0}} {
				_, err := f.b.GreylistPassed(ctx, tc.network, tc.add, tc.keep)
				is.True(err != nil)
			}
			n, err := f.b.GreylistTriplets(ctx)
			is.NoErr(err)
			is.Equal(n, 0) // nothing was remembered
		}},
		{"fleet statistics", func(t *testing.T, f fixture) {
			is := is.New(t)
			is.NoErr(f.b.PublishStats(ctx, "relay-a", []byte(`{"a":1}`), time.Minute))
			is.NoErr(f.b.PublishStats(ctx, "relay-b", []byte(`{"b":1}`), 3*time.Minute))
			is.NoErr(f.b.PublishStats(ctx, "relay-a", []byte(`{"a":2}`), time.Minute)) // replaces
			got, err := f.b.FleetStats(ctx)
			is.NoErr(err)
			is.Equal(len(got), 2)
			is.Equal(string(got["relay-a"]), `{"a":2}`)
			is.Equal(string(got["relay-b"]), `{"b":1}`)

			if f.serverClock {
				f.advance(2 * time.Minute)
				got, err = f.b.FleetStats(ctx)
				is.NoErr(err)
				is.Equal(len(got), 1) // relay-a expired
				is.Equal(string(got["relay-b"]), `{"b":1}`)
			} else {
				is.NoErr(f.b.PublishStats(ctx, "relay-c", []byte(`{}`), 150*time.Millisecond))
				got, err = f.b.FleetStats(ctx)
				is.NoErr(err)
				is.Equal(len(got), 3)
				testutil.WaitFor(t, "relay-c's statistics to expire", func() bool {
					got, err = f.b.FleetStats(ctx)
					is.NoErr(err)
					_, ok := got["relay-c"]
					return !ok
				})
				is.Equal(len(got), 2)
			}
			is.True(f.b.PublishStats(ctx, "", []byte(`{}`), time.Minute) != nil)
			is.True(f.b.PublishStats(ctx, "relay-d", []byte(`{}`), 0) != nil)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.run(t, open(t))
		})
	}
}

func TestConformanceMemory(t *testing.T) {
	runConformance(t, func(t *testing.T) fixture {
		clk := newFakeClock()
		m, err := OpenMemory(MemoryOptions{
			File:   filepath.Join(t.TempDir(), "bans.db"),
			Now:    clk.Now,
			Logger: testutil.Logger(t),
		})
		if err != nil {
			t.Fatalf("OpenMemory: %v", err)
		}
		t.Cleanup(func() {
			if err := m.Close(); err != nil {
				t.Errorf("close: %v", err)
			}
		})
		return fixture{b: m, clock: clk, advance: clk.Advance, serverClock: true}
	})
}

func TestConformanceRedisMiniredis(t *testing.T) {
	runConformance(t, func(t *testing.T) fixture {
		clk := newFakeClock()
		m := startMiniredis(t)
		m.SetTime(clk.Now())
		m.ClockTTL(true)
		r := openRedis(t, RedisOptions{Addrs: []string{m.Addr()}, Now: clk.Now, Timeout: 2 * time.Second, Relay: "relay-a"})
		return fixture{b: r, clock: clk, serverClock: true, advance: func(d time.Duration) {
			clk.Advance(d)
			m.SetTime(clk.Now())
		}}
	})
}

// keyPrefix makes a key prefix of its own for each test, to share one
// server between tests.
func keyPrefix(t *testing.T) string {
	r := strings.NewReplacer("/", ":", " ", "_", "{", "(", "}", ")")
	return "t:" + r.Replace(t.Name()) + ":"
}

func TestConformanceRedisServer(t *testing.T) {
	srv := redistest.Start(t)
	runConformance(t, func(t *testing.T) fixture {
		clk := newFakeClock()
		r := openRedis(t, RedisOptions{Addrs: []string{srv.Addr()}, Prefix: keyPrefix(t), Now: clk.Now,
			Timeout: 2 * time.Second, Relay: "relay-a"})
		return fixture{b: r, clock: clk, advance: clk.Advance}
	})
}

func TestConformanceRedisCluster(t *testing.T) {
	srv := startCluster(t)
	runConformance(t, func(t *testing.T) fixture {
		clk := newFakeClock()
		// Two addresses make a cluster client (the same node twice).
		r := openRedis(t, RedisOptions{Addrs: []string{srv.Addr(), srv.Addr()}, Prefix: keyPrefix(t), Now: clk.Now,
			Timeout: 2 * time.Second, Relay: "relay-a"})
		return fixture{b: r, clock: clk, advance: clk.Advance}
	})
}

// greyDurations are the greylist delay, retry window and keep of the
// conformance cases.
type greyDurations struct{ delay, retry, keep time.Duration }

// greyTimes returns realistic durations for a backend whose clock the
// test moves, and short ones for a server whose clock runs on its own
// (the window wide enough for a slow machine).
func greyTimes(f fixture) greyDurations {
	if f.serverClock {
		return greyDurations{delay: 5 * time.Minute, retry: 4 * time.Hour, keep: 36 * 24 * time.Hour}
	}
	return greyDurations{delay: 200 * time.Millisecond, retry: 1500 * time.Millisecond, keep: 600 * time.Millisecond}
}

// greyUntilPass retries key until it passes, on a server whose clock runs
// on its own: the retries before the delay change nothing.
func greyUntilPass(t *testing.T, f fixture, key string, g greyDurations) Grey {
	t.Helper()
	var gr Grey
	testutil.WaitFor(t, "the greylist delay to pass", func() bool {
		var err error
		gr, err = f.b.Greylist(context.Background(), key, g.delay, g.retry, g.keep)
		if err != nil {
			t.Fatalf("greylist %s: %v", key, err)
		}
		return gr.Pass
	})
	return gr
}

// greyPass makes key a triplet that has passed.
func greyPass(t *testing.T, f fixture, key string, g greyDurations) {
	t.Helper()
	ctx := context.Background()
	gr, err := f.b.Greylist(ctx, key, g.delay, g.retry, g.keep)
	if err != nil || !gr.New {
		t.Fatalf("first attempt of %s: %+v, %v", key, gr, err)
	}
	if f.serverClock {
		f.advance(g.delay)
		gr, err = f.b.Greylist(ctx, key, g.delay, g.retry, g.keep)
		if err != nil {
			t.Fatalf("greylist %s: %v", key, err)
		}
	} else {
		gr = greyUntilPass(t, f, key, g)
	}
	if !gr.Pass || !gr.FirstPass {
		t.Fatalf("retry of %s after the delay: %+v", key, gr)
	}
}

// errorsIsUnavailable is errors.Is(err, ErrUnavailable), for is.True.
func errorsIsUnavailable(err error) bool { return errors.Is(err, ErrUnavailable) }
