package rules

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/matryer/is"
)

// directoryConfig is a [directory] for acme.example, bound anonymously.
const directoryConfig = `
[directory]
url = ["ldap://127.0.0.1:3389"]
domains = ["acme.example", "Sub.Acme.Example."]
[recipients]
verify = true
`

// TestDirectoryConfigErrors: each mistake in [directory] or [recipients]
// verify is one error naming its key and line.
func TestDirectoryConfigErrors(t *testing.T) {
	const url = "[directory]\nurl = [\"ldap://127.0.0.1:3389\"]\ndomains = [\"acme.example\"]\n"
	tests := []struct {
		name, toml, key string
		line            int
		want            string
	}{
		{"verify without a directory", "[recipients]\nverify = true", "recipients.verify", 2, "set [directory] url"},
		{"ambiguous without verify", url + "[recipients]\nreject_ambiguous = true", "recipients.reject_ambiguous", 5, "needs verify"},
		{"groups without verify", url + "[recipients]\ndeny_groups = true", "recipients.deny_groups", 5, "needs verify"},
		{"bad scheme", "[directory]\nurl = [\"http://dir.acme.example\"]\ndomains = [\"acme.example\"]", "directory.url", 2, "ldap://host"},
		{"no host", "[directory]\nurl = [\"ldap://\"]\ndomains = [\"acme.example\"]", "directory.url", 2, "no host"},
		{"no domains", "[directory]\nurl = [\"ldap://127.0.0.1:3389\"]", "directory.domains", 0, "no domain"},
		{"bad domain", "[directory]\nurl = [\"ldap://127.0.0.1:3389\"]\ndomains = [\"@acme.example\"]", "directory.domains", 3, "invalid domain"},
		{"start_tls on ldaps", "[directory]\nurl = [\"ldaps://127.0.0.1:6636\"]\nstart_tls = true\ndomains = [\"acme.example\"]", "directory.start_tls", 3, "ldaps:// already"},
		{"bad filter", url + "filter = \"(mail={addr}\"", "directory.filter", 4, "invalid LDAP filter"},
		{"filter without the address", url + "filter = \"(objectClass=person)\"", "directory.filter", 4, "{addr}"},
		{"group filter with a substring", url + "group_filter = \"(cn=grp*)\"", "directory.group_filter", 4, "only &, |, !"},
		{"bind_dn without a password", url + "bind_dn = \"cn=relay,o=acme\"", "directory.bind_dn", 4, "bind_password_file"},
		{"password without bind_dn", url + "bind_password_file = \"testdata/directory-password\"", "directory.bind_password_file", 4, "bind_dn is not"},
		{"missing password file", url + "bind_dn = \"cn=relay,o=acme\"\nbind_password_file = \"/nonexistent/pw\"", "directory.bind_password_file", 5, "/nonexistent/pw"},
		{"missing ca file", url + "ca_file = \"/nonexistent/ca.pem\"", "directory.ca_file", 4, "/nonexistent/ca.pem"},
		{"bad on_error", url + "on_error = \"reject\"", "directory.on_error", 4, "tempfail or accept"},
		{"bad connections", url + "connections = 0", "directory.connections", 4, "1 or more"},
		{"bad ttl", url + "negative_ttl = \"5\"", "directory.negative_ttl", 4, "invalid duration"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { oneConfigError(t, tt.toml, tt.key, tt.line, tt.want) })
	}
}

