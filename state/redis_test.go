package state

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/matryer/is"
	"github.com/redis/go-redis/v9"

	"github.com/smtp-interceptor/smtp-interceptor/internal/testutil"
	redistest "github.com/smtp-interceptor/smtp-interceptor/internal/testutil/redis"
)

// startCluster runs a one-node Redis Cluster (all slots on one server):
// enough to prove that the multi-key scripts keep to one slot.
func startCluster(t *testing.T) *redistest.Server {
	t.Helper()
	srv := redistest.Start(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer c.Close()
	ctx := context.Background()
	if err := c.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", 0, 16383).Err(); err != nil {
		t.Fatalf("assign cluster slots: %v", err)
	}
	testutil.WaitFor(t, "cluster state ok", func() bool {
		info, err := c.ClusterInfo(ctx).Result()
		return err == nil && strings.Contains(info, "cluster_state:ok")
	})
	return srv
}

func TestOpenRedisOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    RedisOptions
	}{
		{"no address", RedisOptions{}},
		{"brace in prefix", RedisOptions{Addrs: []string{"127.0.0.1:1"}, Prefix: "smtpi:{x}:"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := OpenRedis(tc.o)
			is.New(t).True(err != nil)
		})
	}
}

// TestRedisTwoRelays: two relays on one server share bans (in force on the
// other within 1s, through the events: the resync is an hour away), rate
// limits, refusal counts, greylist triplets and pass counts, and
// statistics.
func TestRedisTwoRelays(t *testing.T) {
	ctx := context.Background()
	for _, srv := range []struct {
		name string
		opts func(t *testing.T) RedisOptions
	}{
		{"miniredis", func(t *testing.T) RedisOptions {
			return RedisOptions{Addrs: []string{startMiniredis(t).Addr()}}
		}},
		{"redis-server", func(t *testing.T) RedisOptions {
			return RedisOptions{Addrs: []string{redistest.Start(t).Addr()}}
		}},
		{"cluster", func(t *testing.T) RedisOptions {
			a := startCluster(t).Addr()
			return RedisOptions{Addrs: []string{a, a}}
		}},
		{"sentinel", func(t *testing.T) RedisOptions {
			s := redistest.StartSentinel(t, redistest.Start(t), "mymaster")
			return RedisOptions{Addrs: []string{s.Addr()}, MasterName: "mymaster"}
		}},
	} {
		t.Run(srv.name, func(t *testing.T) {
			is := is.New(t)
			o := srv.opts(t)
			o.ResyncInterval, o.Timeout = time.Hour, 2*time.Second
			o.Relay = "relay-a"
			a := openRedis(t, o)
			o.Relay = "relay-b"
			b := openRedis(t, o)
			is.True(a.Up())
			is.True(b.Up())

			ip := netip.MustParseAddr("192.0.2.1")
			is.NoErr(a.AddBan(ctx, Ban{Prefix: netip.MustParsePrefix("192.0.2.0/24"), Reason: "r1",
				Creator: "autoban@relay-a", Refusals: []string{"550 a", "550 b"}}))
			waitWithin(t, time.Second, "ban from A in force on B", func() bool {
				_, ok := b.Banned(ip)
				return ok
			})
			got, _ := b.Banned(ip)
			is.Equal(got.Creator, "autoban@relay-a")
			is.Equal(got.Refusals, []string{"550 a", "550 b"})

			is.NoErr(a.AddBan(ctx, Ban{Prefix: netip.MustParsePrefix("192.0.2.0/24"), Reason: "r2"}))
			waitWithin(t, time.Second, "replacement from A on B", func() bool {
				b, _ := b.Banned(ip)
				return b.Reason == "r2"
			})

			removed, err := b.RemoveBan(ctx, netip.MustParsePrefix("192.0.2.0/24"))
			is.NoErr(err)
			is.True(removed)
			waitWithin(t, time.Second, "removal from B on A", func() bool {
				_, ok := a.Banned(ip)
				return !ok
			})

			for range 5 {
				for _, r := range []*Redis{a, b} {
					d, err := r.Allow(ctx, "fleet", 10, time.Minute, 1)
					is.NoErr(err)
					is.True(d.Allowed)
				}
			}
			for _, r := range []*Redis{a, b} {
				d, err := r.Allow(ctx, "fleet", 10, time.Minute, 1)
				is.NoErr(err)
				is.True(!d.Allowed) // ten in all, wherever they came from
			}

			n, _, err := a.CountRefusal(ctx, "ip:192.0.2.9", time.Hour, "from a")
			is.NoErr(err)
			is.Equal(n, 1)
			n, recent, err := b.CountRefusal(ctx, "ip:192.0.2.9", time.Hour, "from b")
			is.NoErr(err)
			is.Equal(n, 2)
			is.Equal(recent, []string{"from a", "from b"})

			// A first attempt on A, the retry on B passes; A then knows
			// the triplet as passed.
			const grey, delay = "192.0.2.0/24|a@example.org|b@example.net", 100 * time.Millisecond
			gr, err := a.Greylist(ctx, grey, delay, time.Minute, time.Hour)
			is.NoErr(err)
			is.Equal(gr, Grey{New: true, Wait: delay})
			testutil.WaitFor(t, "the retry on B to pass", func() bool {
				gr, err = b.Greylist(ctx, grey, delay, time.Minute, time.Hour)
				is.NoErr(err)
				is.True(!gr.New) // B knows the first attempt
				return gr.Pass
			})
			is.True(gr.FirstPass)
			is.True(gr.Delayed >= delay)
			gr2, err := a.Greylist(ctx, grey, delay, time.Minute, time.Hour)
			is.NoErr(err)
			is.Equal(gr2, Grey{Pass: true, Delayed: gr.Delayed})
			for _, r := range []*Redis{a, b} {
				n, err := r.GreylistTriplets(ctx)
				is.NoErr(err)
				is.Equal(n, 1)
			}
			n, err = a.GreylistPassed(ctx, "192.0.2.0/24", 1, time.Hour)
			is.NoErr(err)
			is.Equal(n, 1)
			n, err = b.GreylistPassed(ctx, "192.0.2.0/24", 1, time.Hour)
			is.NoErr(err)
			is.Equal(n, 2)

			is.NoErr(a.PublishStats(ctx, "relay-a", []byte("A"), time.Minute))
			is.NoErr(b.PublishStats(ctx, "relay-b", []byte("B"), time.Minute))
			for _, r := range []*Redis{a, b} {
				st, err := r.FleetStats(ctx)
				is.NoErr(err)
				is.Equal(st, map[string][]byte{"relay-a": []byte("A"), "relay-b": []byte("B")})
			}
		})
	}
}

