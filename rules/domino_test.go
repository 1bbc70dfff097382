package rules

import (
	"errors"
	"strings"
	"testing"
)

// TestDominoSemantics covers issue 13: Domino's semantics of the private
// whitelist, the DNSBL message, host names and PTR names, and Domino's
// connection, sender, recipient and error-limit controls. Every row is
// also run through both adapters by milter's TestPolicyMilterParity.
func TestDominoSemantics(t *testing.T) {
	servfail := errors.New("SERVFAIL")
	accept := func(op, arg string) step { return step{op: op, arg: arg, want: ActionAccept} }
	rej := func(op, arg string, code int, enh, text string, ctl Control) step {
		return step{op: op, arg: arg, want: ActionReject, code: code, enh: enh, text: text, ctl: ctl}
	}
	temp := func(op, arg string, code int, enh, text string, ctl Control) step {
		return step{op: op, arg: arg, want: ActionTempfail, code: code, enh: enh, text: text, ctl: ctl}
	}
	const verifyText = "Connection from 192.0.2.1 rejected for policy reasons. IP address of connecting host not found in reverse DNS lookup."
	tests := []scenario{
		// 1. Private whitelist.
		{name: "scope lists does not skip the blacklist", ip: "192.0.2.5",
			config: "[whitelist]\nhosts = [\"192.0.2.5\"]\nscope = \"lists\"\n[blacklist]\nhosts = [\"192.0.2.0/24\"]",
			steps:  []step{rej("connect", "", 550, "5.7.1", "Connection denied based on policy reason", ControlBlacklist)}},
		{name: "scope lists skips the private blacklist and DNS lists", ip: "192.0.2.5",
			config: "[whitelist]\nhosts = [\"192.0.2.5\"]\nscope = \"lists\"\n[private_blacklist]\nenabled = true\naction = \"reject\"\nhosts = [\"192.0.2.0/24\"]\n" + dnsCfg("skip", "reject"),
			dns:    func(d *MemoryDNS) { d.Set("bl1.test", mustAddr("192.0.2.5"), "", listed2) },
			steps:  []step{accept("connect", ""), accept("mail", "a@example.com")}},
		{name: "scope all bypasses the blacklist", ip: "192.0.2.5",
			config: "[whitelist]\nhosts = [\"192.0.2.5\"]\n[blacklist]\nhosts = [\"192.0.2.0/24\"]",
			steps:  []step{accept("connect", ""), accept("mail", "a@example.com")}},
		{name: "whitelist tag", ip: "192.0.2.5",
			config: "[whitelist]\nhosts = [\"192.0.2.5\"]\naction = \"tag\"",
			steps:  []step{{op: "connect", want: ActionTag, hdr: "X-DNSWL-Site: PrivateWhitelist"}, accept("mail", "a@example.com"), {op: "tags", arg: "X-DNSWL-Site: PrivateWhitelist"}}},
		{name: "whitelist log", ip: "192.0.2.5",
			config: "[whitelist]\nhosts = [\"192.0.2.5\"]\naction = \"log\"",
			steps:  []step{accept("connect", ""), {op: "tags", arg: ""}}},
		// 2. Messages.
		{name: "two %s in the DNSBL message", ip: "192.0.2.1",
			config: strings.Replace(dnsCfg("skip", "reject"), "Your host %s was found in a DNS blacklist.", "Your IP, %s, was found in the %s block list.", 1),
			dns:    func(d *MemoryDNS) { d.Set("bl1.test", mustAddr("192.0.2.1"), "", listed2) },
			steps:  []step{rej("connect", "", 550, "5.7.1", "Your IP, 192.0.2.1, was found in the bl1.test block list.", ControlDNSBlacklist)}},
		{name: "named placeholders with the list's TXT", ip: "192.0.2.1",
			config: strings.Replace(dnsCfg("skip", "reject"), "Your host %s was found in a DNS blacklist.", "{ip} is on {site}: {reason}", 1),
			dns: func(d *MemoryDNS) {
				d.Set("bl1.test", mustAddr("192.0.2.1"), "See https://bl1.test/q?192.0.2.1\r\n250 ok", listed2)
			},
			steps: []step{rej("connect", "", 550, "5.7.1", "192.0.2.1 is on bl1.test: See https://bl1.test/q?192.0.2.1 250 ok", ControlDNSBlacklist)}},
		// 3 and 4. Names.
		{name: "bare name matches a name below", ip: "192.0.2.1", host: "mx.bad.test",
			config: "[blacklist]\nhosts = [\"bad.test\"]",
			steps:  []step{rej("connect", "", 550, "5.7.1", "", ControlBlacklist)}},
		{name: "blacklist matches the unverified PTR", ip: "192.0.2.1",
			config: "[blacklist]\nhosts = [\"*.dynamic.test\"]",
			steps:  []step{{op: "ptr", arg: "PC1.Dynamic.test."}, rej("connect", "", 550, "5.7.1", "", ControlBlacklist)}},
		{name: "private blacklist matches the unverified PTR", ip: "192.0.2.1",
			config: "[private_blacklist]\nenabled = true\naction = \"reject\"\nhosts = [\"dynamic.test\"]",
			steps:  []step{{op: "ptr", arg: "pc1.dynamic.test"}, rej("connect", "", 550, "5.7.1", "Your host 192.0.2.1 was blacklisted.", ControlPrivateBlacklist)}},
		{name: "whitelist ignores the unverified PTR", ip: "192.0.2.1",
			config: "[whitelist]\nhosts = [\"good.test\"]\n[blacklist]\nhosts = [\"192.0.2.1\"]",
			steps:  []step{{op: "ptr", arg: "mx.good.test"}, rej("connect", "", 550, "5.7.1", "", ControlBlacklist)}},
		// Connections.
		{name: "connections allow refuses others", ip: "198.51.100.1",
			config: "[connections]\nallow = [\"192.0.2.0/24\", \"partner.test\"]\n[blacklist]\nmessage = \"No, %s\"",
			steps:  []step{rej("connect", "", 550, "5.7.1", "No, 198.51.100.1", ControlConnections)}},
		{name: "connections allow by verified name", ip: "198.51.100.1", host: "mx.partner.test",
			config: "[connections]\nallow = [\"192.0.2.0/24\", \"partner.test\"]",
			steps:  []step{accept("connect", ""), accept("mail", "a@example.com")}},
		{name: "connections allow and blacklist: deny wins", ip: "192.0.2.7",
			config: "[connections]\nallow = [\"192.0.2.0/24\"]\n[blacklist]\nhosts = [\"192.0.2.7\"]",
			steps:  []step{rej("connect", "", 550, "5.7.1", "", ControlBlacklist)}},
		{name: "connections allow applies to scope lists", ip: "198.51.100.1",
			config: "[whitelist]\nhosts = [\"198.51.100.1\"]\nscope = \"lists\"\n[connections]\nallow = [\"192.0.2.0/24\"]",
			steps:  []step{rej("connect", "", 550, "5.7.1", "", ControlConnections)}},
		{name: "verify_host_name: PTR from the MTA", ip: "192.0.2.1",
			config: "[connections]\nverify_host_name = true",
			steps:  []step{{op: "ptr", arg: "mx.example.com"}, accept("connect", ""), accept("helo", "mx"), accept("mail", "a@example.com")}},
		{name: "verify_host_name: none, refused at MAIL FROM", ip: "192.0.2.1",
			config: "[connections]\nverify_host_name = true",
			steps: []step{{op: "ptr", arg: "unknown"}, accept("connect", ""), accept("helo", "mx"),
				rej("mail", "a@example.com", 550, "5.7.25", verifyText, ControlConnections)}},
		{name: "verify_host_name: own lookup finds a name", ip: "192.0.2.1",
			config: "[connections]\nverify_host_name = true",
			dns:    func(d *MemoryDNS) { d.SetReverse(mustAddr("192.0.2.1"), "mx.example.com") },
			steps:  []step{accept("connect", ""), accept("helo", "mx"), accept("mail", "a@example.com")}},
		{name: "verify_host_name: DNS failure is 450, never 550", ip: "192.0.2.1",
			config: "[connections]\nverify_host_name = true",
			dns:    func(d *MemoryDNS) { d.FailReverse(mustAddr("192.0.2.1"), servfail) },
			steps:  []step{accept("connect", ""), accept("helo", "mx"), temp("mail", "a@example.com", 450, "4.7.25", "", ControlConnections)}},
		{name: "verify_host_name: authenticated exempt", ip: "192.0.2.1",
			config: "[connections]\nverify_host_name = true",
			steps:  []step{accept("connect", ""), {op: "auth", arg: "user"}, accept("mail", "a@example.com")}},
		// Senders.
		{name: "verify_domain: no records", ip: "192.0.2.1",
			config: "[mail_from]\nverify_domain = true",
			steps:  []step{accept("helo", "mx"), rej("mail", "<a@Nowhere.test.>", 550, "5.1.8", "Sender address rejected: Domain not found", ControlMailFrom)}},
		{name: "verify_domain: exists", ip: "192.0.2.1",
			config: "[mail_from]\nverify_domain = true",
			dns:    func(d *MemoryDNS) { d.SetDomain("example.com", true) },
			steps:  []step{accept("helo", "mx"), accept("mail", "<a@EXAMPLE.com>")}},
		{name: "verify_domain: DNS failure is 450", ip: "192.0.2.1",
			config: "[mail_from]\nverify_domain = true",
			dns:    func(d *MemoryDNS) { d.FailDomain("example.com", servfail) },
			steps:  []step{accept("helo", "mx"), temp("mail", "a@example.com", 450, "4.1.8", "", ControlMailFrom)}},
		{name: "verify_domain: null sender and address literal not checked", ip: "192.0.2.1",
			config: "[mail_from]\nverify_domain = true",
			steps:  []step{accept("helo", "mx"), accept("mail", "<>"), accept("mail", "a@[192.0.2.9]")}},
		{name: "mail_from allow", ip: "192.0.2.1",
			config: "[mail_from]\nallow = [\"@partner.test\", \"boss@example.com\"]\ndeny = [\"spam@partner.test\"]",
			steps: []step{accept("helo", "mx"), accept("mail", "a@partner.test"), accept("mail", "boss@example.com"),
				rej("mail", "other@example.com", 550, "5.7.1", "Sender address rejected", ControlMailFrom),
				rej("mail", "spam@partner.test", 550, "5.7.1", "", ControlMailFrom)}},
		// Recipients.
		{name: "recipients allow", ip: "192.0.2.1",
			config: "[recipients]\nallow = [\"@domino.test\"]\ndeny = [\"x@domino.test\"]",
			steps: []step{accept("helo", "mx"), accept("mail", "a@example.com"), accept("rcpt", "a@domino.test"),
				rej("rcpt", "a@other.test", 550, "5.7.1", "Recipient address rejected", ControlRecipients),
				rej("rcpt", "x@domino.test", 550, "5.7.1", "", ControlRecipients)}},
		// Error limit.
		{name: "error limit: the refusal after N is 421", ip: "192.0.2.1",
			config: "[server]\nerror_limit = 2\n[recipients]\ndeny = [\"@bad.test\"]\nmax = 1",
			steps: []step{accept("helo", "mx"), accept("mail", "a@example.com"), rej("rcpt", "1@bad.test", 550, "5.7.1", "", ControlRecipients),
				accept("rcpt", "ok@domino.test"),
				temp("rcpt", "2@domino.test", 452, "4.5.3", "", ControlRecipients), // not counted
				rej("rcpt", "2@bad.test", 550, "5.7.1", "", ControlRecipients),
				temp("rcpt", "3@bad.test", 421, "4.7.0", "Too many errors; closing the connection", ControlErrorLimit)}},
		{name: "error limit counts repeated HELO refusals", ip: "192.0.2.1",
			config: "[server]\nerror_limit = 1\n[helo]\ndeny = [\"bad\"]",
			steps: []step{rej("helo", "bad", 550, "5.7.1", "", ControlHelo),
				temp("mail", "a@example.com", 421, "4.7.0", "", ControlErrorLimit)}},
	}
	for _, sc := range tests {
		t.Run(sc.name, func(t *testing.T) { runScenario(t, sc) })
	}
}
