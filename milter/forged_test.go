package milter

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/authres"
	"github.com/matryer/is"
)

// Copies of Authentication-Results claiming our authserv-id (relay.test
// in the tests) are removed however they dress it up (RFC 8601 §5);
// others stay.
func TestForgedAuthenticationResults(t *testing.T) {
	tests := []struct {
		value   string
		removed bool
	}{
		{"relay.test; dnswl=pass dns.zone=forged.example", true},
		{"RELAY.TEST.; dnswl=pass", true},
		{"(trusted) relay.test; dnswl=pass", true},
		{"relay.test (ours); spf=pass smtp.mailfrom=example.com", true},
		{"relay.test(x); spf=pass smtp.mailfrom=example.com", true},
		{`"relay.test"; spf=pass smtp.mailfrom=example.com`, true},
		{"relay.test 2; spf=pass smtp.mailfrom=example.com", true},
		{"relay.test 1; none", true},
		{"relay.test\n\t(folded); dkim=pass", true},
		{"relay.test junk; spf=pass", true},
		{"other.example; spf=pass smtp.mailfrom=example.com", false},
		{"(relay.test) other.example; spf=pass", false},
		{"relay.test.other.example; spf=pass", false},
		{`"relay.test.evil"; spf=pass`, false},
	}
	ts := startMilter(t, "tcp", "")
	m := ts.session(t, postfixMacros("192.0.2.1", "unknown"))
	is.New(t).Equal(m.connect("192.0.2.1", "unknown")+m.helo("x.example"), "")
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			is := is.New(t)
			is.Equal(m.mail("a@example.com")+m.rcpt("b@domino.test")+m.data(), "")
			res, changes := m.message(
				[2]string{"Authentication-Results", "other.example; dkim=pass"},
				[2]string{"Authentication-Results", tt.value},
			)
			is.Equal(res, "")
			if tt.removed {
				is.Equal(changes, []string{"-Authentication-Results#2"})
			} else {
				is.Equal(len(changes), 0)
			}
		})
	}
}

// A DNS whitelist's TXT record cannot write into our own header: a
// backslash before a quote no longer closes policy.txt="..." early.
func TestPolicyTextCannotInject(t *testing.T) {
	txts := []string{
		`x\" spf=pass smtp.mailfrom=evil.example; \"`,
		`x" spf=pass smtp.mailfrom=evil.example; "`,
		`x; spf=pass smtp.mailfrom=evil.example`,
		"x\r\n\tspf=pass smtp.mailfrom=evil.example; dkim=pass",
		`\\\"; spf=pass (`,
	}
	for _, txt := range txts {
		t.Run(txt, func(t *testing.T) {
			is := is.New(t)
			ts := startMilter(t, "tcp", "[dns_whitelist]\nenabled = true\nsites = [\"wl.test\"]\naction = \"tag\"")
			ts.dns.Set("wl.test", netip.MustParseAddr("192.0.2.10"), txt, netip.MustParseAddr("127.0.10.1"))
			m := ts.session(t, postfixMacros("192.0.2.10", "unknown"))
			is.Equal(m.connect("192.0.2.10", "unknown")+m.helo("x.example")+m.mail("a@example.com")+m.rcpt("b@domino.test")+m.data(), "")
			res, changes := m.message()
			is.Equal(res, "")
			i := slices.IndexFunc(changes, func(c string) bool { return strings.HasPrefix(c, "+Authentication-Results: ") })
			is.True(i >= 0)
			value := strings.TrimPrefix(changes[i], "+Authentication-Results: ")
			id, results, err := authres.Parse(value)
			is.NoErr(err)
			is.Equal(id, "relay.test")
			is.Equal(len(results), 1) // dnswl, and nothing else
			r, ok := results[0].(*authres.GenericResult)
			is.True(ok)
			is.Equal(r.Method, "dnswl")
			is.Equal(r.Params["dns.zone"], "wl.test")
			is.True(!strings.Contains(value, `\`))
			// Read back per RFC 8601 too: the id, then one result.
			pid, _, perr := parseAuthservID(value)
			is.NoErr(perr)
			is.Equal(pid, "relay.test")
		})
	}
}

func TestPolicyText(t *testing.T) {
	long := strings.Repeat("a", 300)
	tests := []struct{ in, want string }{
		{"127.0.10.1 https://www.dnswl.org/s/?s=8415", "127.0.10.1 https://www.dnswl.org/s/?s=8415"},
		{`x\" spf=pass; \"`, "x spf=pass"},
		{"a\r\nInjected: yes", "aInjected: yes"},
		{"caf\xc3\xa9 \x00\x7f\xff", "caf"},
		{"  padded  ", "padded"},
		{`"\;`, ""},
		{long, long[:maxPolicyText]},
		{strings.Repeat("a", 199) + " b", strings.Repeat("a", 199)},
	}
	for _, tt := range tests {
		is := is.New(t)
		got := policyText(tt.in)
		is.Equal(got, tt.want)
		is.True(len(got) <= maxPolicyText)
	}
}