// TestRedisResyncRepairs: changes made in Redis without an event reach the
// replica with the next resync; an unreadable entry is logged once.
func TestRedisResyncRepairs(t *testing.T) {
	is := is.New(t)
	m := startMiniredis(t)
	log, rec := newRecorder(t)
	a := openRedis(t, RedisOptions{Addrs: []string{m.Addr()}, ResyncInterval: 20 * time.Millisecond,
		Timeout: 2 * time.Second, Logger: log})
	ip := netip.MustParseAddr("198.51.100.7")
	js, err := json.Marshal(Ban{Prefix: netip.MustParsePrefix("198.51.100.0/24"), Reason: "direct"})
	is.NoErr(err)
	m.HSet("smtpi:{bans}", "198.51.100.0/24", string(js)) // no event published
	testutil.WaitFor(t, "resync to bring the direct ban", func() bool {
		b, ok := a.Banned(ip)
		return ok && b.Reason == "direct"
	})

	m.HSet("smtpi:{bans}", "203.0.113.0/24", "not json")
	m.HSet("smtpi:{bans}", "203.0.114.0/24", string(js)) // prefix does not match the field
	m.HDel("smtpi:{bans}", "198.51.100.0/24")
	testutil.WaitFor(t, "resync to drop the deleted ban", func() bool {
		_, ok := a.Banned(ip)
		return !ok
	})
	// Several resyncs later, the bad entries were logged once each.
	m.HSet("smtpi:{bans}", "198.51.100.0/24", string(js))
	testutil.WaitFor(t, "another resync", func() bool {
		_, ok := a.Banned(ip)
		return ok
	})
	is.Equal(rec.count(slog.LevelError, "state: ignoring unreadable ban"), 2)
	is.Equal(len(a.Bans()), 1)
}

