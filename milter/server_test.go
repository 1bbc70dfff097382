package milter

import (
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gomilter "github.com/d--j/go-milter"
	"github.com/matryer/is"

	"github.com/smtp-interceptor/smtp-interceptor/internal/testutil"
	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

var waitFor = testutil.WaitFor

// postfixMacros are the macros Postfix sends when asked.
func postfixMacros(ip, name string) map[string]string {
	return map[string]string{macroClientAddr: ip, macroClientName: name, macroClientPtr: name, macroQueueID: "4ABC123"}
}

func TestStages(t *testing.T) {
	const cfg = `
[blacklist]
hosts = ["192.0.2.66"]
message = "Connection from %s denied"
[helo]
deny = ["*.dynamic.test"]
[mail_from]
deny = ["@bad.test"]
[recipients]
max = 2
deny = ["nobody@domino.test"]
[commands]
deny = ["ETRN"]
`
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			is := is.New(t)
			ts := startMilter(t, network, cfg)

			// With delay_reject (the default) a refused HELO is judged at
			// MAIL FROM, never at HELO: a HELO reject would stick for the
			// whole session and hide AUTH (e2e sasl-milter-helo-refused-at-mail).
			m := ts.session(t, postfixMacros("192.0.2.1", "mail.good.test"))
			is.Equal(m.connect("192.0.2.1", "mail.good.test"), "")
			is.Equal(m.helo("pc1.dynamic.test"), "")
			is.Equal(m.mail("a@good.test"), "550 5.7.1 HELO/EHLO not accepted")
			is.NoErr(m.s.Abort(nil))
			is.Equal(m.mail("a@good.test"), "550 5.7.1 HELO/EHLO not accepted") // until a HELO passes
			is.NoErr(m.s.Abort(nil))
			is.Equal(m.helo("mail.good.test"), "")
			is.Equal(m.mail("x@bad.test"), "550 5.7.1 Sender address rejected")
			is.NoErr(m.s.Abort(nil)) // the MTA ends the refused transaction
			is.Equal(m.mail("a@good.test"), "")
			is.Equal(m.rcpt("nobody@domino.test"), "550 5.7.1 Recipient address rejected")
			is.Equal(m.rcpt("1@domino.test"), "")
			is.Equal(m.rcpt("2@domino.test"), "")
			is.Equal(m.rcpt("3@domino.test"), "452 4.5.3 Too many recipients")
			is.Equal(m.data(), "")
			res, changes := m.message([2]string{"Subject", "hi"})
			is.Equal(res, "")
			is.Equal(len(changes), 0) // nothing to tag

			// The next message on the same connection counts from zero.
			is.Equal(m.mail("a@good.test"), "")
			is.Equal(m.rcpt("3@domino.test"), "")
			is.Equal(reply(m.s.Unknown("ETRN example.com", nil)), "502 5.5.1 Command not permitted")

			// A blacklisted client: refused at MAIL FROM, not before
			// (delay_reject; e2e sendmail-blacklist-text,
			// sasl-milter-privbl-noauth-refused).
			b := ts.session(t, postfixMacros("192.0.2.66", "unknown"))
			is.Equal(b.connect("192.0.2.66", "[192.0.2.66]"), "")
			is.Equal(b.helo("x.example"), "")
			is.Equal(b.mail("a@good.test"), "550 5.7.1 Connection from 192.0.2.66 denied")
		})
	}
}

