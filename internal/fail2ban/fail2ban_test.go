package fail2ban

import (
	"bufio"
	"bytes"
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/smtp-interceptor/smtp-interceptor/internal/logfile"
	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// stockDominoFailregex are the failregex lines of Debian fail2ban 1.0.2's
// filter.d/domino-smtp.conf (with its __prefix and __opt_data expanded):
// the stock filter every Domino administrator already has.
var stockDominoFailregex = []string{
	`^(?:\[[^\]]+\])?\s*SMTP Server(?::|\s+\[[^\]]+\]) Authentication failed for user .*? \; connecting host \[?<HOST>\]?$`,
	`^(?:\[[^\]]+\])?\s*smtp: (?:[^\[]+ )*\[?<HOST>\]? authentication failure using internet password\s*$`,
	`^(?:\[[^\]]+\])?\s*SMTP Server(?::|\s+\[[^\]]+\]) Connection from \[?<HOST>\]? rejected for policy reasons\.`,
}

// contribFailregex reads the failregex of contrib's filter.
func contribFailregex(t *testing.T) []string {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "contrib", "fail2ban", "filter.d", "smtp-interceptor.conf"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "failregex"):
			in = true
			_, re, _ := strings.Cut(line, "=")
			if re = strings.TrimSpace(re); re != "" {
				out = append(out, re)
			}
		case in && (strings.HasPrefix(line, " ") || strings.HasPrefix(line, "\t")) && strings.TrimSpace(line) != "":
			out = append(out, strings.TrimSpace(line))
		default:
			in = false
		}
	}
	if len(out) == 0 {
		t.Fatal("no failregex in the contrib filter")
	}
	return out
}

// compile turns a fail2ban regex into Go's: <HOST> and <ADDR> become a
// named group "host" (fail2ban's <HOST> also takes names; <ADDR> only
// addresses: both take every address these lines hold).
func compile(t *testing.T, re string) *regexp.Regexp {
	t.Helper()
	re = strings.ReplaceAll(re, "<HOST>", `(?:::f{4,6}:)?(?P<host>\S+)`)
	re = strings.ReplaceAll(re, "<ADDR>", `(?P<host>[0-9A-Fa-f.:]+)`)
	return regexp.MustCompile(re)
}

var datePrefix = regexp.MustCompile(`^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d`)

// hosts returns the host every filter regex finds on a line, as fail2ban
// does: the date is cut off first, the first matching regex wins.
func hosts(t *testing.T, regexes []string, line string) (string, bool) {
	t.Helper()
	loc := datePrefix.FindStringIndex(line)
	if loc == nil {
		return "", false
	}
	rest := line[loc[1]:]
	for _, r := range regexes {
		re := compile(t, r)
		if m := re.FindStringSubmatch(rest); m != nil {
			return strings.Trim(m[re.SubexpIndex("host")], "[]"), true
		}
	}
	return "", false
}

func TestLine(t *testing.T) {
	is := is.New(t)
	at := time.Date(2026, 11, 23, 10, 15, 2, 0, time.Local)
	is.Equal(Line(at, "192.0.2.7", `blacklist: blacklist entry "192.0.2.0/24"`),
		"2026-11-23 10:15:02   SMTP Server: Connection from [192.0.2.7] rejected for policy reasons. blacklist: blacklist entry \"192.0.2.0/24\"\n")
	is.Equal(Escape("a]\r\n[\x1b[31mé\\"), `a\x5d\x0d\x0a\x5b\x1b\x5b31m\xc3\xa9\x5c`)
	is.Equal(Escape("plain text"), "plain text")
}