// TestRedisExpiredBansPurged: expired bans stop matching at once (local
// check) and are deleted from Redis by the next resync.
func TestRedisExpiredBansPurged(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	m := startMiniredis(t)
	clk := newFakeClock()
	a := openRedis(t, RedisOptions{Addrs: []string{m.Addr()}, ResyncInterval: 20 * time.Millisecond,
		Timeout: 2 * time.Second, Now: clk.Now})
	is.NoErr(a.AddBan(ctx, Ban{Prefix: netip.MustParsePrefix("192.0.2.1/32"), Expires: clk.Now().Add(time.Minute)}))
	is.NoErr(a.AddBan(ctx, Ban{Prefix: netip.MustParsePrefix("192.0.2.2/32")}))
	members, err := m.ZMembers("smtpi:{bans}:expiry")
	is.NoErr(err)
	is.Equal(members, []string{"192.0.2.1/32"}) // only the ban that expires is indexed
	clk.Advance(time.Minute)
	_, ok := a.Banned(netip.MustParseAddr("192.0.2.1"))
	is.True(!ok)
	testutil.WaitFor(t, "the expired ban to be deleted from redis", func() bool {
		keys, err := m.HKeys("smtpi:{bans}")
		return err == nil && len(keys) == 1 && keys[0] == "192.0.2.2/32"
	})
	is.True(!m.Exists("smtpi:{bans}:expiry"))
}

// TestRedisGCRAMatchesMemory: the Lua GCRA and the Go one decide alike on
// a random sequence of requests.
func TestRedisGCRAMatchesMemory(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	clk := newFakeClock()
	m := startMiniredis(t)
	m.SetTime(clk.Now())
	m.ClockTTL(true)
	r := openRedis(t, RedisOptions{Addrs: []string{m.Addr()}, Now: clk.Now, Timeout: 2 * time.Second})
	mem, err := OpenMemory(MemoryOptions{Now: clk.Now, Logger: testutil.Logger(t)})
	is.NoErr(err)
	t.Cleanup(func() { _ = mem.Close() })
	rnd := rand.New(rand.NewPCG(1, 2))
	allowed := 0
	for i := range 300 {
		cost := rnd.IntN(4)
		dm, err := mem.Allow(ctx, "k", 10, time.Minute, cost)
		is.NoErr(err)
		dr, err := r.Allow(ctx, "k", 10, time.Minute, cost)
		is.NoErr(err)
		if dm != dr {
			t.Fatalf("step %d, cost %d: memory %+v, redis %+v", i, cost, dm, dr)
		}
		if dm.Allowed {
			allowed++
		}
		clk.Advance(time.Duration(rnd.IntN(8000)) * time.Millisecond)
		m.SetTime(clk.Now())
	}
	is.True(allowed > 50)  // the sequence exercised both outcomes
	is.True(allowed < 290) // ...
}

// faultBackend opens a backend whose outage the test provokes, with a
// fake clock for the once-a-minute warning, a log recorder and an OnUp
// recorder.
type faultBackend struct {
	r     *Redis
	clk   *fakeClock
	rec   *recorder
	ups   *upRecorder
	bound time.Duration // what "returns quickly" means: 20 Timeouts
}

func openFault(t *testing.T, addr string) faultBackend {
	const timeout = 100 * time.Millisecond
	clk := newFakeClock()
	log, rec := newRecorder(t)
	ups := &upRecorder{}
	start := time.Now()
	r := openRedis(t, RedisOptions{Addrs: []string{addr}, Timeout: timeout, ResyncInterval: time.Hour,
		Now: clk.Now, Logger: log, OnUp: ups.OnUp, Relay: "relay-a"})
	if d := time.Since(start); d > 20*timeout {
		t.Fatalf("OpenRedis took %s", d)
	}
	return faultBackend{r: r, clk: clk, rec: rec, ups: ups, bound: 20 * timeout}
}

