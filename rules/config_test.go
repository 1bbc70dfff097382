package rules

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-multierror"
	"github.com/matryer/is"
)

func TestDefaults(t *testing.T) {
	is := is.New(t)
	cfg := Default()
	is.Equal(cfg.Server.Policy, []string{"127.0.0.1:10060"})
	is.Equal(cfg.Server.Milter, []string{"127.0.0.1:10061"})
	is.Equal(cfg.Server.Metrics, "127.0.0.1:10062")
	is.Equal(cfg.Server.IdleTimeout, 330*time.Second)
	is.Equal(cfg.Server.SocketMode, os.FileMode(0o660))
	is.True(cfg.Server.DelayReject)
	is.True(!cfg.Server.CheckAuthenticated)
	is.True(cfg.Server.Hostname != "") // the OS hostname
	is.Equal(cfg.DNS.Timeout, 2*time.Second)
	is.Equal(cfg.DNS.CacheEntries, 100000)
	is.Equal(cfg.DNS.MinTTL, time.Minute)
	is.Equal(cfg.DNS.MaxTTL, time.Hour)
	is.Equal(cfg.DNS.ProbeInterval, 10*time.Minute)
	is.Equal(cfg.Whitelist.Scope, ScopeAll)
	is.Equal(cfg.Blacklist.Message, "Connection denied based on policy reason")
	is.Equal(cfg.PrivateBlacklist.Action, ListLog)
	is.Equal(cfg.DNSWhitelist.Action, ListSkip)
	is.Equal(cfg.DNSBlacklist.Action, ListLog)
	is.Equal(cfg.Tags.DNSBLHeader, "X-DNSBL-Site")
	is.Equal(cfg.Tags.DNSWLHeader, "X-DNSWL-Site")
	is.True(cfg.Tags.AuthenticationResults)
	_, ok := cfg.Server.Allow.Match(mustAddr("127.0.0.5"), "")
	is.True(ok) // loopback may connect
	_, ok = cfg.Server.Allow.Match(mustAddr("192.0.2.1"), "")
	is.True(!ok) // nobody else
	is.Equal(len(cfg.Warnings), 0)
}

// The example file documents every key with its default: loading it must
// give exactly the defaults, and it must name every key of the schema.
func TestExampleConfigIsTheDefaults(t *testing.T) {
	is := is.New(t)
	path := filepath.Join("..", "config.toml.example")
	cfg, err := Load(path)
	is.NoErr(err)
	def := Default()
	cfg.Path, cfg.Files = "", nil
	is.Equal(cfg.Server.Policy, def.Server.Policy)
	is.Equal(cfg.Log, def.Log)
	is.Equal(cfg.DNS, def.DNS)
	is.Equal(cfg.Tags, def.Tags)
	is.Equal(cfg.Blacklist.Message, def.Blacklist.Message)
	is.Equal(cfg.Directory, def.Directory)

	data, err := os.ReadFile(path)
	is.NoErr(err)
	li := newLineIndex(string(data))
	raw := defaults()
	for _, key := range schemaKeys(&raw) {
		if li.key(key) == 0 {
			t.Errorf("config.toml.example does not show key %s", key)
		}
	}
	// Arrays of tables have no default entry: the example shows one,
	// commented out, with every key.
	for name, keys := range tableKeys(&raw) {
		if !strings.Contains(string(data), "# [["+name+"]]\n") {
			t.Errorf("config.toml.example does not show a commented [[%s]]", name)
		}
		for _, k := range keys {
			if !strings.Contains(string(data), "\n# "+k+" = ") {
				t.Errorf("config.toml.example does not show [[%s]] key %s", name, k)
			}
		}
	}
}

func TestLoadFull(t *testing.T) {
	is := is.New(t)
	cfg, err := Load(filepath.Join("..", "testdata", "config", "full.toml"))
	is.NoErr(err)
	is.Equal(cfg.Server.Hostname, "relay.test")
	is.Equal(cfg.PrivateBlacklist.Hosts.Len(), 3) // from the list file
	is.Equal(len(cfg.Files), 2)                   // the config and its list file
	is.True(strings.HasSuffix(cfg.Files[1], "private.hosts"))
	is.Equal(len(cfg.DNSBlacklist.Sites), 2)
	is.Equal(cfg.DNSBlacklist.Sites[0].Zone, "bl1.test")
	is.Equal(cfg.Recipients.Max, 2)
	is.True(cfg.Commands.Deny["VRFY"])
	// VRFY and ETRN cannot be seen by the milter: check says what to set.
	is.True(containsSubstring(cfg.Warnings, "disable_vrfy_command = yes"))
	is.True(containsSubstring(cfg.Warnings, "smtpd_etrn_restrictions = reject"))
}