// TestDirectoryConfig: a [directory] compiles with its defaults, reads
// the password file (and watches it), and never shows the password.
func TestDirectoryConfig(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	is.NoErr(os.WriteFile(pw, []byte("s3cret\n"), 0o600))
	text := directoryConfig + "reject_ambiguous = true\n" + "[directory]\nbind_dn = \"cn=relay,o=acme\"\nbind_password_file = \"pw\"\n"
	text = strings.Replace(text, "[recipients]\nverify = true\nreject_ambiguous = true\n[directory]\n", "", 1)
	text += "[recipients]\nverify = true\nreject_ambiguous = true\n"
	cfg, err := Parse(filepath.Join(dir, "config.toml"), text)
	is.NoErr(err)
	d := cfg.Directory
	is.Equal(d.URLs, []string{"ldap://127.0.0.1:3389"})
	is.Equal(d.Domains, []string{"acme.example", "sub.acme.example"})
	is.Equal(string(d.BindPassword), "s3cret")
	is.Equal(d.Filter, DefaultDirectoryFilter)
	is.Equal(d.GroupFilter, DefaultDirectoryGroupFilter)
	is.Equal(d.PositiveTTL.String(), "1h0m0s")
	is.Equal(d.NegativeTTL.String(), "5m0s")
	is.Equal(d.Connections, 4)
	is.True(!d.OnErrorAccept)
	is.True(cfg.Recipients.Verify && cfg.Recipients.RejectAmbiguous && !cfg.Recipients.DenyGroups)
	is.True(contains(cfg.Files, pw)) // a new password is a reload

	for _, shown := range []string{fmt.Sprint(d), fmt.Sprintf("%+v", d), fmt.Sprintf("%#v", d), d.String()} {
		is.True(!strings.Contains(shown, "s3cret")) // the password is never printed
	}
	is.NoErr(os.WriteFile(pw, []byte("n3w\n"), 0o600))
	cfg2, err := Parse(filepath.Join(dir, "config.toml"), text)
	is.NoErr(err)
	changes := Diff(cfg, cfg2)
	is.Equal(len(changes), 1)
	is.Equal(changes[0].String(), "directory.bind_password_file: (hidden) → (hidden)")

	local := []struct {
		addr string
		want bool
	}{{"a@acme.example", true}, {"a@ACME.example.", true}, {"a@sub.acme.example", true}, {"a@other.example", false}, {"a@x.acme.example", false}, {"acme.example", false}}
	for _, l := range local {
		is.Equal(d.Local(l.addr), l.want) // Local
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestExpandDirectoryFilter: the address is escaped per RFC 4515 before
// it goes into the filter, so metacharacters cannot add terms.
func TestExpandDirectoryFilter(t *testing.T) {
	is := is.New(t)
	is.Equal(ExpandDirectoryFilter(DefaultDirectoryFilter, "alice@acme.example"), "(|(mail=alice@acme.example)(cn=alice@acme.example))")
	is.Equal(ExpandDirectoryFilter("(&(uid={local})(o={domain}))", "a*)(uid=*@acme.example"), `(&(uid=a\2a\29\28uid=\2a)(o=acme.example))`)
	is.NoErr(CheckDirectoryFilter("(uid={local})"))
}

// verifyStep is one RCPT of a verification scenario.
type verifyStep struct {
	rcpt string
	want Action
	code int
	enh  string
	text string
}

// TestVerifyRecipients: [recipients] verify with each answer the
// directory can give, with Domino's replies. The sequences are those the
// end-to-end suite gets from real Postfix (contrib/e2e/run, "directory"
// cases): one RCPT at a time, the recipient as Postfix passes it.
func TestVerifyRecipients(t *testing.T) {
	alice := DirectoryEntry{DN: "cn=Alice Anders,ou=Sales,o=acme"}
	dup1, dup2 := DirectoryEntry{DN: "cn=Dup One,o=acme"}, DirectoryEntry{DN: "cn=Dup Two,o=acme"}
	sales := DirectoryEntry{DN: "cn=Sales,o=acme", Group: true}
	down := errors.New("ldap: connection refused")
	tests := []struct {
		name, config string
		setup        func(*MemoryDirectory)
		steps        []verifyStep
		lookups      int
	}{
		{
			name: "known and unknown", config: directoryConfig,
			steps: []verifyStep{
				{rcpt: "alice@acme.example", want: ActionAccept},
				{rcpt: "<Alice@ACME.example>", want: ActionAccept},
				{rcpt: "nobody@acme.example", want: ActionReject, code: 550, enh: "5.1.1", text: "<nobody@acme.example>: Recipient address rejected: User unknown"},
				{rcpt: "<nobody@sub.acme.example>", want: ActionReject, code: 550, enh: "5.1.1", text: "<nobody@sub.acme.example>: Recipient address rejected: User unknown"},
				{rcpt: "someone@elsewhere.example", want: ActionAccept}, // not a [directory] domain: not looked up
			},
			lookups: 4,
		},
		{
			name: "ambiguous accepted unless reject_ambiguous", config: directoryConfig,
			steps: []verifyStep{{rcpt: "dup@acme.example", want: ActionAccept}},
		},
		{
			name: "ambiguous refused", config: directoryConfig + "reject_ambiguous = true\n",
			steps: []verifyStep{{rcpt: "dup@acme.example", want: ActionReject, code: 550, enh: "5.1.4", text: "<dup@acme.example>: Recipient address rejected: Ambiguous name in the Domino Directory"}},
		},
		{
			name: "group accepted unless deny_groups", config: directoryConfig,
			steps: []verifyStep{{rcpt: "sales@acme.example", want: ActionAccept}},
		},
		{
			name: "group refused", config: directoryConfig + "deny_groups = true\n",
			steps: []verifyStep{
				{rcpt: "sales@acme.example", want: ActionReject, code: 550, enh: "5.7.1", text: "<sales@acme.example>: Recipient address rejected: Mail to groups is not accepted"},
				{rcpt: "alice@acme.example", want: ActionAccept},
			},
		},
		{
			name: "directory down: 451, never 5xx", config: directoryConfig,
			setup: func(m *MemoryDirectory) { m.Fail("", down) },
			steps: []verifyStep{
				{rcpt: "alice@acme.example", want: ActionTempfail, code: 451, enh: "4.4.3", text: "<alice@acme.example>: Recipient address rejected: Directory unavailable, try again later"},
				{rcpt: "nobody@acme.example", want: ActionTempfail, code: 451, enh: "4.4.3"},
				{rcpt: "x@elsewhere.example", want: ActionAccept},
			},
		},
		{
			name: "directory down with on_error = accept", config: strings.Replace(directoryConfig, "[recipients]", "on_error = \"accept\"\n[recipients]", 1),
			setup: func(m *MemoryDirectory) { m.Fail("", down) },
			steps: []verifyStep{{rcpt: "nobody@acme.example", want: ActionAccept}},
		},
		{
			name: "unknown recipients do not count towards max", config: directoryConfig + "max = 1\n",
			steps: []verifyStep{
				{rcpt: "nobody@acme.example", want: ActionReject, code: 550, enh: "5.1.1"},
				{rcpt: "nobody2@acme.example", want: ActionReject, code: 550, enh: "5.1.1"},
				{rcpt: "alice@acme.example", want: ActionAccept},
				{rcpt: "bob@acme.example", want: ActionTempfail, code: 452, enh: "4.5.3"},
				{rcpt: "nobody3@acme.example", want: ActionReject, code: 550, enh: "5.1.1"}, // unknown beats too many: the permanent answer
			},
		},
		{
			name: "deny wins before a lookup", config: directoryConfig + "deny = [\"alice@acme.example\"]\n",
			steps:   []verifyStep{{rcpt: "alice@acme.example", want: ActionReject, code: 550, enh: "5.7.1", text: "Recipient address rejected"}},
			lookups: 0,
		},
		{
			name: "tempfails do not count towards error_limit", config: "[server]\nerror_limit = 1\n" + directoryConfig,
			setup: func(m *MemoryDirectory) { m.Fail("", down) },
			steps: []verifyStep{
				{rcpt: "a@acme.example", want: ActionTempfail, code: 451, enh: "4.4.3"},
				{rcpt: "b@acme.example", want: ActionTempfail, code: 451, enh: "4.4.3"},
				{rcpt: "c@acme.example", want: ActionTempfail, code: 451, enh: "4.4.3"}, // not 421
			},
		},
		{
			name: "shadow mode accepts and says so", config: directoryConfig + "mode = \"shadow\"\n",
			steps: []verifyStep{{rcpt: "nobody@acme.example", want: ActionAccept, code: 550, enh: "5.1.1"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			cfg, err := Parse("test.toml", tt.config)
			is.NoErr(err)
			dir := NewMemoryDirectory()
			dir.Set("alice@acme.example", alice)
			dir.Set("bob@acme.example", DirectoryEntry{DN: "cn=Bob,o=acme"})
			dir.Set("dup@acme.example", dup1, dup2)
			dir.Set("sales@acme.example", sales)
			if tt.setup != nil {
				tt.setup(dir)
			}
			e := NewEngine(cfg, EngineOptions{Directory: dir, Logger: testLogger(t)})
			s := NewSession(mustAddr("192.0.2.1"), "mx.example.com")
			ctx := context.Background()
			is.Equal(e.Mail(ctx, s, "sender@example.com").Action, ActionAccept)
			for i, st := range tt.steps {
				v := e.Rcpt(ctx, s, st.rcpt)
				t.Logf("step %d %s: %s %s %s", i, st.rcpt, v.Action, v.Reply(), v.Reason)
				is.Equal(v.Action, st.want) // action
				if st.code != 0 {
					is.Equal(v.Code, st.code)
					is.Equal(v.EnhancedCode, st.enh)
					is.Equal(v.Control, ControlRecipients)
				}
				if st.text != "" {
					is.Equal(v.Text, st.text)
				}
			}
			if tt.lookups != 0 || tt.name == "deny wins before a lookup" {
				is.Equal(dir.Lookups(), tt.lookups) // lookups asked
			}
		})
	}
}

// TestVerifyExemptions: whitelisted (scope all) and authenticated
// sessions are not verified, as no recipient control applies to them.
func TestVerifyExemptions(t *testing.T) {
	is := is.New(t)
	cfg, err := Parse("test.toml", "[whitelist]\nhosts = [\"192.0.2.9\"]\n"+directoryConfig)
	is.NoErr(err)
	dir := NewMemoryDirectory()
	e := NewEngine(cfg, EngineOptions{Directory: dir})
	ctx := context.Background()

	wl := NewSession(mustAddr("192.0.2.9"), "")
	is.Equal(e.Rcpt(ctx, wl, "nobody@acme.example").Action, ActionAccept)
	auth := NewSession(mustAddr("192.0.2.1"), "")
	auth.AuthUser = "relay-user"
	is.Equal(e.Rcpt(ctx, auth, "nobody@acme.example").Action, ActionAccept)
	is.Equal(dir.Lookups(), 0) // neither asked the directory

	plain := NewSession(mustAddr("192.0.2.1"), "")
	is.Equal(e.Rcpt(ctx, plain, "nobody@acme.example").Code, 550)
	is.Equal(dir.Lookups(), 1)
}

// TestVerifyTrace: explain's trace shows the LDAP filter, the entries
// found and whether the answer came from the cache.
func TestVerifyTrace(t *testing.T) {
	is := is.New(t)
	cfg, err := Parse("test.toml", directoryConfig)
	is.NoErr(err)
	dir := NewMemoryDirectory()
	dir.Set("alice@acme.example", DirectoryEntry{DN: "cn=Alice Anders,ou=Sales,o=acme"})
	e := NewEngine(cfg, EngineOptions{Directory: cachedOnce{dir}})
	s := NewSession(mustAddr("192.0.2.1"), "")
	s.Trace = true
	v := e.Rcpt(context.Background(), s, "alice@acme.example")
	var got []string
	for _, st := range v.Trace {
		got = append(got, st.String())
	}
	trace := strings.Join(got, "\n")
	t.Log(trace)
	is.True(strings.Contains(trace, "LDAP filter (mail=alice@acme.example): 1 entry (cn=Alice Anders,ou=Sales,o=acme); from the directory"))
	is.True(strings.Contains(trace, `"alice@acme.example" is cn=Alice Anders,ou=Sales,o=acme in the Domino Directory`))
	v = e.Rcpt(context.Background(), s, "alice@acme.example")
	is.True(strings.Contains(v.Trace[0].String(), "; from the cache"))
}

// cachedOnce marks every answer after the first as cached, as a caching
// client does.
type cachedOnce struct{ *MemoryDirectory }

func (c cachedOnce) LookupRecipient(ctx context.Context, addr string) (DirectoryAnswer, error) {
	a, err := c.MemoryDirectory.LookupRecipient(ctx, addr)
	a.Cached = c.Lookups() > 1
	return a, err
}

// TestNoDirectoryClient: verify on and no client is a directory error,
// never a refusal.
func TestNoDirectoryClient(t *testing.T) {
	is := is.New(t)
	cfg, err := Parse("test.toml", directoryConfig)
	is.NoErr(err)
	e := NewEngine(cfg, EngineOptions{})
	v := e.Rcpt(context.Background(), NewSession(mustAddr("192.0.2.1"), ""), "alice@acme.example")
	is.Equal(v.Code, 451)
	is.True(strings.Contains(v.Reason, "no directory client"))
}

// staticDirectory finds every address, as one entry, without allocating.
type staticDirectory struct{ entries []DirectoryEntry }

func (d staticDirectory) LookupRecipient(context.Context, string) (DirectoryAnswer, error) {
	return DirectoryAnswer{Query: "(mail=x)", Entries: d.entries, Cached: true}, nil
}

// TestVerifyAllocatesNothingForAFoundRecipient: with the answer cached, a
// verified recipient costs no allocation more than an unverified one (the
// reply and reason strings are built only for refusals).
func TestVerifyAllocatesNothingForAFoundRecipient(t *testing.T) {
	is := is.New(t)
	allocs := func(config string) float64 {
		cfg, err := Parse("test.toml", config)
		is.NoErr(err)
		e := NewEngine(cfg, EngineOptions{Directory: staticDirectory{entries: []DirectoryEntry{{DN: "cn=A,o=acme"}}}})
		s := NewSession(mustAddr("192.0.2.1"), "")
		ctx := context.Background()
		e.Mail(ctx, s, "a@example.com")
		return testing.AllocsPerRun(200, func() {
			s.Recipients = s.Recipients[:0]
			e.Rcpt(ctx, s, "<Alice@acme.example>")
		})
	}
	without := allocs(strings.Replace(directoryConfig, "verify = true", "verify = false", 1))
	with := allocs(directoryConfig)
	t.Logf("allocations per RCPT: %.0f without verify, %.0f with", without, with)
	is.Equal(with, without)
}

// BenchmarkRcptVerifyCached is one verified RCPT answered from the cache.
func BenchmarkRcptVerifyCached(b *testing.B) {
	cfg, err := Parse("test.toml", directoryConfig)
	if err != nil {
		b.Fatal(err)
	}
	e := NewEngine(cfg, EngineOptions{Directory: staticDirectory{entries: []DirectoryEntry{{DN: "cn=A,o=acme"}}}})
	s := NewSession(mustAddr("192.0.2.1"), "")
	ctx := context.Background()
	e.Mail(ctx, s, "a@example.com")
	b.ReportAllocs()
	for b.Loop() {
		s.Recipients = s.Recipients[:0]
		e.Rcpt(ctx, s, "alice@acme.example")
	}
}

// TestExpandDirectoryFilterPlaceholders: every placeholder, repeated, and
// braces that are not placeholders.
func TestExpandDirectoryFilterPlaceholders(t *testing.T) {
	is := is.New(t)
	is.Equal(ExpandDirectoryFilter("(&(uid={local})(|(mail={addr})(o={domain}))(x={other})(y={addr}))", "a.b@x.example"),
		"(&(uid=a.b)(|(mail=a.b@x.example)(o=x.example))(x={other})(y=a.b@x.example))")
	is.Equal(ExpandDirectoryFilter("(uid={local})(o={domain})", "nodomain"), "(uid=nodomain)(o=)")
	is.Equal(ExpandDirectoryFilter("{", "a@b"), "{")
}