// checkDown checks that every method fails with ErrUnavailable within the
// bound, that Up is false, and that the replica still answers for ip.
func (f faultBackend) checkDown(t *testing.T, ip string) {
	t.Helper()
	is := is.NewRelaxed(t)
	ctx := context.Background()
	calls := map[string]func() error{
		"AddBan": func() error {
			return f.r.AddBan(ctx, Ban{Prefix: netip.MustParsePrefix("203.0.113.0/24")})
		},
		"RemoveBan": func() error {
			_, err := f.r.RemoveBan(ctx, netip.MustParsePrefix("203.0.113.0/24"))
			return err
		},
		"CountRefusal": func() error {
			_, _, err := f.r.CountRefusal(ctx, "k", time.Minute, "d")
			return err
		},
		"ResetRefusals": func() error { return f.r.ResetRefusals(ctx, "k") },
		"Allow": func() error {
			_, err := f.r.Allow(ctx, "k", 10, time.Minute, 1)
			return err
		},
		"Greylist": func() error {
			_, err := f.r.Greylist(ctx, "192.0.2.0/24|a@example.org|b@example.net", time.Minute, time.Hour, time.Hour)
			return err
		},
		"GreylistPassed": func() error {
			_, err := f.r.GreylistPassed(ctx, "192.0.2.0/24", 1, time.Hour)
			return err
		},
		"GreylistTriplets": func() error {
			_, err := f.r.GreylistTriplets(ctx)
			return err
		},
		"PublishStats": func() error { return f.r.PublishStats(ctx, "relay-a", []byte("x"), time.Minute) },
		"FleetStats": func() error {
			_, err := f.r.FleetStats(ctx)
			return err
		},
	}
	for range 3 {
		for name, call := range calls {
			start := time.Now()
			err := call()
			if d := time.Since(start); d > f.bound {
				t.Errorf("%s took %s while Redis is down", name, d)
			}
			if !errors.Is(err, ErrUnavailable) {
				t.Errorf("%s: got %v, want ErrUnavailable", name, err)
			}
		}
	}
	is.True(!f.r.Up())
	if ip != "" {
		_, ok := f.r.Banned(netip.MustParseAddr(ip))
		is.True(ok) // the replica still answers
		is.True(len(f.r.Bans()) > 0)
	}
}

func (f faultBackend) warnings() int { return f.rec.count(slog.LevelWarn, "state backend unreachable") }
func (f faultBackend) recoveries() int {
	return f.rec.count(slog.LevelInfo, "state backend reachable again")
}

// TestRedisFaultErrorReplies: Redis answers every command with an error
// (miniredis SetError): calls fail fast, Up turns false with one OnUp and
// one warning a minute however many calls fail, the replica answers, and
// the backend recovers by itself when Redis does.
func TestRedisFaultErrorReplies(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	m := startMiniredis(t)
	f := openFault(t, m.Addr())
	is.True(f.r.Up())
	is.NoErr(f.r.AddBan(ctx, Ban{Prefix: netip.MustParsePrefix("192.0.2.0/24")}))

	m.SetError("LOADING Redis is loading the dataset in memory")
	var wg sync.WaitGroup
	errs := make([]error, 16)
	start := time.Now()
	for i := range errs { // many calls fail at once: one transition
		wg.Go(func() { _, errs[i] = f.r.Allow(ctx, "k", 10, time.Minute, 1) })
	}
	wg.Wait()
	is.True(time.Since(start) < f.bound)
	for _, err := range errs {
		is.True(errorsIsUnavailable(err))
	}
	is.Equal(f.ups.get(), []bool{true, false})
	is.Equal(f.warnings(), 1)
	f.checkDown(t, "192.0.2.1")

	testutil.WaitFor(t, "three failed reconnections", func() bool {
		return f.rec.count(slog.LevelDebug, "state backend: reconnect failed") >= 3
	})
	f.checkDown(t, "192.0.2.1")
	is.Equal(f.warnings(), 1) // one warning, not one per call
	is.Equal(f.ups.get(), []bool{true, false})

	f.clk.Advance(time.Minute) // still down a minute later: one more warning
	testutil.WaitFor(t, "the warning of the next minute", func() bool { return f.warnings() == 2 })

	m.SetError("")
	testutil.WaitFor(t, "recovery", f.r.Up)
	is.Equal(f.ups.get(), []bool{true, false, true})
	is.Equal(f.recoveries(), 1)
	is.NoErr(f.r.AddBan(ctx, Ban{Prefix: netip.MustParsePrefix("203.0.113.0/24")}))
	is.Equal(len(f.r.Bans()), 2)
	is.Equal(f.warnings(), 2)
}

