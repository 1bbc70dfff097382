package rules

import (
	"testing"
	"time"

	"github.com/matryer/is"
)

// fakeClock is a settable clock.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func TestSuspendedSince(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	type change struct {
		at        int // seconds after t0
		suspended bool
	}
	tests := []struct {
		name    string
		changes []change
		since   int // ask from this second
		now     int
		want    bool
	}{
		{name: "never suspended", since: 0, now: 100},
		{name: "suspended now, since before", changes: []change{{10, true}}, since: 50, now: 100, want: true},
		{name: "suspended after t", changes: []change{{60, true}}, since: 50, now: 100, want: true},
		{name: "suspended and restored after t", changes: []change{{60, true}, {70, false}}, since: 50, now: 100, want: true},
		{name: "suspended before t, restored after", changes: []change{{10, true}, {70, false}}, since: 50, now: 100, want: true},
		{name: "suspended and restored before t", changes: []change{{10, true}, {20, false}}, since: 50, now: 100},
		{name: "a repeated restore is no new restore", changes: []change{{10, true}, {20, false}, {60, false}}, since: 50, now: 100},
		{name: "a repeated suspension keeps its start", changes: []change{{10, true}, {60, true}, {70, false}}, since: 80, now: 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			clock := &fakeClock{}
			c := new(Counters)
			c.SetClock(clock.now)
			for _, ch := range tt.changes {
				clock.t = at(ch.at)
				c.SetSuspended("bl.test", ch.suspended)
			}
			clock.t = at(tt.now)
			is.Equal(c.SuspendedSince("bl.test", at(tt.since)), tt.want)
			is.True(!c.SuspendedSince("other.test", at(tt.since))) // another zone is not
		})
	}
}

func TestSuspensionSnapshotAndReload(t *testing.T) {
	is := is.New(t)
	clock := &fakeClock{t: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)}
	c := new(Counters)
	c.SetClock(clock.now)
	c.Site(DNSBL, "zen.test").Queries.Add(1) // known as a site, never suspended
	c.Site(DNSWL, "wl.test").Queries.Add(1)
	c.SetSuspended("bad.test", true)
	suspendedAt := clock.t
	clock.t = clock.t.Add(time.Minute)
	c.SetSuspended("healed.test", true)
	healedAt := clock.t
	c.SetSuspended("healed.test", false)

	s := c.Snapshot()
	is.Equal(s.Suspended, []string{"bad.test"}) // unchanged field
	is.Equal(s.Zones, []ZoneSnapshot{
		{Zone: "bad.test", Suspended: true, LastSuspended: suspendedAt},
		{Zone: "healed.test", LastSuspended: healedAt},
		{Zone: "wl.test"},
		{Zone: "zen.test"},
	})
	is.Equal(c.SuspendedZones(), []string{"bad.test"})
	is.True(c.Suspended("bad.test"))
	is.True(!c.Suspended("healed.test"))
	is.True(c.SuspendedSince("bad.test", clock.t))
}

// TestControlIndexMatchesCountedControls: the switch and the table agree.
func TestControlIndexMatchesCountedControls(t *testing.T) {
	for i, ctl := range countedControls {
		if got := controlIndex(ctl); got != i {
			t.Errorf("controlIndex(%q) = %d, want %d", ctl, got, i)
		}
	}
	if controlIndex("no such control") != 0 {
		t.Error("an unknown control must count as none")
	}
}
