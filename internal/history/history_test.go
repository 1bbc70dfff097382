package history

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/smtp-interceptor/smtp-interceptor/internal/testutil"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// at returns a point d after t0 with the given refusal counters.
func at(d time.Duration, refusals map[string]uint64) Point {
	return Point{Time: t0.Add(d), Refusals: refusals}
}

// near reports whether a and b agree to 1e-9 (both NaN counts as equal).
func near(a, b float64) bool {
	if math.IsNaN(a) || math.IsNaN(b) {
		return math.IsNaN(a) && math.IsNaN(b)
	}
	return math.Abs(a-b) < 1e-9
}

var bounds = []float64{0.01, 0.1, 1}

func lat(count uint64, sum float64, buckets ...uint64) Latency {
	return Latency{Count: count, Sum: sum, Bounds: bounds, Buckets: buckets}
}

func TestRecordDeltas(t *testing.T) {
	tests := []struct {
		name      string
		prev, cur Point
		refusals  map[string]uint64
		dnsHits   map[string]uint64
		requests  map[string]MinuteLatency
	}{
		{
			name:     "increase; unchanged keys left out",
			prev:     Point{Refusals: map[string]uint64{"rbl": 10, "helo": 3}, DNSHits: map[string]uint64{"dnsbl a.test": 7}},
			cur:      Point{Refusals: map[string]uint64{"rbl": 14, "helo": 3}, DNSHits: map[string]uint64{"dnsbl a.test": 9}},
			refusals: map[string]uint64{"rbl": 4},
			dnsHits:  map[string]uint64{"dnsbl a.test": 2},
			requests: map[string]MinuteLatency{},
		},
		{
			name:     "a new key counts from zero, a vanished key is left out",
			prev:     Point{Refusals: map[string]uint64{"rbl": 10}},
			cur:      Point{Refusals: map[string]uint64{"greylist": 5}},
			refusals: map[string]uint64{"greylist": 5},
			dnsHits:  map[string]uint64{},
			requests: map[string]MinuteLatency{},
		},
		{
			name:     "a counter that went down counts as zero",
			prev:     Point{Refusals: map[string]uint64{"rbl": 1000, "helo": 2}},
			cur:      Point{Refusals: map[string]uint64{"rbl": 3, "helo": 4}},
			refusals: map[string]uint64{"helo": 2},
			dnsHits:  map[string]uint64{},
			requests: map[string]MinuteLatency{},
		},
		{
			name:     "latency from a non-zero baseline",
			prev:     Point{Requests: map[string]Latency{"policy": lat(50, 5, 5, 30, 50)}},
			cur:      Point{Requests: map[string]Latency{"policy": lat(150, 17, 15, 90, 150)}},
			refusals: map[string]uint64{},
			dnsHits:  map[string]uint64{},
			requests: map[string]MinuteLatency{"policy": {Count: 100, Mean: 0.12, P50: 0.082, P95: 0.8875, P99: 0.9775}},
		},
		{
			name:     "a new protocol counts from zero",
			prev:     Point{},
			cur:      Point{Requests: map[string]Latency{"milter": lat(100, 12, 10, 60, 90)}},
			refusals: map[string]uint64{},
			dnsHits:  map[string]uint64{},
			requests: map[string]MinuteLatency{"milter": {Count: 100, Mean: 0.12, P50: 0.082, P95: 1, P99: 1}},
		},
		{
			name: "latency without requests, reset or with new bounds is left out",
			prev: Point{Requests: map[string]Latency{
				"idle":   lat(50, 5, 5, 30, 50),
				"reset":  lat(50, 5, 5, 30, 50),
				"bucket": lat(50, 5, 5, 30, 50),
				"bounds": lat(50, 5, 5, 30, 50),
			}},
			cur: Point{Requests: map[string]Latency{
				"idle":   lat(50, 5, 5, 30, 50),
				"reset":  lat(20, 1, 2, 10, 20),
				"bucket": lat(60, 6, 4, 40, 60),
				"bounds": {Count: 60, Sum: 6, Bounds: []float64{0.5, 1}, Buckets: []uint64{50, 60}},
			}},
			refusals: map[string]uint64{},
			dnsHits:  map[string]uint64{},
			requests: map[string]MinuteLatency{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			h := New(10)
			tt.prev.Time, tt.cur.Time = t0, t0.Add(time.Minute)
			h.Record(tt.prev)
			h.Record(tt.cur)
			ms := h.Minutes()
			is.Equal(len(ms), 1)
			m := ms[0]
			is.Equal(m.Start, t0)
			is.True(!m.Gap)
			is.Equal(m.Refusals, tt.refusals)
			is.Equal(m.DNSHits, tt.dnsHits)
			is.Equal(len(m.Requests), len(tt.requests))
			for proto, want := range tt.requests {
				got, ok := m.Requests[proto]
				is.True(ok) // protocol recorded
				is.Equal(got.Count, want.Count)
				for _, q := range []struct {
					name      string
					got, want float64
				}{{"mean", got.Mean, want.Mean}, {"p50", got.P50, want.P50}, {"p95", got.P95, want.P95}, {"p99", got.P99, want.P99}} {
					if !near(q.got, q.want) {
						t.Errorf("%s %s = %v, want %v", proto, q.name, q.got, q.want)
					}
				}
			}
		})
	}
}

