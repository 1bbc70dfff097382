package webauth

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/smtp-interceptor/smtp-interceptor/internal/testutil"
)

// op is one step of a limiter test.
type op struct {
	do      string // "fail", "ok", "allow", "deny", "advance"
	ip      string
	user    string
	times   int           // fail: how many; 0 is 1
	d       time.Duration // advance: how long; deny: the retry-after wanted
	comment string
}

func TestLimiter(t *testing.T) {
	const a, b = "192.0.2.1", "192.0.2.2"
	w := DefaultWindow
	for _, tc := range []struct {
		name string
		ops  []op
	}{
		{"five from an address", []op{
			{do: "fail", ip: a, user: "alice", times: 4},
			{do: "allow", ip: a, user: "alice"},
			{do: "fail", ip: a, user: "alice"},
			{do: "deny", ip: a, user: "alice", d: w},
			{do: "deny", ip: a, user: "bob", d: w, comment: "any name from the address"},
			{do: "allow", ip: b, user: "alice", comment: "the name has failed 5 times of 10"},
		}},
		{"the window slides", []op{
			{do: "fail", ip: a, user: "alice"},
			{do: "advance", d: 5 * time.Minute},
			{do: "fail", ip: a, user: "alice", times: 4},
			{do: "deny", ip: a, user: "alice", d: 10 * time.Minute},
			{do: "advance", d: 10*time.Minute - time.Second},
			{do: "deny", ip: a, user: "alice", d: time.Second},
			{do: "advance", d: time.Second},
			{do: "allow", ip: a, user: "alice", comment: "the first failure left the window"},
			{do: "fail", ip: a, user: "alice"},
			{do: "deny", ip: a, user: "alice", d: 5 * time.Minute, comment: "until the second leaves"},
			{do: "advance", d: 5 * time.Minute},
			{do: "allow", ip: a, user: "alice"},
		}},
		{"ten for a name", []op{
			{do: "fail", ip: a, user: "alice", times: 4},
			{do: "fail", ip: b, user: "alice", times: 4},
			{do: "fail", ip: "198.51.100.7", user: "alice", times: 1},
			{do: "allow", ip: "203.0.113.9", user: "alice"},
			{do: "fail", ip: "203.0.113.9", user: "alice", times: 1},
			{do: "deny", ip: "203.0.113.10", user: "alice", d: w, comment: "from any address"},
			{do: "allow", ip: "203.0.113.10", user: "bob"},
			{do: "advance", d: w},
			{do: "allow", ip: "203.0.113.10", user: "alice"},
		}},
		{"the longer wait wins", []op{
			{do: "fail", ip: a, user: "alice", times: 5},
			{do: "advance", d: 5 * time.Minute},
			{do: "fail", ip: b, user: "alice", times: 5},
			{do: "deny", ip: b, user: "alice", d: w, comment: "the address's wait, longer than the name's"},
			{do: "deny", ip: "192.0.2.9", user: "alice", d: 10 * time.Minute, comment: "the name's alone"},
			{do: "deny", ip: a, user: "bob", d: 10 * time.Minute, comment: "the address's alone"},
		}},
		{"success clears the address", []op{
			{do: "fail", ip: a, user: "alice", times: 5},
			{do: "fail", ip: b, user: "alice", times: 4},
			{do: "ok", ip: a, user: "alice"},
			{do: "allow", ip: a, user: "bob"},
			{do: "fail", ip: a, user: "alice"},
			{do: "deny", ip: b, user: "alice", d: w, comment: "the name's failures stay: 10"},
		}},
		{"an IPv6 client counts by its /64", []op{
			{do: "fail", ip: "2001:db8:1:2::1", user: "alice", times: 3},
			{do: "fail", ip: "2001:db8:1:2:ffff::9", user: "bob", times: 2},
			{do: "deny", ip: "2001:db8:1:2::77", user: "carol", d: w},
			{do: "allow", ip: "2001:db8:1:3::1", user: "carol"},
			{do: "allow", ip: "fe80::1%eth0", user: "carol"},
		}},
		{"an IPv4-mapped address is the IPv4 one", []op{
			{do: "fail", ip: "::ffff:192.0.2.1", user: "alice", times: 5},
			{do: "deny", ip: a, user: "carol", d: w},
		}},
		{"long names count as one", []op{
			{do: "fail", ip: a, user: strings.Repeat("x", 65), times: 4},
			{do: "fail", ip: b, user: strings.Repeat("y", 100), times: 4},
			{do: "fail", ip: "192.0.2.3", user: strings.Repeat("z", 1000), times: 2},
			{do: "deny", ip: "192.0.2.4", user: strings.Repeat("w", 70), d: w},
			{do: "allow", ip: "192.0.2.4", user: strings.Repeat("w", 64)},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			clock := testutil.NewClock(t0)
			l := NewLimiter(LimiterOptions{Now: clock.Now})
			for i, o := range tc.ops {
				var ip netip.Addr
				if o.ip != "" {
					ip = netip.MustParseAddr(o.ip)
				}
				what := fmt.Sprintf("op %d (%s %s %.10s) %s", i, o.do, o.ip, o.user, o.comment)
				switch o.do {
				case "fail":
					for range max(o.times, 1) {
						l.Failure(ip, o.user)
					}
				case "ok":
					l.Success(ip, o.user)
				case "advance":
					clock.Advance(o.d)
				case "allow", "deny":
					ok, retry := l.Allow(ip, o.user)
					if ok != (o.do == "allow") || retry != o.d {
						t.Fatalf("%s: Allow = %v, %s; want %v, %s", what, ok, retry, o.do == "allow", o.d)
					}
				default:
					is.Fail() // unknown op
				}
			}
		})
	}
}

