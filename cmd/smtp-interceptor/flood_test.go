package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	gomilter "github.com/d--j/go-milter"
	"github.com/matryer/is"
)

// floodListenRE finds the address of a listener in the process log.
var floodListenRE = regexp.MustCompile(`msg="(policy server|milter|metrics) listening" addr=(\S+)`)

// TestConnectionFloodOnTheBinary floods the policy and milter listeners
// of the running binary (issue 11, finding 3) with a small
// max_connections: every connection over the limit is closed at once and
// counted, the process lives on, and once the flood is over a good policy
// request and a good milter session are served.
func TestConnectionFloodOnTheBinary(t *testing.T) {
	is := is.New(t)
	const (
		limit = 20   // max_connections
		flood = 3000 // connections over the limit, both listeners
		burst = 32   // of them open at once, at most
	)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "c.toml")
	writeFile(t, cfg, fmt.Sprintf(`[server]
policy = ["127.0.0.1:0"]
milter = ["127.0.0.1:0"]
metrics = "127.0.0.1:0"
max_connections = %d
[dns]
resolver = "127.0.0.1:1"
[blacklist]
hosts = ["192.0.2.66"]
`, limit))
	cmd := exec.Command(testBinary(t), "serve", "-c", cfg)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	is.NoErr(cmd.Start())
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("server log:\n%s", stderr.String())
		}
	})
	addrs := map[string]string{}
	waitFor(t, "the three listeners", func() bool {
		for _, m := range floodListenRE.FindAllStringSubmatch(stderr.String(), -1) {
			addrs[m[1]] = m[2]
		}
		return len(addrs) == 3
	})
	policyAddr, milterAddr, metricsAddr := addrs["policy server"], addrs["milter"], addrs["metrics"]

	// Take every slot with connections that were served once and idle.
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for i := range limit {
		c, err := net.DialTimeout("tcp", policyAddr, 5*time.Second)
		is.NoErr(err)
		held = append(held, c)
		pc := &client{t: t, c: c, r: bufio.NewReader(c)}
		is.Equal(pc.ask(floodRequest("192.0.2.1", i)), "DUNNO")
	}

	// The flood: each connection is refused before anything is read from
	// it, so the client sees the end of the stream without sending a byte.
	for _, addr := range []string{policyAddr, milterAddr} {
		if err := floodRefused(addr); err != nil {
			t.Fatalf("a connection over the limit: %v", err) // no flood if the limit does not hold
		}
	}
	var refused, other atomic.Int64
	var firstOther atomic.Value
	var wg sync.WaitGroup
	next := make(chan string)
	for range burst {
		wg.Go(func() {
			for addr := range next {
				if err := floodRefused(addr); err != nil {
					other.Add(1)
					firstOther.CompareAndSwap(nil, err.Error())
					continue
				}
				refused.Add(1)
			}
		})
	}
	for i := range flood - 2 {
		if other.Load() > 0 {
			break
		}
		next <- []string{policyAddr, milterAddr}[i%2]
	}
	close(next)
	wg.Wait()
	if other.Load() > 0 {
		t.Fatalf("%d connections over the limit not closed by the server; first: %v", other.Load(), firstOther.Load())
	}
	is.Equal(refused.Load(), int64(flood-2))
	is.NoErr(cmd.Process.Signal(syscall.Signal(0))) // still running

	// The refusals are logged (rate-limited) and counted.
	for _, protocol := range []string{"policy", "milter"} {
		waitFor(t, "the "+protocol+" refusal line", func() bool {
			return strings.Contains(stderr.String(), `level=WARN msg="connection refused: too many connections" protocol=`+protocol)
		})
	}
	is.True(strings.Contains(stderr.String(), "reason=max_connections limit="+strconv.Itoa(limit)))
	is.True(strings.Count(stderr.String(), "connection refused: too many connections") < flood/10) // not one line each
	metrics := floodGet(t, "http://"+metricsAddr+"/metrics")
	for _, protocol := range []string{"policy", "milter"} {
		is.Equal(floodMetric(metrics, `smtp_interceptor_connections_refused_total{protocol="`+protocol+`",reason="max_connections"}`), float64(flood/2))
	}

	// Freed slots serve again: a good policy request, a blacklisted one
	// and a good milter session.
	for _, c := range held {
		c.Close()
	}
	var got string
	waitFor(t, "a free slot", func() bool {
		var err error
		got, err = floodPolicyAsk(policyAddr, "192.0.2.1")
		return err == nil
	})
	is.Equal(got, "DUNNO")
	got, err := floodPolicyAsk(policyAddr, "192.0.2.66")
	is.NoErr(err)
	is.Equal(got, "550 5.7.1 Connection denied based on policy reason")
	is.NoErr(floodMilterSession(milterAddr, "192.0.2.1"))

	is.NoErr(cmd.Process.Signal(syscall.SIGTERM))
	is.NoErr(cmd.Wait()) // exit 0
}

