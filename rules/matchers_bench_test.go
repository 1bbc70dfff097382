package rules

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// benchDomain returns a random two-label domain.
func benchDomain(rng *rand.Rand) string {
	tlds := [...]string{"com", "net", "org", "de", "example"}
	return "d" + strconv.FormatUint(uint64(rng.Uint32()), 36) + "." + tlds[rng.IntN(len(tlds))]
}

// benchHostEntries returns n host list entries, the same for the same n: a
// seeded mix of IPv4 and IPv6 CIDRs and ranges, IPv4 wildcards and octet
// ranges, exact names and "*.domain" names. IPv4 entries lie in 1.0.0.0 to
// 126.255.255.255 and IPv6 entries in 2001:db8::/32, so addresses outside
// those never match (see benchHostClients).
func benchHostEntries(n int) []Entry {
	rng := rand.New(rand.NewPCG(2024, 11))
	v4 := func() [4]byte {
		x := rng.Uint32()
		return [4]byte{byte(1 + rng.IntN(126)), byte(x >> 16), byte(x >> 8), byte(x)}
	}
	v6 := func() [16]byte {
		var b [16]byte
		b[0], b[1], b[2], b[3] = 0x20, 0x01, 0x0d, 0xb8
		for i := 4; i < 16; i += 4 {
			x := rng.Uint32()
			b[i], b[i+1], b[i+2], b[i+3] = byte(x>>24), byte(x>>16), byte(x>>8), byte(x)
		}
		return b
	}
	entries := make([]Entry, n)
	for i := range entries {
		var v string
		switch k := rng.IntN(100); {
		case k < 25: // IPv4 CIDR
			v = netip.PrefixFrom(netip.AddrFrom4(v4()), 16+rng.IntN(17)).Masked().String()
		case k < 35: // IPv6 CIDR
			v = netip.PrefixFrom(netip.AddrFrom16(v6()), 40+rng.IntN(89)).Masked().String()
		case k < 43: // IPv4 range
			lo := netip.AddrFrom4(v4())
			hi := lo
			for range 1 + rng.IntN(300) {
				if next := hi.Next(); next.IsValid() {
					hi = next
				}
			}
			v = lo.String() + "-" + hi.String()
		case k < 48: // IPv6 range
			lo := netip.AddrFrom16(v6())
			hi := lo
			for range 1 + rng.IntN(300) {
				hi = hi.Next()
			}
			v = lo.String() + "-" + hi.String()
		case k < 55: // IPv4 wildcard
			a := v4()
			v = fmt.Sprintf("%d.%d.%d.*", a[0], a[1], a[2])
		case k < 60: // Domino octet range
			a := v4()
			lo := rng.IntN(200)
			v = fmt.Sprintf("[%d.%d.%d.%d-%d]", a[0], a[1], a[2], lo, lo+rng.IntN(56))
		case k < 80: // exact name
			v = "h" + strconv.Itoa(rng.IntN(1000)) + "." + benchDomain(rng)
		default: // every name below a domain
			v = "*." + benchDomain(rng)
		}
		entries[i] = Entry{Value: v, Key: "bench.hosts", Line: i + 1}
	}
	return entries
}

// benchClient is one client to match: a normalized IP and name.
type benchClient struct {
	ip   netip.Addr
	name string
}

// benchHostClients returns n clients for entries, rotating through hits on
// IP entries, hits on name entries, and misses on both.
func benchHostClients(entries []Entry, n int) []benchClient {
	rng := rand.New(rand.NewPCG(7, 7))
	missIP := func() netip.Addr {
		if rng.IntN(4) == 0 {
			return netip.AddrFrom16([16]byte{0x3f, 0xff, 15: byte(rng.Uint32())})
		}
		x := rng.Uint32()
		return netip.AddrFrom4([4]byte{198, 18 + byte(x>>16)&1, byte(x >> 8), byte(x)})
	}
	clients := make([]benchClient, 0, n)
	for len(clients) < n {
		e := entries[rng.IntN(len(entries))]
		pfxs, name, suffix, err := parseHostEntry(e.Value, nil)
		if err != nil {
			panic(err)
		}
		switch len(clients) % 4 {
		case 0: // IP hit (when e is an IP entry), no verified name
			if len(pfxs) == 0 {
				continue
			}
			clients = append(clients, benchClient{ip: pfxs[0].Addr()})
		case 1: // name hit after an IP miss
			if len(pfxs) > 0 {
				continue
			}
			if suffix {
				name = "mx" + strconv.Itoa(rng.IntN(10)) + ".mail." + name
			}
			clients = append(clients, benchClient{ip: missIP(), name: name})
		default: // miss on both, with a name of several labels to walk
			name := "host" + strconv.Itoa(rng.IntN(1e6)) + ".pool.isp" + strconv.Itoa(rng.IntN(100)) + ".invalid"
			clients = append(clients, benchClient{ip: missIP(), name: name})
		}
	}
	return clients
}

