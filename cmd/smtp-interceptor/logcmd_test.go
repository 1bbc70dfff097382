package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/smtp-interceptor/smtp-interceptor/internal/sessionstore"
	"github.com/smtp-interceptor/smtp-interceptor/internal/testutil"
	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// runLogCmd runs the log command in-process.
func runLogCmd(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = runLog(context.Background(), args, testEnv(&out, &errb))
	return code, out.String(), errb.String()
}

// logStore writes sessions to a store, which stays open as a running
// server's would, and returns a configuration naming it.
func logStore(t *testing.T) (cfg string) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "sessions.db")
	s, err := sessionstore.Open(sessionstore.Options{Path: path, Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	now := time.Now()
	from := func(s string) *string { return &s }
	records := []rules.MessageRecord{
		{Time: now.Add(-50 * time.Hour), Session: "old", ClientIP: "192.0.2.9", MailFrom: from("old@example.com"),
			Recipients: []string{"bob@domino.test"}, Stage: rules.StageData, Action: rules.ActionAccept},
		{Time: now.Add(-3 * time.Hour), Session: "bl", ClientIP: "192.0.2.7",
			Stage: rules.StageConnect, Action: rules.ActionReject, Control: rules.ControlBlacklist, Code: 554, EnhancedCode: "5.7.1", Text: "Access denied"},
		{Time: now.Add(-2 * time.Hour), Session: "grey", ClientIP: "2001:db8::5", MailFrom: from(""),
			Refused: []string{"Alice@Domino.test"}, Stage: rules.StageRcpt, Action: rules.ActionTempfail, Control: rules.ControlGreylist, Code: 450, EnhancedCode: "4.7.1", Text: "Greylisted, try again later"},
		{Time: now.Add(-time.Hour), Session: "ok", ClientIP: "198.51.100.4", MailFrom: from("Carol@Example.com"),
			Recipients: []string{"bob@domino.test"}, Refused: []string{"nobody@domino.test"}, Stage: rules.StageData, Action: rules.ActionAccept},
		{Time: now.Add(-time.Minute), Session: "evil", ClientIP: "192.0.2.66", MailFrom: from("x\x1b[2Jy@example.net"),
			Recipients: []string{"bob@domino.test"}, Stage: rules.StageData, Action: rules.ActionTag, Control: rules.ControlDNSBlacklist},
	}
	for i := range records {
		s.Message(&records[i])
	}
	testutil.WaitFor(t, "the sessions written", func() bool { return s.Stats().Written == uint64(len(records)) })
	cfg, _ = writeConfig(t, fmt.Sprintf("[log]\nstore = %q\n", path))
	return cfg
}

// sessionsOf returns the record ids (Session) in log's text output, in
// order: the third field is the client, so the line is found by id.
func sessionsOf(t *testing.T, out string, byIP map[string]string) []string {
	t.Helper()
	var ids []string
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		ids = append(ids, byIP[f[2]])
	}
	return ids
}