// TestRedisFaultServerGone: the server closes (every connection drops) and
// a new one starts on the same address, empty: the backend notices without
// a call, recovers without a new backend, and its replica follows the new
// server, Redis being authoritative.
func TestRedisFaultServerGone(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	m := startMiniredis(t)
	addr := m.Addr()
	f := openFault(t, addr)
	is.NoErr(f.r.AddBan(ctx, Ban{Prefix: netip.MustParsePrefix("192.0.2.0/24")}))

	m.Close()
	testutil.WaitFor(t, "the backend to notice", func() bool { return !f.r.Up() })
	f.checkDown(t, "192.0.2.1")
	testutil.WaitFor(t, "failed reconnections", func() bool {
		return f.rec.count(slog.LevelDebug, "state backend: reconnect failed") >= 2
	})
	is.Equal(f.warnings(), 1)

	m2 := miniredis.NewMiniRedis()
	is.NoErr(m2.StartAddr(addr))
	t.Cleanup(m2.Close)
	testutil.WaitFor(t, "recovery", f.r.Up)
	is.Equal(f.ups.get(), []bool{true, false, true})
	is.Equal(f.recoveries(), 1)
	is.Equal(len(f.r.Bans()), 0) // resynchronised with the empty server
	is.NoErr(f.r.AddBan(ctx, Ban{Prefix: netip.MustParsePrefix("203.0.113.0/24")}))
	is.True(m2.Exists("smtpi:{bans}"))
}

// TestRedisFaultDownAtStart: OpenRedis succeeds with nothing listening,
// and the backend comes up when Redis does.
func TestRedisFaultDownAtStart(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	is.NoErr(err)
	addr := l.Addr().String()
	is.NoErr(l.Close()) // nothing listens there now

	f := openFault(t, addr)
	is.True(!f.r.Up())
	is.Equal(f.ups.get(), []bool{false})
	is.Equal(f.warnings(), 1)
	f.checkDown(t, "")
	is.Equal(len(f.r.Bans()), 0)

	m := miniredis.NewMiniRedis()
	is.NoErr(m.StartAddr(addr))
	t.Cleanup(m.Close)
	testutil.WaitFor(t, "the backend to come up", f.r.Up)
	is.Equal(f.ups.get(), []bool{false, true})
	is.Equal(f.recoveries(), 1)
	is.NoErr(f.r.AddBan(ctx, Ban{Prefix: netip.MustParsePrefix("192.0.2.0/24")}))
	_, ok := f.r.Banned(netip.MustParseAddr("192.0.2.1"))
	is.True(ok)
}

// stallProxy forwards TCP to a target until stalled: then it holds every
// byte (Redis "slow": connections open, no answer) until resumed.
type stallProxy struct {
	l      net.Listener
	target string

	mu    sync.Mutex
	gate  chan struct{} // closed while forwarding
	conns []net.Conn
}

func startProxy(t *testing.T, target string, stalled bool) *stallProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	p := &stallProxy{l: l, target: target, gate: make(chan struct{})}
	if !stalled {
		close(p.gate)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		_ = l.Close()
		p.Resume()
		p.mu.Lock()
		for _, c := range p.conns {
			_ = c.Close()
		}
		p.mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); p.pipe(u, c) }()
			go func() { defer wg.Done(); p.pipe(c, u) }()
		}
	}()
	return p
}

func (p *stallProxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			gate := p.gate
			p.mu.Unlock()
			<-gate
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return // EOF or closed: the deferred closes end the other side
		}
	}
}

func (p *stallProxy) Addr() string { return p.l.Addr().String() }

// Stall stops forwarding.
func (p *stallProxy) Stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.gate:
		p.gate = make(chan struct{})
	default:
	}
}

// Resume forwards again.
func (p *stallProxy) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.gate:
	default:
		close(p.gate)
	}
}

