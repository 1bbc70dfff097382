package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/matryer/is"

	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// liveServer is serve running in-process on a configuration in a
// temporary directory, with the reload and reopen triggers in hand.
type liveServer struct {
	dir, cfgPath, sock string
	stderr             *syncBuffer
	hup, usr1          chan struct{}
	reloaded           chan error
	stop               func() int
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// configText is the test configuration; extra is appended.
func configText(dir, extra string) string {
	return fmt.Sprintf(`[server]
policy = ["unix:%s/policy.sock"]
milter = []
metrics = "127.0.0.1:0"
[log]
sessions = "%s/sessions.log"
fail2ban = "%s/fail2ban.log"
[dns]
resolver = "127.0.0.1:1"
[blacklist]
hosts_file = "bl.txt"
%s`, dir, dir, dir, extra)
}

func startLive(t *testing.T, extra string) *liveServer {
	t.Helper()
	dir := t.TempDir()
	ls := &liveServer{dir: dir, cfgPath: filepath.Join(dir, "config.toml"), sock: filepath.Join(dir, "policy.sock"),
		stderr: &syncBuffer{}, hup: make(chan struct{}, 1), usr1: make(chan struct{}, 1), reloaded: make(chan error, 16)}
	writeFile(t, filepath.Join(dir, "bl.txt"), "192.0.2.66\n")
	writeFile(t, ls.cfgPath, configText(dir, extra))
	cfg, err := rules.Load(ls.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- serveWith(ctx, serveOptions{path: ls.cfgPath, cfg: cfg, stdout: io.Discard, stderr: ls.stderr,
			hup: ls.hup, usr1: ls.usr1, reloaded: ls.reloaded})
	}()
	var once sync.Once
	code := 0
	ls.stop = func() int {
		once.Do(func() { cancel(); code = <-done })
		return code
	}
	t.Cleanup(func() {
		ls.stop()
		if t.Failed() {
			t.Log("server log:\n" + ls.stderr.String())
		}
	})
	waitFor(t, "the policy socket", func() bool { _, err := os.Stat(ls.sock); return err == nil })
	return ls
}

func (ls *liveServer) ask(t *testing.T, ip string) string {
	return policyAsk(t, "unix", ls.sock, ip)
}

var metricsAddrRE = regexp.MustCompile(`msg="metrics listening" addr=(\S+)`)

func (ls *liveServer) metricsAddr(t *testing.T) string {
	t.Helper()
	var addr string
	waitFor(t, "the metrics listener", func() bool {
		m := metricsAddrRE.FindStringSubmatch(ls.stderr.String())
		if m != nil {
			addr = m[1]
		}
		return m != nil
	})
	return addr
}

func TestReload(t *testing.T) {
	is := is.New(t)
	ls := startLive(t, "message = \"Blocked %s\"\n")
	is.Equal(ls.ask(t, "192.0.2.66"), "action=550 5.7.1 Blocked 192.0.2.66")
	is.Equal(ls.ask(t, "192.0.2.77"), "action=DUNNO")

	// A list file edited in place is seen, with no restart.
	writeFile(t, filepath.Join(ls.dir, "bl.txt"), "192.0.2.66\n192.0.2.77\n")
	waitFor(t, "the list edit to apply", func() bool { return ls.ask(t, "192.0.2.77") == "action=550 5.7.1 Blocked 192.0.2.77" })

	// An editor that writes a new file and renames it over the old one.
	tmp := filepath.Join(ls.dir, ".config.toml.swp")
	writeFile(t, tmp, configText(ls.dir, "message = \"Renamed %s\"\n"))
	is.NoErr(os.Rename(tmp, ls.cfgPath))
	waitFor(t, "the renamed file to apply", func() bool { return ls.ask(t, "192.0.2.66") == "action=550 5.7.1 Renamed 192.0.2.66" })

	// A broken file leaves the old verdicts in place, and is counted.
	for len(ls.reloaded) > 0 {
		<-ls.reloaded
	}
	writeFile(t, ls.cfgPath, configText(ls.dir, "message = \"%d broken\"\nbogus = 1\n"))
	var err error
	waitFor(t, "the broken reload", func() bool {
		select {
		case err = <-ls.reloaded:
			return err != nil
		default:
			return false
		}
	})
	is.True(strings.Contains(err.Error(), "blacklist.message")) // the error names the key
	is.Equal(ls.ask(t, "192.0.2.66"), "action=550 5.7.1 Renamed 192.0.2.66")
	waitFor(t, "each error logged with its key", func() bool {
		return strings.Contains(ls.stderr.String(), "blacklist.bogus") && strings.Contains(ls.stderr.String(), "the running configuration stays")
	})

	// SIGHUP reloads (the file is fixed, quietly, without a watch event in
	// between being needed).
	writeFile(t, ls.cfgPath, configText(ls.dir, "message = \"Hup %s\"\n"))
	ls.hup <- struct{}{}
	waitFor(t, "the SIGHUP reload", func() bool { return ls.ask(t, "192.0.2.66") == "action=550 5.7.1 Hup 192.0.2.66" })

	// Metrics count the reloads.
	body := httpGet(t, "http://"+ls.metricsAddr(t)+"/metrics")
	is.True(regexp.MustCompile(`smtp_interceptor_config_reloads_total\{result="error"\} [1-9]`).MatchString(body))
	is.True(regexp.MustCompile(`smtp_interceptor_config_reloads_total\{result="ok"\} [1-9]`).MatchString(body))
	is.Equal(ls.stop(), 0)
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s %v", url, resp.Status, err)
	}
	return string(b)
}

