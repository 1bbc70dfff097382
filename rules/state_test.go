package rules

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matryer/is"
)

// fakeBans is a BanList of a few prefixes.
type fakeBans map[netip.Prefix]Ban

func (f fakeBans) Banned(ip netip.Addr) (Ban, bool) {
	var best Ban
	found := false
	for p, b := range f {
		if p.Contains(ip) && (!found || p.Bits() > best.Prefix.Bits()) {
			best, found = b, true
		}
	}
	return best, found
}

// fakeLimiter allows limit units per key and counts; err fails every call.
type fakeLimiter struct {
	mu   sync.Mutex
	used map[string]int
	keys []string
	err  error
}

func (f *fakeLimiter) Allow(_ context.Context, key string, limit int, _ time.Duration, cost int) (RateDecision, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return RateDecision{}, f.err
	}
	if f.used == nil {
		f.used = map[string]int{}
	}
	f.keys = append(f.keys, key)
	if f.used[key]+cost > limit {
		return RateDecision{RetryAfter: time.Minute}, nil
	}
	f.used[key] += cost
	return RateDecision{Allowed: true}, nil
}

func TestBans(t *testing.T) {
	ban := func(p, reason string) (netip.Prefix, Ban) {
		pp := netip.MustParsePrefix(p)
		return pp, Ban{Prefix: pp, Reason: reason, Creator: "admin@relay-a"}
	}
	bans := fakeBans{}
	for _, b := range [][2]string{{"192.0.2.0/24", "spam run"}, {"192.0.2.9/32", "whitelisted too"}, {"2001:db8::/64", "v6"}} {
		p, v := ban(b[0], b[1])
		bans[p] = v
	}
	tests := []struct {
		name, config, ip string
		want             Action
		text             string
	}{
		{"banned address", "", "192.0.2.7", ActionReject, "Your host 192.0.2.7 is banned"},
		{"banned IPv6 network", "", "2001:db8::25", ActionReject, "Your host 2001:db8::25 is banned"},
		{"not banned", "", "198.51.100.1", ActionAccept, ""},
		{"own message", "[bans]\nmessage = \"Go away %s\"", "192.0.2.7", ActionReject, "Go away 192.0.2.7"},
		{"whitelisted scope all wins", "[whitelist]\nhosts = [\"192.0.2.9\"]", "192.0.2.9", ActionAccept, ""},
		{"whitelisted scope lists is still banned", "[whitelist]\nhosts = [\"192.0.2.9\"]\nscope = \"lists\"", "192.0.2.9", ActionReject, "Your host 192.0.2.9 is banned"},
		{"shadow", "[bans]\nmode = \"shadow\"", "192.0.2.7", ActionAccept, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			cfg, err := Parse("test.toml", tt.config)
			is.NoErr(err)
			e := NewEngine(cfg, EngineOptions{Bans: bans})
			s := NewSession(netip.MustParseAddr(tt.ip), "")
			v := e.Connect(context.Background(), s)
			is.Equal(v.Action, tt.want)
			if tt.want == ActionReject {
				is.Equal(v.Code, 550)
				is.Equal(v.EnhancedCode, "5.7.1")
				is.Equal(v.Text, tt.text)
				is.Equal(v.Control, ControlBans)
				is.True(strings.Contains(v.Reason, "by admin@relay-a"))
			}
			if tt.name == "shadow" {
				is.True(v.Shadow)
				is.Equal(v.Control, ControlBans)
			}
		})
	}
}

