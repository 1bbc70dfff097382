package rules

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/smtp-interceptor/smtp-interceptor/internal/testutil"
)

var testLogger = testutil.Logger

func newTestEngine(t *testing.T, text string) (*Engine, *MemoryDNS) {
	t.Helper()
	cfg, err := Parse("test.toml", text)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	dns := NewMemoryDNS()
	return NewEngine(cfg, EngineOptions{DNS: dns, Logger: testLogger(t)}), dns
}

// step is one SMTP event of a scenario and the verdict it must get.
type step struct {
	op   string // connect, helo, ehlo, mail, rcpt, data, cmd, auth
	arg  string
	want Action
	code int
	enh  string
	text string // exact reply text, when set
	ctl  Control
	hdr  string // "Name: value" expected among the verdict headers
}

type scenario struct {
	name   string
	config string
	ip     string
	host   string
	dns    func(*MemoryDNS)
	steps  []step
}

var (
	listed2 = netip.MustParseAddr("127.0.0.2")
	listed3 = netip.MustParseAddr("127.0.0.3")
)

const dnsConfig = `
[dns_whitelist]
enabled = true
sites = ["wl1.test", "wl2.test=127.0.[0..255].[1..3]"]
action = "%s"
[dns_blacklist]
enabled = true
sites = ["bl1.test=127.0.0.[2..11]", "bl2.test"]
action = "%s"
message = "Your host %s was found in a DNS blacklist."
`

func dnsCfg(wl, bl string) string {
	return strings.Replace(strings.Replace(dnsConfig, `action = "%s"`, `action = "`+wl+`"`, 1), `action = "%s"`, `action = "`+bl+`"`, 1)
}

