package dnsclient

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matryer/is"
	"github.com/miekg/dns"

	"github.com/smtp-interceptor/smtp-interceptor/rules"

	"github.com/smtp-interceptor/smtp-interceptor/internal/testutil"
)

// suspensions records OnSuspend calls.
type suspensions struct {
	mu    sync.Mutex
	calls []string
}

func (s *suspensions) record(zone string, suspended bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if suspended {
		s.calls = append(s.calls, "suspend "+zone)
	} else {
		s.calls = append(s.calls, "restore "+zone)
	}
}

func (s *suspensions) get() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.calls...)
}

func TestProbe(t *testing.T) {
	tests := []struct {
		name          string
		set           func(f *Fake)
		wantTest      bool
		wantLocalhost bool
		wantAnswer    []netip.Addr
		wantErr       bool
		wantSuspended bool
		wantString    string
		wantCalls     []string
	}{
		{
			name:       "healthy list",
			set:        func(f *Fake) { f.List(zone, "127.0.0.2", "test entry", "127.0.0.2") },
			wantTest:   true,
			wantString: "zen.test: ok (127.0.0.2 listed, 127.0.0.1 not listed)",
		},
		{
			name: "list that lists 127.0.0.1 is suspended",
			set: func(f *Fake) {
				f.List(zone, "127.0.0.2", "", "127.0.0.2")
				f.List(zone, "127.0.0.1", "", "127.0.0.2")
			},
			wantTest: true, wantLocalhost: true, wantAnswer: addrs("127.0.0.2"), wantSuspended: true,
			wantString: "zen.test: SUSPENDED: lists 127.0.0.1 (127.0.0.2), it would refuse everyone",
			wantCalls:  []string{"suspend zen.test"},
		},
		{
			name: "list that answers 127.0.0.1 with an error code is suspended",
			set: func(f *Fake) {
				f.List(zone, "127.0.0.2", "", "127.255.255.254")
				f.List(zone, "127.0.0.1", "", "127.255.255.254")
			},
			wantTest: true, wantLocalhost: true, wantAnswer: addrs("127.255.255.254"), wantSuspended: true,
			wantString: "zen.test: SUSPENDED: answers 127.0.0.1 with error code 127.255.255.254, it refuses our queries (public resolver, or over quota?)",
			wantCalls:  []string{"suspend zen.test"},
		},
		{
			name:       "list missing the test entry 127.0.0.2 is only warned about",
			wantString: "zen.test: warning: does not list the test entry 127.0.0.2",
		},
		{
			name:       "probe that fails changes nothing",
			set:        func(f *Fake) { f.SetIP(zone, "127.0.0.1", Entry{Rcode: dns.RcodeServerFailure}) },
			wantErr:    true,
			wantString: "zen.test: probe failed: query 1.0.0.127.zen.test. A: resolver answered SERVFAIL",
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
			var sus suspensions
			c := newTestClient(t, addr, Options{CacheEntries: 10, MinTTL: time.Hour, OnSuspend: sus.record})

			res := c.Probe(context.Background(), "Zen.Test.")
			t.Log(res)
			is.Equal(res.Zone, zone)
			is.Equal(res.ListsTestEntry, tt.wantTest)
			is.Equal(res.ListsLocalhost, tt.wantLocalhost)
			is.Equal(res.Answer127_0_0_1, tt.wantAnswer)
			is.Equal(res.Err != nil, tt.wantErr)
			is.Equal(res.Suspended, tt.wantSuspended)
			is.Equal(c.Suspended(zone), tt.wantSuspended)
			is.Equal(res.String(), tt.wantString)
			is.Equal(sus.get(), tt.wantCalls)

			// Probes bypass the cache: a second probe asks again.
			before := queries.Total()
			c.Probe(context.Background(), zone)
			is.True(queries.Total() > before)
			is.Equal(c.CacheLen(), 0)
		})
	}
}