// floodRefused dials addr and returns nil if the server closes the
// connection without a byte, unasked.
func floodRefused(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(make([]byte, 1))
	if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
		return nil
	}
	return fmt.Errorf("%s: not closed at once: read %d bytes, %v", addr, n, err)
}

// floodRequest is a RCPT request from ip about message i.
func floodRequest(ip string, i int) string {
	return fmt.Sprintf("request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\nclient_address=%s\n"+
		"client_name=unknown\nhelo_name=mail.example.com\nsender=a@example.com\nrecipient=b@domino.test\ninstance=flood.%d\n\n", ip, i)
}

// floodPolicyAsk sends one request on a new connection and returns the
// reply's action; a connection closed without a reply is an error.
func floodPolicyAsk(addr, ip string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, floodRequest(ip, int(instanceSeq.Add(1)))); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", err
	}
	return strings.TrimPrefix(strings.TrimSpace(line), "action="), nil
}

// floodMilterSession runs a whole good SMTP transaction through the
// milter and checks that every step lets it through.
func floodMilterSession(addr, ip string) error {
	client := gomilter.NewClient("tcp", addr, gomilter.WithActions(gomilter.AllClientSupportedActionMasks),
		gomilter.WithDialer(&net.Dialer{Timeout: 5 * time.Second}),
		gomilter.WithReadTimeout(10*time.Second), gomilter.WithWriteTimeout(10*time.Second))
	macros := gomilter.NewMacroBag()
	macros.Set("{client_addr}", ip)
	macros.Set("{client_name}", "unknown")
	macros.Set("i", "FLOOD1")
	s, err := client.Session(macros)
	if err != nil {
		return fmt.Errorf("session: %w", err)
	}
	defer s.Close()
	steps := []struct {
		name string
		do   func() (*gomilter.Action, error)
	}{
		{"connect", func() (*gomilter.Action, error) { return s.Conn("unknown", gomilter.FamilyInet, 25, ip) }},
		{"helo", func() (*gomilter.Action, error) { return s.Helo("mail.example.com") }},
		{"mail", func() (*gomilter.Action, error) { return s.Mail("<a@example.com>", "") }},
		{"rcpt", func() (*gomilter.Action, error) { return s.Rcpt("<b@domino.test>", "") }},
		{"data", func() (*gomilter.Action, error) { return s.DataStart() }},
		{"header", func() (*gomilter.Action, error) { return s.HeaderField("Subject", "flood", nil) }},
		{"end of headers", func() (*gomilter.Action, error) { return s.HeaderEnd() }},
		{"end of message", func() (*gomilter.Action, error) {
			_, act, err := s.BodyReadFrom(strings.NewReader(""))
			return act, err
		}},
	}
	for _, st := range steps {
		act, err := st.do()
		if err != nil {
			return fmt.Errorf("%s: %w", st.name, err)
		}
		if act.Type != gomilter.ActionContinue && act.Type != gomilter.ActionAccept {
			return fmt.Errorf("%s: %v", st.name, act)
		}
	}
	return nil
}

// floodGet fetches url, with a timeout.
func floodGet(t *testing.T, url string) string {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v", url, resp.Status, err)
	}
	return string(b)
}

// floodMetric returns the value of the series named exactly series in a
// Prometheus text exposition, or -1 when it is absent.
func floodMetric(body, series string) float64 {
	for line := range strings.SplitSeq(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}