// TestDelayReject follows what Postfix and Sendmail send a milter for a
// client that authenticates after EHLO: connect, HELO, then MAIL with
// {auth_authen} (e2e sasl-milter-privbl-auth-delivered,
// sasl-milter-helo-refused-auth-delivered, sendmail-auth-exempt). The
// refusals are held until MAIL FROM, where the session is exempt; without
// AUTH they come at MAIL FROM (e2e sasl-milter-privbl-noauth-refused).
func TestDelayReject(t *testing.T) {
	const lists = "[blacklist]\nhosts = [\"192.0.2.66\"]\n[helo]\ndeny = [\"*.dynamic.test\"]\n"
	is := is.New(t)
	ts := startMilter(t, "tcp", lists)
	m := ts.session(t, postfixMacros("192.0.2.66", "unknown"))
	is.Equal(m.connect("192.0.2.66", "unknown"), "")
	is.Equal(m.helo("pc1.dynamic.test"), "")
	m.macros.Set(macroAuthAuthen, "roaming") // AUTH after EHLO
	is.Equal(m.mail("a@good.test"), "")
	is.Equal(m.rcpt("b@domino.test"), "")
	is.Equal(m.data(), "")
	res, _ := m.message()
	is.Equal(res, "")

	// A denied HELO alone, authenticated: delivered too.
	h := ts.session(t, postfixMacros("192.0.2.1", "unknown"))
	is.Equal(h.connect("192.0.2.1", "unknown"), "")
	is.Equal(h.helo("pc1.dynamic.test"), "")
	h.macros.Set(macroAuthAuthen, "roaming")
	is.Equal(h.mail("a@good.test"), "")

	// Not authenticated: the connect-time refusal comes first, at MAIL.
	n := ts.session(t, postfixMacros("192.0.2.66", "unknown"))
	is.Equal(n.connect("192.0.2.66", "unknown"), "")
	is.Equal(n.helo("pc1.dynamic.test"), "")
	is.Equal(n.mail("a@good.test"), "550 5.7.1 Connection denied based on policy reason")

	// delay_reject = false: refused at connect (e2e
	// sasl-milter-nodelay-connect-refused, sendmail-nodelay-connect-dropped-text).
	ts2 := startMilter(t, "tcp", "[server]\ndelay_reject = false\n"+lists)
	m2 := ts2.session(t, postfixMacros("192.0.2.66", "unknown"))
	is.Equal(m2.connect("192.0.2.66", "unknown"), "550 5.7.1 Connection denied based on policy reason")
}

// TestDelayedRefusalsRecordedOnlyWhenGiven: a refusal that is held and
// never given (the client authenticated) is not counted, logged or
// observed; one that is given is counted once.
func TestDelayedRefusalsRecordedOnlyWhenGiven(t *testing.T) {
	is := is.New(t)
	ts := startMilter(t, "tcp", "[blacklist]\nhosts = [\"192.0.2.66\"]")
	m := ts.session(t, postfixMacros("192.0.2.66", "unknown"))
	is.Equal(m.connect("192.0.2.66", "unknown"), "")
	is.Equal(m.helo("x.example"), "")
	m.macros.Set(macroAuthAuthen, "roaming")
	is.Equal(m.mail("a@good.test"), "")
	is.Equal(refusals(ts.engine), uint64(0))
	is.Equal(len(ts.logLines("INFO", "msg=refused")), 0)

	n := ts.session(t, postfixMacros("192.0.2.66", "unknown"))
	is.Equal(n.connect("192.0.2.66", "unknown"), "")
	is.Equal(n.helo("x.example"), "")
	is.Equal(n.mail("a@good.test"), "550 5.7.1 Connection denied based on policy reason")
	is.Equal(refusals(ts.engine), uint64(1))
	is.Equal(len(ts.logLines("INFO", "msg=refused")), 1)
}

// refusals sums the engine's refusing verdicts.
func refusals(e *rules.Engine) uint64 {
	var n uint64
	for _, v := range e.Counters().Snapshot().Verdicts {
		if v.Action.Refuses() {
			n += v.Count
		}
	}
	return n
}

func TestDisconnect(t *testing.T) {
	is := is.New(t)
	ts := startMilter(t, "tcp", "[mail_from]\ndeny = [\"@bad.test\"]\ndisconnect = true")
	m := ts.session(t, postfixMacros("192.0.2.1", "unknown"))
	is.Equal(m.connect("192.0.2.1", "unknown"), "")
	is.Equal(m.helo("x.example"), "")
	is.Equal(m.mail("x@bad.test"), "421 4.7.1 Sender address rejected") // 421 ends the SMTP session in the MTA
}