func TestQuantile(t *testing.T) {
	tests := []struct {
		name   string
		q      float64
		bounds []float64
		cum    []uint64
		total  uint64
		want   float64
	}{
		{"median in the second bucket", 0.5, bounds, []uint64{10, 60, 90}, 100, 0.01 + 0.09*40.0/50},
		{"rank in the +Inf bucket gives the highest bound", 0.95, bounds, []uint64{10, 60, 90}, 100, 1},
		{"the first bucket starts at zero", 0.5, bounds, []uint64{100, 100, 100}, 100, 0.005},
		{"p99 in the first bucket", 0.99, bounds, []uint64{100, 100, 100}, 100, 0.0099},
		{"rank on a bucket's edge", 0.6, bounds, []uint64{10, 60, 100}, 100, 0.1},
		{"empty buckets before the rank are skipped", 0.5, bounds, []uint64{0, 0, 4}, 4, 0.1 + 0.9*0.5},
		{"a first bound at zero", 0.1, []float64{0, 1}, []uint64{50, 100}, 100, 0},
		{"counts kept monotonic", 0.5, bounds, []uint64{10, 5, 100}, 100, 0.1 + 0.9*40.0/90},
		{"buckets ahead of the count", 0.5, bounds, []uint64{10, 60, 120}, 100, 0.01 + 0.09*50.0/50},
		{"no bounds", 0.5, nil, nil, 100, math.NaN()},
		{"no observations", 0.5, bounds, []uint64{0, 0, 0}, 0, math.NaN()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := quantile(tt.q, tt.bounds, tt.cum, tt.total); !near(got, tt.want) {
				t.Errorf("quantile(%v) = %v, want %v", tt.q, got, tt.want)
			}
		})
	}
}

func TestRecordTiming(t *testing.T) {
	type want struct {
		start time.Duration // after t0
		gap   bool
		rbl   uint64
	}
	tests := []struct {
		name   string
		points []Point
		want   []want
	}{
		{
			name:   "the first point is only a baseline",
			points: []Point{at(0, map[string]uint64{"rbl": 5})},
		},
		{
			name: "one minute apart, with jitter",
			points: []Point{
				at(0, map[string]uint64{"rbl": 5}),
				at(time.Minute+20*time.Millisecond, map[string]uint64{"rbl": 6}),
				at(2*time.Minute-3*time.Second, map[string]uint64{"rbl": 8}),
			},
			want: []want{{0, false, 1}, {time.Minute + 20*time.Millisecond, false, 2}},
		},
		{
			name: "a point sooner than a minute is ignored, the baseline kept",
			points: []Point{
				at(0, map[string]uint64{"rbl": 5}),
				at(20*time.Second, map[string]uint64{"rbl": 6}),
				at(40*time.Second, map[string]uint64{"rbl": 7}),
				at(time.Minute, map[string]uint64{"rbl": 9}),
			},
			want: []want{{0, false, 4}},
		},
		{
			name: "missed minutes are gaps, not smeared",
			points: []Point{
				at(0, map[string]uint64{"rbl": 5}),
				at(time.Minute, map[string]uint64{"rbl": 6}),
				at(4*time.Minute, map[string]uint64{"rbl": 60}),
				at(5*time.Minute, map[string]uint64{"rbl": 61}),
			},
			want: []want{
				{0, false, 1},
				{time.Minute, true, 0}, {2 * time.Minute, true, 0}, {3 * time.Minute, true, 0},
				{4 * time.Minute, false, 1},
			},
		},
		{
			name: "a minute and a half is a gap of two",
			points: []Point{
				at(0, map[string]uint64{"rbl": 5}),
				at(90*time.Second, map[string]uint64{"rbl": 6}),
			},
			want: []want{{0, true, 0}, {time.Minute, true, 0}},
		},
		{
			name: "a clock that went back sets a new baseline",
			points: []Point{
				at(10*time.Minute, map[string]uint64{"rbl": 5}),
				at(0, map[string]uint64{"rbl": 7}),
				at(time.Minute, map[string]uint64{"rbl": 10}),
			},
			want: []want{{0, false, 3}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			h := New(10)
			for _, p := range tt.points {
				h.Record(p)
			}
			ms := h.Minutes()
			is.Equal(len(ms), len(tt.want))
			for i, w := range tt.want {
				is.Equal(ms[i].Start, t0.Add(w.start))
				is.Equal(ms[i].Gap, w.gap)
				is.Equal(ms[i].Refusals["rbl"], w.rbl)
				if w.gap {
					is.True(ms[i].Refusals == nil && ms[i].DNSHits == nil && ms[i].Requests == nil) // a gap has no data
				}
			}
		})
	}
}