// TestRateLimits: each rule counts what it says, by its key, and refuses
// past its limit; exemptions as documented; a limiter that fails lets
// everything through.
func TestRateLimits(t *testing.T) {
	const senderRule = "[[ratelimit]]\nname = \"per-sender\"\nkey = \"sender\"\ncount = \"messages\"\nlimit = 2\nper = \"1h\"\n"
	tests := []struct {
		name, config string
		auth         string
		ip           string
		err          error
		steps        []verifyStep // rcpt "" is a MAIL FROM of the sender in text
		keys         []string
	}{
		{
			name: "messages per sender", config: senderRule, ip: "192.0.2.1",
			steps: []verifyStep{{text: "A@Example.com", want: ActionAccept}, {text: "a@example.com", want: ActionAccept},
				{text: "<a@example.com>", want: ActionTempfail, code: 450, enh: "4.7.1"}, {text: "b@example.com", want: ActionAccept}},
			keys: []string{"rl:per-sender:a@example.com", "rl:per-sender:a@example.com", "rl:per-sender:a@example.com", "rl:per-sender:b@example.com"},
		},
		{
			name: "reject action and message", config: strings.Replace(senderRule, "per = \"1h\"\n", "per = \"1h\"\naction = \"reject\"\nmessage = \"Slow down %s\"\n", 1), ip: "192.0.2.1",
			steps: []verifyStep{{text: "a@example.com", want: ActionAccept}, {text: "a@example.com", want: ActionAccept},
				{text: "a@example.com", want: ActionReject, code: 550, enh: "5.7.1", rcpt: "Slow down 192.0.2.1"}},
		},
		{
			name: "sender domains", config: "[[ratelimit]]\nkey = \"sender_domain\"\ncount = \"messages\"\nlimit = 1\nper = \"1m\"\n", ip: "192.0.2.1",
			steps: []verifyStep{{text: "a@Example.com", want: ActionAccept}, {text: "b@example.COM", want: ActionTempfail, code: 450, enh: "4.7.1"}},
			keys:  []string{"rl:ratelimit[0]:example.com", "rl:ratelimit[0]:example.com"},
		},
		{
			name: "recipients per client network", config: "[[ratelimit]]\nkey = \"client_net\"\ncount = \"recipients\"\nlimit = 2\nper = \"1m\"\n", ip: "192.0.2.77",
			steps: []verifyStep{{text: "a@example.com", want: ActionAccept}, {rcpt: "x@domino.test", want: ActionAccept},
				{rcpt: "y@domino.test", want: ActionAccept}, {rcpt: "z@domino.test", want: ActionTempfail, code: 450, enh: "4.7.1"}},
			keys: []string{"rl:ratelimit[0]:192.0.2.0/24", "rl:ratelimit[0]:192.0.2.0/24", "rl:ratelimit[0]:192.0.2.0/24"},
		},
		{
			name: "authenticated sessions are exempt", config: senderRule, ip: "192.0.2.1", auth: "alice",
			steps: []verifyStep{{text: "a@example.com", want: ActionAccept}, {text: "a@example.com", want: ActionAccept}, {text: "a@example.com", want: ActionAccept}},
		},
		{
			name: "but not from sasl_user rules", config: "[[ratelimit]]\nkey = \"sasl_user\"\ncount = \"messages\"\nlimit = 1\nper = \"1h\"\n" + senderRule, ip: "192.0.2.1", auth: "alice",
			steps: []verifyStep{{text: "a@example.com", want: ActionAccept}, {text: "b@example.com", want: ActionTempfail, code: 450, enh: "4.7.1"}},
			keys:  []string{"rl:ratelimit[0]:alice", "rl:ratelimit[0]:alice"},
		},
		{
			name: "whitelisted clients are exempt", config: "[whitelist]\nhosts = [\"192.0.2.1\"]\nscope = \"lists\"\n" + senderRule, ip: "192.0.2.1",
			steps: []verifyStep{{text: "a@example.com", want: ActionAccept}, {text: "a@example.com", want: ActionAccept}, {text: "a@example.com", want: ActionAccept}},
		},
		{
			name: "a failing limiter lets mail through", config: senderRule, ip: "192.0.2.1", err: errors.New("state backend unavailable"),
			steps: []verifyStep{{text: "a@example.com", want: ActionAccept}, {text: "a@example.com", want: ActionAccept}, {text: "a@example.com", want: ActionAccept}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			cfg, err := Parse("test.toml", tt.config)
			is.NoErr(err)
			lim := &fakeLimiter{err: tt.err}
			counters := new(Counters)
			e := NewEngine(cfg, EngineOptions{Limiter: lim, Counters: counters})
			ctx := context.Background()
			s := NewSession(netip.MustParseAddr(tt.ip), "")
			s.AuthUser = tt.auth
			for i, st := range tt.steps {
				var v Verdict
				if st.rcpt != "" && st.text == "" {
					v = e.Rcpt(ctx, s, st.rcpt)
				} else {
					v = e.Mail(ctx, s, st.text)
				}
				t.Logf("step %d: %s %s %s", i, v.Action, v.Reply(), v.Reason)
				is.Equal(v.Action, st.want)
				if st.code != 0 {
					is.Equal(v.Code, st.code)
					is.Equal(v.EnhancedCode, st.enh)
					is.Equal(v.Control, ControlRateLimit)
					if st.rcpt != "" && st.text != "" {
						is.Equal(v.Text, st.rcpt) // a MAIL step's rcpt is the reply text
					}
				}
			}
			if tt.keys != nil {
				is.Equal(lim.keys, tt.keys)
			}
			if tt.err != nil {
				is.Equal(counters.Snapshot().State.RateLimitErrors, uint64(len(tt.steps)))
			}
		})
	}
}

