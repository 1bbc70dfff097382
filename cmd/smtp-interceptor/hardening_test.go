package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/matryer/is"
)

// TestSIGPIPE runs the binary with its standard error on a pipe whose
// reader has gone away (issue 11, finding 9): it keeps serving, and a
// refusal (which logs) still gets its answer.
func TestSIGPIPE(t *testing.T) {
	is := is.New(t)
	bin := testBinary(t)
	cfg, sock := writeConfig(t, "[blacklist]\nhosts = [\"192.0.2.0/24\"]\n[log]\nlevel = \"debug\"")
	r, w, err := os.Pipe()
	is.NoErr(err)
	cmd := exec.Command(bin, "serve", "-c", cfg)
	cmd.Stderr = w
	is.NoErr(cmd.Start())
	w.Close()
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitSocket(t, sock)
	r.Close() // the log reader goes away
	for range 20 {
		is.True(strings.HasPrefix(policyAsk(t, "unix", sock, "192.0.2.7"), "action=550 5.7.1"))
	}
	is.Equal(policyAsk(t, "unix", sock, "198.51.100.1"), "action=DUNNO")
	is.NoErr(cmd.Process.Signal(syscall.SIGTERM))
	err = cmd.Wait()
	is.NoErr(err) // exit 0, not killed by SIGPIPE
}

// TestMetricsServerTimeouts: the metrics listener closes idle and slow
// connections (issue 11, finding 10).
func TestMetricsServerTimeouts(t *testing.T) {
	is := is.New(t)
	s := metricsServer(http.NotFoundHandler())
	is.True(s.ReadHeaderTimeout > 0)
	is.True(s.ReadTimeout > 0)
	is.True(s.IdleTimeout > 0)
	is.True(s.WriteTimeout > 90*time.Second) // room for a CPU profile
}

// TestMalformedMilterPacketsOnTheBinary sends, as a hostile local client,
// the packets that used to kill the process (issue 11, finding 1) to the
// milter of the running binary: each ends only its own connection, is
// counted, and the policy server and the milter go on serving.
func TestMalformedMilterPacketsOnTheBinary(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	msock := filepath.Join(dir, "milter.sock")
	psock := filepath.Join(dir, "policy.sock")
	cfg := filepath.Join(dir, "c.toml")
	writeFile(t, cfg, fmt.Sprintf("[server]\npolicy = [\"unix:%s\"]\nmilter = [\"unix:%s\"]\nmetrics = \"127.0.0.1:0\"\n[dns]\nresolver = \"127.0.0.1:1\"\n", psock, msock))
	cmd, stderr := startServeBinary(t, cfg)
	ls := &liveServer{stderr: stderr}
	maddr := ls.metricsAddr(t)

	// SMFIC_OPTNEG: version 6, every action, every protocol step.
	optneg := []byte{0, 0, 0, 13, 'O', 0, 0, 0, 6, 0, 0, 1, 0xff, 0, 0x1f, 0xff, 0xff}
	packet := func(code byte, data string) []byte {
		n := len(data) + 1
		return append([]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n), code}, data...)
	}
	cases := map[string][]byte{
		"zero-length first packet":    {0, 0, 0, 0},
		"zero-length after optneg":    append(append([]byte{}, optneg...), 0, 0, 0, 0),
		"connect without NUL":         append(append([]byte{}, optneg...), packet('C', "host")...),
		"connect with host only":      append(append([]byte{}, optneg...), packet('C', "host\x00")...),
		"mail without NUL":            append(append([]byte{}, optneg...), packet('M', "<a@example.com>")...),
		"rcpt without NUL":            append(append([]byte{}, optneg...), packet('R', "<b@example.com>")...),
		"length 0x1FFFFFFF":           {0x1f, 0xff, 0xff, 0xff, 'O'},
		"length 0x1FFFFFFF, optneg'd": append(append([]byte{}, optneg...), 0x1f, 0xff, 0xff, 0xff, 'C'),
	}
	for name, payload := range cases {
		c, err := net.DialTimeout("unix", msock, 5*time.Second)
		is.NoErr(err)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		_, err = c.Write(payload)
		is.NoErr(err)
		io.Copy(io.Discard, c) // the server closes the connection
		c.Close()
		is.NoErr(cmd.Process.Signal(syscall.Signal(0))) // still running
		code, stdout, _ := runCmd("bench", "milter", "--addr", "unix:"+msock, "--conns", "1", "-n", "2")
		is.Equal(code, 0) // a good session still works
		is.True(strings.Contains(stdout, "2 transactions in"))
		t.Logf("%s: survived", name)
	}
	is.Equal(policyAsk(t, "unix", psock, "192.0.2.1"), "action=DUNNO")
	// A client address that does not parse: answered, warned, counted.
	is.Equal(policyAsk(t, "unix", psock, "IPv6:bogus"), "action=DUNNO")
	metrics := httpGet(t, "http://"+maddr+"/metrics")
	is.True(strings.Contains(metrics, `smtp_interceptor_bad_client_addresses_total{protocol="policy"} 1`+"\n"))
	is.True(strings.Contains(metrics, `smtp_interceptor_bad_client_addresses_total{protocol="milter"} 0`+"\n"))
	var total float64
	for _, line := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(line, `smtp_interceptor_malformed_requests_total{protocol="milter"`) {
			var v float64
			fmt.Sscanf(line[strings.LastIndexByte(line, ' ')+1:], "%g", &v)
			total += v
		}
	}
	is.Equal(total, float64(len(cases)))
	is.NoErr(cmd.Process.Signal(syscall.SIGTERM))
	is.NoErr(cmd.Wait())
}

