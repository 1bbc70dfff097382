package dnsclient_test

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matryer/is"
	"github.com/miekg/dns"

	"github.com/smtp-interceptor/smtp-interceptor/rules"
	"github.com/smtp-interceptor/smtp-interceptor/rules/dnsclient"
)

// The engine over the real client, against an in-process DNS server.

const engineConfig = `
[dns_whitelist]
enabled = true
sites = ["wl1.test", "wl2.test=127.0.[0..255].[1..3]"]
action = "tag"
[dns_blacklist]
enabled = true
sites = ["bl1.test=127.0.0.[2..11]", "bl2.test", "bl3.test"]
action = "reject"
`

func newEngine(t testing.TB, config string, c *dnsclient.Client) *rules.Engine {
	t.Helper()
	cfg, err := rules.Parse("test.toml", config)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return rules.NewEngine(cfg, rules.EngineOptions{DNS: c, Logger: dnsclient.NewTestLogger(t)})
}

func newClient(t testing.TB, addr string, timeout time.Duration) *dnsclient.Client {
	t.Helper()
	c, err := dnsclient.New(dnsclient.Options{
		Server: addr, Timeout: timeout, CacheEntries: 100, MinTTL: time.Minute, MaxTTL: time.Hour,
		Logger: dnsclient.NewTestLogger(t),
	})
	if err != nil {
		t.Fatalf("dnsclient.New: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// sites returns the site counters by zone.
func sites(e *rules.Engine) map[string]rules.SiteSnapshot {
	out := map[string]rules.SiteSnapshot{}
	for _, s := range e.Counters().Snapshot().Sites {
		out[s.Site] = s
	}
	return out
}

// engineCase is one connect stage against the DNS lists of engineConfig.
type engineCase struct {
	name    string
	set     func(f *dnsclient.Fake)
	timeout time.Duration
	probe   string // zone to probe before connecting
	want    rules.Action
	wantWL  string // zone of the whitelist that counted
	wantBL  string // zone of the blacklist that counted
	// wantErrors are the sites whose answer counts as an error.
	wantErrors []string
	// wantUncounted are the sites not counted: after the deciding list
	// (the first listing whitelist, or the first listing blacklist).
	wantUncounted []string
	// wantNotAsked are zones the server must not be asked about the
	// client.
	wantNotAsked []string
}

func TestEngineDNSLists(t *testing.T) {
	const client = "192.0.2.10"
	allZones := []string{"wl1.test", "wl2.test", "bl1.test", "bl2.test", "bl3.test"}
	tests := []engineCase{
		{
			name: "not listed anywhere",
			want: rules.ActionAccept,
		},
		{
			name: "the first whitelist in order wins, blacklists are not counted",
			set: func(f *dnsclient.Fake) {
				f.List("wl1.test", client, "", "127.0.0.2")
				f.List("wl2.test", client, "", "127.0.2.1")
				f.List("bl1.test", client, "", "127.0.0.2")
			},
			want: rules.ActionTag, wantWL: "wl1.test",
			wantUncounted: []string{"wl2.test", "bl1.test", "bl2.test", "bl3.test"},
		},
		{
			name: "the second whitelist when the first does not list",
			set: func(f *dnsclient.Fake) {
				f.List("wl2.test", client, "", "127.0.2.1")
				f.List("bl2.test", client, "", "127.0.0.2")
			},
			want: rules.ActionTag, wantWL: "wl2.test",
			wantUncounted: []string{"bl1.test", "bl2.test", "bl3.test"},
		},
		{
			name: "a whitelist answer outside the filter is not a listing",
			set: func(f *dnsclient.Fake) {
				f.List("wl2.test", client, "", "127.0.2.4")
				f.List("bl3.test", client, "", "127.0.0.2")
			},
			want: rules.ActionReject, wantBL: "bl3.test", wantErrors: []string{"wl2.test"},
		},
		{
			name: "the first blacklist in order wins",
			set: func(f *dnsclient.Fake) {
				f.List("bl2.test", client, "spam source", "127.0.0.2")
				f.List("bl3.test", client, "", "127.0.0.3")
			},
			want: rules.ActionReject, wantBL: "bl2.test", wantUncounted: []string{"bl3.test"},
		},
		{
			name: "a blacklist answer outside the filter is not a listing",
			set: func(f *dnsclient.Fake) {
				f.List("bl1.test", client, "", "127.0.0.20")
				f.List("bl3.test", client, "", "127.0.0.2")
			},
			want: rules.ActionReject, wantBL: "bl3.test", wantErrors: []string{"bl1.test"},
		},
		{
			name: "SERVFAIL: not listed, counted as an error",
			set: func(f *dnsclient.Fake) {
				f.SetIP("bl1.test", client, dnsclient.Entry{Rcode: dns.RcodeServerFailure})
			},
			want: rules.ActionAccept, wantErrors: []string{"bl1.test"},
		},
		{
			name: "timeout: not listed, counted, the next list still decides",
			set: func(f *dnsclient.Fake) {
				f.SetIP("bl1.test", client, dnsclient.Entry{Silent: true})
				f.List("bl2.test", client, "", "127.0.0.2")
			},
			timeout: 200 * time.Millisecond,
			want:    rules.ActionReject, wantBL: "bl2.test", wantErrors: []string{"bl1.test"},
			wantUncounted: []string{"bl3.test"},
		},
		{
			name: "timeout everywhere: accepted",
			set: func(f *dnsclient.Fake) {
				for _, z := range allZones {
					f.SetIP(z, client, dnsclient.Entry{Silent: true})
				}
			},
			timeout: 200 * time.Millisecond,
			want:    rules.ActionAccept, wantErrors: allZones,
		},
		{
			name: "suspended list: not listed, not asked",
			set: func(f *dnsclient.Fake) {
				f.List("bl2.test", "127.0.0.1", "", "127.0.0.2")
				f.List("bl2.test", "127.0.0.2", "", "127.0.0.2")
				f.List("bl2.test", client, "", "127.0.0.2")
			},
			probe: "bl2.test",
			want:  rules.ActionAccept, wantNotAsked: []string{"bl2.test"}, wantUncounted: []string{"bl2.test"},
		},
	}
	// Each error code is an error, never a listing, whatever the filter.
	for _, code := range []string{"127.255.255.252", "127.255.255.253", "127.255.255.254", "127.255.255.255", "127.0.0.255"} {
		tests = append(tests, engineCase{
			name: "error code " + code + " is not a listing",
			set: func(f *dnsclient.Fake) {
				f.List("wl1.test", client, "", code)
				f.List("bl2.test", client, "", code)
			},
			want: rules.ActionAccept, wantErrors: []string{"wl1.test", "bl2.test"},
		})
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			f := dnsclient.NewFake()
			if tt.set != nil {
				tt.set(f)
			}
			addr, queries := dnsclient.StartServer(t, f)
			timeout := tt.timeout
			if timeout == 0 {
				timeout = 5 * time.Second
			}
			c := newClient(t, addr, timeout)
			if tt.probe != "" {
				is.True(c.Probe(context.Background(), tt.probe).Suspended)
			}
			e := newEngine(t, engineConfig, c)
			s := rules.NewSession(netip.MustParseAddr(client), "")
			v := e.Connect(context.Background(), s)
			r := s.ConnectResult()
			t.Logf("verdict %s: %s; dns errors %v", v.Action, v.Reason, r.DNSErrors)

			is.Equal(v.Action, tt.want)
			switch {
			case tt.wantWL != "":
				is.True(r.DNSWL != nil) // whitelisted
				is.Equal(r.DNSWL.Zone, tt.wantWL)
				is.True(slices.Contains(v.Headers, rules.Header{Name: "X-DNSWL-Site", Value: tt.wantWL}))
			default:
				is.True(r.DNSWL == nil) // not whitelisted
			}
			switch {
			case tt.wantBL != "":
				is.True(r.DNSBL != nil) // blacklisted
				is.Equal(r.DNSBL.Zone, tt.wantBL)
				is.Equal(v.Control, rules.ControlDNSBlacklist)
				is.Equal(v.Code, 550)
			default:
				is.True(r.DNSBL == nil) // not blacklisted
			}

			counters := sites(e)
			for _, z := range allZones {
				sc := counters[z]
				wantErrors, wantQueries := uint64(0), uint64(1)
				if slices.Contains(tt.wantErrors, z) {
					wantErrors = 1
				}
				if slices.Contains(tt.wantUncounted, z) {
					wantQueries = 0
				}
				is.Equal(sc.Errors, wantErrors)   // errors of the site
				is.Equal(sc.Queries, wantQueries) // the site was counted
				wantHits := uint64(0)
				if z == tt.wantWL || z == tt.wantBL {
					wantHits = 1
				}
				is.Equal(sc.Hits, wantHits)
			}
			for _, z := range tt.wantNotAsked {
				is.Equal(queries.Of(dnsclient.QueryName(z, client), dns.TypeA), 0) // suspended list asked
			}
		})
	}
}

// TestEngineQueriesListsConcurrently proves, without timing anything,
// that the connect stage asks every list at once: the server answers
// nothing until it has received the queries of all five lists. A client
// asking one list after the other would wait on the first until its
// timeout, get an error, and never see a listing.
func TestEngineQueriesListsConcurrently(t *testing.T) {
	is := is.New(t)
	const client = "192.0.2.20"
	zones := []string{"bl1.test", "bl2.test", "bl3.test", "bl4.test", "bl5.test"}
	f := dnsclient.NewFake()
	f.List("bl5.test", client, "listed by the fifth", "127.0.0.2")

	zoneOf := map[string]string{}
	for _, z := range zones {
		zoneOf[dnsclient.QueryName(z, client)] = z
	}
	var (
		mu      sync.Mutex
		seen    = map[string]bool{}
		release = make(chan struct{})
		done    = make(chan struct{})
	)
	gate := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		if dnsclient.IsProbe(strings.ToLower(r.Question[0].Name)) {
			f.ServeDNS(w, r) // the probes before first use go through
			return
		}
		mu.Lock()
		if z, ok := zoneOf[strings.ToLower(r.Question[0].Name)]; ok && !seen[z] {
			seen[z] = true
			if len(seen) == len(zones) {
				close(release)
			}
		}
		mu.Unlock()
		select {
		case <-release:
			f.ServeDNS(w, r)
		case <-done: // the test ended without every list asked
		}
	})
	addr, queries := dnsclient.StartServer(t, gate)
	t.Cleanup(func() { close(done) }) // runs before the server's shutdown
	c := newClient(t, addr, 5*time.Second)
	config := fmt.Sprintf("[dns_blacklist]\nenabled = true\nsites = [%q, %q, %q, %q, %q]\naction = \"reject\"\n",
		zones[0], zones[1], zones[2], zones[3], zones[4])
	e := newEngine(t, config, c)

	s := rules.NewSession(netip.MustParseAddr(client), "")
	v := e.Connect(context.Background(), s)

	is.Equal(v.Action, rules.ActionReject) // the fifth list's listing decides
	is.Equal(s.ConnectResult().DNSBL.Zone, "bl5.test")
	is.Equal(s.ConnectResult().DNSBL.TXT, "listed by the fifth")
	is.Equal(len(s.ConnectResult().DNSErrors), 0) // every list answered
	for _, z := range zones {
		is.Equal(queries.Of(dnsclient.QueryName(z, client), dns.TypeA), 1)
		is.Equal(sites(e)[z].Errors, uint64(0))
	}
}