func TestScenarios(t *testing.T) {
	accept := func(op, arg string) step { return step{op: op, arg: arg, want: ActionAccept} }
	tests := []scenario{
		{
			name: "defaults accept everything", ip: "192.0.2.1",
			steps: []step{accept("connect", ""), accept("ehlo", "mail.example.com"), accept("mail", "a@example.com"),
				accept("rcpt", "b@domino.test"), accept("data", ""), accept("cmd", "VRFY")},
		},
		{
			name:   "blacklist refuses at connect with %s replaced",
			config: "[blacklist]\nhosts = [\"192.0.2.66\"]\nmessage = \"Connection from %s denied\"",
			ip:     "192.0.2.66",
			steps: []step{
				{op: "connect", want: ActionReject, code: 550, enh: "5.7.1", text: "Connection from 192.0.2.66 denied", ctl: ControlBlacklist},
				// delivered again at every later stage (delay_reject)
				{op: "ehlo", arg: "x", want: ActionReject, code: 550, ctl: ControlBlacklist},
				{op: "mail", arg: "a@example.com", want: ActionReject, code: 550, ctl: ControlBlacklist},
				{op: "rcpt", arg: "b@domino.test", want: ActionReject, code: 550, ctl: ControlBlacklist},
			},
		},
		{
			name:   "blacklist by verified name",
			config: "[blacklist]\nhosts = [\"*.dyn.example.net\"]",
			ip:     "198.51.100.5", host: "Host-5.DYN.example.net.",
			steps: []step{{op: "connect", want: ActionReject, code: 550, text: "Connection denied based on policy reason", ctl: ControlBlacklist}},
		},
		{
			name:   "IPv4-mapped client matches an IPv4 entry",
			config: "[blacklist]\nhosts = [\"192.0.2.0/24\"]",
			ip:     "::ffff:192.0.2.9",
			steps:  []step{{op: "connect", want: ActionReject, code: 550, ctl: ControlBlacklist}},
		},
		{
			name:   "authenticated client is exempt from a connect-time refusal",
			config: "[blacklist]\nhosts = [\"192.0.2.66\"]",
			ip:     "192.0.2.66",
			steps:  []step{{op: "auth", arg: "roaming"}, accept("mail", "a@example.com"), accept("rcpt", "b@domino.test")},
		},
		{
			name:   "check_authenticated applies the controls to authenticated clients",
			config: "[server]\ncheck_authenticated = true\n[blacklist]\nhosts = [\"192.0.2.66\"]",
			ip:     "192.0.2.66",
			steps:  []step{{op: "auth", arg: "roaming"}, {op: "mail", arg: "a@example.com", want: ActionReject, code: 550, ctl: ControlBlacklist}},
		},
		{
			name:   "whitelist scope all bypasses every control",
			config: "[whitelist]\nhosts = [\"192.0.2.10\"]\n[blacklist]\nhosts = [\"192.0.2.0/24\"]\n[helo]\ndeny = [\"bad\"]\n[mail_from]\ndeny = [\"@bad.test\"]\n[commands]\ndeny = [\"VRFY\"]",
			ip:     "192.0.2.10",
			steps: []step{accept("connect", ""), accept("helo", "bad"), accept("mail", "x@bad.test"),
				accept("rcpt", "y@domino.test"), accept("cmd", "VRFY")},
		},
		{
			name:   "whitelist scope lists skips only the lists",
			config: "[whitelist]\nhosts = [\"192.0.2.10\"]\nscope = \"lists\"\n[private_blacklist]\nenabled = true\naction = \"reject\"\nhosts = [\"192.0.2.0/24\"]\n[helo]\ndeny = [\"bad\"]",
			ip:     "192.0.2.10",
			steps:  []step{accept("connect", ""), {op: "helo", arg: "BAD", want: ActionReject, code: 550, enh: "5.7.1", text: "HELO/EHLO not accepted", ctl: ControlHelo}},
		},
		{
			name:   "whitelist scope lists does not skip the blacklist (Domino's Deny connections from)",
			config: "[whitelist]\nhosts = [\"192.0.2.10\"]\nscope = \"lists\"\n[blacklist]\nhosts = [\"192.0.2.0/24\"]",
			ip:     "192.0.2.10",
			steps:  []step{{op: "connect", want: ActionReject, code: 550, ctl: ControlBlacklist}},
		},
		{
			name:   "private blacklist log",
			config: "[private_blacklist]\nenabled = true\nhosts = [\"203.0.113.0/24\"]",
			ip:     "203.0.113.5",
			steps:  []step{accept("connect", ""), accept("mail", "a@example.com"), accept("rcpt", "b@domino.test"), accept("data", "")},
		},
		{
			name:   "private blacklist tag",
			config: "[private_blacklist]\nenabled = true\nhosts = [\"203.0.113.0/24\"]\naction = \"tag\"",
			ip:     "203.0.113.5",
			steps: []step{{op: "connect", want: ActionTag, ctl: ControlPrivateBlacklist, hdr: "X-DNSBL-Site: PrivateBlacklist"}, accept("mail", "a@example.com"),
				accept("rcpt", "b@domino.test"), {op: "data", want: ActionTag, ctl: ControlPrivateBlacklist, hdr: "X-DNSBL-Site: PrivateBlacklist"}},
		},
		{
			name:   "private blacklist reject",
			config: "[private_blacklist]\nenabled = true\nhosts = [\"2001:db8:bad::/48\"]\naction = \"reject\"",
			ip:     "2001:db8:bad::25",
			steps:  []step{{op: "connect", want: ActionReject, code: 550, enh: "5.7.1", text: "Your host 2001:db8:bad::25 was blacklisted.", ctl: ControlPrivateBlacklist}},
		},
		{
			name:   "private blacklist disabled",
			config: "[private_blacklist]\nenabled = false\nhosts = [\"203.0.113.0/24\"]\naction = \"reject\"",
			ip:     "203.0.113.5",
			steps:  []step{accept("connect", "")},
		},
		{
			name:   "private blacklist overrides a DNS whitelist",
			config: "[private_blacklist]\nenabled = true\nhosts = [\"203.0.113.5\"]\naction = \"reject\"\n" + dnsCfg("skip", "log"),
			ip:     "203.0.113.5",
			dns:    func(m *MemoryDNS) { m.Set("wl1.test", mustAddr("203.0.113.5"), "", listed2) },
			steps:  []step{{op: "connect", want: ActionReject, code: 550, ctl: ControlPrivateBlacklist}},
		},
		{
			name: "DNS blacklist reject", config: dnsCfg("skip", "reject"), ip: "192.0.2.7",
			dns: func(m *MemoryDNS) { m.Set("bl2.test", mustAddr("192.0.2.7"), "see http://bl2.test", listed2) },
			steps: []step{{op: "connect", want: ActionReject, code: 550, enh: "5.7.1",
				text: "Your host 192.0.2.7 was found in a DNS blacklist.", ctl: ControlDNSBlacklist}},
		},
		{
			name: "DNS blacklist tag carries the site name", config: dnsCfg("skip", "tag"), ip: "192.0.2.7",
			dns: func(m *MemoryDNS) { m.Set("bl2.test", mustAddr("192.0.2.7"), "", listed2) },
			steps: []step{{op: "connect", want: ActionTag, hdr: "X-DNSBL-Site: bl2.test"}, accept("mail", "a@example.com"),
				accept("rcpt", "b@domino.test"), {op: "data", want: ActionTag, ctl: ControlDNSBlacklist, hdr: "X-DNSBL-Site: bl2.test"}},
		},
		{
			name: "DNS blacklist log accepts", config: dnsCfg("skip", "log"), ip: "192.0.2.7",
			dns:   func(m *MemoryDNS) { m.Set("bl1.test", mustAddr("192.0.2.7"), "", listed2) },
			steps: []step{accept("connect", ""), accept("mail", "a@example.com"), accept("rcpt", "b@domino.test"), accept("data", "")},
		},
		{
			name: "first listing DNS blacklist in order wins", config: dnsCfg("skip", "tag"), ip: "192.0.2.7",
			dns: func(m *MemoryDNS) {
				m.Set("bl2.test", mustAddr("192.0.2.7"), "", listed2)
				m.Set("bl1.test", mustAddr("192.0.2.7"), "", listed3)
			},
			steps: []step{{op: "connect", want: ActionTag, hdr: "X-DNSBL-Site: bl1.test"}},
		},
		{
			name: "an answer outside the filter is not a listing", config: dnsCfg("skip", "reject"), ip: "192.0.2.7",
			dns:   func(m *MemoryDNS) { m.Set("bl1.test", mustAddr("192.0.2.7"), "", mustAddr("127.0.0.20")) },
			steps: []step{accept("connect", "")},
		},
		{
			name: "error codes are never listings", config: dnsCfg("skip", "reject"), ip: "192.0.2.7",
			dns: func(m *MemoryDNS) {
				m.Set("bl1.test", mustAddr("192.0.2.7"), "", mustAddr("127.255.255.254"))
				m.Set("bl2.test", mustAddr("192.0.2.7"), "", mustAddr("127.0.0.255"))
			},
			steps: []step{accept("connect", "")},
		},
		{
			name: "a DNS failure never refuses", config: dnsCfg("skip", "reject"), ip: "192.0.2.7",
			dns: func(m *MemoryDNS) {
				m.Fail("bl1.test", mustAddr("192.0.2.7"), context.DeadlineExceeded)
				m.Fail("bl2.test", mustAddr("192.0.2.7"), errors.New("SERVFAIL"))
			},
			steps: []step{accept("connect", ""), accept("mail", "a@example.com")},
		},
		{
			name: "DNS whitelist skip silently skips the blacklists", config: dnsCfg("skip", "reject"), ip: "192.0.2.7",
			dns: func(m *MemoryDNS) {
				m.Set("wl2.test", mustAddr("192.0.2.7"), "", mustAddr("127.0.10.2"))
				m.Set("bl1.test", mustAddr("192.0.2.7"), "", listed2)
			},
			steps: []step{accept("connect", ""), accept("mail", "a@example.com"), accept("rcpt", "b@domino.test"), accept("data", "")},
		},
		{
			name: "DNS whitelist log", config: dnsCfg("log", "reject"), ip: "192.0.2.7",
			dns: func(m *MemoryDNS) {
				m.Set("wl1.test", mustAddr("192.0.2.7"), "", listed2)
				m.Set("bl1.test", mustAddr("192.0.2.7"), "", listed2)
			},
			steps: []step{accept("connect", ""), accept("rcpt", "b@domino.test"), accept("data", "")},
		},
		{
			name: "DNS whitelist tag, the first listing whitelist wins", config: dnsCfg("tag", "reject"), ip: "192.0.2.7",
			dns: func(m *MemoryDNS) {
				m.Set("wl1.test", mustAddr("192.0.2.7"), "", listed2)
				m.Set("wl2.test", mustAddr("192.0.2.7"), "", listed2)
				m.Set("bl1.test", mustAddr("192.0.2.7"), "", listed2)
			},
			steps: []step{{op: "connect", want: ActionTag, ctl: ControlDNSWhitelist, hdr: "X-DNSWL-Site: wl1.test"}, accept("mail", "a@example.com"),
				accept("rcpt", "b@domino.test"), {op: "data", want: ActionTag, ctl: ControlDNSWhitelist, hdr: "X-DNSWL-Site: wl1.test"}},
		},
		{
			name: "DNS whitelist answer outside its filter does not whitelist", config: dnsCfg("skip", "reject"), ip: "192.0.2.7",
			dns: func(m *MemoryDNS) {
				m.Set("wl2.test", mustAddr("192.0.2.7"), "", mustAddr("127.0.10.9"))
				m.Set("bl1.test", mustAddr("192.0.2.7"), "", listed2)
			},
			steps: []step{{op: "connect", want: ActionReject, code: 550, ctl: ControlDNSBlacklist}},
		},
		{
			name: "IPv6 client on a DNS blacklist", config: dnsCfg("skip", "reject"), ip: "2001:db8::25",
			dns:   func(m *MemoryDNS) { m.Set("bl2.test", mustAddr("2001:db8::25"), "", listed2) },
			steps: []step{{op: "connect", want: ActionReject, text: "Your host 2001:db8::25 was found in a DNS blacklist.", code: 550, ctl: ControlDNSBlacklist}},
		},
		{
			name: "empty HELO", config: "[helo]\nreject_empty = true", ip: "192.0.2.1",
			steps: []step{{op: "ehlo", arg: "  ", want: ActionReject, code: 550, enh: "5.7.1", text: "HELO/EHLO not accepted", ctl: ControlHelo}},
		},
		{
			name: "no HELO at all is refused at MAIL FROM", config: "[helo]\nreject_empty = true", ip: "192.0.2.1",
			steps: []step{accept("connect", ""), {op: "mail", arg: "a@example.com", want: ActionReject, code: 550, ctl: ControlHelo}},
		},
		{
			name: "empty HELO allowed by default", ip: "192.0.2.1",
			steps: []step{accept("helo", ""), accept("mail", "a@example.com")},
		},
		{
			name: "prohibited HELO names", config: "[helo]\ndeny = [\"*.dynamic.test\", \"localhost\", \"[192.0.2.1]\"]\nmessage = \"Go away %s\"", ip: "192.0.2.1",
			steps: []step{
				{op: "ehlo", arg: "Host1.Dynamic.Test", want: ActionReject, code: 550, text: "Go away 192.0.2.1", ctl: ControlHelo},
				{op: "helo", arg: "localhost.", want: ActionReject, code: 550, ctl: ControlHelo},
				{op: "helo", arg: "[192.0.2.1]", want: ActionReject, code: 550, ctl: ControlHelo},
				accept("helo", "mail.example.com"),
			},
		},
		{
			name: "prohibited sender", config: "[mail_from]\ndeny = [\"spammer@bad.test\", \"@worse.test\", \"*.sub.test\", \"<>\"]", ip: "192.0.2.1",
			steps: []step{
				{op: "mail", arg: "<Spammer@BAD.test>", want: ActionReject, code: 550, enh: "5.7.1", text: "Sender address rejected", ctl: ControlMailFrom},
				{op: "mail", arg: "anyone@worse.test", want: ActionReject, code: 550, ctl: ControlMailFrom},
				{op: "mail", arg: "a@x.sub.test", want: ActionReject, code: 550, ctl: ControlMailFrom},
				{op: "mail", arg: "<>", want: ActionReject, code: 550, ctl: ControlMailFrom},
				accept("mail", "a@sub.test"),
				accept("mail", "good@bad.test"),
			},
		},
		{
			name: "prohibited sender with disconnect", config: "[mail_from]\ndeny = [\"@bad.test\"]\ndisconnect = true", ip: "192.0.2.1",
			steps: []step{{op: "mail", arg: "x@bad.test", want: ActionTempfail, code: 421, enh: "4.7.1", text: "Sender address rejected", ctl: ControlMailFrom}},
		},
		{
			name: "recipient limit: 452 for each past N, counted per message", config: "[recipients]\nmax = 2", ip: "192.0.2.1",
			steps: []step{
				accept("mail", "a@example.com"), accept("rcpt", "1@domino.test"), accept("rcpt", "2@domino.test"),
				{op: "rcpt", arg: "3@domino.test", want: ActionTempfail, code: 452, enh: "4.5.3", text: "Too many recipients", ctl: ControlRecipients},
				{op: "rcpt", arg: "4@domino.test", want: ActionTempfail, code: 452, enh: "4.5.3", ctl: ControlRecipients},
				accept("data", ""),
				accept("mail", "a@example.com"), accept("rcpt", "3@domino.test"),
			},
		},
		{
			name: "prohibited recipient", config: "[recipients]\ndeny = [\"nobody@domino.test\", \"@*.internal.test\"]\nmax = 1", ip: "192.0.2.1",
			steps: []step{
				accept("mail", "a@example.com"),
				{op: "rcpt", arg: "<NoBody@domino.test>", want: ActionReject, code: 550, enh: "5.7.1", text: "Recipient address rejected", ctl: ControlRecipients},
				accept("rcpt", "somebody@domino.test"), // the refused one did not count
				{op: "rcpt", arg: "x@a.internal.test", want: ActionReject, code: 550, ctl: ControlRecipients},
			},
		},
		{
			name: "denied commands", config: "[commands]\ndeny = [\"vrfy\", \"ETRN\", \"EHLO\"]", ip: "192.0.2.1",
			steps: []step{
				{op: "cmd", arg: "VRFY", want: ActionReject, code: 502, enh: "5.5.1", text: "Command not permitted", ctl: ControlCommands},
				{op: "cmd", arg: "etrn", want: ActionReject, code: 502, ctl: ControlCommands},
				{op: "ehlo", arg: "mail.example.com", want: ActionReject, code: 502, ctl: ControlCommands},
				accept("helo", "mail.example.com"),
				accept("cmd", "NOOP"),
			},
		},
		{
			name: "allowed commands", config: "[commands]\nallow = [\"HELO\", \"EHLO\", \"MAIL\", \"RCPT\"]", ip: "192.0.2.1",
			steps: []step{
				accept("ehlo", "x.example.com"), accept("mail", "a@example.com"), accept("rcpt", "b@domino.test"),
				{op: "data", want: ActionReject, code: 502, enh: "5.5.1", ctl: ControlCommands},
				{op: "cmd", arg: "VRFY", want: ActionReject, code: 502, ctl: ControlCommands},
			},
		},
	}
	for _, sc := range tests {
		t.Run(sc.name, func(t *testing.T) {
			runScenario(t, sc)
		})
	}
}