func TestMilterIdleTimeoutWarning(t *testing.T) {
	is := is.New(t)
	cfg, err := Parse("", "[server]\nmilter_idle_timeout = \"330s\"")
	is.NoErr(err)
	is.True(containsSubstring(cfg.Warnings, "server.milter_idle_timeout 5m30s is shorter than Sendmail's confTO_COMMAND"))
	cfg, err = Parse("", "[server]\nmilter = []\nmilter_idle_timeout = \"330s\"")
	is.NoErr(err)
	is.True(!containsSubstring(cfg.Warnings, "milter_idle_timeout")) // no milter: no warning
	cfg, err = Parse("", "")
	is.NoErr(err)
	is.True(!containsSubstring(cfg.Warnings, "milter_idle_timeout")) // the default is long enough
}

func TestMilterGreetingWarning(t *testing.T) {
	is := is.New(t)
	cfg, err := Parse("", "[commands]\ndeny = [\"EHLO\"]")
	is.NoErr(err)
	is.True(containsSubstring(cfg.Warnings, "does not tell HELO from EHLO"))
	cfg, err = Parse("", "[commands]\ndeny = [\"EHLO\", \"HELO\"]")
	is.NoErr(err)
	is.True(!containsSubstring(cfg.Warnings, "does not tell HELO from EHLO"))
	cfg, err = Parse("", "[server]\nmilter = []\n[commands]\ndeny = [\"EHLO\"]")
	is.NoErr(err)
	is.True(!containsSubstring(cfg.Warnings, "does not tell HELO from EHLO")) // no milter: no warning
}

func containsSubstring(list []string, sub string) bool {
	for _, s := range list {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// configErrors returns the *ConfigError values of a Parse error.
func configErrors(t *testing.T, err error) []*ConfigError {
	t.Helper()
	var merr *multierror.Error
	if !errors.As(err, &merr) {
		t.Fatalf("error %v is not a *multierror.Error", err)
	}
	var out []*ConfigError
	for _, e := range merr.Errors {
		var ce *ConfigError
		if !errors.As(e, &ce) {
			t.Fatalf("error %v is not a *ConfigError", e)
		}
		out = append(out, ce)
	}
	return out
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		toml string
		key  string
		line int
		want string // part of the message
	}{
		{"syntax", "[server\npolicy = 1", "", 2, "expected"},
		{"unknown section", "[nope]\nx = 1", "nope", 1, "unknown section"},
		{"unknown key", "[server]\npolicy = []\nbogus = 1", "server.bogus", 3, "unknown key"},
		{"top-level key", "bogus = 1", "bogus", 1, "unknown key"},
		{"section not a table", "server = 1", "server", 1, "must be a table"},
		{"wrong type string", "[server]\nidle_timeout = 5", "server.idle_timeout", 2, "want a string"},
		{"wrong type list", "[blacklist]\nhosts = \"192.0.2.1\"", "blacklist.hosts", 2, "want an array of strings"},
		{"wrong type bool", "[private_blacklist]\nenabled = \"yes\"", "private_blacklist.enabled", 2, "want true or false"},
		{"wrong type int", "[recipients]\nmax = \"10\"", "recipients.max", 2, "want an integer"},
		{"bad duration", "[dns]\ntimeout = \"2 seconds\"", "dns.timeout", 2, "invalid duration"},
		{"negative max", "[recipients]\nmax = -1", "recipients.max", 2, "0 (no limit) or more"},
		{"bad ip", "[blacklist]\nhosts = [\n  \"192.0.2.1\",\n  \"999.1.1.1\",\n]", "blacklist.hosts", 4, "999.1.1.1"},
		{"bad cidr", "[whitelist]\nhosts = [\"192.0.2.0/33\"]", "whitelist.hosts", 2, "192.0.2.0/33"},
		{"bad wildcard", "[whitelist]\nhosts = [\"192.*.2.1\"]", "whitelist.hosts", 2, "192.*.2.1"},
		{"bad name wildcard", "[whitelist]\nhosts = [\"mail*.example.com\"]", "whitelist.hosts", 2, "mail*.example.com"},
		{"bad scope", "[whitelist]\nscope = \"some\"", "whitelist.scope", 2, "want all or lists"},
		{"bad pbl action", "[private_blacklist]\naction = \"skip\"", "private_blacklist.action", 2, "want one of log, tag, reject"},
		{"bad dnswl action", "[dns_whitelist]\naction = \"reject\"", "dns_whitelist.action", 2, "want one of skip, log, tag"},
		{"bad dnsbl action", "[dns_blacklist]\naction = \"drop\"", "dns_blacklist.action", 2, "\"drop\""},
		{"two %s", "[blacklist]\nmessage = \"%s and %s\"", "blacklist.message", 2, "more than one %s"},
		{"%d", "[dns_blacklist]\nmessage = \"host %d\"", "dns_blacklist.message", 2, "format verb %d"},
		{"lone %", "[helo]\nmessage = \"100%\"", "helo.message", 2, "lone %"},
		{"empty message", "[mail_from]\nmessage = \"\"", "mail_from.message", 2, "empty"},
		{"reply line too long", "[helo]\nmessage = \"" + strings.Repeat("x", 480) + " %s\"", "helo.message", 2, "at most 500"},
		{"bad site", "[dns_blacklist]\nsites = [\"bl.test=127.0.0.[2..\"]", "dns_blacklist.sites", 2, "bl.test"},
		{"duplicate site", "[dns_blacklist]\nsites = [\"bl.test\", \"bl.test\"]", "dns_blacklist.sites", 2, "listed twice"},
		{"bad address", "[mail_from]\ndeny = [\"user@\"]", "mail_from.deny", 2, "user@"},
		{"bad helo pattern", "[helo]\ndeny = [\"\"]", "helo.deny", 2, ""},
		{"bad command", "[commands]\ndeny = [\"VR FY\"]", "commands.deny", 2, "invalid SMTP command"},
		{"bad listener", "[server]\npolicy = [\"localhost\"]", "server.policy", 2, "want host:port or unix:/path"},
		{"relative unix socket", "[server]\nmilter = [\"unix:milter.sock\"]", "server.milter", 2, "unix:/absolute/path"},
		{"bad socket mode", "[server]\nsocket_mode = \"rw\"", "server.socket_mode", 2, "octal"},
		{"bad level", "[log]\nlevel = \"loud\"", "log.level", 2, "unknown level"},
		{"bad format", "[log]\nformat = \"xml\"", "log.format", 2, "text or json"},
		{"bad resolver", "[dns]\nresolver = \"127.0.0.1\"", "dns.resolver", 2, "host:port"},
		{"ttl order", "[dns]\nmin_ttl = \"2h\"", "dns.min_ttl", 2, "above max_ttl"},
		{"bad header", "[tags]\ndnsbl_header = \"X DNSBL\"", "tags.dnsbl_header", 2, "invalid header name"},
		{"missing list file", "[blacklist]\nhosts_file = \"/nonexistent/list\"", "blacklist.hosts_file", 2, "/nonexistent/list"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := oneConfigError(t, tt.toml, tt.key, tt.line, tt.want)
			if tt.key != "" {
				is.New(t).True(strings.Contains(e.Error(), tt.key)) // the message names the key
			}
		})
	}
}

