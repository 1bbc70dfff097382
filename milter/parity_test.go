package milter

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/smtp-interceptor/smtp-interceptor/policy"
	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// parityCase is one SMTP session and what each recipient must get, the
// same through the policy server and the milter.
type parityCase struct {
	name   string
	config string
	dns    map[string]string // "zone ip" -> answer
	ip     string
	host   string // verified client name
	ptr    string // the MTA's PTR name, verified or not ("unknown": none); "" not sent
	// hostDNS sets the PTR names and sender domains the engine's own DNS
	// lookups find ("ptr IP" -> names, "domain D" -> "yes"/"no"/"fail").
	hostDNS map[string]string
	helo    string
	from    string
	auth    string
	rcpts   []string
	want    []string // per recipient: "" accepted, else the SMTP reply
	tags    []string // "Name: value" added to the accepted message
}

func TestPolicyMilterParity(t *testing.T) {
	acc := func(n int) []string { return make([]string, n) }
	same := func(reply string, n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = reply
		}
		return out
	}
	dnsCfg := `
[dns_whitelist]
enabled = true
sites = ["wl.test"]
action = "%s"
[dns_blacklist]
enabled = true
sites = ["bl1.test=127.0.0.[2..11]", "bl2.test"]
action = "%s"
`
	dc := func(wl, bl string) string { return fmt.Sprintf(dnsCfg, wl, bl) }
	tests := []parityCase{
		{name: "accepted", ip: "192.0.2.1", rcpts: []string{"a@domino.test", "b@domino.test"}, want: acc(2)},
		{name: "blacklist", config: "[blacklist]\nhosts = [\"192.0.2.66\"]\nmessage = \"Go away %s\"", ip: "192.0.2.66",
			rcpts: []string{"a@domino.test"}, want: same("550 5.7.1 Go away 192.0.2.66", 1)},
		{name: "blacklist by name", config: "[blacklist]\nhosts = [\".bad.test\"]", ip: "192.0.2.67", host: "mx.bad.test",
			rcpts: []string{"a@domino.test"}, want: same("550 5.7.1 Connection denied based on policy reason", 1)},
		{name: "blacklisted but authenticated", config: "[blacklist]\nhosts = [\"192.0.2.66\"]", ip: "192.0.2.66", auth: "roaming",
			rcpts: []string{"a@domino.test"}, want: acc(1)},
		{name: "blacklisted with a prohibited HELO, authenticated", config: "[blacklist]\nhosts = [\"192.0.2.66\"]\n[helo]\ndeny = [\"bad\"]",
			ip: "192.0.2.66", helo: "bad", auth: "roaming", rcpts: []string{"a@domino.test"}, want: acc(1)},
		{name: "prohibited HELO, authenticated", config: "[helo]\ndeny = [\"bad\"]", ip: "192.0.2.1", helo: "bad", auth: "roaming",
			rcpts: []string{"a@domino.test"}, want: acc(1)},
		{name: "whitelist all bypasses", config: "[whitelist]\nhosts = [\"192.0.2.0/24\"]\n[blacklist]\nhosts = [\"192.0.2.5\"]\n[helo]\ndeny = [\"bad\"]\n[recipients]\nmax = 1",
			ip: "192.0.2.5", helo: "bad", rcpts: []string{"a@domino.test", "b@domino.test"}, want: acc(2)},
		{name: "whitelist lists keeps HELO control", config: "[whitelist]\nhosts = [\"192.0.2.0/24\"]\nscope = \"lists\"\n[private_blacklist]\nenabled = true\naction = \"reject\"\nhosts = [\"192.0.2.5\"]\n[helo]\ndeny = [\"bad\"]",
			ip: "192.0.2.5", helo: "bad", rcpts: []string{"a@domino.test"}, want: same("550 5.7.1 HELO/EHLO not accepted", 1)},
		{name: "private blacklist log", config: "[private_blacklist]\nenabled = true\nhosts = [\"203.0.113.0/24\"]", ip: "203.0.113.5",
			rcpts: []string{"a@domino.test"}, want: acc(1)},
		{name: "private blacklist tag", config: "[private_blacklist]\nenabled = true\nhosts = [\"203.0.113.0/24\"]\naction = \"tag\"", ip: "203.0.113.5",
			rcpts: []string{"a@domino.test", "b@domino.test", "c@domino.test"}, want: acc(3), tags: []string{"X-DNSBL-Site: PrivateBlacklist"}},
		{name: "private blacklist reject", config: "[private_blacklist]\nenabled = true\nhosts = [\"2001:db8:bad::/48\"]\naction = \"reject\"", ip: "2001:db8:bad::7",
			rcpts: []string{"a@domino.test"}, want: same("550 5.7.1 Your host 2001:db8:bad::7 was blacklisted.", 1)},
		{name: "dns whitelist skip", config: dc("skip", "reject"), dns: map[string]string{"wl.test 192.0.2.9": "127.0.0.2", "bl1.test 192.0.2.9": "127.0.0.2"},
			ip: "192.0.2.9", rcpts: []string{"a@domino.test"}, want: acc(1)},
		{name: "dns whitelist log", config: dc("log", "reject"), dns: map[string]string{"wl.test 192.0.2.9": "127.0.0.2"},
			ip: "192.0.2.9", rcpts: []string{"a@domino.test"}, want: acc(1)},
		{name: "dns whitelist tag", config: dc("tag", "reject"), dns: map[string]string{"wl.test 192.0.2.9": "127.0.0.2", "bl2.test 192.0.2.9": "127.0.0.2"},
			ip: "192.0.2.9", rcpts: []string{"a@domino.test", "b@domino.test"}, want: acc(2), tags: []string{"X-DNSWL-Site: wl.test"}},
		{name: "dns blacklist log", config: dc("skip", "log"), dns: map[string]string{"bl1.test 192.0.2.9": "127.0.0.2"},
			ip: "192.0.2.9", rcpts: []string{"a@domino.test"}, want: acc(1)},
		{name: "dns blacklist tag", config: dc("skip", "tag"), dns: map[string]string{"bl2.test 192.0.2.9": "127.0.0.4"},
			ip: "192.0.2.9", rcpts: []string{"a@domino.test", "b@domino.test"}, want: acc(2), tags: []string{"X-DNSBL-Site: bl2.test"}},
		{name: "dns blacklist reject", config: dc("skip", "reject"), dns: map[string]string{"bl2.test 192.0.2.9": "127.0.0.4"},
			ip: "192.0.2.9", rcpts: []string{"a@domino.test"}, want: same("550 5.7.1 Your host 192.0.2.9 was found in a DNS blacklist.", 1)},
		{name: "dns blacklist answer outside filter", config: dc("skip", "reject"), dns: map[string]string{"bl1.test 192.0.2.9": "127.0.0.12"},
			ip: "192.0.2.9", rcpts: []string{"a@domino.test"}, want: acc(1)},
		{name: "dns blacklist error code", config: dc("skip", "reject"), dns: map[string]string{"bl2.test 192.0.2.9": "127.255.255.254"},
			ip: "192.0.2.9", rcpts: []string{"a@domino.test"}, want: acc(1)},
		{name: "empty helo", config: "[helo]\nreject_empty = true", ip: "192.0.2.1", helo: "-",
			rcpts: []string{"a@domino.test"}, want: same("550 5.7.1 HELO/EHLO not accepted", 1)},
		{name: "prohibited helo", config: "[helo]\ndeny = [\"*.dynamic.test\"]\nmessage = \"No %s\"", ip: "192.0.2.1", helo: "pc.Dynamic.test",
			rcpts: []string{"a@domino.test", "b@domino.test"}, want: same("550 5.7.1 No 192.0.2.1", 2)},
		{name: "prohibited sender", config: "[mail_from]\ndeny = [\"@bad.test\"]", ip: "192.0.2.1", from: "x@bad.test",
			rcpts: []string{"a@domino.test"}, want: same("550 5.7.1 Sender address rejected", 1)},
		{name: "null sender denied", config: "[mail_from]\ndeny = [\"<>\"]", ip: "192.0.2.1", from: "<>",
			rcpts: []string{"a@domino.test"}, want: same("550 5.7.1 Sender address rejected", 1)},
		{name: "prohibited sender disconnect", config: "[mail_from]\ndeny = [\"@bad.test\"]\ndisconnect = true", ip: "192.0.2.1", from: "x@bad.test",
			rcpts: []string{"a@domino.test"}, want: same("421 4.7.1 Sender address rejected", 1)},
		{name: "recipient limit", config: "[recipients]\nmax = 2", ip: "192.0.2.1",
			rcpts: []string{"a@domino.test", "b@domino.test", "c@domino.test", "d@domino.test"},
			want:  []string{"", "", "452 4.5.3 Too many recipients", "452 4.5.3 Too many recipients"}},
		// Issue 13: Domino's semantics and controls.
		{name: "whitelist lists, blacklisted: refused", config: "[whitelist]\nhosts = [\"192.0.2.5\"]\nscope = \"lists\"\n[blacklist]\nhosts = [\"192.0.2.5\"]", ip: "192.0.2.5",
			rcpts: []string{"a@domino.test"}, want: same("550 5.7.1 Connection denied based on policy reason", 1)},
		{name: "whitelist tag", config: "[whitelist]\nhosts = [\"192.0.2.5\"]\naction = \"tag\"", ip: "192.0.2.5",
			rcpts: []string{"a@domino.test", "b@domino.test"}, want: acc(2), tags: []string{"X-DNSWL-Site: PrivateWhitelist"}},
		{name: "whitelist lists tag", config: "[whitelist]\nhosts = [\"192.0.2.5\"]\nscope = \"lists\"\naction = \"tag\"", ip: "192.0.2.5",
			rcpts: []string{"a@domino.test"}, want: acc(1), tags: []string{"X-DNSWL-Site: PrivateWhitelist"}},
		{name: "dnsbl message with two %s", config: dc("skip", "reject") + "message = \"Your IP, %s, was found in the %s block list.\"\n", dns: map[string]string{"bl1.test 192.0.2.9": "127.0.0.2"},
			ip: "192.0.2.9", rcpts: []string{"a@domino.test"}, want: same("550 5.7.1 Your IP, 192.0.2.9, was found in the bl1.test block list.", 1)},
		{name: "bare name matches below", config: "[blacklist]\nhosts = [\"bad.test\"]", ip: "192.0.2.67", host: "mx1.bad.test",
			rcpts: []string{"a@domino.test"}, want: same("550 5.7.1 Connection denied based on policy reason", 1)},
		{name: "deny list matches the unverified PTR", config: "[blacklist]\nhosts = [\".dynamic.test\"]", ip: "192.0.2.68", ptr: "pc1.dynamic.test",
			rcpts: []string{"a@domino.test"}, want: same("550 5.7.1 Connection denied based on policy reason", 1)},
		{name: "allow list ignores the unverified PTR", config: "[whitelist]\nhosts = [\".good.test\"]\n[blacklist]\nhosts = [\"192.0.2.68\"]", ip: "192.0.2.68", ptr: "mx.good.test",
			rcpts: []string{"a@domino.test"}, want: same("550 5.7.1 Connection denied based on policy reason", 1)},
		{name: "connections allow", config: "[connections]\nallow = [\"192.0.2.0/25\"]", ip: "192.0.2.200",
			rcpts: []string{"a@domino.test"}, want: same("550 5.7.1 Connection denied based on policy reason", 1)},
		{name: "connections allow and blacklist: deny wins", config: "[connections]\nallow = [\"192.0.2.0/25\"]\n[blacklist]\nhosts = [\"192.0.2.7\"]\nmessage = \"Denied\"", ip: "192.0.2.7",
			rcpts: []string{"a@domino.test"}, want: same("550 5.7.1 Denied", 1)},
		{name: "verify host name: MTA found one", config: "[connections]\nverify_host_name = true", ip: "192.0.2.1", ptr: "mx.example.com",
			rcpts: []string{"a@domino.test"}, want: acc(1)},
		{name: "verify host name: none", config: "[connections]\nverify_host_name = true", ip: "192.0.2.1", ptr: "unknown",
			rcpts: []string{"a@domino.test"}, want: same("550 5.7.25 Connection from 192.0.2.1 rejected for policy reasons. IP address of connecting host not found in reverse DNS lookup.", 1)},
		{name: "verify host name: own lookup finds one", config: "[connections]\nverify_host_name = true", ip: "192.0.2.1", ptr: "unknown",
			hostDNS: map[string]string{"ptr 192.0.2.1": "mx.example.com"}, rcpts: []string{"a@domino.test"}, want: acc(1)},
		{name: "verify host name: DNS failure tempfails", config: "[connections]\nverify_host_name = true", ip: "192.0.2.1", ptr: "unknown",
			hostDNS: map[string]string{"ptr 192.0.2.1": "fail"}, rcpts: []string{"a@domino.test"}, want: same("450 4.7.25 Reverse DNS lookup of 192.0.2.1 failed; try again later", 1)},
		{name: "verify domain: none", config: "[mail_from]\nverify_domain = true", ip: "192.0.2.1", from: "a@nowhere.test",
			rcpts: []string{"a@domino.test"}, want: same("550 5.1.8 Sender address rejected: Domain not found", 1)},
		{name: "verify domain: exists", config: "[mail_from]\nverify_domain = true", ip: "192.0.2.1", from: "a@example.com",
			hostDNS: map[string]string{"domain example.com": "yes"}, rcpts: []string{"a@domino.test"}, want: acc(1)},
		{name: "verify domain: DNS failure tempfails", config: "[mail_from]\nverify_domain = true", ip: "192.0.2.1", from: "a@example.com",
			hostDNS: map[string]string{"domain example.com": "fail"}, rcpts: []string{"a@domino.test"}, want: same("450 4.1.8 Sender address rejected: Domain not found", 1)},
		{name: "verify domain: null sender exempt", config: "[mail_from]\nverify_domain = true", ip: "192.0.2.1", from: "<>",
			rcpts: []string{"a@domino.test"}, want: acc(1)},
		{name: "mail_from allow", config: "[mail_from]\nallow = [\"@partner.test\"]", ip: "192.0.2.1", from: "a@other.test",
			rcpts: []string{"a@domino.test"}, want: same("550 5.7.1 Sender address rejected", 1)},
		{name: "mail_from allow passes", config: "[mail_from]\nallow = [\"@partner.test\"]", ip: "192.0.2.1", from: "a@partner.test",
			rcpts: []string{"a@domino.test"}, want: acc(1)},
		{name: "recipients allow", config: "[recipients]\nallow = [\"@domino.test\"]\ndeny = [\"x@domino.test\"]", ip: "192.0.2.1",
			rcpts: []string{"a@domino.test", "b@other.test", "x@domino.test"}, want: []string{"", "550 5.7.1 Recipient address rejected", "550 5.7.1 Recipient address rejected"}},
		{name: "error limit", config: "[server]\nerror_limit = 2\n[recipients]\ndeny = [\"@bad.test\"]", ip: "192.0.2.1",
			rcpts: []string{"1@bad.test", "2@bad.test", "3@bad.test"}, want: []string{"550 5.7.1 Recipient address rejected", "550 5.7.1 Recipient address rejected", "421 4.7.0 Too many errors; closing the connection"}},
		{name: "error limit ignores 452", config: "[server]\nerror_limit = 1\n[recipients]\nmax = 1", ip: "192.0.2.1",
			rcpts: []string{"1@domino.test", "2@domino.test", "3@domino.test"}, want: []string{"", "452 4.5.3 Too many recipients", "452 4.5.3 Too many recipients"}},
		{name: "prohibited recipient", config: "[recipients]\ndeny = [\"nobody@domino.test\"]", ip: "192.0.2.1",
			rcpts: []string{"a@domino.test", "NoBody@domino.test"}, want: []string{"", "550 5.7.1 Recipient address rejected"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			if tt.helo == "" {
				tt.helo = "mail.example.com"
			} else if tt.helo == "-" {
				tt.helo = ""
			}
			if tt.from == "" {
				tt.from = "sender@example.com"
			}
			if tt.host == "" {
				tt.host = "unknown"
			}
			pGot, pTags := runPolicy(t, tt)
			mGot, mTags := runMilter(t, tt)
			is.Equal(pGot, tt.want)  // policy replies
			is.Equal(mGot, tt.want)  // milter replies
			is.Equal(pTags, tt.tags) // policy tags
			is.Equal(mTags, tt.tags) // milter tags
		})
	}
}

