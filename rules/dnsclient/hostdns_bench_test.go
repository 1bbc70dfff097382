package dnsclient_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/smtp-interceptor/smtp-interceptor/rules/dnsclient"
)

// warmHostCache returns a client whose cache holds the PTR names of one
// address with a name and of one without, and the answers for a domain
// with an MX record and one that does not exist; and the server's query
// counter.
func warmHostCache(b *testing.B) (*dnsclient.Client, *dnsclient.Counter) {
	b.Helper()
	f := dnsclient.NewFake()
	f.Set(dnsclient.QueryName("in-addr.arpa", "192.0.2.40"), dnsclient.Entry{PTR: []string{"mail.example.test."}, TTL: 300})
	f.Set("example.test", dnsclient.Entry{MX: []dnsclient.MXRecord{{Pref: 10, Host: "mx.example.test"}}, TTL: 300})
	addr, queries := dnsclient.StartServer(b, f)
	c, err := dnsclient.New(dnsclient.Options{Server: addr, CacheEntries: 100_000, MinTTL: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(c.Close)
	ctx := context.Background()
	for _, ip := range []string{"192.0.2.40", "192.0.2.41"} {
		if _, err := c.ReverseNames(ctx, netip.MustParseAddr(ip)); err != nil {
			b.Fatal(err)
		}
	}
	for _, d := range []string{"example.test", "nx.example.test"} {
		if _, err := c.DomainExists(ctx, d); err != nil {
			b.Fatal(err)
		}
	}
	return c, queries
}

// BenchmarkReverseNamesCacheHit is a PTR lookup answered from the cache
// (target: under 1 µs, no allocation).
func BenchmarkReverseNamesCacheHit(b *testing.B) {
	for _, bc := range []struct {
		name, ip string
		names    int
	}{{"named", "192.0.2.40", 1}, {"no-name", "192.0.2.41", 0}} {
		b.Run(bc.name, func(b *testing.B) {
			c, queries := warmHostCache(b)
			ctx, ip := context.Background(), netip.MustParseAddr(bc.ip)
			sent := queries.Total()
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if names, err := c.ReverseNames(ctx, ip); err != nil || len(names) != bc.names {
						b.Fatal("not a cache hit", names, err)
					}
				}
			})
			if n := queries.Total(); n != sent {
				b.Fatalf("%d queries sent during the benchmark, want none", n-sent)
			}
		})
	}
}

// BenchmarkReverseNamesCacheHitSerial is BenchmarkReverseNamesCacheHit on
// one goroutine.
func BenchmarkReverseNamesCacheHitSerial(b *testing.B) {
	c, _ := warmHostCache(b)
	ctx, ip := context.Background(), netip.MustParseAddr("192.0.2.40")
	b.ReportAllocs()
	for b.Loop() {
		if names, err := c.ReverseNames(ctx, ip); err != nil || len(names) != 1 {
			b.Fatal("not a cache hit", names, err)
		}
	}
}

// BenchmarkDomainExistsCacheHit is a sender domain check answered from
// the cache (target: under 1 µs, no allocation).
func BenchmarkDomainExistsCacheHit(b *testing.B) {
	for _, bc := range []struct {
		name, domain string
		exists       bool
	}{{"exists", "example.test", true}, {"nxdomain", "nx.example.test", false}} {
		b.Run(bc.name, func(b *testing.B) {
			c, queries := warmHostCache(b)
			ctx := context.Background()
			sent := queries.Total()
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if ok, err := c.DomainExists(ctx, bc.domain); err != nil || ok != bc.exists {
						b.Fatal("not a cache hit", ok, err)
					}
				}
			})
			if n := queries.Total(); n != sent {
				b.Fatalf("%d queries sent during the benchmark, want none", n-sent)
			}
		})
	}
}

// BenchmarkDomainExistsCacheHitSerial is BenchmarkDomainExistsCacheHit on
// one goroutine.
func BenchmarkDomainExistsCacheHitSerial(b *testing.B) {
	c, _ := warmHostCache(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if ok, err := c.DomainExists(ctx, "example.test"); err != nil || !ok {
			b.Fatal("not a cache hit", ok, err)
		}
	}
}