func TestTagsAndAuthenticationResults(t *testing.T) {
	is := is.New(t)
	ts := startMilter(t, "tcp", `
[dns_whitelist]
enabled = true
sites = ["wl.test"]
action = "tag"
[dns_blacklist]
enabled = true
sites = ["bl.test"]
action = "tag"
`)
	ts.dns.Set("wl.test", netip.MustParseAddr("192.0.2.10"), "fwd.example https://wl.test/s?s=1\r\nInjected: yes", netip.MustParseAddr("127.0.10.1"))
	ts.dns.Set("bl.test", netip.MustParseAddr("192.0.2.20"), "", netip.MustParseAddr("127.0.0.2"))

	m := ts.session(t, postfixMacros("192.0.2.10", "unknown"))
	is.Equal(m.connect("192.0.2.10", "unknown"), "")
	is.Equal(m.helo("mx.example"), "")
	is.Equal(m.mail("a@example.com"), "")
	is.Equal(m.rcpt("1@domino.test"), "")
	is.Equal(m.rcpt("2@domino.test"), "")
	is.Equal(m.data(), "")
	res, changes := m.message(
		[2]string{"X-DNSWL-Site", "forged.example"},
		[2]string{"Authentication-Results", "relay.test; dnswl=pass dns.zone=forged.example"},
		[2]string{"Authentication-Results", "other.example; spf=pass smtp.mailfrom=example.com"},
		[2]string{"x-dnswl-site", "forged-again.example"},
		[2]string{"X-DNSBL-Site", "forged-bl.example"},
	)
	is.Equal(res, "")
	is.Equal(changes, []string{
		// forged copies removed, highest index first
		"-X-DNSBL-Site#1", "-x-dnswl-site#2", "-Authentication-Results#1", "-X-DNSWL-Site#1",
		// exactly one tag, however many recipients
		"+X-DNSWL-Site: wl.test",
		`+Authentication-Results: relay.test; dnswl=pass dns.sec=na dns.zone=wl.test policy.ip=127.0.10.1 policy.txt="fwd.example https://wl.test/s?s=1Injected: yes"`,
	})

	// A second message in the same session is tagged again, once.
	is.Equal(m.mail("a@example.com"), "")
	is.Equal(m.rcpt("1@domino.test"), "")
	is.Equal(m.data(), "")
	_, changes = m.message()
	is.Equal(len(changes), 2)

	b := ts.session(t, postfixMacros("192.0.2.20", "unknown"))
	is.Equal(b.connect("192.0.2.20", "unknown"), "")
	is.Equal(b.helo("mx.example"), "")
	is.Equal(b.mail("a@example.com"), "")
	is.Equal(b.rcpt("1@domino.test"), "")
	is.Equal(b.data(), "")
	_, changes = b.message()
	is.Equal(changes, []string{"+X-DNSBL-Site: bl.test"}) // no Authentication-Results for a blacklisted client
}

func TestMissingMacros(t *testing.T) {
	is := is.New(t)
	ts := startMilter(t, "tcp", "[blacklist]\nhosts = [\"192.0.2.66\", \"*.bad.test\"]")
	// No macros at all: the callback arguments stand in.
	m := ts.session(t, nil)
	is.Equal(m.connect("192.0.2.66", "[192.0.2.66]"), "")
	is.Equal(m.helo("x.example"), "")
	is.Equal(m.mail("a@example.com"), "550 5.7.1 Connection denied based on policy reason")
	n := ts.session(t, nil)
	is.Equal(n.connect("198.51.100.1", "host.bad.test"), "")
	is.Equal(n.helo("x.example"), "")
	is.Equal(n.mail("a@example.com"), "550 5.7.1 Connection denied based on policy reason")
	// The macro wins over the argument when both are there.
	o := ts.session(t, map[string]string{macroClientAddr: "192.0.2.1", macroClientName: "unknown"})
	is.Equal(o.connect("192.0.2.66", "host.bad.test"), "")
	is.Equal(o.helo("x.example"), "")
	is.Equal(o.mail("a@example.com"), "")
}

// TestClientAddressForms: Sendmail sends an IPv6 client as
// "IPv6:0:0:0:0:0:0:0:1" in {client_addr} (e2e
// sendmail-ipv6-privbl-refused); brackets and the full form are accepted
// too. An address that is there but does not parse is logged and counted.
func TestClientAddressForms(t *testing.T) {
	is := is.New(t)
	var bad atomic.Int64
	ts := startMilterWith(t, "tcp", "[private_blacklist]\nenabled = true\naction = \"reject\"\nmessage = \"Listed\"\nhosts = [\"::1\", \"2001:db8::/32\"]",
		serverSetup{opts: Options{OnBadAddress: func() { bad.Add(1) }}})
	for _, raw := range []string{"IPv6:0:0:0:0:0:0:0:1", "IPv6:::1", "[IPv6:::1]", "[::1]", "0:0:0:0:0:0:0:1", "ipv6:2001:db8:0:0:0:0:0:7"} {
		m := ts.session(t, map[string]string{macroClientAddr: raw, macroClientName: "unknown"})
		is.Equal(m.connect("::1", "unknown"), "")
		is.Equal(m.helo("x.example"), "")
		is.Equal(m.mail("a@example.com"), "550 5.7.1 Listed") // raw
	}
	is.Equal(bad.Load(), int64(0))

	// Unparseable in the macro, fine in the callback: the callback's is used.
	m := ts.session(t, map[string]string{macroClientAddr: "IPv6:bogus", macroClientName: "unknown"})
	is.Equal(m.connect("::1", "unknown"), "")
	is.Equal(m.helo("x.example"), "")
	is.Equal(m.mail("a@example.com"), "550 5.7.1 Listed")
	is.Equal(bad.Load(), int64(0))

	// Unparseable in both: no address, logged and counted.
	b := ts.session(t, map[string]string{macroClientAddr: "IPv6:bogus", macroClientName: "unknown"})
	is.Equal(b.connectFamily("unknown", ""), "")
	is.Equal(b.helo("x.example"), "")
	is.Equal(b.mail("a@example.com"), "")
	waitFor(t, "the bad address to be counted", func() bool { return bad.Load() == 1 })
	is.Equal(len(ts.logLines("WARN", `client_addr="\"IPv6:bogus\""`)), 1)
}