func parityEngine(t *testing.T, tt parityCase) *rules.Engine {
	t.Helper()
	cfg, err := rules.Parse("parity.toml", tt.config)
	if err != nil {
		t.Fatal(err)
	}
	dns := rules.NewMemoryDNS()
	for k, v := range tt.dns {
		zone, ip, _ := strings.Cut(k, " ")
		dns.Set(zone, netip.MustParseAddr(ip), "", netip.MustParseAddr(v))
	}
	for k, v := range tt.hostDNS {
		kind, arg, _ := strings.Cut(k, " ")
		switch {
		case kind == "ptr" && v == "fail":
			dns.FailReverse(netip.MustParseAddr(arg), errors.New("SERVFAIL"))
		case kind == "ptr":
			dns.SetReverse(netip.MustParseAddr(arg), strings.Fields(v)...)
		case v == "fail":
			dns.FailDomain(arg, errors.New("SERVFAIL"))
		default:
			dns.SetDomain(arg, v == "yes")
		}
	}
	return rules.NewEngine(cfg, rules.EngineOptions{DNS: dns, Logger: testLogger(t)})
}

// serveLoopback serves on 127.0.0.1:0 and returns the address and a stop
// function that shuts the server down.
func serveLoopback(t *testing.T, serve func(net.Listener) error, shutdown func(context.Context) error) (string, func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go serve(ln)
	return ln.Addr().String(), func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		shutdown(ctx)
	}
}