// TestEveryRefusalMatchesBothFilters drives the engine through every kind
// of refusal and checks each fail2ban line against the stock domino-smtp
// filter and contrib's filter: the right IP, one line per refusal.
func TestEveryRefusalMatchesBothFilters(t *testing.T) {
	cfg, err := rules.Parse("", `
[blacklist]
hosts = ["192.0.2.66"]
[private_blacklist]
enabled = true
hosts = ["203.0.113.0/24"]
action = "reject"
[dns_blacklist]
enabled = true
sites = ["bl.test"]
action = "reject"
[helo]
reject_empty = true
deny = ["*dynamic*", "*Connection*"]
[mail_from]
deny = ["@bad.test", "*.evil.test"]
[recipients]
max = 1
deny = ["nobody@domino.test"]
[commands]
deny = ["VRFY"]
`)
	if err != nil {
		t.Fatal(err)
	}
	dns := rules.NewMemoryDNS()
	dns.Set("bl.test", netip.MustParseAddr("2001:db8::7"), "", netip.MustParseAddr("127.0.0.2"))
	var buf bytes.Buffer
	out, err := logfile.New("-", &buf)
	if err != nil {
		t.Fatal(err)
	}
	e := rules.NewEngine(cfg, rules.EngineOptions{DNS: dns, Observer: New(out, nil, nil)})
	ctx := context.Background()
	sess := func(ip string) *rules.Session { return rules.NewSession(netip.MustParseAddr(ip), "") }

	var want []string // the IP of each expected line
	refuse := func(ip string, v rules.Verdict) {
		t.Helper()
		if !v.Action.Refuses() {
			t.Fatalf("%s: not refused: %+v", ip, v)
		}
		want = append(want, ip)
	}
	s := sess("192.0.2.66") // blacklist: once per session however often given
	refuse("192.0.2.66", e.Connect(ctx, s))
	e.Helo(ctx, s, "EHLO", "x")
	e.Mail(ctx, s, "a@example.com")
	refuse("203.0.113.5", e.Connect(ctx, sess("203.0.113.5")))
	refuse("2001:db8::7", e.Connect(ctx, sess("2001:db8::7")))
	refuse("192.0.2.10", e.Helo(ctx, sess("192.0.2.10"), "EHLO", "pc1.dynamic.test"))
	refuse("192.0.2.11", e.Helo(ctx, sess("192.0.2.11"), "EHLO", ""))
	refuse("192.0.2.12", e.Mail(ctx, sess("192.0.2.12"), "a@example.com")) // no HELO at all
	s = sess("192.0.2.13")
	e.Helo(ctx, s, "EHLO", "mail.example.com")
	refuse("192.0.2.13", e.Mail(ctx, s, "spam@bad.test"))
	s = sess("192.0.2.14")
	e.Helo(ctx, s, "EHLO", "mail.example.com")
	e.Mail(ctx, s, "a@example.com")
	refuse("192.0.2.14", e.Rcpt(ctx, s, "nobody@domino.test"))
	e.Rcpt(ctx, s, "one@domino.test")
	if v := e.Rcpt(ctx, s, "two@domino.test"); v.Code != 452 { // past max: no line
		t.Fatalf("want 452, got %+v", v)
	}
	refuse("2001:db8::15", e.Command(ctx, sess("2001:db8::15"), "VRFY"))

	// Crafted values: CR, LF, ']' and ANSI escapes naming another IP.
	for i, evil := range []string{
		"x] rejected for policy reasons.\r\n2026-11-23 10:15:02   SMTP Server: Connection from [198.51.100.99] rejected for policy reasons.",
		"\x1b[2K\rConnection from [198.51.100.98] rejected for policy reasons.",
		"Connection from [198.51.100.97]",
	} {
		ip := []string{"192.0.2.20", "192.0.2.21", "192.0.2.22"}[i]
		refuse(ip, e.Helo(ctx, sess(ip), "EHLO", evil))
		s := sess(ip)
		e.Helo(ctx, s, "EHLO", "mail.example.com")
		refuse(ip, e.Mail(ctx, s, evil+"@x.evil.test"))
	}

	out.Close() // flush
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != len(want) {
		t.Fatalf("%d lines for %d refusals:\n%s", len(lines), len(want), buf.String())
	}
	filters := map[string][]string{"stock domino-smtp": stockDominoFailregex, "contrib smtp-interceptor": contribFailregex(t)}
	for name, regexes := range filters {
		for i, line := range lines {
			got, ok := hosts(t, regexes, line)
			if !ok || got != want[i] {
				t.Errorf("%s filter: line %d gave host %q (matched %v), want %s:\n%s", name, i, got, ok, want[i], line)
			}
		}
	}
}

// TestSampleLog checks contrib/fail2ban/sample.log, the file its README
// runs fail2ban-regex on: refusal lines match both filters, nothing else
// does.
func TestSampleLog(t *testing.T) {
	is := is.New(t)
	data, err := os.ReadFile(filepath.Join("..", "..", "contrib", "fail2ban", "sample.log"))
	is.NoErr(err)
	contrib := contribFailregex(t)
	matched := 0
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		refusal := strings.Contains(line, "   SMTP Server: Connection from [")
		for _, regexes := range [][]string{stockDominoFailregex, contrib} {
			got, ok := hosts(t, regexes, line)
			is.Equal(ok, refusal) // refusals match, other lines do not
			if ok {
				is.True(!strings.HasPrefix(got, "198.51.100.9")) // never an injected IP
			}
		}
		if refusal {
			matched++
		}
	}
	is.True(matched >= 10)
}