func TestLogsMetricsAndStats(t *testing.T) {
	is := is.New(t)
	ls := startLive(t, `[private_blacklist]
enabled = true
hosts = ["203.0.113.0/24"]
action = "tag"
[helo]
deny = ["*dynamic*"]
`)
	// Known traffic: three blacklisted requests (one session), one tagged
	// message, one refused HELO carrying an injection attempt.
	c := ls.dial(t)
	for i := range 3 {
		is.Equal(c.rcpt("192.0.2.66", "x.example", "s1", fmt.Sprintf("%d@domino.test", i)), "550 5.7.1 Connection denied based on policy reason")
	}
	is.Equal(c.rcpt("203.0.113.9", "x.example", "s2", "a@domino.test"), "PREPEND X-DNSBL-Site: PrivateBlacklist")
	is.Equal(c.rcpt("203.0.113.9", "x.example", "s2", "b@domino.test"), "DUNNO")
	evil := "pc.dynamic.test] rejected for policy reasons.\x1b[31m Connection from [198.51.100.99"
	is.Equal(c.rcpt("192.0.2.5", evil, "s3", "a@domino.test"), "550 5.7.1 HELO/EHLO not accepted")
	is.Equal(c.rcpt("192.0.2.6", "x.example", "s4", "a@domino.test"), "DUNNO") // ends s3

	// fail2ban: one line per refusal, the connect-time one once per session.
	var lines []string
	waitFor(t, "the fail2ban lines", func() bool {
		f2b, _ := os.ReadFile(filepath.Join(ls.dir, "fail2ban.log"))
		lines = strings.Split(strings.TrimSpace(string(f2b)), "\n")
		return len(lines) >= 2
	})
	is.Equal(len(lines), 2)
	line := regexp.MustCompile(`^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d   SMTP Server: Connection from \[([0-9a-f.:]+)\] rejected for policy reasons\. `)
	is.Equal(line.FindStringSubmatch(lines[0])[1], "192.0.2.66")
	is.Equal(line.FindStringSubmatch(lines[1])[1], "192.0.2.5")
	is.Equal(strings.Count(lines[1], "["), 1)    // the HELO's brackets are escaped
	is.True(!strings.Contains(lines[1], "\x1b")) // and its escape sequence

	// Session log: one document per message or refused session.
	waitFor(t, "three session records", func() bool {
		b, _ := os.ReadFile(filepath.Join(ls.dir, "sessions.log"))
		return strings.Count(string(b), "\n") >= 3
	})
	b, _ := os.ReadFile(filepath.Join(ls.dir, "sessions.log"))
	var recs []rules.MessageRecord
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var r rules.MessageRecord
		is.NoErr(json.Unmarshal([]byte(l), &r))
		recs = append(recs, r)
	}
	is.Equal(recs[0].ClientIP, "192.0.2.66")
	is.Equal(recs[0].Action, rules.ActionReject)
	is.Equal(recs[0].Control, rules.ControlBlacklist)
	is.Equal(recs[0].Refused, []string{"0@domino.test", "1@domino.test", "2@domino.test"})
	is.Equal(recs[1].ClientIP, "203.0.113.9")
	is.Equal(recs[1].Action, rules.ActionTag)
	is.Equal(recs[1].Recipients, []string{"a@domino.test", "b@domino.test"})
	is.Equal(recs[1].Tags, []rules.Header{{Name: "X-DNSBL-Site", Value: "PrivateBlacklist"}})
	is.Equal(*recs[1].MailFrom, "a@example.com")
	is.Equal(recs[2].Helo, evil) // kept whole; JSON escapes it
	is.True(strings.Contains(string(b), `\u001b`))

	// Metrics after the known traffic.
	addr := ls.metricsAddr(t)
	m := httpGet(t, "http://"+addr+"/metrics")
	for _, want := range []string{
		"smtp_interceptor_blacklist_hits_total 1",
		"smtp_interceptor_privatebl_hits_total 1",
		`smtp_interceptor_verdicts_total{action="reject",control="blacklist",mode="enforce",stage="connect"} 1`,
		`smtp_interceptor_verdicts_total{action="reject",control="helo",mode="enforce",stage="helo"} 1`,
		`smtp_interceptor_request_duration_seconds_count{protocol="policy"} `,
		`smtp_interceptor_request_duration_seconds_count{protocol="milter"} 0`,
		"smtp_interceptor_dns_cache_hits_total ",
		"smtp_interceptor_dns_cache_misses_total ",
		"SMTP.PrivateBL.TotalHits", // help texts name the Domino statistic
		"go_goroutines",
		"process_resident_memory_bytes",
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q", want)
		}

	}

	// stats, as an administrator runs it.
	code, out, errOut := runCmd("stats", "--addr", addr)
	is.Equal(errOut, "")
	is.Equal(code, 0)
	is.True(strings.Contains(out, "SMTP.PrivateBL.TotalHits = 1\n"))
	is.True(strings.Contains(out, "SMTP.PrivateWL.TotalHits = 0\n"))
	is.True(strings.Contains(out, "SMTP.DNSBL.TotalHits = 0\n"))
	is.True(strings.Contains(out, "SMTPInterceptor.Blacklist.TotalHits = 1\n"))
	is.Equal(ls.stop(), 0)
}