// runPolicy plays Postfix with check_policy_service in
// smtpd_recipient_restrictions and smtpd_data_restrictions.
func runPolicy(t *testing.T, tt parityCase) (replies, tags []string) {
	t.Helper()
	srv := policy.New(parityEngine(t, tt), policy.Options{Logger: testLogger(t)})
	addr, stop := serveLoopback(t, srv.Serve, srv.Shutdown)
	defer stop()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	sender := tt.from
	if sender == "<>" {
		sender = ""
	}
	ask := func(state, rcpt string) string {
		fmt.Fprintf(c, "request=smtpd_access_policy\nprotocol_state=%s\nprotocol_name=ESMTP\nclient_address=%s\nclient_name=%s\n"+
			"helo_name=%s\nsender=%s\nrecipient=%s\nsasl_username=%s\ninstance=parity.1\nreverse_client_name=%s\n\n", state, tt.ip, tt.host, tt.helo, sender, rcpt, tt.auth, tt.ptr)
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		r.ReadString('\n')
		return strings.TrimPrefix(strings.TrimSpace(line), "action=")
	}
	accepted := 0
	handle := func(a string) string {
		switch {
		case a == "DUNNO":
			return ""
		case strings.HasPrefix(a, "PREPEND "):
			tags = append(tags, strings.TrimPrefix(a, "PREPEND "))
			return ""
		}
		return a
	}
	for _, rcpt := range tt.rcpts {
		got := handle(ask("RCPT", rcpt))
		if got == "" {
			accepted++
		}
		replies = append(replies, got)
	}
	if accepted > 0 {
		if got := handle(ask("DATA", "")); got != "" {
			t.Fatalf("policy DATA refused: %s", got)
		}
	}
	return replies, tags
}