func TestLimiterOptions(t *testing.T) {
	is := is.New(t)
	clock := testutil.NewClock(t0)
	l := NewLimiter(LimiterOptions{Now: clock.Now, IPFailures: 2, UserFailures: 3, Window: time.Minute})
	ip := netip.MustParseAddr("192.0.2.1")
	l.Failure(ip, "alice")
	ok, _ := l.Allow(ip, "alice")
	is.True(ok)
	l.Failure(ip, "alice")
	ok, retry := l.Allow(ip, "alice")
	is.True(!ok)
	is.Equal(retry, time.Minute)
	l.Failure(netip.MustParseAddr("192.0.2.2"), "alice")
	ok, _ = l.Allow(netip.MustParseAddr("192.0.2.3"), "alice")
	is.True(!ok) // 3 for the name
	clock.Advance(time.Minute)
	ok, _ = l.Allow(ip, "alice")
	is.True(ok)
}

func TestLimiterEviction(t *testing.T) {
	is := is.New(t)
	clock := testutil.NewClock(t0)
	l := NewLimiter(LimiterOptions{Now: clock.Now, IPFailures: 1, UserFailures: 1, MaxKeys: 3})
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}) }
	for i := 1; i <= 3; i++ {
		l.Failure(addr(i), fmt.Sprint("u", i))
		clock.Advance(time.Second)
	}
	l.Failure(addr(1), "u1") // 1 failed again: now the most recent
	l.Failure(addr(4), "u4") // evicts 2, the least recently failed
	is.Equal(len(l.ips.byKey), 3)
	is.Equal(len(l.users.byKey), 3)
	for _, tc := range []struct {
		i  int
		ok bool
	}{{1, false}, {2, true}, {3, false}, {4, false}} {
		ok, _ := l.Allow(addr(tc.i), "someone")
		is.Equal(ok, tc.ok) // the address
		ok, _ = l.Allow(addr(100), fmt.Sprint("u", tc.i))
		is.Equal(ok, tc.ok) // the name
	}

	// Keys whose failures all left the window are forgotten on the next
	// failure.
	clock.Advance(DefaultWindow)
	l.Failure(addr(5), "u5")
	is.Equal(len(l.ips.byKey), 1)
	is.Equal(len(l.users.byKey), 1)

	// A flood of new names does not push out the addresses.
	for i := range 1000 {
		l.Failure(addr(6), fmt.Sprint("flood", i))
	}
	is.Equal(len(l.users.byKey), 3)
	_, ok := l.ips.byKey[ipKey(addr(5))]
	is.True(ok)
}

func TestLimiterConcurrent(t *testing.T) {
	l := NewLimiter(LimiterOptions{MaxKeys: 20})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				ip := netip.AddrFrom4([4]byte{10, byte(g), 0, byte(i % 50)})
				user := fmt.Sprint("u", i%30)
				if ok, _ := l.Allow(ip, user); ok {
					l.Failure(ip, user)
				}
				if i%7 == 0 {
					l.Success(ip, user)
				}
			}
		})
	}
	wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.ips.byKey) > 20 || len(l.users.byKey) > 20 || l.ips.order.Len() != len(l.ips.byKey) {
		t.Errorf("kept %d addresses (%d in order) and %d names, want at most 20", len(l.ips.byKey), l.ips.order.Len(), len(l.users.byKey))
	}
}
