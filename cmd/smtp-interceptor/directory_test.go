package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/matryer/is"

	"github.com/smtp-interceptor/smtp-interceptor/internal/testutil/slapd"
)

// directoryConfig is [recipients] verify against a slapd of the Domino
// Directory fixture (testdata/ldap/domino.ldif), bound as its relay user.
func directoryConfig(t *testing.T, url string) string {
	t.Helper()
	pw := filepath.Join(t.TempDir(), "ldap-password")
	writeFile(t, pw, slapd.BindPassword+"\n")
	return fmt.Sprintf(`[recipients]
verify = true
reject_ambiguous = true
deny_groups = true
[directory]
url = [%q]
bind_dn = %q
bind_password_file = %q
base_dn = "o=acme"
domains = ["acme.example"]
timeout = "1s"
`, url, slapd.BindDN, pw)
}

// TestDirectoryOnTheServer: the running server refuses an unknown
// recipient and accepts a known one, tempfails while slapd is down and
// recovers when it is back, without a restart; metrics and stats count
// the lookups. The policy replies are those Postfix turns into what the
// client sees in e2e "directory-unknown-refused-known-delivered" and
// "directory-down-tempfail" (Postfix puts "<addr>: Recipient address
// rejected: " in front).
func TestDirectoryOnTheServer(t *testing.T) {
	is := is.New(t)
	ldap := slapd.Start(t, slapd.Options{})
	ls := startLive(t, directoryConfig(t, ldap.URL()))
	p := ls.dial(t)
	is.Equal(p.rcpt("192.0.2.1", "mx.example.com", "m.1", "alice@acme.example"), "DUNNO")
	is.Equal(p.rcpt("192.0.2.1", "mx.example.com", "m.1", "nobody@acme.example"), "550 5.1.1 User unknown")
	is.Equal(p.rcpt("192.0.2.1", "mx.example.com", "m.1", "dup@acme.example"), "550 5.1.4 Ambiguous name in the Domino Directory")
	is.Equal(p.rcpt("192.0.2.1", "mx.example.com", "m.1", "sales@acme.example"), "550 5.7.1 Mail to groups is not accepted")
	is.Equal(p.rcpt("192.0.2.1", "mx.example.com", "m.1", "someone@elsewhere.example"), "DUNNO") // not a [directory] domain

	ldap.Stop()
	is.Equal(p.rcpt("192.0.2.1", "mx.example.com", "m.2", "bob@acme.example"), "451 4.4.3 Directory unavailable, try again later")
	is.Equal(p.rcpt("192.0.2.1", "mx.example.com", "m.2", "alice@acme.example"), "DUNNO") // from the cache
	ldap.Restart()
	waitFor(t, "bob@ accepted after slapd's restart", func() bool {
		return p.rcpt("192.0.2.1", "mx.example.com", "m.3", "bob@acme.example") == "DUNNO"
	})
	waitFor(t, "the recovery logged", func() bool { return strings.Contains(ls.stderr.String(), `msg="directory reachable again"`) })
	log := ls.stderr.String()
	is.Equal(strings.Count(log, `msg="directory unreachable"`), 1)     // one warning when it went
	is.Equal(strings.Count(log, `msg="directory reachable again"`), 1) // one when it came back

	m := httpGet(t, "http://"+ls.metricsAddr(t)+"/metrics")
	for _, want := range []string{
		`smtp_interceptor_directory_lookups_total{result="unknown"} 1`,
		`smtp_interceptor_directory_lookups_total{result="ambiguous"} 1`,
		`smtp_interceptor_directory_lookups_total{result="group"} 1`,
		`smtp_interceptor_directory_lookups_total{result="cached"} 1`,
		"smtp_interceptor_directory_up 1",
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	code, out, _ := runCmd("stats", "--addr", ls.metricsAddr(t))
	is.Equal(code, 0)
	is.True(strings.Contains(out, "SMTPInterceptor.Directory.Lookups.unknown = 1\n"))
	is.True(strings.Contains(out, "SMTPInterceptor.Directory.Up = 1\n"))
}

// TestDirectoryReload: a reload that changes [directory] builds a new
// client (here: one whose server is gone), and one that removes it stops
// verification, without a restart.
func TestDirectoryReload(t *testing.T) {
	is := is.New(t)
	ldap := slapd.Start(t, slapd.Options{})
	ls := startLive(t, directoryConfig(t, ldap.URL()))
	p := ls.dial(t)
	is.Equal(p.rcpt("192.0.2.1", "mx.example.com", "m.1", "nobody@acme.example"), "550 5.1.1 User unknown")

	writeFile(t, ls.cfgPath, configText(ls.dir, directoryConfig(t, slapd.DeadURL(t))))
	ls.hup <- struct{}{}
	is.NoErr(<-ls.reloaded)
	is.Equal(p.rcpt("192.0.2.1", "mx.example.com", "m.2", "nobody@acme.example"), "451 4.4.3 Directory unavailable, try again later") // a new client: no cache, no server
	waitFor(t, "the new client logged", func() bool { return strings.Contains(ls.stderr.String(), "directory client restarted") })

	writeFile(t, ls.cfgPath, configText(ls.dir, ""))
	ls.hup <- struct{}{}
	is.NoErr(<-ls.reloaded)
	is.Equal(p.rcpt("192.0.2.1", "mx.example.com", "m.3", "nobody@acme.example"), "DUNNO")
	m := httpGet(t, "http://"+ls.metricsAddr(t)+"/metrics")
	is.True(!strings.Contains(m, "smtp_interceptor_directory_up")) // no directory, no gauge
}

// TestCheckProbeDirectory: check --probe binds and searches once.
func TestCheckProbeDirectory(t *testing.T) {
	is := is.New(t)
	ldap := slapd.Start(t, slapd.Options{})
	cfg, _ := writeConfig(t, directoryConfig(t, ldap.URL()))

	code, out, errOut := runCmd("check", "--probe", "--probe-rcpt", "A.Anders@acme.example", "-c", cfg)
	t.Log(out, errOut)
	is.Equal(code, 0)
	is.True(strings.Contains(out, "probe: directory ldap://127.0.0.1:"))
	is.True(strings.Contains(out, "A.Anders@acme.example: found"))
	is.True(strings.Contains(out, "entry cn=Alice Anders,ou=Sales,o=acme"))
	is.True(strings.Contains(out, "directory          ldap://")) // the summary
	is.True(!strings.Contains(out, slapd.BindPassword))

	code, out, _ = runCmd("check", "--probe", "-c", cfg)
	is.Equal(code, 0) // postmaster@acme.example is not there: an answer, not a failure
	is.True(strings.Contains(out, "postmaster@acme.example: unknown"))

	bad := filepath.Join(t.TempDir(), "pw")
	writeFile(t, bad, "wrong\n")
	text, err := os.ReadFile(cfg)
	is.NoErr(err)
	writeFile(t, cfg, strings.Replace(string(text), "bind_password_file = ", "bind_password_file = \""+bad+"\"\n#", 1))
	code, out, _ = runCmd("check", "--probe", "-c", cfg)
	t.Log(out)
	is.Equal(code, 1) // the bind fails
	is.True(strings.Contains(out, "error after"))

	code, _, errOut = runCmd("check", "--probe-rcpt", "x@acme.example", "-c", cfg)
	is.Equal(code, 2)
	is.True(strings.Contains(errOut, "--probe-rcpt needs --probe"))
}

// TestExplainDirectory: explain shows the LDAP filter, the entries and
// the cache, and the verdict.
func TestExplainDirectory(t *testing.T) {
	is := is.New(t)
	ldap := slapd.Start(t, slapd.Options{})
	cfg, _ := writeConfig(t, directoryConfig(t, ldap.URL()))
	code, out, _ := runCmd("explain", "-c", cfg, "--ip", "192.0.2.1", "--helo", "mx.example.com", "--from", "a@example.com",
		"--rcpt", "a.anders@acme.example", "--rcpt", "nobody@acme.example")
	t.Log(out)
	is.Equal(code, 0)
	is.True(strings.Contains(out, "LDAP filter (|(mail=a.anders@acme.example)(cn=a.anders@acme.example)): 1 entry (cn=Alice Anders,ou=Sales,o=acme); from the directory"))
	is.True(strings.Contains(out, "LDAP filter (|(mail=nobody@acme.example)(cn=nobody@acme.example)): no entry; from the directory"))
	is.True(strings.Contains(out, "550 5.1.1 <nobody@acme.example>: Recipient address rejected: User unknown"))
}
