package state

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/matryer/is"

	"github.com/smtp-interceptor/smtp-interceptor/internal/testutil"
	redistest "github.com/smtp-interceptor/smtp-interceptor/internal/testutil/redis"
)

// tenThousandBans makes 10,000 distinct bans: IPv4 /32, /24, /16 and
// IPv6 /128, /64, /48, some of them expiring in an hour.
func tenThousandBans(now time.Time) []Ban {
	rnd := rand.New(rand.NewPCG(7, 8))
	seen := make(map[netip.Prefix]bool)
	var out []Ban
	for len(out) < 10_000 {
		var p netip.Prefix
		switch rnd.IntN(6) {
		case 0, 1:
			p = netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(rnd.UintN(224)), byte(rnd.UintN(256)), byte(rnd.UintN(256)), byte(rnd.UintN(256))}), 32)
		case 2:
			p = netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(rnd.UintN(224)), byte(rnd.UintN(256)), byte(rnd.UintN(256)), 0}), 24)
		case 3:
			p = netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(rnd.UintN(224)), byte(rnd.UintN(256)), 0, 0}), 16)
		default:
			var a [16]byte
			a[0], a[1] = 0x20, 0x01
			for i := 2; i < 16; i++ {
				a[i] = byte(rnd.UintN(256))
			}
			p = netip.PrefixFrom(netip.AddrFrom16(a), []int{128, 64, 48}[rnd.IntN(3)]).Masked()
		}
		if seen[p] {
			continue
		}
		seen[p] = true
		b := Ban{Prefix: p, Reason: "bench", Creator: "autoban@relay-a", Created: now}
		if len(out)%3 == 0 {
			b.Expires = now.Add(time.Hour)
		}
		out = append(out, b)
	}
	return out
}

// probes are addresses to look up: half inside a ban, half random.
func probes(bans []Ban) []netip.Addr {
	rnd := rand.New(rand.NewPCG(9, 10))
	out := make([]netip.Addr, 0, 1024)
	for i := range 1024 {
		if i%2 == 0 {
			out = append(out, bans[rnd.IntN(len(bans))].Prefix.Addr())
			continue
		}
		if i%4 == 1 {
			out = append(out, netip.AddrFrom4([4]byte{byte(rnd.UintN(256)), byte(rnd.UintN(256)), byte(rnd.UintN(256)), byte(rnd.UintN(256))}))
			continue
		}
		var a [16]byte
		for j := range a {
			a[j] = byte(rnd.UintN(256))
		}
		out = append(out, netip.AddrFrom16(a))
	}
	return out
}

// memoryWith10k is a Memory backend holding the 10,000 bans.
func memoryWith10k(tb testing.TB) (*Memory, []Ban) {
	tb.Helper()
	m, err := OpenMemory(MemoryOptions{Logger: testutil.Logger(tb)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = m.Close() })
	bans := tenThousandBans(time.Now())
	for _, b := range bans {
		if err := m.AddBan(context.Background(), b); err != nil {
			tb.Fatal(err)
		}
	}
	return m, bans
}

// redisWith10k is a Redis backend whose replica was loaded with the
// 10,000 bans, written into miniredis directly.
func redisWith10k(tb testing.TB) (*Redis, []Ban) {
	tb.Helper()
	m := miniredis.NewMiniRedis()
	if err := m.StartAddr("127.0.0.1:0"); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(m.Close)
	bans := tenThousandBans(time.Now())
	for _, b := range bans {
		js, err := json.Marshal(b)
		if err != nil {
			tb.Fatal(err)
		}
		m.HSet("smtpi:{bans}", b.Prefix.String(), string(js))
	}
	r := openRedis(tb, RedisOptions{Addrs: []string{m.Addr()}, Timeout: 5 * time.Second, ResyncInterval: time.Hour})
	if n := len(r.Bans()); n != len(bans) {
		tb.Fatalf("replica has %d bans, want %d", n, len(bans))
	}
	return r, bans
}

// TestBannedAllocs proves that Banned does not allocate, for hits and
// misses, IPv4 and IPv6, on both backends' replicas.
func TestBannedAllocs(t *testing.T) {
	mem, bans := memoryWith10k(t)
	red, _ := redisWith10k(t)
	ips := probes(bans)
	for _, b := range []Backend{mem, red} {
		t.Run(b.Name(), func(t *testing.T) {
			is := is.New(t)
			hits := 0
			for _, ip := range ips {
				if _, ok := b.Banned(ip); ok {
					hits++
				}
			}
			is.True(hits >= len(ips)/2) // the probes hit and miss
			is.True(hits < len(ips))
			i := 0
			allocs := testing.AllocsPerRun(10*len(ips), func() {
				_, _ = b.Banned(ips[i%len(ips)])
				i++
			})
			is.Equal(allocs, 0.0)
		})
	}
}

func BenchmarkBanned10k(b *testing.B) {
	mem, bans := memoryWith10k(b)
	red, _ := redisWith10k(b)
	ips := probes(bans)
	for _, be := range []Backend{mem, red} {
		b.Run(be.Name(), func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				_, _ = be.Banned(ips[i%len(ips)])
				i++
			}
		})
		b.Run(be.Name()+"-parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					_, _ = be.Banned(ips[i%len(ips)])
					i++
				}
			})
		})
	}
}

func BenchmarkAllowMemory(b *testing.B) {
	m, err := OpenMemory(MemoryOptions{Logger: testutil.Logger(b)})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.Allow(ctx, "k", 1_000_000, time.Second, 1); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAllowRedisMiniredis(b *testing.B) {
	m := miniredis.NewMiniRedis()
	if err := m.StartAddr("127.0.0.1:0"); err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	r := openRedis(b, RedisOptions{Addrs: []string{m.Addr()}, Timeout: 5 * time.Second})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Allow(ctx, "k", 1_000_000, time.Second, 1); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAddBan10k is the cost of one more ban on a replica of 10,000
// (copy-on-write insert, and the bbolt write for Memory without a file
// here).
func BenchmarkAddBan10k(b *testing.B) {
	mem, _ := memoryWith10k(b)
	ctx := context.Background()
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{240, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
		if err := mem.AddBan(ctx, Ban{Prefix: p}); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkAllowRedisServer(b *testing.B) {
	srv := redistest.Start(b)
	r := openRedis(b, RedisOptions{Addrs: []string{srv.Addr()}, Timeout: 5 * time.Second})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Allow(ctx, "k", 1_000_000, time.Second, 1); err != nil {
			b.Fatal(err)
		}
	}
}

// benchGreylist runs Greylist over 100,000 triplets in turn: each is seen
// first, then retried before the delay.
func benchGreylist(b *testing.B, be Backend) {
	ctx := context.Background()
	keys := make([]string, 100_000)
	for i := range keys {
		keys[i] = fmt.Sprintf("10.%d.%d.0/24|sender%d@example.org|rcpt@example.net", i>>8&255, i&255, i)
	}
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		if _, err := be.Greylist(ctx, keys[i%len(keys)], 5*time.Minute, 4*time.Hour, 36*24*time.Hour); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkGreylistMemory(b *testing.B) {
	m, err := OpenMemory(MemoryOptions{Logger: testutil.Logger(b)})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	benchGreylist(b, m)
}

func BenchmarkGreylistRedisServer(b *testing.B) {
	srv := redistest.Start(b)
	benchGreylist(b, openRedis(b, RedisOptions{Addrs: []string{srv.Addr()}, Timeout: 5 * time.Second}))
}
