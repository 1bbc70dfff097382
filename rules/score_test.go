package rules

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/matryer/is"
)

// scoreConfig: three blacklists weighted 3, 2 and 1, a whitelist
// weighted 2 (it subtracts), threshold 4, allow_threshold -1.
const scoreConfig = `
[dns_whitelist]
enabled = true
sites = ["wl.test*2"]
action = "tag"
[dns_blacklist]
enabled = true
sites = ["big.test=127.0.0.[2..11]*3", "mid.test*2", "small.test"]
decision = "score"
threshold = 4
allow_threshold = -1
action = "%ACTION%"
message = "Host %s is listed by %s"
`

func TestScore(t *testing.T) {
	two := netip.MustParseAddr("127.0.0.2")
	tests := []struct {
		name, action string
		lists        []string // zones that list the client
		fail         []string // zones that fail
		want         Action
		text, header string
	}{
		{name: "threshold exactly met", action: "reject", lists: []string{"big.test", "small.test"}, want: ActionReject, text: "Host 192.0.2.1 is listed by big.test, small.test"},
		{name: "below the threshold", action: "reject", lists: []string{"big.test"}, want: ActionAccept},
		{name: "all three", action: "tag", lists: []string{"big.test", "mid.test", "small.test"}, want: ActionTag, header: "X-DNSBL-Score: 6 (big.test, mid.test, small.test)"},
		{name: "a whitelist cancels", action: "reject", lists: []string{"big.test", "small.test", "wl.test"}, want: ActionAccept},
		{name: "an error adds nothing", action: "reject", lists: []string{"big.test"}, fail: []string{"small.test"}, want: ActionAccept},
		{name: "allow_threshold whitelists", action: "reject", lists: []string{"wl.test"}, want: ActionTag, header: "X-DNSWL-Site: wl.test"},
		{name: "nothing listed", action: "reject", want: ActionAccept},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			e, dns := newTestEngine(t, strings.Replace(scoreConfig, "%ACTION%", tt.action, 1))
			ip := netip.MustParseAddr("192.0.2.1")
			for _, z := range tt.lists {
				dns.Set(z, ip, "", two)
			}
			for _, z := range tt.fail {
				dns.Fail(z, ip, errors.New("SERVFAIL"))
			}
			s := NewSession(ip, "")
			s.Trace = true
			v := e.Connect(context.Background(), s)
			var steps []string
			for _, st := range v.Trace {
				steps = append(steps, st.String())
			}
			t.Log(strings.Join(steps, "\n"))
			is.Equal(v.Action, tt.want)
			if tt.text != "" {
				is.Equal(v.Text, tt.text)
				is.Equal(v.Control, ControlDNSBlacklist)
			}
			if tt.header != "" {
				is.Equal(len(v.Headers), 1)
				is.Equal(v.Headers[0].String(), tt.header)
			}
			if len(tt.lists) > 0 {
				is.True(strings.Contains(strings.Join(steps, "\n"), ", score ")) // explain shows each site's part
			}
		})
	}
}

func TestScoreCounted(t *testing.T) {
	is := is.New(t)
	e, dns := newTestEngine(t, strings.Replace(scoreConfig, "%ACTION%", "log", 1))
	ip := netip.MustParseAddr("192.0.2.1")
	dns.Set("big.test", ip, "", netip.MustParseAddr("127.0.0.2"))
	e.Connect(context.Background(), NewSession(ip, ""))
	st := e.Counters().Snapshot()
	is.Equal(st.DNSBLScore.Count, uint64(1))
	is.Equal(st.DNSBLScore.Sum, float64(3))
	is.Equal(st.DNSBLHits, uint64(1))
}

func TestScoreConfig(t *testing.T) {
	oneConfigError(t, "[dns_blacklist]\ndecision = \"sum\"", "dns_blacklist.decision", 2, "first or score")
	oneConfigError(t, "[dns_blacklist]\ndecision = \"score\"\nthreshold = 0", "dns_blacklist.threshold", 3, "1 or more")
	oneConfigError(t, "[dns_blacklist]\ndecision = \"score\"\nallow_threshold = 2", "dns_blacklist.allow_threshold", 3, "negative")
	cfg, err := Parse("test.toml", "[dns_blacklist]\nsites = [\"bl.test*3\"]")
	is.New(t).NoErr(err)
	is.New(t).True(strings.Contains(strings.Join(cfg.Warnings, "\n"), "counts only with [dns_blacklist] decision = \"score\""))
}

// TestScoreReplayed: the session record of a scored client holds every
// listing that counted, so replay adds the score up again (and a higher
// threshold changes the verdict).
func TestScoreReplayed(t *testing.T) {
	is := is.New(t)
	cfg, err := Parse("test.toml", strings.Replace(scoreConfig, "%ACTION%", "reject", 1))
	is.NoErr(err)
	dns := NewMemoryDNS()
	rec := &recordsObserver{}
	e := NewEngine(cfg, EngineOptions{DNS: dns, Observer: rec})
	ip := netip.MustParseAddr("192.0.2.1")
	for _, z := range []string{"big.test", "small.test"} {
		dns.Set(z, ip, "", netip.MustParseAddr("127.0.0.2"))
	}
	s := NewSession(ip, "")
	is.Equal(e.Connect(context.Background(), s).Action, ActionReject)
	e.EndMessage(s)
	is.Equal(len(rec.recs), 1)
	is.Equal(len(rec.recs[0].DNSLists), 2) // both listings, not only the first

	rep := Replay(context.Background(), cfg, rec.recs, nil)
	is.Equal(rep.Changed, 0) // 3 + 1 = 4 again
	higher, err := Parse("test.toml", strings.Replace(strings.Replace(scoreConfig, "%ACTION%", "reject", 1), "threshold = 4", "threshold = 5", 1))
	is.NoErr(err)
	rep = Replay(context.Background(), higher, rec.recs, nil)
	is.Equal(rep.Changed, 1) // 4 is below 5 now
}