func runScenario(t *testing.T, sc scenario) {
	is := is.New(t)
	e, dns := newTestEngine(t, sc.config)
	if sc.dns != nil {
		sc.dns(dns)
	}
	s := NewSession(mustAddr(sc.ip), sc.host)
	s.ID = "test"
	ctx := context.Background()
	for i, st := range sc.steps {
		var v Verdict
		switch st.op {
		case "connect":
			v = e.Connect(ctx, s)
		case "helo", "ehlo":
			v = e.Helo(ctx, s, strings.ToUpper(st.op), st.arg)
		case "mail":
			v = e.Mail(ctx, s, st.arg)
		case "rcpt":
			v = e.Rcpt(ctx, s, st.arg)
		case "data":
			v = e.Data(ctx, s)
		case "cmd":
			v = e.Command(ctx, s, st.arg)
		case "auth":
			s.AuthUser = st.arg
			continue
		case "ptr": // the MTA's reverse lookup ("unknown": none)
			s.SetPTR(st.arg)
			continue
		case "tags": // the headers the session's messages get
			var got []string
			for _, h := range e.Tags(s) {
				got = append(got, h.String())
			}
			is.Equal(strings.Join(got, ", "), st.arg) // tags
			continue
		default:
			t.Fatalf("step %d: unknown op %q", i, st.op)
		}
		t.Logf("step %d %s %q: %s %s [%s] %s", i, st.op, st.arg, v.Action, v.Reply(), v.Control, v.Reason)
		is.Equal(v.Action, st.want) // action
		if st.code != 0 {
			is.Equal(v.Code, st.code) // code
		}
		if st.enh != "" {
			is.Equal(v.EnhancedCode, st.enh) // enhanced code
		}
		if st.text != "" {
			is.Equal(v.Text, st.text) // text
		}
		if st.ctl != "" {
			is.Equal(v.Control, st.ctl) // control
		}
		if v.Action.Refuses() {
			is.True(v.Code >= 400 && v.EnhancedCode != "" && v.EnhancedCode[0] == byte('0'+v.Code/100)) // enhanced code class matches
			is.Equal(v.Disconnect, v.Code == 421)
		}
		if st.hdr != "" {
			var got []string
			for _, h := range v.Headers {
				got = append(got, h.String())
			}
			is.Equal(got, []string{st.hdr}) // exactly the one tag header
		}
		if st.hdr == "" && st.want == ActionAccept {
			is.Equal(len(v.Headers), 0) // accept adds no header
		}
		is.Equal(v.Trace, nil) // no trace unless asked for
	}
}

