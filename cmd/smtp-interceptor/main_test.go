package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/matryer/is"
)

var fullConfig = filepath.Join("..", "..", "testdata", "config", "full.toml")

// noDefaultConfig stands for /etc/smtp-interceptor/config.toml in tests,
// so that a package installed on the machine changes nothing.
const noDefaultConfig = "/nonexistent/smtp-interceptor/config.toml"

// testEnv is the env of an in-process command, without a default
// configuration file.
func testEnv(stdout, stderr io.Writer) env {
	return env{stdout: stdout, stderr: stderr, defaultConfig: noDefaultConfig}
}

// runCmd runs a subcommand in-process.
func runCmd(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run(context.Background(), args, testEnv(&out, &errb))
	return code, out.String(), errb.String()
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		code     int
		stdout   []string
		stderr   []string
		noStdout bool
	}{
		{name: "defaults", args: []string{"check"}, code: 0,
			stdout: []string{"built-in defaults: OK", "127.0.0.1:10060", "private_blacklist  off", "no warnings"}},
		{name: "example", args: []string{"check", "-c", filepath.Join("..", "..", "config.toml.example")}, code: 0,
			stdout: []string{"config.toml.example: OK"}},
		{name: "full", args: []string{"check", "-c", fullConfig}, code: 0,
			stdout: []string{"private_blacklist  on, 3 entries, action reject", "dns_blacklist      on, action reject, sites bl1.test=127.0.0.[2..11], bl2.test",
				"recipients         at most 2, 1 prohibited", "warning: commands.deny: the milter protocol never sees VRFY", "disable_vrfy_command = yes"}},
		{name: "bad config", args: []string{"check", "-c", filepath.Join("..", "..", "testdata", "config", "bad.toml")}, code: 2, noStdout: true,
			stderr: []string{"4 errors", "bad.toml:3: server.idle_timeout", "bad.toml:6: blacklist.hosts", "bad.toml:7: blacklist.message", "bad.toml:10: private_blacklist.action"}},
		{name: "unwritable log", args: []string{"check", "-c", filepath.Join("..", "..", "testdata", "config", "bad-log.toml")}, code: 2, noStdout: true,
			stderr: []string{"log.sessions", "/nonexistent/smtp-interceptor", "does not exist"}},
		{name: "missing file", args: []string{"check", "-c", "/nonexistent.toml"}, code: 2, stderr: []string{"/nonexistent.toml"}},
		{name: "bad flag", args: []string{"check", "--nope"}, code: 2, stderr: []string{"flag provided but not defined"}},
		{name: "no command", args: nil, code: 2, stderr: []string{"usage:"}},
		{name: "unknown command", args: []string{"frobnicate"}, code: 2, stderr: []string{`unknown command "frobnicate"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			code, stdout, stderr := runCmd(tt.args...)
			t.Log(stdout, stderr)
			is.Equal(code, tt.code)
			for _, s := range tt.stdout {
				is.True(strings.Contains(stdout, s)) // stdout has the line
			}
			for _, s := range tt.stderr {
				is.True(strings.Contains(stderr, s)) // stderr names the problem
			}
			if tt.noStdout {
				is.Equal(stdout, "")
			}
		})
	}
}

// explainJSON is the documented shape of explain --json.
type explainJSON struct {
	Action       string              `json:"action"`
	Code         int                 `json:"code"`
	EnhancedCode string              `json:"enhanced_code"`
	Text         string              `json:"text"`
	Stage        string              `json:"stage"`
	Control      string              `json:"control"`
	Headers      []map[string]string `json:"headers"`
	Trace        []map[string]string `json:"trace"`
	Stages       []map[string]any    `json:"stages"`
	Via          string              `json:"via"`
}

func TestExplainJSON(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		action  string
		code    int
		enh     string
		text    string
		stage   string
		control string
		stages  int
		via     string // "" means policy
	}{
		{name: "accepted", args: []string{"--ip", "192.0.2.1", "--helo", "mail.example.com", "--from", "a@example.com", "--rcpt", "b@domino.test"},
			action: "accept", stage: "data", stages: 5},
		{name: "blacklisted", args: []string{"--ip", "192.0.2.66"},
			action: "reject", code: 550, enh: "5.7.1", text: "Connection from 192.0.2.66 denied", stage: "connect", control: "blacklist", stages: 1},
		{name: "private blacklist by file", args: []string{"--ip", "203.0.113.9", "--helo", "x.example.com"},
			action: "reject", code: 550, enh: "5.7.1", text: "Your host 203.0.113.9 was blacklisted.", stage: "connect", control: "private_blacklist", stages: 1},
		{name: "whitelisted by name", args: []string{"--ip", "198.51.100.200", "--name", "relay.trusted.test", "--helo", "localhost", "--from", "spammer@bad.test", "--rcpt", "nobody@domino.test"},
			action: "accept", stage: "data", stages: 5},
		{name: "prohibited helo", args: []string{"--ip", "192.0.2.1", "--helo", "pc1.dynamic.test", "--from", "a@example.com"},
			action: "reject", code: 550, enh: "5.7.1", text: "HELO/EHLO not accepted", stage: "helo", control: "helo", stages: 2},
		{name: "no helo", args: []string{"--ip", "192.0.2.1", "--from", "a@example.com"},
			action: "reject", code: 550, stage: "mail", control: "helo", enh: "5.7.1", text: "HELO/EHLO not accepted", stages: 2},
		{name: "too many recipients", args: []string{"--ip", "192.0.2.1", "--helo", "x.example.com", "--from", "a@example.com", "--rcpt", "1@d.test", "--rcpt", "2@d.test", "--rcpt", "3@d.test"},
			action: "accept", stage: "data", stages: 7}, // two accepted: the message goes on
		{name: "every recipient refused", args: []string{"--ip", "192.0.2.1", "--helo", "x.example.com", "--from", "a@example.com", "--rcpt", "nobody@domino.test"},
			action: "reject", code: 550, enh: "5.7.1", text: "Recipient address rejected", stage: "rcpt", control: "recipients", stages: 4},
		{name: "authenticated", args: []string{"--ip", "192.0.2.1", "--from", "a@example.com", "--auth", "user", "--rcpt", "nobody@domino.test"},
			action: "accept", stage: "data", stages: 4},
		// What the running servers answer an authenticated client on a list
		// (e2e sasl-policy-privbl-auth-delivered, sasl-milter-privbl-auth-delivered).
		{name: "blacklisted, authenticated, policy", args: []string{"--ip", "192.0.2.66", "--helo", "pc1.dynamic.test", "--from", "a@example.com", "--auth", "user", "--rcpt", "b@domino.test"},
			action: "accept", stage: "data", stages: 5},
		{name: "blacklisted, authenticated, milter", args: []string{"--via", "milter", "--ip", "192.0.2.66", "--helo", "pc1.dynamic.test", "--from", "a@example.com", "--auth", "user", "--rcpt", "b@domino.test"},
			via: "milter", action: "accept", stage: "data", stages: 5},
		// Not authenticated, through the milter: held until MAIL FROM
		// (e2e sasl-milter-privbl-noauth-refused).
		{name: "blacklisted, milter", args: []string{"--via", "milter", "--ip", "192.0.2.66", "--helo", "mail.example.com", "--from", "a@example.com"},
			via: "milter", action: "reject", code: 550, enh: "5.7.1", text: "Connection from 192.0.2.66 denied", stage: "connect", control: "blacklist", stages: 3},
		{name: "prohibited helo, milter", args: []string{"--via", "milter", "--ip", "192.0.2.1", "--helo", "pc1.dynamic.test", "--from", "a@example.com"},
			via: "milter", action: "reject", code: 550, enh: "5.7.1", text: "HELO/EHLO not accepted", stage: "helo", control: "helo", stages: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			code, stdout, stderr := runCmd(append([]string{"explain", "-c", fullConfig, "--json"}, tt.args...)...)
			is.Equal(stderr, "")
			is.Equal(code, 0)
			var got explainJSON
			is.NoErr(json.Unmarshal([]byte(stdout), &got))
			t.Log(stdout)
			is.Equal(got.Action, tt.action)
			is.Equal(got.Code, tt.code)
			is.Equal(got.EnhancedCode, tt.enh)
			is.Equal(got.Text, tt.text)
			is.Equal(got.Stage, tt.stage)
			is.Equal(got.Control, tt.control)
			is.Equal(len(got.Stages), tt.stages)
			if tt.via == "" {
				tt.via = "policy"
			}
			is.Equal(got.Via, tt.via)
			is.True(len(got.Trace) > 0) // every decision explained
			is.True(got.Headers != nil) // always an array
		})
	}
}

func TestExplainText(t *testing.T) {
	is := is.New(t)
	code, stdout, _ := runCmd("explain", "-c", fullConfig, "--ip", "192.0.2.1", "--helo", "mail.example.com", "--from", "spammer@bad.test")
	is.Equal(code, 0)
	is.True(strings.Contains(stdout, "client 192.0.2.1"))
	is.True(strings.Contains(stdout, "whitelist: no match"))
	is.True(strings.Contains(stdout, `mail_from: reject (sender "spammer@bad.test" matches prohibited sender "spammer@bad.test")`))
	is.True(strings.Contains(stdout, "result:  reject  550 5.7.1 Sender address rejected [mail_from at mail]"))
}

func TestExplainUsage(t *testing.T) {
	for _, args := range [][]string{
		{"explain"},
		{"explain", "--ip", "not-an-ip"},
		{"explain", "--ip", "192.0.2.1", "--rcpt", "a@b.test"},
		{"explain", "--ip", "192.0.2.1", "extra"},
		{"explain", "--ip", "192.0.2.1", "--via", "smtp"},
		{"explain", "-c", filepath.Join("..", "..", "testdata", "config", "bad.toml"), "--ip", "192.0.2.1"},
	} {
		code, _, stderr := runCmd(args...)
		is.New(t).Equal(code, 2)
		is.New(t).True(stderr != "")
	}
}

// TestBinary runs the built command, as an administrator would.
func TestBinary(t *testing.T) {
	is := is.New(t)
	bin := testBinary(t)

	out, err := exec.Command(bin, "check", "-c", fullConfig).CombinedOutput()
	is.NoErr(err)
	is.True(bytes.Contains(out, []byte(": OK")))

	cmd := exec.Command(bin, "check", "-c", filepath.Join("..", "..", "testdata", "config", "bad.toml"))
	out, err = cmd.CombinedOutput()
	is.True(err != nil)
	is.Equal(cmd.ProcessState.ExitCode(), 2)
	is.True(bytes.Contains(out, []byte("private_blacklist.action")))

	out, err = exec.Command(bin, "explain", "-c", fullConfig, "--json", "--ip", "192.0.2.66").Output()
	is.NoErr(err)
	var got explainJSON
	is.NoErr(json.Unmarshal(out, &got))
	is.Equal(got.Code, 550)
	is.Equal(got.Control, "blacklist")
}

func TestExplainRecipientsPartlyRefused(t *testing.T) {
	is := is.New(t)
	code, stdout, _ := runCmd("explain", "-c", fullConfig, "--json", "--ip", "192.0.2.1", "--helo", "x.example.com", "--from", "a@example.com",
		"--rcpt", "1@d.test", "--rcpt", "2@d.test", "--rcpt", "3@d.test")
	is.Equal(code, 0)
	var got explainJSON
	is.NoErr(json.Unmarshal([]byte(stdout), &got))
	is.Equal(got.Stages[5]["code"], float64(452)) // the third recipient: too many
	is.Equal(got.Stages[5]["enhanced_code"], "4.5.3")
	is.Equal(got.Action, "accept")
}

// TestExplainMilterWithoutDelay: with delay_reject = false the milter
// refuses a listed client at connect, before any AUTH, and explain says so
// (e2e sasl-milter-nodelay-connect-refused); the policy server still
// exempts the login.
func TestExplainMilterWithoutDelay(t *testing.T) {
	is := is.New(t)
	path := filepath.Join(t.TempDir(), "c.toml")
	is.NoErr(os.WriteFile(path, []byte("[server]\ndelay_reject = false\n[blacklist]\nhosts = [\"192.0.2.66\"]\n"), 0o600))
	args := []string{"explain", "-c", path, "--json", "--ip", "192.0.2.66", "--helo", "mail.example.com", "--from", "a@example.com", "--auth", "user"}
	for _, tt := range []struct{ via, action, stage string }{{"milter", "reject", "connect"}, {"policy", "accept", "mail"}} {
		code, stdout, stderr := runCmd(append(args, "--via", tt.via)...)
		is.Equal(code, 0)
		is.Equal(stderr, "")
		var got explainJSON
		is.NoErr(json.Unmarshal([]byte(stdout), &got))
		is.Equal(got.Action, tt.action)
		is.Equal(got.Stage, tt.stage)
	}
	_, text, _ := runCmd("explain", "-c", path, "--via", "milter", "--ip", "192.0.2.66")
	is.True(strings.Contains(text, "as the milter server decides (delay_reject off)"))
}

// TestDominoControlsInCheckAndExplain: the issue 13 controls appear in
// check's summary, and explain takes the MTA's PTR name.
func TestDominoControlsInCheckAndExplain(t *testing.T) {
	is := is.New(t)
	path := filepath.Join(t.TempDir(), "c.toml")
	is.NoErr(os.WriteFile(path, []byte(`[server]
error_limit = 3
[whitelist]
action = "tag"
[blacklist]
hosts = ["dynamic.test"]
[connections]
verify_host_name = true
allow = ["192.0.2.0/24"]
[mail_from]
verify_domain = true
allow = ["@partner.test"]
[recipients]
allow = ["@domino.test"]
[dns]
resolver = "127.0.0.1:1"
`), 0o600))
	code, out, _ := runCmd("check", "-c", path)
	is.Equal(code, 0)
	for _, want := range []string{
		"whitelist          0 entries, scope all, action tag",
		"connections        only from 1 allowed entries, verify_host_name on",
		"verify_domain on", "only senders on the allow list (1 entries)",
		"only recipients on the allow list (1 entries)",
		"error_limit        421 and the session ends after 3 refusals",
	} {
		is.True(strings.Contains(out, want)) // check summary
	}
	code, out, _ = runCmd("explain", "-c", path, "--json", "--ip", "192.0.2.1", "--ptr", "pc1.dynamic.test")
	is.Equal(code, 0)
	var got explainJSON
	is.NoErr(json.Unmarshal([]byte(out), &got))
	is.Equal(got.Control, "blacklist") // the deny list matched the PTR name
}
