package rules

import (
	"context"
	"testing"

	"github.com/matryer/is"
)

// TestEntryHits: each entry counts its matches and its last match, and a
// reload keeps the counts of the entries that stay.
func TestEntryHits(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	e, _ := newTestEngine(t, "[blacklist]\nhosts = [\"192.0.2.1\", \"192.0.2.2\", \"192.0.2.3\"]\n[mail_from]\ndeny = [\"@bad.test\"]")
	for _, ip := range []string{"192.0.2.1", "192.0.2.1", "192.0.2.3"} {
		e.Connect(ctx, NewSession(mustAddr(ip), ""))
	}
	s := NewSession(mustAddr("198.51.100.1"), "")
	e.Helo(ctx, s, "EHLO", "mx")
	e.Mail(ctx, s, "x@bad.test")
	hits := func() map[string]uint64 {
		m := map[string]uint64{}
		for _, h := range e.Config().EntryHits() {
			m[h.Key+" "+h.Entry] = h.Hits
			is.Equal(h.LastHit.IsZero(), h.Hits == 0) // a last hit exactly when it matched
		}
		return m
	}
	is.Equal(hits(), map[string]uint64{"blacklist.hosts 192.0.2.1": 2, "blacklist.hosts 192.0.2.2": 0, "blacklist.hosts 192.0.2.3": 1, "mail_from.deny @bad.test": 1})

	cfg, err := Parse("", "[blacklist]\nhosts = [\"192.0.2.3\", \"192.0.2.9\"]\n[mail_from]\ndeny = [\"@bad.test\"]")
	is.NoErr(err)
	e.SetConfig(cfg)
	is.Equal(hits(), map[string]uint64{"blacklist.hosts 192.0.2.3": 1, "blacklist.hosts 192.0.2.9": 0, "mail_from.deny @bad.test": 1})
}

func BenchmarkHostListMatchCountsHit(b *testing.B) {
	h, _ := NewHostList([]Entry{{Value: "192.0.2.0/24"}, {Value: ".example.com"}})
	ip := mustAddr("192.0.2.7")
	b.ReportAllocs()
	for b.Loop() {
		h.Match(ip, "")
	}
}