func TestLogFilters(t *testing.T) {
	cfg := logStore(t)
	byIP := map[string]string{"192.0.2.9": "old", "192.0.2.7": "bl", "2001:db8::5": "grey", "198.51.100.4": "ok", "192.0.2.66": "evil"}
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{name: "the last day", want: []string{"evil", "ok", "grey", "bl"}},
		{name: "since 3d", args: []string{"--since", "3d"}, want: []string{"evil", "ok", "grey", "bl", "old"}},
		{name: "no lower bound", args: []string{"--since", ""}, want: []string{"evil", "ok", "grey", "bl", "old"}},
		{name: "since an RFC 3339 time", args: []string{"--since", time.Now().Add(-150 * time.Minute).Format(time.RFC3339)}, want: []string{"evil", "ok", "grey"}},
		{name: "until", args: []string{"--until", "90m"}, want: []string{"grey", "bl"}},
		{name: "ip", args: []string{"--ip", "192.0.2.7"}, want: []string{"bl"}},
		{name: "cidr", args: []string{"--ip", "192.0.2.0/24", "--since", "7d"}, want: []string{"evil", "bl", "old"}},
		{name: "cidr v6", args: []string{"--ip", "2001:db8::/32"}, want: []string{"grey"}},
		{name: "from", args: []string{"--from", "carol@example.COM"}, want: []string{"ok"}},
		{name: "from pattern", args: []string{"--from", "*@example.com", "--since", "7d"}, want: []string{"ok", "old"}},
		{name: "null sender", args: []string{"--from", "<>"}, want: []string{"grey"}},
		{name: "rcpt", args: []string{"--rcpt", "bob@domino.test"}, want: []string{"evil", "ok"}},
		{name: "refused rcpt", args: []string{"--rcpt", "alice@domino.test"}, want: []string{"grey"}},
		{name: "control", args: []string{"--control", "blacklist"}, want: []string{"bl"}},
		{name: "verdict refused", args: []string{"--verdict", "refused"}, want: []string{"grey", "bl"}},
		{name: "verdict accept", args: []string{"--verdict", "accept", "--since", "7d"}, want: []string{"ok", "old"}},
		{name: "limit", args: []string{"--limit", "2"}, want: []string{"evil", "ok"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			code, out, errs := runLogCmd(append([]string{"-c", cfg}, tc.args...)...)
			is.Equal(code, exitOK)
			is.Equal(sessionsOf(t, out, byIP), tc.want)
			if tc.name == "limit" {
				is.True(strings.Contains(errs, "the newest 2 sessions shown; more match")) // errs
			} else {
				is.Equal(errs, "")
			}
		})
	}
}

// TestLogText: what a line shows, and that what a client sent cannot
// drive the terminal.
func TestLogText(t *testing.T) {
	is := is.New(t)
	cfg := logStore(t)
	code, out, _ := runLogCmd("-c", cfg)
	is.Equal(code, exitOK)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	is.Equal(len(lines), 4)
	line := func(ip string) string {
		for _, l := range lines {
			if strings.Contains(l, " "+ip+" ") {
				return l
			}
		}
		t.Fatalf("no line for %s in:\n%s", ip, out)
		return ""
	}
	grey := line("2001:db8::5")
	for _, want := range []string{" <> ", "Alice@Domino.test (refused)", "tempfail greylist", "450 4.7.1 Greylisted, try again later"} {
		is.True(strings.Contains(grey, want)) // the greylisted session
	}
	when, err := time.Parse(time.RFC3339, strings.Fields(grey)[0])
	is.NoErr(err)
	is.True(time.Since(when) > 119*time.Minute && time.Since(when) < 121*time.Minute)
	bl := line("192.0.2.7")
	for _, want := range []string{" - ", "reject blacklist", "554 5.7.1 Access denied"} {
		is.True(strings.Contains(bl, want)) // refused at connect: no sender, no recipients
	}
	is.True(strings.Contains(line("198.51.100.4"), "bob@domino.test, nobody@domino.test (refused)"))
	evil := line("192.0.2.66")
	is.True(!strings.Contains(evil, "\x1b"))
	is.True(strings.Contains(evil, `x\x1b[2Jy@example.net`))

	code, out, _ = runLogCmd("-c", cfg, "--ip", "10.0.0.0/8")
	is.Equal(code, exitOK)
	is.Equal(out, "no sessions match\n")
}