func TestDNSListsAskedOnceAndNotForPrivateBlacklist(t *testing.T) {
	is := is.New(t)
	e, dns := newTestEngine(t, dnsCfg("skip", "reject"))
	s := NewSession(mustAddr("192.0.2.7"), "")
	ctx := context.Background()
	e.Connect(ctx, s)
	e.Helo(ctx, s, "EHLO", "x")
	e.Mail(ctx, s, "a@example.com")
	e.Rcpt(ctx, s, "b@domino.test")
	is.Equal(dns.Queries(), int64(4)) // every site once, at connect only

	e2, dns2 := newTestEngine(t, "[private_blacklist]\nenabled = true\nhosts = [\"192.0.2.7\"]\n"+dnsCfg("skip", "reject"))
	e2.Connect(ctx, NewSession(mustAddr("192.0.2.7"), ""))
	is.Equal(dns2.Queries(), int64(0)) // a private blacklist hit is never looked up
}

func TestCounters(t *testing.T) {
	is := is.New(t)
	cfg := "[whitelist]\nhosts = [\"192.0.2.10\"]\n[blacklist]\nhosts = [\"192.0.2.66\"]\n[private_blacklist]\nenabled = true\nhosts = [\"192.0.2.77\"]\n" + dnsCfg("log", "tag")
	e, dns := newTestEngine(t, cfg)
	dns.Set("wl1.test", mustAddr("192.0.2.20"), "", listed2)
	dns.Set("bl1.test", mustAddr("192.0.2.20"), "", listed2) // not counted: whitelisted
	dns.Set("bl2.test", mustAddr("192.0.2.30"), "", listed2)
	dns.Set("bl1.test", mustAddr("192.0.2.40"), "", mustAddr("127.255.255.254"))
	ctx := context.Background()
	for _, ip := range []string{"192.0.2.10", "192.0.2.66", "192.0.2.77", "192.0.2.20", "192.0.2.30", "192.0.2.30", "192.0.2.40"} {
		e.Connect(ctx, NewSession(mustAddr(ip), ""))
	}
	snap := e.Counters().Snapshot()
	is.Equal(snap.WhitelistHits, uint64(1))
	is.Equal(snap.BlacklistHits, uint64(1))
	is.Equal(snap.PrivateBlacklistHits, uint64(1))
	is.Equal(snap.DNSWLHits, uint64(1))
	is.Equal(snap.DNSBLHits, uint64(2))
	site := func(kind ListKind, zone string) SiteSnapshot {
		for _, s := range snap.Sites {
			if s.Kind == kind && s.Site == zone {
				return s
			}
		}
		return SiteSnapshot{}
	}
	is.Equal(site(DNSWL, "wl1.test").Hits, uint64(1))
	is.Equal(site(DNSBL, "bl1.test").Hits, uint64(0)) // whitelisted clients are not counted against blacklists
	is.Equal(site(DNSBL, "bl2.test").Hits, uint64(2))
	is.Equal(site(DNSBL, "bl1.test").Errors, uint64(1))
	var refusedAtConnect uint64
	for _, v := range snap.Verdicts {
		if v.Stage == StageConnect && v.Action == ActionReject {
			refusedAtConnect = v.Count
		}
	}
	is.Equal(refusedAtConnect, uint64(1))
}