// TestRateLimitConnections: connections are counted at connect, once per
// session, only when no list refused the client.
func TestRateLimitConnections(t *testing.T) {
	is := is.New(t)
	cfg, err := Parse("test.toml", "[blacklist]\nhosts = [\"192.0.2.66\"]\n[[ratelimit]]\nname = \"conns\"\nkey = \"client\"\ncount = \"connections\"\nlimit = 2\nper = \"1m\"\n")
	is.NoErr(err)
	lim := &fakeLimiter{}
	counters := new(Counters)
	e := NewEngine(cfg, EngineOptions{Limiter: lim, Counters: counters})
	ctx := context.Background()
	for i, want := range []Action{ActionAccept, ActionAccept, ActionTempfail} {
		s := NewSession(netip.MustParseAddr("192.0.2.1"), "")
		v := e.Connect(ctx, s)
		is.Equal(v.Action, want) // connection i
		if i == 2 {
			is.Equal(v.Reply(), "450 4.7.1 Rate limit exceeded, try again later")
			is.Equal(e.Mail(ctx, s, "a@example.com").Code, 450) // delivered again later
		}
	}
	e.Connect(ctx, NewSession(netip.MustParseAddr("192.0.2.66"), ""))
	is.Equal(len(lim.keys), 3) // the blacklisted client was not counted
	is.Equal(counters.Snapshot().State.RateLimited["conns"], uint64(1))
}