func TestLogJSON(t *testing.T) {
	is := is.New(t)
	cfg := logStore(t)
	code, out, errs := runLogCmd("-c", cfg, "--json", "--since", "7d")
	is.Equal(code, exitOK)
	is.Equal(errs, "")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	is.Equal(len(lines), 5)
	var last int64 = 1 << 62
	var sessions []string
	for _, l := range lines {
		var x struct {
			ID int64 `json:"id"`
			rules.MessageRecord
		}
		is.NoErr(json.Unmarshal([]byte(l), &x))
		is.True(x.ID > 0 && x.ID < last) // newest first
		last = x.ID
		sessions = append(sessions, x.Session)
		if x.Session == "grey" {
			is.Equal(*x.MailFrom, "")
			is.Equal(x.Refused, []string{"Alice@Domino.test"}) // as recorded
			is.Equal(x.Control, rules.ControlGreylist)
			is.Equal(x.Action, rules.ActionTempfail)
		}
	}
	is.Equal(sessions, []string{"evil", "ok", "grey", "bl", "old"})
	is.True(strings.HasPrefix(lines[0], `{"id":5,"time":"`))

	code, out, _ = runLogCmd("-c", cfg, "--json", "--ip", "10.0.0.0/8")
	is.Equal(code, exitOK)
	is.Equal(out, "")
}

// TestLogErrors: no store configured, a store that is not there, and
// bad flag values, each with a message that says which.
func TestLogErrors(t *testing.T) {
	cfg := logStore(t)
	noStore, _ := writeConfig(t, "")
	missing, _ := writeConfig(t, fmt.Sprintf("[log]\nstore = %q\n", filepath.Join(t.TempDir(), "none.db")))
	tests := []struct {
		name string
		args []string
		code int
		want []string
	}{
		{name: "no store", args: []string{"-c", noStore}, code: exitUsage, want: []string{noStore, "log.store"}},
		{name: "defaults", args: []string{"-c", ""}, code: exitUsage, want: []string{"built-in", "log.store"}},
		{name: "store missing", args: []string{"-c", missing}, code: exitFail, want: []string{"none.db", "does not exist", missing}},
		{name: "bad ip", args: []string{"-c", cfg, "--ip", "192.0.2.300"}, code: exitUsage, want: []string{"--ip", "192.0.2.300"}},
		{name: "bad verdict", args: []string{"-c", cfg, "--verdict", "bounce"}, code: exitUsage, want: []string{"--verdict", "bounce", "refused"}},
		{name: "bad since", args: []string{"-c", cfg, "--since", "yesterday"}, code: exitUsage, want: []string{"--since", "yesterday", "RFC 3339"}},
		{name: "negative since", args: []string{"-c", cfg, "--since", "-1h"}, code: exitUsage, want: []string{"--since", "negative"}},
		{name: "bad until", args: []string{"-c", cfg, "--until", "2026-13-01"}, code: exitUsage, want: []string{"--until"}},
		{name: "bad limit", args: []string{"-c", cfg, "--limit", "0"}, code: exitUsage, want: []string{"--limit 0"}},
		{name: "limit not a number", args: []string{"-c", cfg, "--limit", "many"}, code: exitUsage, want: []string{"invalid value", "usage: smtp-interceptor log"}},
		{name: "unknown flag", args: []string{"-c", cfg, "--body"}, code: exitUsage, want: []string{"-body", "usage: smtp-interceptor log"}},
		{name: "argument", args: []string{"-c", cfg, "192.0.2.7"}, code: exitUsage, want: []string{`unexpected argument "192.0.2.7"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			code, out, errs := runLogCmd(tc.args...)
			is.Equal(code, tc.code)
			is.Equal(out, "")
			for _, w := range tc.want {
				is.True(strings.Contains(errs, w)) // errs
			}
		})
	}
}

// TestLogHelp: -h prints the synopsis and the flags on stdout.
func TestLogHelp(t *testing.T) {
	is := is.New(t)
	code, out, errs := runLogCmd("-h")
	is.Equal(code, exitOK)
	is.Equal(errs, "")
	is.True(strings.HasPrefix(out, "usage: "+logSynopsis+"\n"))
	for _, f := range []string{"-ip", "-from", "-rcpt", "-control", "-verdict", "-since", "-until", "-limit", "-json"} {
		is.True(strings.Contains(out, "\n  "+f+" ") || strings.Contains(out, "\n  "+f+"\n")) // every flag
	}
}