func TestAbortThenNewTransaction(t *testing.T) {
	is := is.New(t)
	ts := startMilter(t, "tcp", "[recipients]\nmax = 1")
	m := ts.session(t, postfixMacros("192.0.2.1", "unknown"))
	is.Equal(m.connect("192.0.2.1", "unknown"), "")
	is.Equal(m.helo("x.example"), "")
	is.Equal(m.mail("a@example.com"), "")
	is.Equal(m.rcpt("1@domino.test"), "")
	is.Equal(m.rcpt("2@domino.test"), "452 4.5.3 Too many recipients")
	is.NoErr(m.s.Abort(nil)) // RSET
	is.Equal(m.mail("a@example.com"), "")
	is.Equal(m.rcpt("2@domino.test"), "") // counted from zero
	is.Equal(m.data(), "")
	res, _ := m.message()
	is.Equal(res, "")
}

func TestClientDisconnectsAndManyConnections(t *testing.T) {
	is := is.New(t)
	ts := startMilter(t, "tcp", "[private_blacklist]\nenabled = true\nhosts = [\"203.0.113.0/24\"]\naction = \"tag\"")
	base := runtime.NumGoroutine()

	// An MTA that goes away mid-transaction.
	m := ts.session(t, postfixMacros("192.0.2.1", "unknown"))
	is.Equal(m.connect("192.0.2.1", "unknown"), "")
	is.Equal(m.helo("x.example"), "")
	is.Equal(m.mail("a@example.com"), "")
	m.s.Close()

	const conns = 200
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i := range conns {
		wg.Go(func() {
			ip := fmt.Sprintf("203.0.113.%d", i%250)
			want := []string{"+X-DNSBL-Site: PrivateBlacklist"}
			if i%2 == 1 {
				ip, want = fmt.Sprintf("192.0.2.%d", i%250), nil
			}
			bag := gomilter.NewMacroBag()
			for k, v := range postfixMacros(ip, "unknown") {
				bag.Set(k, v)
			}
			c := gomilter.NewClient("tcp", ts.addr, gomilter.WithActions(gomilter.AllClientSupportedActionMasks))
			s, err := c.Session(bag)
			if err != nil {
				errs <- err
				return
			}
			defer s.Close()
			mm := &mta{t: t, s: s, macros: bag}
			if r := mm.connect(ip, "unknown") + mm.helo("x.example") + mm.mail("a@example.com") + mm.rcpt("b@domino.test") + mm.data(); r != "" {
				errs <- fmt.Errorf("conn %d: %s", i, r)
				return
			}
			_, changes := mm.message()
			if fmt.Sprint(changes) != fmt.Sprint(want) {
				errs <- fmt.Errorf("conn %d: changes %v, want %v", i, changes, want)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	waitFor(t, "milter goroutines to end", func() bool { return runtime.NumGoroutine() <= base })
}

func TestAllowList(t *testing.T) {
	is := is.New(t)
	ts := startMilter(t, "tcp", "[server]\nallow = [\"192.0.2.1\"]")
	c := gomilter.NewClient("tcp", ts.addr, gomilter.WithReadTimeout(5*time.Second))
	_, err := c.Session(gomilter.NewMacroBag())
	is.True(err != nil) // refused: 127.0.0.1 is not allowed
}

// TestCallbacksTimed: every callback is reported to OnCallback (the
// request_duration_seconds{protocol="milter"} histogram).
func TestCallbacksTimed(t *testing.T) {
	is := is.New(t)
	var n atomic.Int64
	ts := startMilterWith(t, "tcp", "", serverSetup{opts: Options{OnCallback: func(time.Duration) { n.Add(1) }}})
	m := ts.session(t, postfixMacros("192.0.2.1", "unknown"))
	is.Equal(m.connect("192.0.2.1", "unknown"), "")
	is.Equal(m.helo("x.example"), "")
	is.Equal(m.mail("a@example.com"), "")
	is.Equal(m.rcpt("b@domino.test"), "")
	waitFor(t, "four timed callbacks", func() bool { return n.Load() == 4 })
}