func TestStateConfigErrors(t *testing.T) {
	tests := []struct {
		name, toml, key string
		line            int
		want            string
	}{
		{"bad backend", "[state]\nbackend = \"etcd\"", "state.backend", 2, "memory or redis"},
		{"redis without addrs", "[state]\nbackend = \"redis\"", "state.addrs", 0, "at least one address"},
		{"bad addr", "[state]\nbackend = \"redis\"\naddrs = [\"localhost\"]", "state.addrs", 3, "host:port"},
		{"addrs on memory", "[state]\naddrs = [\"127.0.0.1:6379\"]", "state.addrs", 2, "backend = \"redis\""},
		{"braces in prefix", "[state]\nprefix = \"a{b}\"", "state.prefix", 2, "braces"},
		{"short token", "[admin]\ntoken_file = \"testdata/directory-password\"", "admin.token_file", 2, "at least 16"},
		{"bad autoban net", "[autoban]\nnet_v4 = 33", "autoban.net_v4", 2, "between 8 and 32"},
		{"bad ratelimit key", "[[ratelimit]]\nkey = \"ip\"\ncount = \"messages\"\nlimit = 1\nper = \"1h\"", "ratelimit[0].key", 2, "client, client_net"},
		{"connections by sender", "[[ratelimit]]\nkey = \"sender\"\ncount = \"connections\"\nlimit = 1\nper = \"1h\"", "ratelimit[0].count", 3, "no sender yet"},
		{"second rule without per", "[[ratelimit]]\nkey = \"client\"\ncount = \"messages\"\nlimit = 1\nper = \"1h\"\n\n[[ratelimit]]\nkey = \"client\"\ncount = \"messages\"\nlimit = 5", "ratelimit[1].per", 0, "is required"},
		{"bad limit on the second", "[[ratelimit]]\nkey = \"client\"\ncount = \"messages\"\nlimit = 1\nper = \"1h\"\n[[ratelimit]]\nkey = \"client\"\ncount = \"messages\"\nlimit = 0\nper = \"1h\"", "ratelimit[1].limit", 9, "1 or more"},
		{"unknown key in a rule", "[[ratelimit]]\nkey = \"client\"\ncount = \"messages\"\nlimit = 1\nper = \"1h\"\nburst = 3", "ratelimit[0].burst", 6, "unknown key"},
		{"wrong type in a rule", "[[ratelimit]]\nkey = \"client\"\ncount = \"messages\"\nlimit = \"1\"\nper = \"1h\"", "ratelimit[0].limit", 4, "want an integer"},
		{"ratelimit not an array", "[ratelimit]\nkey = \"client\"", "ratelimit", 1, "array of tables"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { oneConfigError(t, tt.toml, tt.key, tt.line, tt.want) })
	}
}

// TestReplayKeepsBansAndRateLimits: bans, rate limits and greylisting are state, not
// configuration: sessions they refused are replayed as refused again, and
// a new whitelist entry is what changes them.
func TestReplayKeepsBansAndRateLimits(t *testing.T) {
	is := is.New(t)
	rl := "[[ratelimit]]\nkey = \"client\"\ncount = \"messages\"\nlimit = 5\nper = \"1h\"\n"
	from := "a@example.com"
	records := []MessageRecord{
		{Session: "s.1", ClientIP: "192.0.2.7", Stage: StageConnect, Action: ActionReject, Control: ControlBans, Reason: "banned: 192.0.2.7/32 by admin@relay-a"},
		{Session: "s.2", ClientIP: "192.0.2.8", Helo: "mx.example.com", MailFrom: &from, Recipients: []string{"x@domino.test"}, Stage: StageMail, Action: ActionTempfail, Control: ControlRateLimit, Reason: "ratelimit[0]: over"},
		{Session: "s.3", ClientIP: "192.0.2.9", Helo: "mx.example.com", MailFrom: &from, Recipients: []string{"x@domino.test"}, Stage: StageData, Action: ActionAccept},
	}
	records = append(records, MessageRecord{Session: "s.4", ClientIP: "192.0.2.10", Helo: "mx.example.com", MailFrom: &from,
		Refused: []string{"x@domino.test"}, Stage: StageRcpt, Action: ActionTempfail, Control: ControlGreylist, Reason: "greylisted"})
	rl += "[greylist]\nenabled = true\n"
	same, err := Parse("test.toml", rl)
	is.NoErr(err)
	rep := Replay(context.Background(), same, records, nil)
	is.Equal(rep.Sessions, 4)
	is.Equal(rep.Changed, 0) // nothing changes under the same configuration

	wl, err := Parse("test.toml", rl+"[whitelist]\nhosts = [\"192.0.2.7\", \"192.0.2.8\", \"192.0.2.10\"]\n")
	is.NoErr(err)
	rep = Replay(context.Background(), wl, records, nil)
	is.Equal(rep.Changed, 3) // whitelisted now: neither banned, limited nor greylisted
}