func TestRing(t *testing.T) {
	tests := []struct {
		name   string
		size   int
		points []time.Duration // offsets of the points after t0, refusals counting 1, 2, 3...
		starts []time.Duration
		gaps   []bool
	}{
		{
			name:   "old minutes fall out",
			size:   3,
			points: []time.Duration{0, 1, 2, 3, 4, 5, 6},
			starts: []time.Duration{3, 4, 5},
			gaps:   []bool{false, false, false},
		},
		{
			name:   "exactly full",
			size:   3,
			points: []time.Duration{0, 1, 2, 3},
			starts: []time.Duration{0, 1, 2},
			gaps:   []bool{false, false, false},
		},
		{
			name:   "a gap longer than the ring keeps its last minutes",
			size:   3,
			points: []time.Duration{0, 1, 11},
			starts: []time.Duration{8, 9, 10},
			gaps:   []bool{true, true, true},
		},
		{
			name:   "after a gap",
			size:   4,
			points: []time.Duration{0, 1, 3, 4, 5},
			starts: []time.Duration{1, 2, 3, 4},
			gaps:   []bool{true, true, false, false},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			h := New(tt.size)
			for i, d := range tt.points {
				h.Record(at(d*time.Minute, map[string]uint64{"rbl": uint64(i + 1)}))
			}
			ms := h.Minutes()
			is.Equal(len(ms), len(tt.starts))
			for i := range ms {
				is.Equal(ms[i].Start, t0.Add(tt.starts[i]*time.Minute))
				is.Equal(ms[i].Gap, tt.gaps[i])
				if !ms[i].Gap {
					is.Equal(ms[i].Refusals["rbl"], uint64(1))
				}
			}
		})
	}
}

func TestNewDefaultsToADay(t *testing.T) {
	is := is.New(t)
	h := New(0)
	for i := range DayMinutes + 5 {
		h.Record(at(time.Duration(i)*time.Minute, nil))
	}
	ms := h.Minutes()
	is.Equal(len(ms), DayMinutes)
	is.Equal(ms[0].Start, t0.Add(4*time.Minute))
}

func TestCopies(t *testing.T) {
	is := is.New(t)
	h := New(10)
	p := Point{Time: t0, Refusals: map[string]uint64{"rbl": 1},
		Requests: map[string]Latency{"policy": {Count: 1, Sum: 0.005, Bounds: []float64{0.01, 0.1}, Buckets: []uint64{1, 1}}}}
	h.Record(p)
	// The caller reuses its maps and slices for the next sample.
	p.Refusals["rbl"] = 1000
	lp := p.Requests["policy"]
	lp.Buckets[0] = 1000
	p.Time = t0.Add(time.Minute)
	p.Refusals["rbl"] = 3
	p.Requests["policy"] = Latency{Count: 3, Sum: 0.105, Bounds: []float64{0.01, 0.1}, Buckets: []uint64{2, 3}}
	h.Record(p)
	ms := h.Minutes()
	is.Equal(ms[0].Refusals["rbl"], uint64(2))          // the baseline was copied
	is.Equal(ms[0].Requests["policy"].Count, uint64(2)) // the baseline's buckets were copied
	is.True(near(ms[0].Requests["policy"].P50, 0.01))

	ms[0].Refusals["rbl"] = 99
	ms[0].Requests["policy"] = MinuteLatency{}
	again := h.Minutes()
	is.Equal(again[0].Refusals["rbl"], uint64(2)) // Minutes returns copies
	is.Equal(again[0].Requests["policy"].Count, uint64(2))
}

