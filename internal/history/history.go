// Package history keeps, in process, a per-minute record of the daemon's
// counters over the last hours (a day by default) for the console's
// Statistics page.
//
// A sampler hands cumulative counters (Point) once a minute; History turns
// the difference between consecutive points into one Minute and keeps the
// minutes in a ring of fixed size, the oldest falling out. Nothing is
// persisted: a restart starts an empty history.
package history

import (
	"cmp"
	"context"
	"maps"
	"math"
	"slices"
	"sync"
	"time"
)

// DayMinutes is the size of a history that covers 24 hours.
const DayMinutes = 24 * 60

// minute is the length of one recorded interval.
const minute = time.Minute

// tolerance is how much shorter than a minute an interval may be and still
// count as a minute: a point that comes sooner is ignored and the next one
// is measured from the same baseline.
const tolerance = 5 * time.Second

// Point is one sample of cumulative counters: every value counts from the
// start of the source.
type Point struct {
	// Time is when the sample was taken.
	Time time.Time
	// Refusals counts refusals by control name.
	Refusals map[string]uint64
	// DNSHits counts hits by DNS list site, e.g. "dnsbl zen.spamhaus.org".
	DNSHits map[string]uint64
	// Requests holds the request latency by protocol ("policy", "milter").
	Requests map[string]Latency
}

// Latency is a cumulative latency histogram, as Prometheus keeps one.
type Latency struct {
	// Count is the number of observations.
	Count uint64
	// Sum is the sum of the observations, in seconds.
	Sum float64
	// Bounds are the upper bounds of the buckets, in seconds, ascending;
	// the +Inf bucket is implied (its count is Count).
	Bounds []float64
	// Buckets are the cumulative counts of observations at most the bound
	// of the same index.
	Buckets []uint64
}

// Minute is what happened in one minute.
//
// Keys that did not change in the minute are left out of the maps. A
// counter that went down (a restart of the source) counts as zero for the
// minute; a key that is new since the previous point counts from zero.
type Minute struct {
	// Start is the wall-clock time the minute began.
	Start time.Time
	// Gap marks a minute without data (no sample covered it alone); its
	// maps are nil.
	Gap bool
	// Refusals counts the minute's refusals by control name.
	Refusals map[string]uint64
	// DNSHits counts the minute's hits by DNS list site.
	DNSHits map[string]uint64
	// Requests holds the minute's latency by protocol, for the protocols
	// that had requests in the minute.
	Requests map[string]MinuteLatency
}

// MinuteLatency summarises the requests of one minute.
type MinuteLatency struct {
	// Count is the number of requests, at least one.
	Count uint64
	// Mean is the mean latency, in seconds.
	Mean float64
	// P50, P95 and P99 are latency quantiles in seconds, interpolated
	// linearly inside the histogram's buckets as Prometheus'
	// histogram_quantile does; NaN when the histogram has no bounds.
	P50, P95, P99 float64
}

// History is a ring of the last minutes, made by New. It is safe for
// concurrent use.
type History struct {
	mu       sync.Mutex
	ring     []Minute
	next     int // index the next minute is written to
	full     bool
	prev     Point // the baseline the next point is measured from
	havePrev bool
}

// New returns an empty history that keeps the last minutes minutes
// (DayMinutes for 24 hours); less than one is taken as DayMinutes.
func New(minutes int) *History {
	if minutes < 1 {
		minutes = DayMinutes
	}
	return &History{ring: make([]Minute, minutes)}
}

// Record adds a sample. The first sample is only a baseline. After that:
//
//   - a sample less than a minute (give or take a few seconds) after the
//     baseline is ignored; the baseline stays, so nothing is lost;
//   - a sample about one minute after it becomes one Minute holding the
//     difference, starting at the baseline's time;
//   - a sample two or more minutes after it (missed samples) records the
//     minutes in between as gaps: their counts cannot be told apart, so
//     they are dropped rather than spread or heaped on one minute;
//   - a sample older than the baseline (the clock went back) becomes the
//     new baseline and records nothing.
//
// Record copies what it keeps of p.
func (h *History) Record(p Point) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.havePrev {
		h.prev, h.havePrev = clonePoint(p), true
		return
	}
	elapsed := p.Time.Sub(h.prev.Time)
	switch {
	case elapsed < 0:
		h.prev = clonePoint(p)
		return
	case elapsed < minute-tolerance:
		return
	}
	n := int((elapsed + minute/2) / minute)
	start := h.prev.Time.Round(0)
	if n == 1 {
		h.add(Minute{
			Start:    start,
			Refusals: counterDelta(h.prev.Refusals, p.Refusals),
			DNSHits:  counterDelta(h.prev.DNSHits, p.DNSHits),
			Requests: requestsDelta(h.prev.Requests, p.Requests),
		})
	} else {
		first := max(0, n-len(h.ring))
		for i := first; i < n; i++ {
			h.add(Minute{Start: start.Add(time.Duration(i) * minute), Gap: true})
		}
	}
	h.prev = clonePoint(p)
}

// add writes m into the ring; the caller holds h.mu.
func (h *History) add(m Minute) {
	h.ring[h.next] = m
	h.next++
	if h.next == len(h.ring) {
		h.next, h.full = 0, true
	}
}

// Minutes returns a copy of the recorded minutes, oldest first.
func (h *History) Minutes() []Minute {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []Minute
	if h.full {
		out = make([]Minute, 0, len(h.ring))
		out = append(out, h.ring[h.next:]...)
		out = append(out, h.ring[:h.next]...)
	} else {
		out = slices.Clone(h.ring[:h.next])
	}
	for i := range out {
		out[i].Refusals = maps.Clone(out[i].Refusals)
		out[i].DNSHits = maps.Clone(out[i].DNSHits)
		out[i].Requests = maps.Clone(out[i].Requests)
	}
	return out
}

