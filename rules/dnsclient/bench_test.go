package dnsclient_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/smtp-interceptor/smtp-interceptor/rules"
	"github.com/smtp-interceptor/smtp-interceptor/rules/dnsclient"
)

// warmCache returns a client whose cache holds zen.test's answer for one
// listed client, the client's address, and the server's query counter.
func warmCache(b *testing.B) (*dnsclient.Client, netip.Addr, *dnsclient.Counter) {
	b.Helper()
	const client = "192.0.2.30"
	f := dnsclient.NewFake()
	f.List("zen.test", client, "listed", "127.0.0.2")
	addr, queries := dnsclient.StartServer(b, f)
	c, err := dnsclient.New(dnsclient.Options{Server: addr, CacheEntries: 100_000, MinTTL: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	ip := netip.MustParseAddr(client)
	if _, err := c.Query(context.Background(), "zen.test", ip); err != nil {
		b.Fatal(err)
	}
	return c, ip, queries
}

// BenchmarkQueryCacheHit is a lookup answered from the cache (target: under
// 1 µs, no allocation).
func BenchmarkQueryCacheHit(b *testing.B) {
	c, ip, queries := warmCache(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if ans, err := c.Query(ctx, "zen.test", ip); err != nil || len(ans.Addrs) != 1 {
				b.Fatal("not a cache hit", err)
			}
		}
	})
	if n := queries.Total(); n != 4 {
		b.Fatalf("%d queries sent, want 4 (the zone's probe, then A and TXT once)", n)
	}
}

// BenchmarkQueryCacheHitSerial is BenchmarkQueryCacheHit on one goroutine.
func BenchmarkQueryCacheHitSerial(b *testing.B) {
	c, ip, _ := warmCache(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Query(ctx, "zen.test", ip); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkConnectFiveListsMiss is an engine connect stage with five DNS
// blacklists and no cache, so that every list is asked over UDP from the
// in-process server each time.
func BenchmarkConnectFiveListsMiss(b *testing.B) {
	const client = "192.0.2.31"
	for _, bc := range []struct {
		name   string
		listed bool
	}{{"not-listed", false}, {"listed-by-fifth", true}} {
		b.Run(bc.name, func(b *testing.B) {
			f := dnsclient.NewFake()
			if bc.listed {
				f.List("bl5.test", client, "listed", "127.0.0.2")
			}
			addr, queries := dnsclient.StartServer(b, f)
			c, err := dnsclient.New(dnsclient.Options{Server: addr, CacheEntries: 0, Timeout: 5 * time.Second})
			if err != nil {
				b.Fatal(err)
			}
			cfg, err := rules.Parse("", `
[dns_blacklist]
enabled = true
sites = ["bl1.test", "bl2.test", "bl3.test", "bl4.test", "bl5.test"]
action = "reject"
`)
			if err != nil {
				b.Fatal(err)
			}
			e := rules.NewEngine(cfg, rules.EngineOptions{DNS: c})
			ctx, ip := context.Background(), netip.MustParseAddr(client)
			want := rules.ActionAccept
			if bc.listed {
				want = rules.ActionReject
			}
			b.ReportAllocs()
			for b.Loop() {
				s := rules.NewSession(ip, "")
				if v := e.Connect(ctx, s); v.Action != want || len(s.ConnectResult().DNSErrors) > 0 {
					b.Fatalf("verdict %s, dns errors %v", v.Action, s.ConnectResult().DNSErrors)
				}
			}
			b.ReportMetric(float64(queries.Total())/float64(b.N), "queries/op")
		})
	}
}