func TestTopKeys(t *testing.T) {
	minutes := []Minute{
		{DNSHits: map[string]uint64{"a": 5, "b": 1, "z": 0}},
		{Gap: true},
		{DNSHits: map[string]uint64{"b": 3, "c": 4, "d": 1}},
		{DNSHits: map[string]uint64{"d": 3}},
	}
	hits := func(m Minute) map[string]uint64 { return m.DNSHits }
	tests := []struct {
		name string
		n    int
		want []string
	}{
		{"top two", 2, []string{"a", "b"}},
		{"ties by name", 4, []string{"a", "b", "c", "d"}},
		{"more than there are", 10, []string{"a", "b", "c", "d"}},
		{"all", 0, []string{"a", "b", "c", "d"}},
		{"one", 1, []string{"a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			is.Equal(TopKeys(minutes, hits, tt.n), tt.want)
		})
	}
	is.New(t).Equal(len(TopKeys(nil, hits, 3)), 0)
}

func TestConcurrent(t *testing.T) {
	is := is.New(t)
	h := New(100)
	const points = 500
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range points {
			h.Record(at(time.Duration(i)*time.Minute, map[string]uint64{"rbl": uint64(i)}))
		}
	}()
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 200 {
				for _, m := range h.Minutes() {
					if m.Refusals["rbl"] != 1 {
						t.Errorf("minute %v: rbl %d, want 1", m.Start, m.Refusals["rbl"])
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	ms := h.Minutes()
	is.Equal(len(ms), 100)
	is.Equal(ms[99].Start, t0.Add((points-2)*time.Minute))
}

func TestRun(t *testing.T) {
	is := is.New(t)
	h := New(10)
	var calls atomic.Int64
	sample := func() Point {
		n := calls.Add(1) - 1
		// Each sample is a minute after the last, whatever the ticker says.
		return Point{Time: t0.Add(time.Duration(n) * time.Minute),
			Refusals: map[string]uint64{"rbl": uint64(2 * n)},
			DNSHits:  map[string]uint64{"dnsbl zen.test": uint64(n)}}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.Run(ctx, time.Millisecond, sample)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	testutil.WaitFor(t, "three minutes recorded", func() bool { return len(h.Minutes()) >= 3 })
	cancel()
	testutil.WaitFor(t, "Run to return", func() bool {
		select {
		case <-done:
			return true
		default:
			return false
		}
	})
	ms := h.Minutes()
	is.Equal(int64(len(ms)), min(calls.Load()-1, 10)) // the first sample was the baseline
	is.Equal(ms[0].Start, t0)
	for _, m := range ms {
		is.Equal(m.Refusals["rbl"], uint64(2))
		is.Equal(m.DNSHits["dnsbl zen.test"], uint64(1))
	}
}

func TestRunStampsTimeAndStopsAtOnce(t *testing.T) {
	is := is.New(t)
	h := New(10)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	sampled := false
	h.Run(ctx, time.Millisecond, func() Point { sampled = true; return Point{} })
	is.True(!sampled) // a done context samples nothing

	// A sample without a time is stamped: it becomes the baseline, so a
	// point a minute later from now makes a minute.
	var calls atomic.Int64
	ctx, cancel = context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.Run(ctx, time.Hour, func() Point {
			calls.Add(1)
			return Point{Refusals: map[string]uint64{"rbl": 1}}
		})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	testutil.WaitFor(t, "the first sample", func() bool { return calls.Load() == 1 })
	cancel()
	<-done
	h.Record(Point{Time: time.Now().Add(time.Minute), Refusals: map[string]uint64{"rbl": 4}})
	ms := h.Minutes()
	is.Equal(len(ms), 1)
	is.Equal(ms[0].Refusals["rbl"], uint64(3))
}