func TestTrace(t *testing.T) {
	is := is.New(t)
	e, dns := newTestEngine(t, "[private_blacklist]\nenabled = true\n"+dnsCfg("skip", "reject"))
	dns.Set("bl2.test", mustAddr("192.0.2.7"), "listed for testing", listed2)
	s := NewSession(mustAddr("192.0.2.7"), "")
	s.Trace = true
	v := e.Connect(context.Background(), s)
	is.Equal(v.Action, ActionReject)
	var got []string
	for _, st := range v.Trace {
		got = append(got, string(st.Control)+" "+st.Result)
	}
	is.Equal(got, []string{
		"whitelist no match", "blacklist no match", "private_blacklist no match",
		"dns_whitelist not listed", "dns_whitelist not listed",
		"dns_blacklist not listed", "dns_blacklist reject",
	})
	is.True(strings.Contains(v.Reason, "listed for testing")) // the TXT record is the reason
}

func TestReloadKeepsSessionState(t *testing.T) {
	is := is.New(t)
	e, _ := newTestEngine(t, "[recipients]\nmax = 1")
	ctx := context.Background()
	s := NewSession(mustAddr("192.0.2.1"), "")
	e.Mail(ctx, s, "a@example.com")
	is.Equal(e.Rcpt(ctx, s, "1@domino.test").Action, ActionAccept)
	cfg, err := Parse("", "[recipients]\nmax = 1\ndeny = [\"2@domino.test\"]")
	is.NoErr(err)
	e.SetConfig(cfg)
	v := e.Rcpt(ctx, s, "2@domino.test")
	is.Equal(v.Control, ControlRecipients)
	is.Equal(v.Code, 550)                               // the new deny list applies
	is.Equal(e.Rcpt(ctx, s, "3@domino.test").Code, 452) // the count survived
}

