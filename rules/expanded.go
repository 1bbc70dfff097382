package rules

import (
	"net/netip"
	"sort"
	"sync"
)

// DefaultExpandedEntries bounds the expanded statistics table.
const DefaultExpandedEntries = 10_000

// expandedStats are Domino's expanded DNS list statistics
// (SMTPExpandDNSBLStats=1, SMTPExpandDNSWLStats=1): hits per client IP
// per site. A busy relay sees millions of addresses, so the table keeps
// only the busiest entries: when it is full, the least-hit tenth is
// dropped to make room. Counts of entries that survive are exact since
// they were added. These are never Prometheus labels, which would explode
// in cardinality.
type expandedStats struct {
	mu  sync.Mutex
	max int
	m   map[expandedKey]uint64
}

type expandedKey struct {
	kind ListKind
	zone string
	ip   netip.Addr
}

func (x *expandedStats) hit(kind ListKind, zone string, ip netip.Addr) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.m == nil {
		x.m = make(map[expandedKey]uint64)
		if x.max <= 0 {
			x.max = DefaultExpandedEntries
		}
	}
	k := expandedKey{kind, zone, ip}
	if _, ok := x.m[k]; !ok && len(x.m) >= x.max {
		x.evict()
	}
	x.m[k]++
}

// evict drops the least-hit tenth of the table (at least one entry).
func (x *expandedStats) evict() {
	counts := make([]uint64, 0, len(x.m))
	for _, c := range x.m {
		counts = append(counts, c)
	}
	sort.Slice(counts, func(i, j int) bool { return counts[i] < counts[j] })
	n := max(len(counts)/10, 1)
	cut := counts[n-1]
	dropped := 0
	for k, c := range x.m {
		if c < cut || c == cut && dropped < n {
			delete(x.m, k)
			dropped++
		}
	}
}

// ExpandedHit is one row of the expanded statistics.
type ExpandedHit struct {
	Kind ListKind `json:"kind"`
	Site string   `json:"site"`
	IP   string   `json:"ip"`
	Hits uint64   `json:"hits"`
}

// snapshot returns the rows, busiest first.
func (x *expandedStats) snapshot() []ExpandedHit {
	x.mu.Lock()
	out := make([]ExpandedHit, 0, len(x.m))
	for k, c := range x.m {
		out = append(out, ExpandedHit{Kind: k.kind, Site: k.zone, IP: k.ip.String(), Hits: c})
	}
	x.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		switch {
		case a.Hits != b.Hits:
			return a.Hits > b.Hits
		case a.Kind != b.Kind:
			return a.Kind < b.Kind
		case a.Site != b.Site:
			return a.Site < b.Site
		}
		return a.IP < b.IP
	})
	return out
}