// oneConfigError parses text and checks it fails on key at line (0: any
// line) with a message containing want; any further error must be about
// the same key (a wrong type then also fails the key's own check). It
// returns the first error.
func oneConfigError(t *testing.T, text, key string, line int, want string) *ConfigError {
	t.Helper()
	is := is.New(t)
	_, err := Parse("test.toml", text)
	is.True(err != nil)
	errs := configErrors(t, err)
	e := errs[0]
	is.Equal(e.Key, key)
	if line != 0 {
		is.Equal(e.Line, line)
	}
	is.True(strings.Contains(e.Error(), want)) // names what is wrong
	for _, other := range errs[1:] {
		is.Equal(other.Key, key) // any other error is about the same key
	}
	return e
}

func TestConfigErrorsAllAtOnce(t *testing.T) {
	is := is.New(t)
	text := `[server]
idle_timeout = 5
bogus = true

[blacklist]
hosts = ["192.0.2.1", "192.0.2.300"]
message = "%s %s"

[dns_blacklist]
action = "drop"
`
	_, err := Parse("multi.toml", text)
	is.True(err != nil)
	errs := configErrors(t, err)
	is.Equal(len(errs), 5)
	// Sorted by line, each naming its key.
	wantKeys := []string{"server.idle_timeout", "server.bogus", "blacklist.hosts", "blacklist.message", "dns_blacklist.action"}
	for i, e := range errs {
		is.Equal(e.Key, wantKeys[i])
		is.True(strings.HasPrefix(e.Error(), "multi.toml:")) // file:line first
	}
	is.True(strings.HasPrefix(err.Error(), "5 errors in the configuration:"))
}

