package milter

import (
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	gomilter "github.com/d--j/go-milter"
	"github.com/matryer/is"

	"github.com/smtp-interceptor/smtp-interceptor/internal/testutil"
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

			m := ts.session(t, postfixMacros("192.0.2.1", "mail.good.test"))
			is.Equal(m.connect("192.0.2.1", "mail.good.test"), "")
			is.Equal(m.helo("pc1.dynamic.test"), "550 5.7.1 HELO/EHLO not accepted")
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

			// A blacklisted client: refused at MAIL FROM (delay_reject).
			b := ts.session(t, postfixMacros("192.0.2.66", "unknown"))
			is.Equal(b.connect("192.0.2.66", "[192.0.2.66]"), "")
			is.Equal(b.helo("x.example"), "550 5.7.1 Connection from 192.0.2.66 denied")
			is.Equal(b.mail("a@good.test"), "550 5.7.1 Connection from 192.0.2.66 denied")
		})
	}
}

func TestDelayReject(t *testing.T) {
	is := is.New(t)
	ts := startMilter(t, "tcp", "[blacklist]\nhosts = [\"192.0.2.66\"]")
	// Authenticated after EHLO: never refused for its address.
	m := ts.session(t, postfixMacros("192.0.2.66", "unknown"))
	is.Equal(m.connect("192.0.2.66", "unknown"), "")
	is.Equal(m.helo("x.example"), "550 5.7.1 Connection denied based on policy reason") // not yet authenticated
	is.Equal(m.helo("x.example"), "550 5.7.1 Connection denied based on policy reason")
	m.macros.Set(macroAuthAuthen, "roaming") // AUTH after EHLO
	is.Equal(m.mail("a@good.test"), "")
	is.Equal(m.rcpt("b@domino.test"), "")

	// delay_reject = false: refused at connect.
	ts2 := startMilter(t, "tcp", "[server]\ndelay_reject = false\n[blacklist]\nhosts = [\"192.0.2.66\"]")
	m2 := ts2.session(t, postfixMacros("192.0.2.66", "unknown"))
	is.Equal(m2.connect("192.0.2.66", "unknown"), "550 5.7.1 Connection denied based on policy reason")
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
	is.Equal(m.helo("x.example"), "550 5.7.1 Connection denied based on policy reason")
	n := ts.session(t, nil)
	is.Equal(n.connect("198.51.100.1", "host.bad.test"), "")
	is.Equal(n.helo("x.example"), "550 5.7.1 Connection denied based on policy reason")
	// The macro wins over the argument when both are there.
	o := ts.session(t, map[string]string{macroClientAddr: "192.0.2.1", macroClientName: "unknown"})
	is.Equal(o.connect("192.0.2.66", "host.bad.test"), "")
	is.Equal(o.helo("x.example"), "")
	is.Equal(o.mail("a@example.com"), "")
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
