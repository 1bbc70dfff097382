package metrics

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// traffic runs known sessions through an engine: a private blacklist hit,
// a DNSBL hit (twice from one IP), a DNSWL hit, a DNS error.
func traffic(t *testing.T) *rules.Counters {
	t.Helper()
	cfg, err := rules.Parse("", `
[private_blacklist]
enabled = true
hosts = ["203.0.113.0/24"]
[dns_whitelist]
enabled = true
sites = ["wl.test"]
[dns_blacklist]
enabled = true
sites = ["bl.test"]
action = "reject"
`)
	if err != nil {
		t.Fatal(err)
	}
	dns := rules.NewMemoryDNS()
	a := netip.MustParseAddr
	dns.Set("bl.test", a("192.0.2.7"), "", a("127.0.0.2"))
	dns.Set("wl.test", a("192.0.2.8"), "", a("127.0.0.2"))
	dns.Set("bl.test", a("192.0.2.9"), "", a("127.255.255.254"))
	counters := new(rules.Counters)
	counters.ObserveDNSQuery("bl.test", 3*time.Millisecond, nil)
	counters.ConfigReload(false)
	e := rules.NewEngine(cfg, rules.EngineOptions{DNS: dns, Counters: counters})
	for _, ip := range []string{"203.0.113.5", "192.0.2.7", "192.0.2.7", "192.0.2.8", "192.0.2.9"} {
		e.Connect(context.Background(), rules.NewSession(a(ip), ""))
	}
	return counters
}

func TestMetrics(t *testing.T) {
	is := is.New(t)
	counters := traffic(t)
	srv := httptest.NewServer(Handler(NewRegistry(counters, "test"), counters, HandlerOptions{}))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/metrics")
	is.NoErr(err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := string(body)
	for _, want := range []string{
		"smtp_interceptor_privatebl_hits_total 1",
		"smtp_interceptor_privatewl_hits_total 0",
		`smtp_interceptor_dnsbl_hits_total{site="bl.test"} 2`,
		`smtp_interceptor_dnswl_hits_total{site="wl.test"} 1`,
		`smtp_interceptor_dns_errors_total{site="bl.test"} 1`,
		`smtp_interceptor_verdicts_total{action="reject",control="dns_blacklist",mode="enforce",stage="connect"} 2`,
		`smtp_interceptor_config_reloads_total{result="error"} 1`,
		`smtp_interceptor_control_matches_total{control="private_blacklist"} 1`,
		`smtp_interceptor_control_matches_total{control="dns_blacklist"} 2`,
		`smtp_interceptor_dns_query_duration_seconds_bucket{le="0.005"} 1`,
		"Domino: SMTP.DNSBL.TotalHits and SMTP.DNSBL.<site>.TotalHits",
		"Domino: SMTP.PrivateBL.TotalHits",
		`smtp_interceptor_build_info{goversion="go`,
		"smtp_interceptor_config_last_reload_success 0", // traffic() ends with a refused reload
		"smtp_interceptor_config_last_reload_success_timestamp_seconds ",
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	is.True(!strings.Contains(m, "192.0.2.7")) // never a per-IP label

	resp, err = srv.Client().Get(srv.URL + "/stats")
	is.NoErr(err)
	var st Stats
	is.NoErr(json.NewDecoder(resp.Body).Decode(&st))
	resp.Body.Close()
	is.Equal(st.PrivateBlacklistHits, uint64(1))
	is.Equal(st.Expanded[0], rules.ExpandedHit{Kind: rules.DNSBL, Site: "bl.test", IP: "192.0.2.7", Hits: 2}) // per IP, busiest first
}

// TestPprofOnlyWhenOn: the profiler answers only while [server] pprof is
// on, read at each request.
func TestPprofOnlyWhenOn(t *testing.T) {
	is := is.New(t)
	var on atomic.Bool
	counters := new(rules.Counters)
	srv := httptest.NewServer(Handler(NewRegistry(counters, "test"), counters, HandlerOptions{Pprof: on.Load}))
	defer srv.Close()
	get := func() int {
		resp, err := srv.Client().Get(srv.URL + "/debug/pprof/cmdline")
		is.NoErr(err)
		resp.Body.Close()
		return resp.StatusCode
	}
	is.Equal(get(), http.StatusNotFound)
	on.Store(true)
	is.Equal(get(), http.StatusOK)
}

// TestDirectoryMetrics: the directory series appear once a directory is
// configured, with its lookups by result and its reachability, and
// disappear when it is removed.
func TestDirectoryMetrics(t *testing.T) {
	is := is.New(t)
	counters := new(rules.Counters)
	srv := httptest.NewServer(Handler(NewRegistry(counters, "test"), counters, HandlerOptions{}))
	defer srv.Close()
	scrape := func() string {
		resp, err := srv.Client().Get(srv.URL + "/metrics")
		is.NoErr(err)
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body)
	}
	is.True(!strings.Contains(scrape(), "smtp_interceptor_directory_up")) // no [directory]

	counters.SetDirectoryUp(true)
	counters.ObserveDirectoryLookup(rules.DirectoryFound, 2*time.Millisecond)
	counters.ObserveDirectoryLookup(rules.DirectoryUnknown, 2*time.Millisecond)
	counters.ObserveDirectoryLookup(rules.DirectoryCached, time.Microsecond)
	counters.ObserveDirectoryLookup(rules.DirectoryCached, time.Microsecond)
	m := scrape()
	for _, want := range []string{
		"smtp_interceptor_directory_up 1",
		`smtp_interceptor_directory_lookups_total{result="found"} 1`,
		`smtp_interceptor_directory_lookups_total{result="unknown"} 1`,
		`smtp_interceptor_directory_lookups_total{result="cached"} 2`,
		`smtp_interceptor_directory_lookups_total{result="error"} 0`,
		`smtp_interceptor_directory_lookup_duration_seconds_bucket{le="0.001"} 2`,
		"smtp_interceptor_directory_lookup_duration_seconds_count 4",
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	counters.SetDirectoryUp(false)
	is.True(strings.Contains(scrape(), "smtp_interceptor_directory_up 0"))
	counters.NoDirectory()
	is.True(!strings.Contains(scrape(), "smtp_interceptor_directory_"))
}

// TestStateMetrics: rate-limit refusals by rule, limiter errors and
// automatic bans are exported.
func TestStateMetrics(t *testing.T) {
	is := is.New(t)
	cfg, err := rules.Parse("", "[[ratelimit]]\nname = \"per-client\"\nkey = \"client\"\ncount = \"messages\"\nlimit = 1\nper = \"1h\"\n")
	is.NoErr(err)
	counters := new(rules.Counters)
	e := rules.NewEngine(cfg, rules.EngineOptions{Counters: counters, Limiter: noneAllowed{}})
	for range 3 {
		s := rules.NewSession(netip.MustParseAddr("192.0.2.1"), "")
		e.Mail(context.Background(), s, "a@example.com")
	}
	counters.Autobanned()
	srv := httptest.NewServer(Handler(NewRegistry(counters, "test"), counters, HandlerOptions{}))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/metrics")
	is.NoErr(err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`smtp_interceptor_ratelimit_refusals_total{rule="per-client"} 3`,
		"smtp_interceptor_ratelimit_errors_total 0",
		"smtp_interceptor_autobans_total 1",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// noneAllowed is a limiter that allows nothing.
type noneAllowed struct{}

func (noneAllowed) Allow(context.Context, string, int, time.Duration, int) (rules.RateDecision, error) {
	return rules.RateDecision{RetryAfter: time.Second}, nil
}
