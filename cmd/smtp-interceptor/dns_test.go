package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/matryer/is"
	"github.com/miekg/dns"
)

// startDNS serves DNS lists on 127.0.0.1 (UDP) from a map of query name to
// A record; everything else is NXDOMAIN. It stops with the test.
func startDNS(t *testing.T, records map[string]string) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		a, ok := records[strings.ToLower(q.Name)]
		switch {
		case ok && q.Qtype == dns.TypeA:
			rr, _ := dns.NewRR(fmt.Sprintf("%s 300 IN A %s", q.Name, a))
			m.Answer = append(m.Answer, rr)
		case ok && q.Qtype == dns.TypeTXT:
			rr, _ := dns.NewRR(fmt.Sprintf("%s 300 IN TXT \"listed for testing\"", q.Name))
			m.Answer = append(m.Answer, rr)
		case !ok:
			m.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(m)
	})
	srv := &dns.Server{PacketConn: pc, Handler: mux}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

func dnsConfig(t *testing.T, resolver string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "dns.toml")
	text := fmt.Sprintf(`[dns]
resolver = %q
timeout = "2s"
[dns_whitelist]
enabled = true
sites = ["wl.test"]
action = "tag"
[dns_blacklist]
enabled = true
sites = ["bl.test=127.0.0.[2..11]", "world.test"]
action = "reject"
`, resolver)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestExplainLiveDNS(t *testing.T) {
	addr := startDNS(t, map[string]string{
		"7.2.0.192.bl.test.": "127.0.0.2",
		"8.2.0.192.wl.test.": "127.0.0.2",
		"8.2.0.192.bl.test.": "127.0.0.2",
	})
	cfg := dnsConfig(t, addr)
	tests := []struct {
		ip, action, control, header string
		code                        int
	}{
		{"192.0.2.7", "reject", "dns_blacklist", "", 550},
		{"192.0.2.8", "tag", "dns_whitelist", "X-DNSWL-Site", 0},
		{"192.0.2.9", "accept", "", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.ip, func(t *testing.T) {
			is := is.New(t)
			code, stdout, stderr := runCmd("explain", "-c", cfg, "--json", "--ip", tt.ip)
			is.Equal(stderr, "")
			is.Equal(code, 0)
			var got explainJSON
			is.NoErr(json.Unmarshal([]byte(stdout), &got))
			is.Equal(got.Action, tt.action)
			is.Equal(got.Control, tt.control)
			is.Equal(got.Code, tt.code)
			if tt.header != "" {
				is.Equal(len(got.Headers), 1)
				is.Equal(got.Headers[0]["name"], tt.header)
				is.Equal(got.Headers[0]["value"], "wl.test")
			}
		})
	}
}

func TestCheckProbe(t *testing.T) {
	is := is.New(t)
	addr := startDNS(t, map[string]string{
		"2.0.0.127.bl.test.":    "127.0.0.2",
		"2.0.0.127.wl.test.":    "127.0.0.2",
		"2.0.0.127.world.test.": "127.0.0.2",
		"1.0.0.127.world.test.": "127.0.0.2", // lists everyone
	})
	code, stdout, _ := runCmd("check", "--probe", "-c", dnsConfig(t, addr))
	t.Log(stdout)
	is.Equal(code, 1) // a list would be suspended
	is.True(strings.Contains(stdout, "probe: wl.test: ok"))
	is.True(strings.Contains(stdout, "probe: bl.test: ok"))
	is.True(strings.Contains(stdout, "probe: world.test: SUSPENDED"))

	healthy := startDNS(t, map[string]string{"2.0.0.127.bl.test.": "127.0.0.2", "2.0.0.127.wl.test.": "127.0.0.2", "2.0.0.127.world.test.": "127.0.0.2"})
	code, stdout, _ = runCmd("check", "--probe", "-c", dnsConfig(t, healthy))
	is.Equal(code, 0)
	is.Equal(strings.Count(stdout, ": ok"), 3)

	code, stdout, _ = runCmd("check", "--probe")
	is.Equal(code, 0)
	is.True(strings.Contains(stdout, "no DNS list is enabled"))
}