// runMilter plays Postfix with the milter: connect, HELO, MAIL (with
// {auth_authen} after AUTH), RCPTs, DATA and the message; a refused MAIL
// FROM refuses every recipient. This is the sequence the e2e suite shows
// Postfix and Sendmail send (sasl-milter-privbl-auth-delivered,
// sasl-milter-privbl-noauth-refused, sendmail-auth-exempt,
// sendmail-rcpt-deny, sendmail-rcpt-limit, sendmail-two-messages-tagged-once).
func runMilter(t *testing.T, tt parityCase) (replies, tags []string) {
	t.Helper()
	e := parityEngine(t, tt)
	srv := New(e, Options{Logger: testLogger(t)})
	addr, stop := serveLoopback(t, srv.Serve, srv.Shutdown)
	defer stop()
	ts := &testServer{network: "tcp", addr: addr}
	macros := map[string]string{macroClientAddr: tt.ip, macroClientName: tt.host}
	if tt.ptr != "" {
		macros[macroClientPtr] = tt.ptr
	}
	m := ts.session(t, macros)
	defer m.s.Close() // before Shutdown, which waits for the MTA to hang up
	if r := m.connect(tt.ip, tt.host); r != "" {
		t.Fatalf("refused at connect with delay_reject on: %s", r)
	}
	// With delay_reject (the default) nothing is refused before MAIL
	// FROM: a refused HELO is judged there (e2e
	// sasl-milter-helo-refused-at-mail).
	if r := m.helo(tt.helo); r != "" {
		t.Fatalf("refused at HELO with delay_reject on: %s", r)
	}
	if tt.auth != "" {
		m.macros.Set(macroAuthAuthen, tt.auth)
	}
	from := tt.from
	if from == "<>" {
		from = ""
	}
	if r := m.mail(from); r != "" {
		for range tt.rcpts {
			replies = append(replies, r)
		}
		return replies, nil
	}
	accepted := 0
	for _, rcpt := range tt.rcpts {
		r := m.rcpt(rcpt)
		if r == "" {
			accepted++
		}
		replies = append(replies, r)
	}
	if accepted == 0 {
		return replies, nil
	}
	if r := m.data(); r != "" {
		t.Fatalf("milter DATA refused: %s", r)
	}
	res, changes := m.message([2]string{"Subject", "parity"})
	if res != "" {
		t.Fatalf("milter end of message: %s", res)
	}
	for _, c := range changes {
		if h, ok := strings.CutPrefix(c, "+"); ok && !strings.HasPrefix(h, "Authentication-Results:") {
			tags = append(tags, h)
		}
	}
	return replies, tags
}