// TestRedisFaultSlow: Redis accepts connections but does not answer (in
// the middle of a run, and at start): calls fail within the bound, Up
// turns false, and the backend recovers when Redis answers again.
func TestRedisFaultSlow(t *testing.T) {
	ctx := context.Background()
	t.Run("mid-run", func(t *testing.T) {
		is := is.New(t)
		m := startMiniredis(t)
		p := startProxy(t, m.Addr(), false)
		f := openFault(t, p.Addr())
		is.True(f.r.Up())
		is.NoErr(f.r.AddBan(ctx, Ban{Prefix: netip.MustParsePrefix("192.0.2.0/24")}))

		p.Stall()
		start := time.Now()
		err := f.r.AddBan(ctx, Ban{Prefix: netip.MustParsePrefix("198.51.100.0/24")})
		is.True(time.Since(start) < f.bound)
		is.True(errorsIsUnavailable(err))
		f.checkDown(t, "192.0.2.1")
		is.Equal(f.warnings(), 1)

		p.Resume()
		testutil.WaitFor(t, "recovery", f.r.Up)
		is.Equal(f.ups.get(), []bool{true, false, true})
		d, err := f.r.Allow(ctx, "k", 10, time.Minute, 1)
		is.NoErr(err)
		is.True(d.Allowed)
	})
	t.Run("at start", func(t *testing.T) {
		is := is.New(t)
		m := startMiniredis(t)
		p := startProxy(t, m.Addr(), true)
		f := openFault(t, p.Addr()) // checks that OpenRedis returns within the bound
		is.True(!f.r.Up())
		f.checkDown(t, "")
		p.Resume()
		testutil.WaitFor(t, "the backend to come up", f.r.Up)
		is.Equal(f.ups.get(), []bool{false, true})
	})
}

// TestRedisServerStopRestart: a real redis-server killed mid-run and
// started again on the same port. Without persistence the restarted
// server is empty and so become the replicas; with an AOF the bans
// survive.
func TestRedisServerStopRestart(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		args     []string
		keepsBan bool
	}{
		{"no persistence", nil, false},
		{"append-only file", []string{"--appendonly", "yes", "--appendfsync", "always"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			srv := redistest.Start(t, tc.args...)
			o := RedisOptions{Addrs: []string{srv.Addr()}, Timeout: 500 * time.Millisecond, ResyncInterval: time.Hour}
			o.Relay = "relay-a"
			a := openRedis(t, o)
			o.Relay = "relay-b"
			b := openRedis(t, o)
			ip1, ip2 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("198.51.100.1")
			is.NoErr(a.AddBan(ctx, Ban{Prefix: netip.MustParsePrefix("192.0.2.0/24")}))
			waitWithin(t, time.Second, "ban on B", func() bool { _, ok := b.Banned(ip1); return ok })

			srv.Stop()
			testutil.WaitFor(t, "both relays to notice", func() bool { return !a.Up() && !b.Up() })
			start := time.Now()
			err := a.AddBan(ctx, Ban{Prefix: netip.MustParsePrefix("198.51.100.0/24")})
			is.True(errorsIsUnavailable(err))
			is.True(time.Since(start) < 20*o.Timeout)
			_, ok := b.Banned(ip1)
			is.True(ok) // from the replica

			srv.Restart()
			testutil.WaitFor(t, "both relays to reconnect", func() bool { return a.Up() && b.Up() })
			is.NoErr(a.AddBan(ctx, Ban{Prefix: netip.MustParsePrefix("198.51.100.0/24")}))
			waitWithin(t, time.Second, "new ban on B", func() bool { _, ok := b.Banned(ip2); return ok })
			_, ok = b.Banned(ip1)
			is.Equal(ok, tc.keepsBan)
		})
	}
}

// TestRedisClose: Close returns promptly, is idempotent, and the methods
// fail afterwards.
func TestRedisClose(t *testing.T) {
	is := is.New(t)
	m := startMiniredis(t)
	r, err := OpenRedis(RedisOptions{Addrs: []string{m.Addr()}, Logger: testutil.Logger(t), Timeout: 2 * time.Second})
	is.NoErr(err)
	is.True(r.Up())
	is.NoErr(r.Close())
	is.NoErr(r.Close())
	is.True(r.AddBan(context.Background(), Ban{Prefix: netip.MustParsePrefix("192.0.2.0/24")}) != nil)
}
