package autoban

import (
	"context"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/smtp-interceptor/smtp-interceptor/internal/testutil"
	"github.com/smtp-interceptor/smtp-interceptor/rules"
	"github.com/smtp-interceptor/smtp-interceptor/state"
)

func refused(code int, ctl rules.Control) rules.Verdict {
	a := rules.ActionReject
	if code < 500 {
		a = rules.ActionTempfail
	}
	return rules.Verdict{Stage: rules.StageRcpt, Action: a, Code: code, EnhancedCode: "5.7.1", Control: ctl, Reason: "test"}
}

// TestAutoban: five refusals from one client ban it (or its network) with
// the refusals recorded; what must not count does not.
func TestAutoban(t *testing.T) {
	cfg := rules.AutobanConfig{Enabled: true, Refusals: 5, Within: 10 * time.Minute, BanFor: time.Hour, NetV4: 32, NetV6: 64}
	tests := []struct {
		name    string
		cfg     func(rules.AutobanConfig) rules.AutobanConfig
		session func() *rules.Session
		verdict rules.Verdict
		n       int
		banned  string // prefix banned, "" none
	}{
		{name: "five refusals ban the address", n: 5, verdict: refused(550, rules.ControlRecipients), banned: "192.0.2.7/32"},
		{name: "four do not", n: 4, verdict: refused(550, rules.ControlRecipients)},
		{name: "the network with net_v4 = 24", n: 5, verdict: refused(550, rules.ControlHelo), banned: "192.0.2.0/24",
			cfg: func(c rules.AutobanConfig) rules.AutobanConfig { c.NetV4 = 24; return c }},
		{name: "IPv6 by /64", n: 5, verdict: refused(550, rules.ControlMailFrom), banned: "2001:db8:1:2::/64",
			session: func() *rules.Session { return rules.NewSession(netip.MustParseAddr("2001:db8:1:2::99"), "") }},
		{name: "421 counts", n: 5, verdict: refused(421, rules.ControlErrorLimit), banned: "192.0.2.7/32"},
		{name: "tempfails do not", n: 9, verdict: refused(451, rules.ControlRecipients)},
		{name: "off", n: 9, verdict: refused(550, rules.ControlRecipients),
			cfg: func(c rules.AutobanConfig) rules.AutobanConfig { c.Enabled = false; return c }},
		{name: "authenticated clients do not", n: 9, verdict: refused(550, rules.ControlRecipients),
			session: func() *rules.Session {
				s := rules.NewSession(netip.MustParseAddr("192.0.2.7"), "")
				s.AuthUser = "alice"
				return s
			}},
		{name: "repeated refusals count once", n: 9, verdict: func() rules.Verdict { v := refused(550, rules.ControlBlacklist); v.Repeated = true; return v }()},
		{name: "refusals by a ban do not count", n: 9, verdict: refused(550, rules.ControlBans)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			c := cfg
			if tt.cfg != nil {
				c = tt.cfg(c)
			}
			b, err := state.OpenMemory(state.MemoryOptions{})
			is.NoErr(err)
			defer b.Close()
			var mu sync.Mutex
			var bans []state.Ban
			o := New(Options{Backend: b, Config: func() rules.AutobanConfig { return c }, Relay: "relay-a", Logger: testutil.Logger(t),
				OnBan: func(x state.Ban) { mu.Lock(); bans = append(bans, x); mu.Unlock() }})
			s := rules.NewSession(netip.MustParseAddr("192.0.2.7"), "")
			if tt.session != nil {
				s = tt.session()
			}
			queued := 0
			for range tt.n {
				if Counts(s, &tt.verdict) && c.Enabled {
					queued++
				}
				o.Verdict(s, tt.verdict)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { o.Run(ctx); close(done) }()
			testutil.WaitFor(t, "the queue counted", func() bool { return o.counted.Load() == uint64(queued) })
			cancel()
			<-done
			mu.Lock()
			defer mu.Unlock()
			if tt.banned == "" {
				is.Equal(len(b.Bans()), 0)
				is.Equal(len(bans), 0)
				return
			}
			is.Equal(len(bans), 1)
			got := b.Bans()
			is.Equal(len(got), 1)
			is.Equal(got[0].Prefix.String(), tt.banned)
			is.Equal(got[0].Creator, "autoban@relay-a")
			is.True(strings.Contains(got[0].Reason, "5 refusals within 10m0s"))
			is.Equal(len(got[0].Refusals), 5)
			is.True(got[0].Expires.Sub(got[0].Created) == time.Hour)
		})
	}
}

// TestQueueFullDrops: a verdict never waits: past the queue's bound,
// refusals are dropped and counted.
func TestQueueFullDrops(t *testing.T) {
	is := is.New(t)
	b, err := state.OpenMemory(state.MemoryOptions{})
	is.NoErr(err)
	defer b.Close()
	c := rules.AutobanConfig{Enabled: true, Refusals: 5, Within: time.Minute, BanFor: time.Hour, NetV4: 32, NetV6: 64}
	o := New(Options{Backend: b, Config: func() rules.AutobanConfig { return c }, Queue: 2})
	s := rules.NewSession(netip.MustParseAddr("192.0.2.7"), "")
	for range 5 {
		o.Verdict(s, refused(550, rules.ControlRecipients))
	}
	is.Equal(o.Dropped(), uint64(3))
}