// TestUnwritableSessionLogDoesNotStopServe: a [log] sessions path that
// cannot be opened at start (issue 11, finding 10) leaves the server
// serving; the records are kept and written once the path can be opened
// (here at SIGUSR1, after the directory appeared).
func TestUnwritableSessionLogDoesNotStopServe(t *testing.T) {
	is := is.New(t)
	logDir := filepath.Join(t.TempDir(), "not-yet")
	cfg, sock := writeConfig(t, fmt.Sprintf("[log]\nsessions = %q\n[blacklist]\nhosts = [\"192.0.2.0/24\"]", filepath.Join(logDir, "sessions.log")))
	cmd, stderr := startServeBinary(t, cfg)
	waitSocket(t, sock)
	is.True(strings.HasPrefix(policyAsk(t, "unix", sock, "192.0.2.9"), "action=550 5.7.1"))
	waitFor(t, "the open failure logged", func() bool { return strings.Contains(stderr.String(), "not-yet") })
	is.NoErr(os.Mkdir(logDir, 0o755))
	is.NoErr(cmd.Process.Signal(syscall.SIGUSR1))
	waitFor(t, "the log opened", func() bool { _, err := os.Stat(filepath.Join(logDir, "sessions.log")); return err == nil })
	// The policy protocol has no "session over": the message's record is
	// written when the server drains at SIGTERM.
	is.NoErr(cmd.Process.Signal(syscall.SIGTERM))
	is.NoErr(cmd.Wait())
	b, err := os.ReadFile(filepath.Join(logDir, "sessions.log"))
	is.NoErr(err)
	is.True(strings.Contains(string(b), `"client_ip":"192.0.2.9"`)) // the record survived
}

// TestMetricsAllow: [server] metrics_allow lets a scraper reach the
// metrics listener without being allowed to speak policy or milter; and
// /debug/pprof answers only with [server] pprof = true.
func TestMetricsAllow(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "c.toml")
	writeFile(t, cfg, "[server]\npolicy = [\"127.0.0.1:0\"]\nmilter = []\nmetrics = \"127.0.0.1:0\"\nallow = [\"127.0.0.2\"]\nmetrics_allow = [\"127.0.0.1\"]\n[dns]\nresolver = \"127.0.0.1:1\"\n")
	_, stderr := startServeBinary(t, cfg)
	ls := &liveServer{stderr: stderr}
	maddr := ls.metricsAddr(t)
	is.True(strings.Contains(httpGet(t, "http://"+maddr+"/metrics"), "smtp_interceptor_build_info{"))
	resp, err := http.Get("http://" + maddr + "/debug/pprof/cmdline")
	is.NoErr(err)
	resp.Body.Close()
	is.Equal(resp.StatusCode, http.StatusNotFound) // pprof is off by default

	var paddr string
	re := regexp.MustCompile(`policy server listening" addr=(\S+)`)
	waitFor(t, "the policy listener", func() bool {
		m := re.FindStringSubmatch(stderr.String())
		if m != nil {
			paddr = m[1]
		}
		return m != nil
	})
	c, err := net.DialTimeout("tcp", paddr, 5*time.Second)
	is.NoErr(err)
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.1\n\n")
	n, _ := c.Read(make([]byte, 64))
	is.Equal(n, 0) // 127.0.0.1 may scrape but not ask the policy server
}