func TestDNSCountersHistogramAndSuspension(t *testing.T) {
	is := is.New(t)
	c := new(Counters)
	c.ObserveDNSQuery("bl.test", 3*time.Millisecond, nil)
	c.ObserveDNSQuery("bl.test", 2*time.Second, errors.New("timeout"))
	c.ObserveDNSQuery("bl.test", time.Minute, nil) // past the last bucket: only in count and sum
	c.SetSuspended("bad.test", true)
	c.SetSuspended("healed.test", true)
	c.SetSuspended("healed.test", false)
	s := c.Snapshot()
	is.Equal(s.DNSLatency.Count, uint64(3))
	is.Equal(s.DNSLatency.Buckets[0], uint64(0))                        // <= 1ms
	is.Equal(s.DNSLatency.Buckets[2], uint64(1))                        // <= 5ms, cumulative
	is.Equal(s.DNSLatency.Buckets[len(DNSLatencyBuckets)-1], uint64(2)) // <= 5s
	is.True(s.DNSLatency.Sum > 62 && s.DNSLatency.Sum < 63)
	is.Equal(s.Suspended, []string{"bad.test"})
}

func TestRefusedHeloSticksUntilAGoodOne(t *testing.T) {
	is := is.New(t)
	e, _ := newTestEngine(t, "[helo]\ndeny = [\"localhost\"]")
	ctx := context.Background()
	s := NewSession(mustAddr("192.0.2.1"), "")
	is.Equal(e.Helo(ctx, s, "EHLO", "localhost").Code, 550)
	v := e.Mail(ctx, s, "a@example.com") // the client ignores the refusal
	is.Equal(v.Code, 550)
	is.Equal(v.Control, ControlHelo)
	is.Equal(e.Rcpt(ctx, s, "b@domino.test").Control, ControlHelo)
	is.Equal(e.Helo(ctx, s, "EHLO", "mail.example.com").Action, ActionAccept) // a good EHLO clears it
	is.Equal(e.Mail(ctx, s, "a@example.com").Action, ActionAccept)
	s.AuthUser = "user"
	is.Equal(e.Helo(ctx, s, "EHLO", "localhost").Action, ActionAccept) // exempt once authenticated
}