func BenchmarkHostListMatch(b *testing.B) {
	for _, n := range []int{1_000, 100_000, 1_000_000} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			entries := benchHostEntries(n)
			h, errs := NewHostList(entries)
			if len(errs) != 0 {
				b.Fatal(errs[0])
			}
			clients := benchHostClients(entries, 1024)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				c := clients[i%len(clients)]
				h.Match(c.ip, c.name)
				i++
			}
		})
	}
}

func BenchmarkHostListBuild(b *testing.B) {
	for _, n := range []int{1_000, 100_000} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			entries := benchHostEntries(n)
			b.ReportAllocs()
			for b.Loop() {
				NewHostList(entries)
			}
		})
	}
}

// TestHostListMemory logs the heap a HostList of 1,000,000 entries uses.
// It only logs: the figure depends on the Go version and the entry mix.
func TestHostListMemory(t *testing.T) {
	const n = 1_000_000
	start := time.Now()
	entries := benchHostEntries(n)
	texts := 0
	for _, e := range entries {
		texts += len(e.Value)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	built := time.Now()
	h, errs := NewHostList(entries)
	elapsed := time.Since(built)
	if len(errs) != 0 {
		t.Fatal(errs[0])
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	t.Logf("HostList of %d entries (%d IP prefixes): %.1f MiB of heap, plus %.1f MiB of entry texts it shares with the entries; "+
		"heap in use %.1f MiB in all; built in %v (%v with generation)",
		h.Len(), h.ips.Size(),
		float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/(1<<20), float64(texts)/(1<<20),
		float64(after.HeapInuse)/(1<<20), elapsed, time.Since(start))
	runtime.KeepAlive(entries)
	runtime.KeepAlive(h)
}

func BenchmarkAddressListMatch(b *testing.B) {
	for _, n := range []int{1_000, 100_000} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			rng := rand.New(rand.NewPCG(3, 3))
			entries := make([]Entry, n)
			hits := make([]string, n) // an address each entry matches
			for i := range entries {
				dom := benchDomain(rng)
				switch rng.IntN(3) {
				case 0:
					entries[i].Value = "user" + strconv.Itoa(i) + "@" + dom
					hits[i] = "<User" + strconv.Itoa(i) + "@" + dom + ">"
				case 1:
					entries[i].Value = "@" + dom
					hits[i] = "someone@" + dom
				default:
					entries[i].Value = "@*." + dom
					hits[i] = "Someone@Mail.Sub." + dom
				}
				entries[i].Key = "bench.deny"
			}
			addrs := make([]string, 0, 1024)
			for i := 0; len(addrs) < cap(addrs); i++ {
				addrs = append(addrs, hits[rng.IntN(n)], "<Nobody"+strconv.Itoa(i)+"@Mail.Example.INVALID>")
			}
			a, errs := NewAddressList(entries)
			if len(errs) != 0 {
				b.Fatal(errs[0])
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				a.Match(addrs[i%len(addrs)])
				i++
			}
		})
	}
}

func BenchmarkNamePatternsMatch(b *testing.B) {
	for _, n := range []int{100, 1_000} {
		b.Run(fmt.Sprintf("patterns=%d", n), func(b *testing.B) {
			rng := rand.New(rand.NewPCG(5, 5))
			// One pattern in ten has wildcards, as in a typical HELO deny list.
			entries := make([]Entry, n)
			helos := make([]string, 0, 1024)
			for i := range entries {
				dom := benchDomain(rng)
				var v, hit string
				switch {
				case i%10 == 0:
					v = "*.dyn*." + dom
					hit = "host-1-2-3-4.dynamic.pool." + dom
				case i%10 == 1:
					v = "mx?." + dom
					hit = "MX7." + dom
				default:
					v = "mail." + dom
					hit = "Mail." + dom + "."
				}
				entries[i] = Entry{Value: v, Key: "bench.helo"}
				if len(helos) < cap(helos) {
					helos = append(helos, hit, "host-"+strconv.Itoa(i)+".customers.example.invalid")
				}
			}
			p, errs := NewNamePatterns(entries)
			if len(errs) != 0 {
				b.Fatal(errs[0])
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				p.Match(helos[i%len(helos)])
				i++
			}
		})
	}
}
