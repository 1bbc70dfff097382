package rules

import (
	"net/netip"
	"testing"

	"github.com/matryer/is"
)

func TestExpandedStatsAreBoundedAndKeepTheBusiest(t *testing.T) {
	is := is.New(t)
	c := new(Counters)
	c.SetExpandedLimit(100)
	busy := netip.MustParseAddr("192.0.2.7")
	for range 50 {
		c.expanded.hit(DNSBL, "bl.test", busy)
	}
	for i := range 5000 { // a flood of addresses seen once
		c.expanded.hit(DNSBL, "bl.test", netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}))
	}
	c.expanded.hit(DNSWL, "wl.test", busy)
	rows := c.Expanded()
	is.True(len(rows) <= 100)                                                               // bounded
	is.Equal(rows[0], ExpandedHit{Kind: DNSBL, Site: "bl.test", IP: "192.0.2.7", Hits: 50}) // the busiest survive, exact
	found := false
	for _, r := range rows {
		if r.Kind == DNSWL && r.IP == "192.0.2.7" {
			found = true
		}
	}
	is.True(found) // the newest entry is there
}
