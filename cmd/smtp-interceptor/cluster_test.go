package main

import (
	"bytes"
	"context"
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/matryer/is"

	"github.com/smtp-interceptor/smtp-interceptor/internal/metrics"
	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// clusterSnapshots are the hand-made counters of two relays.
func clusterSnapshots() map[string]rules.Snapshot {
	suspendedAt := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	return map[string]rules.Snapshot{
		"relay-a": {
			WhitelistHits: 2, BlacklistHits: 1, DNSBLHits: 1,
			Controls: map[string]uint64{"dns_blacklist": 1, "whitelist": 2},
			Verdicts: []rules.VerdictCount{
				{Stage: rules.StageConnect, Action: rules.ActionReject, Control: rules.ControlDNSBlacklist, Mode: "enforce", Count: 1},
				{Stage: rules.StageConnect, Action: rules.ActionAccept, Control: rules.ControlWhitelist, Mode: "enforce", Count: 2},
			},
			Sites:         []rules.SiteSnapshot{{Kind: rules.DNSBL, Site: "zen.spamhaus.org", Hits: 1, Queries: 10}},
			Zones:         []rules.ZoneSnapshot{{Zone: "zen.spamhaus.org"}},
			DNSLatency:    rules.HistogramSnapshot{Buckets: []uint64{1, 2}, Count: 2, Sum: 0.5},
			ConfigReloads: map[string]uint64{"ok": 1, "error": 0},
			LastReloadOK:  true, LastLoaded: 100,
			Directory: &rules.DirectorySnapshot{Up: true, Lookups: map[string]uint64{"found": 3}},
			State:     rules.StateSnapshot{Up: true, RateLimited: map[string]uint64{"per-client": 1}, Autobans: 1},
		},
		"relay-b": {
			DNSBLHits: 2, DNSWLHits: 4,
			Controls: map[string]uint64{"dns_blacklist": 2, "recipients": 1},
			Verdicts: []rules.VerdictCount{
				{Stage: rules.StageConnect, Action: rules.ActionReject, Control: rules.ControlDNSBlacklist, Mode: "enforce", Count: 2},
				{Stage: rules.StageRcpt, Action: rules.ActionReject, Control: rules.ControlRecipients, Mode: "shadow", Count: 1},
			},
			Sites: []rules.SiteSnapshot{
				{Kind: rules.DNSBL, Site: "bl.example", Queries: 3, Errors: 3},
				{Kind: rules.DNSBL, Site: "zen.spamhaus.org", Hits: 2, Queries: 5, Errors: 1},
				{Kind: rules.DNSWL, Site: "list.dnswl.org", Hits: 4, Queries: 4},
			},
			Suspended:     []string{"bl.example"},
			Zones:         []rules.ZoneSnapshot{{Zone: "bl.example", Suspended: true, LastSuspended: suspendedAt}, {Zone: "zen.spamhaus.org"}},
			DNSLatency:    rules.HistogramSnapshot{Buckets: []uint64{3, 4}, Count: 4, Sum: 1.5},
			ConfigReloads: map[string]uint64{"ok": 2, "error": 1},
			LastReloadOK:  false, LastLoaded: 200,
			Directory: &rules.DirectorySnapshot{Up: false, Lookups: map[string]uint64{"found": 1, "unknown": 2}},
			State:     rules.StateSnapshot{Up: true, RateLimited: map[string]uint64{"per-client": 2}, RateLimitErrors: 1},
		},
	}
}

// publishCluster publishes docs as the relays named by its keys do.
func publishCluster(t *testing.T, addr string, docs map[string][]byte) {
	t.Helper()
	b := openRelay(t, addr)
	for relay, doc := range docs {
		if err := b.PublishStats(context.Background(), relay, doc, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
}

// clusterDocs encodes snapshots as the relays publish them.
func clusterDocs(t *testing.T, snaps map[string]rules.Snapshot) map[string][]byte {
	t.Helper()
	docs := map[string][]byte{}
	for relay, s := range snaps {
		js, err := json.Marshal(metrics.Stats{Snapshot: s})
		if err != nil {
			t.Fatal(err)
		}
		docs[relay] = js
	}
	return docs
}

// clusterConfig loads a configuration whose [state] is the Redis at addr.
func clusterConfig(t *testing.T, extra string) *rules.Config {
	t.Helper()
	path, _ := writeConfig(t, extra)
	cfg, err := rules.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// statsLines is what printStats writes for s, with indent before each line.
func statsLines(s rules.Snapshot, indent string) string {
	var buf bytes.Buffer
	printStats(&buf, &metrics.Stats{Snapshot: s}, false)
	return indent + strings.ReplaceAll(strings.TrimSuffix(buf.String(), "\n"), "\n", "\n"+indent) + "\n"
}

func TestClusterText(t *testing.T) {
	is := is.New(t)
	mr := miniredis.RunT(t)
	snaps := clusterSnapshots()
	publishCluster(t, mr.Addr(), clusterDocs(t, snaps))
	var out bytes.Buffer
	code := printCluster(context.Background(), clusterConfig(t, redisConfig(mr.Addr())), &out, false)
	is.Equal(code, exitOK)

	text := out.String()
	head, rest, ok := strings.Cut(text, "relay relay-a:\n")
	is.True(ok)
	relayA, relayB, ok := strings.Cut(rest, "relay relay-b:\n")
	is.True(ok)
	is.Equal(relayA, statsLines(snaps["relay-a"], "  "))
	is.Equal(relayB, statsLines(snaps["relay-b"], "  "))

	lines := strings.Split(strings.TrimSuffix(head, "\n"), "\n")
	is.Equal(lines[0], "fleet: 2 relays: relay-a, relay-b")
	for _, want := range []string{
		"SMTP.PrivateWL.TotalHits = 2",
		"SMTP.DNSBL.TotalHits = 3",
		"SMTP.DNSBL.bl.example.TotalHits = 0",
		"SMTP.DNSBL.zen.spamhaus.org.TotalHits = 3",
		"SMTP.DNSWL.TotalHits = 4",
		"SMTP.DNSWL.list.dnswl.org.TotalHits = 4",
		"SMTPInterceptor.Blacklist.TotalHits = 1",
		"SMTPInterceptor.DNSBL.zen.spamhaus.org.Lookups = 15",
		"SMTPInterceptor.DNSBL.zen.spamhaus.org.Errors = 1",
		"SMTPInterceptor.DNSBL.bl.example.Errors = 3",
		"SMTPInterceptor.DNSList.bl.example.Suspended = 1",
		"SMTPInterceptor.Verdicts.connect.accept = 2",
		"SMTPInterceptor.Verdicts.connect.reject = 3",
		"SMTPInterceptor.Verdicts.rcpt.reject.shadow = 1",
		"SMTPInterceptor.Control.dns_blacklist.Matches = 3",
		"SMTPInterceptor.Control.recipients.Matches = 1",
		"SMTPInterceptor.Control.whitelist.Matches = 2",
		"SMTPInterceptor.Directory.Up = 0",
		"SMTPInterceptor.Directory.Lookups.found = 4",
		"SMTPInterceptor.Directory.Lookups.unknown = 2",
		"SMTPInterceptor.ConfigReloads.ok = 3",
		"SMTPInterceptor.ConfigReloads.error = 1",
	} {
		is.True(slices.Contains(lines, want)) // want
	}
	// The totals are printStats' lines, in its order.
	is.Equal(strings.Join(lines[1:], "\n")+"\n", statsLines(sumStats([]metrics.Stats{{Snapshot: snaps["relay-a"]}, {Snapshot: snaps["relay-b"]}}).Snapshot, ""))
}

// TestClusterCommand: stats --cluster reaches printCluster.
func TestClusterCommand(t *testing.T) {
	is := is.New(t)
	mr := miniredis.RunT(t)
	publishCluster(t, mr.Addr(), clusterDocs(t, clusterSnapshots()))
	cfg, _ := writeConfig(t, redisConfig(mr.Addr()))
	code, out, errs := runCmd("stats", "--cluster", "-c", cfg)
	is.Equal(code, exitOK) // errs
	is.Equal(errs, "")
	is.True(strings.HasPrefix(out, "fleet: 2 relays: relay-a, relay-b\nSMTP.PrivateWL.TotalHits = 2\n"))
	is.True(strings.Contains(out, "\nrelay relay-b:\n  SMTP.PrivateWL.TotalHits = 0\n"))
}

func TestClusterJSON(t *testing.T) {
	is := is.New(t)
	mr := miniredis.RunT(t)
	publishCluster(t, mr.Addr(), clusterDocs(t, clusterSnapshots()))
	var out bytes.Buffer
	code := printCluster(context.Background(), clusterConfig(t, redisConfig(mr.Addr())), &out, true)
	is.Equal(code, exitOK)
	var doc struct {
		Relays     map[string]metrics.Stats `json:"relays"`
		Total      metrics.Stats            `json:"total"`
		Unreadable map[string]string        `json:"unreadable"`
	}
	is.NoErr(json.Unmarshal(out.Bytes(), &doc))
	is.Equal(len(doc.Relays), 2)
	is.Equal(doc.Relays["relay-a"].DNSBLHits, uint64(1))
	is.Equal(doc.Relays["relay-b"].DNSBLHits, uint64(2))
	is.Equal(doc.Total.DNSBLHits, uint64(3))
	is.Equal(doc.Total.State.RateLimited["per-client"], uint64(3))
	is.Equal(doc.Unreadable, map[string]string(nil))
	is.True(strings.Contains(out.String(), `"unreadable"`) == false) // omitted when all are readable
}

func TestClusterErrors(t *testing.T) {
	mr := miniredis.RunT(t)
	snaps := clusterSnapshots()
	docs := clusterDocs(t, map[string]rules.Snapshot{"relay-a": snaps["relay-a"]})
	docs["relay-z"] = []byte("not JSON")
	publishCluster(t, mr.Addr(), docs)
	empty := miniredis.RunT(t)
	tests := []struct {
		name   string
		extra  string
		asJSON bool
		code   int
		want   []string
	}{
		{name: "memory", code: exitUsage,
			want: []string{"stats --cluster: [state] backend = \"memory\" has no fleet: the statistics are this relay's (stats without --cluster)\n"}},
		{name: "redis down", extra: redisConfig(closedAddr(t)), code: exitFail,
			want: []string{"stats --cluster: [state] redis 127.0.0.1:", "not reachable within 2s"}},
		{name: "no relay", extra: redisConfig(empty.Addr()), code: exitFail,
			want: []string{`stats --cluster: no relay has published statistics in [state] redis ` + empty.Addr() + ` (prefix "smtpi:")`}},
		{name: "unreadable relay", extra: redisConfig(mr.Addr()), code: exitFail,
			want: []string{"fleet: 1 relays: relay-a\n", "SMTP.DNSBL.TotalHits = 1\n", "relay relay-a:\n  SMTP.PrivateWL.TotalHits = 2\n",
				"stats --cluster: relay relay-z published unreadable statistics: invalid character"}},
		{name: "unreadable relay, JSON", extra: redisConfig(mr.Addr()), asJSON: true, code: exitFail,
			want: []string{`"relay-a": {`, `"unreadable": {`, `"relay-z": "invalid character`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			var out bytes.Buffer
			code := printCluster(context.Background(), clusterConfig(t, tc.extra), &out, tc.asJSON)
			is.Equal(code, tc.code)
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output %q lacks %q", out.String(), w)
				}
			}
		})
	}
}

func TestClusterSum(t *testing.T) {
	snaps := clusterSnapshots()
	a, b := metrics.Stats{Snapshot: snaps["relay-a"]}, metrics.Stats{Snapshot: snaps["relay-b"]}
	noDir := a
	noDir.Directory = nil
	tests := []struct {
		name  string
		docs  []metrics.Stats
		check func(is *is.I, s rules.Snapshot)
	}{
		{name: "none", docs: nil, check: func(is *is.I, s rules.Snapshot) {
			is.Equal(s.DNSBLHits, uint64(0))
			is.Equal(s.Directory, (*rules.DirectorySnapshot)(nil))
			is.Equal(len(s.Verdicts), 0)
		}},
		{name: "one is itself", docs: []metrics.Stats{a}, check: func(is *is.I, s rules.Snapshot) {
			is.Equal(s.Verdicts, []rules.VerdictCount{ // sorted by stage, action
				{Stage: rules.StageConnect, Action: rules.ActionAccept, Control: rules.ControlWhitelist, Mode: "enforce", Count: 2},
				{Stage: rules.StageConnect, Action: rules.ActionReject, Control: rules.ControlDNSBlacklist, Mode: "enforce", Count: 1},
			})
			is.Equal(s.Sites, a.Sites)
			is.Equal(s.DNSLatency, a.DNSLatency)
			is.True(s.LastReloadOK)
			is.Equal(*s.Directory, *a.Directory)
		}},
		{name: "two", docs: []metrics.Stats{a, b}, check: func(is *is.I, s rules.Snapshot) {
			is.Equal(s.WhitelistHits, uint64(2))
			is.Equal(s.DNSBLHits, uint64(3))
			is.Equal(s.DNSWLHits, uint64(4))
			is.Equal(s.Controls, map[string]uint64{"dns_blacklist": 3, "whitelist": 2, "recipients": 1})
			is.Equal(s.Verdicts, []rules.VerdictCount{
				{Stage: rules.StageConnect, Action: rules.ActionAccept, Control: rules.ControlWhitelist, Mode: "enforce", Count: 2},
				{Stage: rules.StageConnect, Action: rules.ActionReject, Control: rules.ControlDNSBlacklist, Mode: "enforce", Count: 3},
				{Stage: rules.StageRcpt, Action: rules.ActionReject, Control: rules.ControlRecipients, Mode: "shadow", Count: 1},
			})
			is.Equal(s.Sites, []rules.SiteSnapshot{
				{Kind: rules.DNSBL, Site: "bl.example", Queries: 3, Errors: 3},
				{Kind: rules.DNSBL, Site: "zen.spamhaus.org", Hits: 3, Queries: 15, Errors: 1},
				{Kind: rules.DNSWL, Site: "list.dnswl.org", Hits: 4, Queries: 4},
			})
			is.Equal(s.Suspended, []string{"bl.example"})
			is.Equal(s.Zones, []rules.ZoneSnapshot{
				{Zone: "bl.example", Suspended: true, LastSuspended: time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)},
				{Zone: "zen.spamhaus.org"},
			})
			is.Equal(s.DNSLatency, rules.HistogramSnapshot{Buckets: []uint64{4, 6}, Count: 6, Sum: 2})
			is.Equal(s.ConfigReloads, map[string]uint64{"ok": 3, "error": 1})
			is.True(!s.LastReloadOK)           // false on relay-b
			is.Equal(s.LastLoaded, int64(200)) // the latest
			is.Equal(s.Directory.Up, false)
			is.Equal(s.Directory.Lookups, map[string]uint64{"found": 4, "unknown": 2})
			is.Equal(s.State, rules.StateSnapshot{Up: true, RateLimited: map[string]uint64{"per-client": 3}, RateLimitErrors: 1, Autobans: 1})
		}},
		{name: "directory on one relay only", docs: []metrics.Stats{noDir, b}, check: func(is *is.I, s rules.Snapshot) {
			is.Equal(s.Directory.Up, false)
			is.Equal(s.Directory.Lookups, map[string]uint64{"found": 1, "unknown": 2})
		}},
		{name: "directory up where there is one", docs: []metrics.Stats{noDir, a}, check: func(is *is.I, s rules.Snapshot) {
			is.Equal(s.Directory.Up, true)
		}},
		{name: "state down on one relay", docs: []metrics.Stats{a, {Snapshot: rules.Snapshot{LastReloadOK: true}}}, check: func(is *is.I, s rules.Snapshot) {
			is.Equal(s.State.Up, false)
			is.True(s.LastReloadOK)
		}},
		{name: "histograms of different lengths", docs: []metrics.Stats{
			{Snapshot: rules.Snapshot{DNSLatency: rules.HistogramSnapshot{Buckets: []uint64{1}, Count: 1}}},
			{Snapshot: rules.Snapshot{DNSLatency: rules.HistogramSnapshot{Buckets: []uint64{1, 2, 3}, Count: 3}}},
		}, check: func(is *is.I, s rules.Snapshot) {
			is.Equal(s.DNSLatency, rules.HistogramSnapshot{Buckets: []uint64{2, 2, 3}, Count: 4})
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.check(is.New(t), sumStats(tc.docs).Snapshot)
		})
	}
}

// TestClusterSumKnowsEveryField fails when a counter is added to the
// snapshots without sumStats learning to add it up.
func TestClusterSumKnowsEveryField(t *testing.T) {
	known := map[reflect.Type][]string{
		reflect.TypeFor[rules.Snapshot](): {"WhitelistHits", "BlacklistHits", "PrivateBlacklistHits", "DNSBLHits", "DNSWLHits",
			"Controls", "Verdicts", "Sites", "Suspended", "Zones", "DNSLatency", "ZoneLatency", "ConfigReloads", "LastReloadOK",
			"LastLoaded", "CandidateDifferences", "Directory", "State", "DNSBLScore"},
		reflect.TypeFor[rules.StateSnapshot]():     {"Up", "RateLimited", "RateLimitErrors", "Autobans", "GreylistDelayed", "GreylistPassed", "GreylistErrors"},
		reflect.TypeFor[rules.DirectorySnapshot](): {"Up", "Lookups", "Latency"},
		reflect.TypeFor[rules.SiteSnapshot]():      {"Kind", "Site", "Hits", "Errors", "Queries"},
		reflect.TypeFor[rules.ZoneSnapshot]():      {"Zone", "Suspended", "LastSuspended"},
		reflect.TypeFor[rules.HistogramSnapshot](): {"Buckets", "Count", "Sum"},
		reflect.TypeFor[rules.VerdictCount]():      {"Stage", "Action", "Control", "Mode", "Count"},
	}
	for typ, fields := range known {
		t.Run(typ.Name(), func(t *testing.T) {
			var got []string
			for f := range typ.Fields() {
				got = append(got, f.Name)
			}
			if !slices.Equal(got, fields) {
				t.Errorf("rules.%s has the fields %v, sumStats (cluster.go) adds up %v: teach it the new ones", typ.Name(), got, fields)
			}
		})
	}
}

// TestClusterServerDocument: a real Counters snapshot, as serve publishes
// it, decodes and sums.
func TestClusterServerDocument(t *testing.T) {
	is := is.New(t)
	var c rules.Counters
	c.Site(rules.DNSBL, "zen.spamhaus.org").Hits.Add(2)
	c.ConfigReload(true)
	js, err := json.Marshal(metrics.Stats{Snapshot: c.Snapshot()})
	is.NoErr(err)
	var st metrics.Stats
	is.NoErr(json.Unmarshal(js, &st))
	sum := sumStats([]metrics.Stats{st, st})
	is.Equal(sum.Sites[0].Hits, uint64(4))
	is.Equal(sum.ConfigReloads["ok"], uint64(2))
}