func TestListFiles(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	list := "# comment line\n\n192.0.2.1\n  198.51.100.0/24   # trailing comment\nnot an entry\n"
	is.NoErr(os.WriteFile(filepath.Join(dir, "bl.txt"), []byte(list), 0o644))
	cfgText := "[blacklist]\nhosts = [\"203.0.113.9\"]\nhosts_file = \"bl.txt\"\n"
	path := filepath.Join(dir, "c.toml")
	is.NoErr(os.WriteFile(path, []byte(cfgText), 0o644))

	_, err := Load(path)
	is.True(err != nil)
	errs := configErrors(t, err)
	is.Equal(len(errs), 1)
	is.Equal(errs[0].File, filepath.Join(dir, "bl.txt")) // the list file, not the config
	is.Equal(errs[0].Line, 5)
	is.True(strings.Contains(errs[0].Error(), "not an entry"))

	is.NoErr(os.WriteFile(filepath.Join(dir, "bl.txt"), []byte(strings.Replace(list, "not an entry", "", 1)), 0o644))
	cfg, err := Load(path)
	is.NoErr(err)
	is.Equal(cfg.Blacklist.Hosts.Len(), 3) // one inline, two from the file
	_, ok := cfg.Blacklist.Hosts.Match(mustAddr("198.51.100.7"), "")
	is.True(ok)
	is.Equal(cfg.Files, []string{path, filepath.Join(dir, "bl.txt")})
}

func TestEveryListKeyHasAFileSibling(t *testing.T) {
	is := is.New(t)
	raw := defaults()
	keys := map[string]bool{}
	for _, k := range schemaKeys(&raw) {
		keys[k] = true
	}
	for k := range keys {
		section, name, _ := strings.Cut(k, ".")
		if section == "server" && (name == "policy" || name == "milter") {
			continue // listener addresses: a restart setting, not a list
		}
		if section == "directory" && (name == "url" || name == "domains") || section == "state" && name == "addrs" {
			continue // a few servers and domains: settings, not lists
		}
		if rawKind(&raw, section, name) == "slice" {
			is.True(keys[k+"_file"]) // every list key X has X_file
		}
	}
}

func TestFormatMessage(t *testing.T) {
	bl := MessageFields{IP: "192.0.2.1", Site: "zen.spamhaus.org", Reason: "https://check.example/?ip=192.0.2.1"}
	tests := []struct {
		name, msg string
		f         MessageFields
		want      string
	}{
		{"domino %s", "Your host %s was blacklisted.", MessageFields{IP: "192.0.2.1"}, "Your host 192.0.2.1 was blacklisted."},
		{"no verb", "no verb", MessageFields{IP: "192.0.2.1"}, "no verb"},
		{"percent", "100%% sure: %s", MessageFields{IP: "2001:db8::1"}, "100% sure: 2001:db8::1"},
		{"only %s", "%s", MessageFields{IP: "::1"}, "::1"},
		{"domino two %s", "Your IP, %s, was found in the %s block list.", bl, "Your IP, 192.0.2.1, was found in the zen.spamhaus.org block list."},
		{"named", "{ip} is on {site}: {reason}", bl, "192.0.2.1 is on zen.spamhaus.org: https://check.example/?ip=192.0.2.1"},
		{"unknown name kept", "{IP} {x} {ip", bl, "{IP} {x} {ip"},
		{"no reason", "listed{reason}", MessageFields{IP: "192.0.2.1"}, "listed"},
		{"reason cleaned", "see {reason}", MessageFields{Reason: "a\r\n550 5.7.1 injected\x00\tend\xff"}, "see a 550 5.7.1 injected end"},
		{"reason cut", "{reason}", MessageFields{Reason: strings.Repeat("x", 300)}, strings.Repeat("x", 200)},
		{"reply cut", strings.Repeat("y", 400) + "{reason}{reason}", MessageFields{Reason: strings.Repeat("x", 300)}, (strings.Repeat("y", 400) + strings.Repeat("x", 400))[:maxReplyText]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is.New(t).Equal(FormatMessage(tt.msg, tt.f), tt.want)
		})
	}
}

func TestMessageValidation(t *testing.T) {
	tests := []struct {
		name, config, key, err, warn string
	}{
		{name: "two %s in the DNSBL message", config: "[dns_blacklist]\nmessage = \"Your IP, %s, was found in the %s block list.\""},
		{name: "three %s in the DNSBL message", config: "[dns_blacklist]\nmessage = \"%s %s %s\"", key: "dns_blacklist.message", err: "more than 2 %s"},
		{name: "two %s elsewhere", config: "[blacklist]\nmessage = \"%s %s\"", key: "blacklist.message", err: "more than one %s"},
		{name: "named placeholders everywhere", config: "[helo]\nmessage = \"{ip} {site} {reason}\"\n[recipients]\nmessage = \"no, {ip}\""},
		{name: "unknown placeholder warned", config: "[blacklist]\nmessage = \"go away {IP}\"", warn: "blacklist.message: {IP} is not a placeholder"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			cfg, err := Parse("t.toml", tt.config)
			if tt.err != "" {
				is.True(err != nil)
				is.True(strings.Contains(err.Error(), tt.key))
				is.True(strings.Contains(err.Error(), tt.err))
				return
			}
			is.NoErr(err)
			if tt.warn != "" {
				is.True(containsSubstring(cfg.Warnings, tt.warn))
			} else {
				is.Equal(len(cfg.Warnings), 0)
			}
		})
	}
}