func TestSuspendAndRestore(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	client := netip.MustParseAddr("192.0.2.77")
	clientName := queryName(zone, client)
	f := NewFake()
	f.List(zone, "127.0.0.2", "", "127.0.0.2")
	f.List(zone, client.String(), "", "127.0.0.2")
	addr, queries := StartServer(t, f)
	var sus suspensions
	c := newTestClient(t, addr, Options{CacheEntries: 10, MinTTL: time.Hour, OnSuspend: sus.record})

	ans, err := c.Query(ctx, zone, client)
	is.NoErr(err)
	is.Equal(ans.Addrs, addrs("127.0.0.2"))
	is.Equal(c.CacheLen(), 1)

	// The list starts listing the world.
	f.List(zone, "127.0.0.1", "", "127.0.0.2")
	is.True(c.Probe(ctx, zone).Suspended)
	is.True(c.Suspended(zone))
	is.Equal(sus.get(), []string{"suspend zen.test"})
	is.Equal(c.CacheLen(), 0) // its answers are dropped

	asked := queries.Of(clientName, dns.TypeA)
	_, err = c.Query(ctx, zone, client)
	is.True(errors.Is(err, rules.ErrSiteSuspended))    // a suspended list is not asked
	is.Equal(queries.Of(clientName, dns.TypeA), asked) // nothing was sent
	is.True(strings.Contains(err.Error(), zone))       // the error names the zone
	_, err = c.Query(ctx, "ZEN.TEST.", client)
	is.True(errors.Is(err, rules.ErrSiteSuspended)) // whatever the spelling
	_, err = c.Query(ctx, "other.test", client)
	is.NoErr(err) // other lists are still asked
	is.Equal(queries.Of(clientName, dns.TypeA), asked)
	is.Equal(queries.Of(queryName("other.test", client), dns.TypeA), 1)

	// A probe that fails keeps the suspension.
	f.SetIP(zone, "127.0.0.1", Entry{Rcode: dns.RcodeServerFailure})
	res := c.Probe(ctx, zone)
	is.True(res.Err != nil)
	is.True(res.Suspended)
	is.True(c.Suspended(zone))
	is.True(strings.HasSuffix(res.String(), "(still suspended)"))

	// Healed: the next probe restores the list.
	f.Delete(queryName(zone, netip.MustParseAddr("127.0.0.1")))
	res = c.Probe(ctx, zone)
	is.NoErr(res.Err)
	is.True(!res.Suspended)
	is.True(!c.Suspended(zone))
	is.Equal(sus.get(), []string{"suspend zen.test", "restore zen.test"})
	ans, err = c.Query(ctx, zone, client)
	is.NoErr(err)
	is.Equal(ans.Addrs, addrs("127.0.0.2"))
	is.Equal(queries.Of(clientName, dns.TypeA), asked+1)

	// Passing again changes nothing.
	c.Probe(ctx, zone)
	is.Equal(len(sus.get()), 2)
}

func TestRunProber(t *testing.T) {
	t.Run("probes at start and stops when ctx is cancelled", func(t *testing.T) {
		is := is.New(t)
		f := NewFake()
		f.List("bad.test", "127.0.0.1", "", "127.0.0.2")
		addr, _ := StartServer(t, f)
		suspended := make(chan string, 10)
		c := newTestClient(t, addr, Options{Timeout: 5 * time.Second, OnSuspend: func(zone string, s bool) {
			if s {
				suspended <- zone
			}
		}})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			// The interval is long: only the probe at start can run.
			c.RunProber(ctx, func() []string { return []string{"bad.test", "good.test"} }, func() time.Duration { return time.Hour })
		}()
		select {
		case z := <-suspended:
			is.Equal(z, "bad.test")
		case <-time.After(10 * time.Second):
			t.Fatal("no probe at start")
		}
		is.True(c.Suspended("bad.test"))
		is.True(!c.Suspended("good.test"))
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("RunProber did not return after ctx was cancelled")
		}
	})

	t.Run("recovers a panic, sees new zones and each zone once per round", func(t *testing.T) {
		is := is.New(t)
		f := NewFake()
		f.List("bad.test", "127.0.0.1", "", "127.0.0.2")
		addr, queries := StartServer(t, f)
		var logs testutil.SyncBuffer
		suspended := make(chan string, 10)
		c := newTestClient(t, addr, Options{
			Timeout: 5 * time.Second,
			Logger:  slog.New(slog.NewTextHandler(&logs, nil)),
			OnSuspend: func(zone string, s bool) {
				if s {
					suspended <- zone
				}
			},
		})
		var rounds atomic.Int64
		zones := func() []string {
			switch rounds.Add(1) {
			case 1:
				panic("config reload went wrong")
			case 2:
				return nil
			case 3:
				return []string{"bad.test", "BAD.test.", "bad.test"}
			}
			return nil
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			c.RunProber(ctx, zones, func() time.Duration { return time.Millisecond })
		}()
		select {
		case z := <-suspended:
			is.Equal(z, "bad.test")
		case <-time.After(10 * time.Second):
			t.Fatal("the prober did not survive the panic")
		}
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("RunProber did not return after ctx was cancelled")
		}
		is.True(rounds.Load() >= 3)
		is.True(strings.Contains(logs.String(), "config reload went wrong")) // the panic was logged
		// Round 3 named the zone three ways: it was probed once.
		is.Equal(queries.Of(queryName("bad.test", netip.MustParseAddr("127.0.0.1")), dns.TypeA), 1)
	})
}

// TestFirstProbeLoggedAtInfo: each list's first probe result is an info
// line (what an operator looks for at start); later passes stay at debug.
func TestFirstProbeLoggedAtInfo(t *testing.T) {
	is := is.New(t)
	f := NewFake()
	f.List(zone, "127.0.0.2", "test entry", "127.0.0.2")
	addr, _ := StartServer(t, f)
	var logs testutil.SyncBuffer
	c := newTestClient(t, addr, Options{Timeout: 5 * time.Second,
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	ctx := context.Background()
	c.Probe(ctx, zone)
	c.Probe(ctx, zone)
	is.Equal(strings.Count(logs.String(), `level=INFO msg="dns list probe passed" zone=zen.test`), 1)
}