// policyClient is a persistent policy connection for the live tests.
type policyClient struct{ c *client }

func (ls *liveServer) dial(t *testing.T) *policyClient {
	return &policyClient{c: dialPolicy(t, "unix", ls.sock)}
}

func (p *policyClient) rcpt(ip, helo, instance, rcpt string) string {
	return p.c.ask(fmt.Sprintf("request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=%s\nclient_name=unknown\nhelo_name=%s\nsender=a@example.com\nrecipient=%s\ninstance=%s\n\n", ip, helo, rcpt, instance))
}

// TestSignalsOnTheBinary sends the real SIGHUP and SIGUSR1 to the built
// binary.
func TestSignalsOnTheBinary(t *testing.T) {
	is := is.New(t)
	bin := testBinary(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "bl.txt"), "192.0.2.66\n")
	cfgPath := filepath.Join(dir, "config.toml")
	writeFile(t, cfgPath, configText(dir, "message = \"One %s\"\n"))
	cmd := exec.Command(bin, "serve", "-c", cfgPath)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	is.NoErr(cmd.Start())
	defer cmd.Process.Kill()
	sock := filepath.Join(dir, "policy.sock")
	waitSocket(t, sock)
	is.Equal(policyAsk(t, "unix", sock, "192.0.2.66"), "action=550 5.7.1 One 192.0.2.66")

	// logrotate: move the log away, SIGUSR1, new lines in a new file.
	f2b := filepath.Join(dir, "fail2ban.log")
	waitFor(t, "the fail2ban line", func() bool { b, _ := os.ReadFile(f2b); return len(b) > 0 })
	is.NoErr(os.Rename(f2b, f2b+".1"))
	is.NoErr(cmd.Process.Signal(syscall.SIGUSR1))
	waitFor(t, "the reopen", func() bool { return strings.Contains(stderr.String(), "log files reopened") })
	policyAsk(t, "unix", sock, "192.0.2.66")
	waitFor(t, "a line in the new file", func() bool { b, _ := os.ReadFile(f2b); return len(b) > 0 })

	// SIGHUP reloads, even when the watcher would not see the change.
	writeFile(t, cfgPath, configText(dir, "message = \"Two %s\"\n"))
	is.NoErr(cmd.Process.Signal(syscall.SIGHUP))
	waitFor(t, "the reload", func() bool { return policyAsk(t, "unix", sock, "192.0.2.66") == "action=550 5.7.1 Two 192.0.2.66" })

	is.NoErr(cmd.Process.Signal(syscall.SIGTERM))
	is.NoErr(cmd.Wait())
}

// A reload that changes [dns] brings a new DNS list client: a resolver
// fixed in the file is used without a restart.
func TestReloadDNSSettings(t *testing.T) {
	is := is.New(t)
	dnsAddr := startDNS(t, map[string]string{"9.2.0.192.bl.test.": "127.0.0.2", "2.0.0.127.bl.test.": "127.0.0.2"})
	lists := "[dns_blacklist]\nenabled = true\nsites = [\"bl.test\"]\naction = \"reject\"\n"
	ls := startLive(t, lists)                        // resolver 127.0.0.1:1: nothing answers
	is.Equal(ls.ask(t, "192.0.2.9"), "action=DUNNO") // a DNS failure never refuses

	text := strings.Replace(configText(ls.dir, lists), `resolver = "127.0.0.1:1"`, fmt.Sprintf("resolver = %q", dnsAddr), 1)
	writeFile(t, ls.cfgPath, text)
	ls.hup <- struct{}{}
	waitFor(t, "the new resolver", func() bool {
		return ls.ask(t, "192.0.2.9") == "action=550 5.7.1 Your host 192.0.2.9 was found in a DNS blacklist."
	})
	waitFor(t, "the log line", func() bool { return strings.Contains(ls.stderr.String(), "DNS list client restarted") })
	is.Equal(ls.stop(), 0)
}