// Run records a sample at once, as the baseline, then one every every
// (time.Minute in production; zero or less is taken as that) until ctx is
// done. A sample without a Time is stamped with time.Now.
func (h *History) Run(ctx context.Context, every time.Duration, sample func() Point) {
	if ctx.Err() != nil {
		return
	}
	if every <= 0 {
		every = minute
	}
	record := func() {
		p := sample()
		if p.Time.IsZero() {
			p.Time = time.Now()
		}
		h.Record(p)
	}
	record()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			record()
		}
	}
}

// TopKeys returns the n keys with the largest totals over minutes, the
// busiest first (ties by name), as field picks them from each minute (for
// example func(m Minute) map[string]uint64 { return m.DNSHits }); keys
// whose total is zero are left out, and n of zero or less returns them all.
// The caller sums the rest as "other".
func TopKeys(minutes []Minute, field func(Minute) map[string]uint64, n int) []string {
	totals := make(map[string]uint64)
	for _, m := range minutes {
		for k, v := range field(m) {
			totals[k] += v
		}
	}
	keys := make([]string, 0, len(totals))
	for k, v := range totals {
		if v > 0 {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b string) int {
		if c := cmp.Compare(totals[b], totals[a]); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	if n > 0 && len(keys) > n {
		keys = keys[:n]
	}
	return keys
}

// counterDelta returns the non-zero increases from prev to cur: a key new
// in cur counts from zero, a counter that went down counts as zero.
func counterDelta(prev, cur map[string]uint64) map[string]uint64 {
	out := make(map[string]uint64)
	for k, v := range cur {
		if old := prev[k]; v > old {
			out[k] = v - old
		}
	}
	return out
}

// requestsDelta summarises each protocol's requests between prev and cur;
// a protocol without requests in between, or whose histogram went down or
// changed its bounds (a restart of the source), is left out.
func requestsDelta(prev, cur map[string]Latency) map[string]MinuteLatency {
	out := make(map[string]MinuteLatency)
	for proto, c := range cur {
		p, ok := prev[proto]
		if !ok {
			p = Latency{Bounds: c.Bounds, Buckets: make([]uint64, len(c.Buckets))}
		}
		if m, ok := latencyDelta(p, c); ok {
			out[proto] = m
		}
	}
	return out
}

// latencyDelta summarises the observations between two snapshots of one
// histogram; false when there are none or the histogram was reset.
func latencyDelta(prev, cur Latency) (MinuteLatency, bool) {
	if cur.Count <= prev.Count || !slices.Equal(prev.Bounds, cur.Bounds) || len(prev.Buckets) != len(cur.Buckets) {
		return MinuteLatency{}, false
	}
	n := min(len(cur.Bounds), len(cur.Buckets))
	cum := make([]uint64, n)
	for i := range n {
		if cur.Buckets[i] < prev.Buckets[i] {
			return MinuteLatency{}, false
		}
		cum[i] = cur.Buckets[i] - prev.Buckets[i]
	}
	count := cur.Count - prev.Count
	bounds := cur.Bounds[:n]
	return MinuteLatency{
		Count: count,
		Mean:  (cur.Sum - prev.Sum) / float64(count),
		P50:   quantile(0.50, bounds, cum, count),
		P95:   quantile(0.95, bounds, cum, count),
		P99:   quantile(0.99, bounds, cum, count),
	}, true
}

// quantile estimates the q-quantile of total observations from cumulative
// bucket counts cum with upper bounds bounds (the +Inf bucket implied), as
// Prometheus' histogram_quantile: linear interpolation inside the bucket
// the rank falls in, the lowest bucket starting at zero, and the highest
// finite bound when the rank falls in the +Inf bucket. NaN without bounds.
func quantile(q float64, bounds []float64, cum []uint64, total uint64) float64 {
	if len(bounds) == 0 || total == 0 {
		return math.NaN()
	}
	// A snapshot taken while observations were being counted may be
	// slightly inconsistent: keep the counts monotonic, as Prometheus does.
	fixed := make([]float64, len(cum))
	var run uint64
	for i, c := range cum {
		run = max(run, c)
		fixed[i] = float64(run)
	}
	observations := max(float64(total), fixed[len(fixed)-1])
	rank := q * observations
	b, _ := slices.BinarySearchFunc(fixed, rank, func(c, r float64) int { return cmp.Compare(c, r) })
	if b == len(fixed) {
		return bounds[len(bounds)-1]
	}
	if b == 0 && bounds[0] <= 0 {
		return bounds[0]
	}
	start, count := 0.0, fixed[b]
	if b > 0 {
		start = bounds[b-1]
		count -= fixed[b-1]
		rank -= fixed[b-1]
	}
	return start + (bounds[b]-start)*(rank/count)
}

// clonePoint copies p's maps and slices so the caller may reuse them.
func clonePoint(p Point) Point {
	c := Point{Time: p.Time, Refusals: maps.Clone(p.Refusals), DNSHits: maps.Clone(p.DNSHits)}
	if p.Requests != nil {
		c.Requests = make(map[string]Latency, len(p.Requests))
		for k, l := range p.Requests {
			l.Bounds = slices.Clone(l.Bounds)
			l.Buckets = slices.Clone(l.Buckets)
			c.Requests[k] = l
		}
	}
	return c
}
