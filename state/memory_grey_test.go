package state

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/matryer/is"
)

// TestMemoryGreylistSweep: expired triplets and pass windows are swept
// (more of them than one chunk, so the sweep yields its lock on the way),
// the live ones are kept, and GreylistTriplets follows.
func TestMemoryGreylistSweep(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	clk := newFakeClock()
	m := openMemory(t, MemoryOptions{Now: clk.Now})
	const delay, retry, keep = time.Minute, time.Hour, 24 * time.Hour
	const n = 2*sweepChunk + 100
	for i := range n {
		_, err := m.Greylist(ctx, fmt.Sprintf("pending-%d", i), delay, retry, keep)
		is.NoErr(err)
	}
	for i := range 10 {
		k := fmt.Sprintf("passed-%d", i)
		_, err := m.Greylist(ctx, k, delay, retry, keep)
		is.NoErr(err)
		_, err = m.GreylistPassed(ctx, fmt.Sprintf("net-%d", i), 1, keep)
		is.NoErr(err)
	}
	clk.Advance(delay)
	for i := range 10 {
		gr, err := m.Greylist(ctx, fmt.Sprintf("passed-%d", i), delay, retry, keep)
		is.NoErr(err)
		is.True(gr.FirstPass)
	}
	m.sweep()
	triplets, networks := m.greySizes()
	is.Equal([]int{triplets, networks}, []int{n + 10, 10}) // nothing expired yet

	clk.Advance(retry) // the pending ones' window is over
	m.sweep()
	triplets, networks = m.greySizes()
	is.Equal([]int{triplets, networks}, []int{10, 10})
	got, err := m.GreylistTriplets(ctx)
	is.NoErr(err)
	is.Equal(got, 10)

	clk.Advance(keep) // the passed ones and the pass windows are unused for keep
	m.sweep()
	triplets, networks = m.greySizes()
	is.Equal([]int{triplets, networks}, []int{0, 0})
}

// TestMemoryGreylistBound: past the bound a new triplet passes without
// being remembered, known triplets keep their state, and room made by the
// sweep is used again; past the bound of networks a new one is counted
// but not remembered.
func TestMemoryGreylistBound(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	clk := newFakeClock()
	m := openMemory(t, MemoryOptions{Now: clk.Now})
	m.greyMu.Lock()
	m.greyMax, m.greyNetMax = 3, 2
	m.greyMu.Unlock()
	const delay, retry, keep = time.Minute, time.Hour, 24 * time.Hour
	grey := func(k string) Grey {
		gr, err := m.Greylist(ctx, k, delay, retry, keep)
		is.NoErr(err)
		return gr
	}
	for _, k := range []string{"a", "b", "c"} {
		is.Equal(grey(k), Grey{New: true, Wait: delay})
	}
	is.Equal(grey("d"), Grey{Pass: true, New: true}) // full: passes, unremembered
	is.Equal(grey("d"), Grey{Pass: true, New: true})
	is.Equal(grey("a"), Grey{Wait: delay}) // a known triplet keeps its state
	n, err := m.GreylistTriplets(ctx)
	is.NoErr(err)
	is.Equal(n, 3)

	clk.Advance(retry) // a, b, c expire, unswept: an expired one's slot is reused
	is.Equal(grey("a"), Grey{New: true, Wait: delay})
	is.Equal(grey("d"), Grey{Pass: true, New: true}) // b and c still take room
	m.sweep()
	is.Equal(grey("d"), Grey{New: true, Wait: delay})

	for _, tc := range []struct {
		network string
		add     int
		want    int
	}{
		{"n1", 1, 1}, {"n2", 1, 1},
		{"n3", 1, 1}, {"n3", 1, 1}, // not remembered
		{"n3", 0, 0},
		{"n1", 1, 2},
		{"n4", maxGreyPassed + 1, maxGreyPassed},
	} {
		got, err := m.GreylistPassed(ctx, tc.network, tc.add, keep)
		is.NoErr(err)
		is.Equal(got, tc.want)
	}
}

func TestMemoryGreylistCanceledContext(t *testing.T) {
	is := is.New(t)
	m := openMemory(t, MemoryOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := m.Greylist(ctx, "k", time.Minute, time.Hour, time.Hour)
	is.True(err != nil)
	_, err = m.GreylistPassed(ctx, "n", 1, time.Hour)
	is.True(err != nil)
	_, err = m.GreylistTriplets(ctx)
	is.True(err != nil)
}
