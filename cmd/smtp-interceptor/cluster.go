package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"

	"github.com/smtp-interceptor/smtp-interceptor/internal/metrics"
	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// clusterStats is what stats --cluster --json prints.
type clusterStats struct {
	// Relays are the statistics each relay published, by relay.
	Relays map[string]metrics.Stats `json:"relays"`
	// Total is their sum (see sumStats).
	Total metrics.Stats `json:"total"`
	// Unreadable are the relays whose document could not be decoded,
	// with the reason.
	Unreadable map[string]string `json:"unreadable,omitempty"`
}

// printCluster prints the statistics of the whole fleet, read from the
// [state] Redis backend where every relay publishes its counters: first
// the relays, then their sum in printStats' format, then each relay's own
// statistics indented under "relay NAME:". asJSON prints a clusterStats
// instead. Errors are written to w too. It returns the exit code:
// exitUsage with the memory backend, which has no fleet, and exitFail
// when Redis cannot be reached, no relay has published statistics or a
// relay's document is unreadable (the others are printed).
func printCluster(ctx context.Context, cfg *rules.Config, w io.Writer, asJSON bool) int {
	if cfg.State.Backend != "redis" {
		fmt.Fprintf(w, "stats --cluster: [state] backend = %q has no fleet: the statistics are this relay's (stats without --cluster)\n", cfg.State.Backend)
		return exitUsage
	}
	b, err := openCLIState(ctx, cfg)
	if err != nil {
		fmt.Fprintf(w, "stats --cluster: %v\n", err)
		return exitFail
	}
	defer b.Close()
	docs, err := b.FleetStats(ctx)
	if err != nil {
		fmt.Fprintf(w, "stats --cluster: read the fleet's statistics: %v\n", err)
		return exitFail
	}
	cs := clusterStats{Relays: map[string]metrics.Stats{}}
	for relay, doc := range docs {
		var st metrics.Stats
		if err := json.Unmarshal(doc, &st); err != nil {
			if cs.Unreadable == nil {
				cs.Unreadable = map[string]string{}
			}
			cs.Unreadable[relay] = err.Error()
			continue
		}
		cs.Relays[relay] = st
	}
	names := make([]string, 0, len(cs.Relays))
	for name := range cs.Relays {
		names = append(names, name)
	}
	sort.Strings(names)
	all := make([]metrics.Stats, len(names))
	for i, name := range names {
		all[i] = cs.Relays[name]
	}
	cs.Total = sumStats(all)

	code := exitOK
	if len(cs.Unreadable) > 0 || len(docs) == 0 {
		code = exitFail
	}
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(cs)
		return code
	}
	if len(docs) == 0 {
		fmt.Fprintf(w, "stats --cluster: no relay has published statistics in [state] redis %s (prefix %q)\n",
			strings.Join(cfg.State.Addrs, ","), cfg.State.Prefix)
		return code
	}
	fmt.Fprintf(w, "fleet: %d relays: %s\n", len(names), strings.Join(names, ", "))
	printStats(w, &cs.Total, false)
	for _, name := range names {
		fmt.Fprintf(w, "relay %s:\n", name)
		var buf bytes.Buffer
		st := cs.Relays[name]
		printStats(&buf, &st, false)
		for line := range strings.Lines(buf.String()) {
			fmt.Fprintf(w, "  %s", line)
		}
	}
	bad := make([]string, 0, len(cs.Unreadable))
	for name := range cs.Unreadable {
		bad = append(bad, name)
	}
	sort.Strings(bad)
	for _, name := range bad {
		fmt.Fprintf(w, "stats --cluster: relay %s published unreadable statistics: %s\n", name, cs.Unreadable[name])
	}
	return code
}

// sumStats adds up the statistics of several relays: every counter is
// summed (site counters by kind and site, verdicts by stage, action,
// control and mode, the maps by key, histograms bucket by bucket). Of the
// gauges, a zone is suspended, and listed in Suspended, when it is on any
// relay, with the latest LastSuspended; LastLoaded is the latest;
// LastReloadOK, the state backend's Up and the directory's Up hold only
// when they hold on every relay (that has a directory). Entries and Expanded, which relays do not
// publish, are left out.
func sumStats(docs []metrics.Stats) metrics.Stats {
	var t rules.Snapshot
	t.Controls = map[string]uint64{}
	t.ZoneLatency = map[string]rules.HistogramSnapshot{}
	t.ConfigReloads = map[string]uint64{}
	t.CandidateDifferences = map[string]uint64{}
	t.LastReloadOK = true
	t.State = rules.StateSnapshot{Up: true, RateLimited: map[string]uint64{}}
	type verdictKey struct {
		stage   rules.Stage
		action  rules.Action
		control rules.Control
		mode    string
	}
	verdicts := map[verdictKey]uint64{}
	type siteKey struct {
		kind rules.ListKind
		site string
	}
	sites := map[siteKey]rules.SiteSnapshot{}
	zones := map[string]rules.ZoneSnapshot{}
	suspended := map[string]bool{}
	for _, d := range docs {
		s := &d.Snapshot
		t.WhitelistHits += s.WhitelistHits
		t.BlacklistHits += s.BlacklistHits
		t.PrivateBlacklistHits += s.PrivateBlacklistHits
		t.DNSBLHits += s.DNSBLHits
		t.DNSWLHits += s.DNSWLHits
		addCounts(t.Controls, s.Controls)
		addCounts(t.ConfigReloads, s.ConfigReloads)
		addCounts(t.CandidateDifferences, s.CandidateDifferences)
		for _, v := range s.Verdicts {
			verdicts[verdictKey{v.Stage, v.Action, v.Control, v.Mode}] += v.Count
		}
		for _, site := range s.Sites {
			k := siteKey{site.Kind, site.Site}
			sum := sites[k]
			sum.Kind, sum.Site = site.Kind, site.Site
			sum.Hits += site.Hits
			sum.Errors += site.Errors
			sum.Queries += site.Queries
			sites[k] = sum
		}
		for _, z := range s.Suspended {
			suspended[z] = true
		}
		for _, z := range s.Zones {
			sum := zones[z.Zone]
			sum.Zone = z.Zone
			sum.Suspended = sum.Suspended || z.Suspended
			if z.LastSuspended.After(sum.LastSuspended) {
				sum.LastSuspended = z.LastSuspended
			}
			zones[z.Zone] = sum
		}
		t.DNSLatency = addHistogram(t.DNSLatency, s.DNSLatency)
		t.DNSBLScore = addHistogram(t.DNSBLScore, s.DNSBLScore)
		for zone, h := range s.ZoneLatency {
			t.ZoneLatency[zone] = addHistogram(t.ZoneLatency[zone], h)
		}
		t.LastReloadOK = t.LastReloadOK && s.LastReloadOK
		t.LastLoaded = max(t.LastLoaded, s.LastLoaded)
		t.State.Up = t.State.Up && s.State.Up
		addCounts(t.State.RateLimited, s.State.RateLimited)
		t.State.RateLimitErrors += s.State.RateLimitErrors
		t.State.Autobans += s.State.Autobans
		t.State.GreylistDelayed += s.State.GreylistDelayed
		t.State.GreylistPassed += s.State.GreylistPassed
		t.State.GreylistErrors += s.State.GreylistErrors
		if dir := s.Directory; dir != nil {
			if t.Directory == nil {
				t.Directory = &rules.DirectorySnapshot{Up: true, Lookups: map[string]uint64{}}
			}
			t.Directory.Up = t.Directory.Up && dir.Up
			addCounts(t.Directory.Lookups, dir.Lookups)
			t.Directory.Latency = addHistogram(t.Directory.Latency, dir.Latency)
		}
	}
	for k, n := range verdicts {
		t.Verdicts = append(t.Verdicts, rules.VerdictCount{Stage: k.stage, Action: k.action, Control: k.control, Mode: k.mode, Count: n})
	}
	slices.SortFunc(t.Verdicts, func(a, b rules.VerdictCount) int {
		switch {
		case a.Stage != b.Stage:
			return int(a.Stage) - int(b.Stage)
		case a.Action != b.Action:
			return int(a.Action) - int(b.Action)
		case a.Mode != b.Mode:
			return strings.Compare(a.Mode, b.Mode)
		}
		return strings.Compare(string(a.Control), string(b.Control))
	})
	for _, s := range sites {
		t.Sites = append(t.Sites, s)
	}
	slices.SortFunc(t.Sites, func(a, b rules.SiteSnapshot) int {
		if a.Kind != b.Kind {
			return strings.Compare(string(a.Kind), string(b.Kind))
		}
		return strings.Compare(a.Site, b.Site)
	})
	for z := range suspended {
		t.Suspended = append(t.Suspended, z)
	}
	sort.Strings(t.Suspended)
	for _, z := range zones {
		t.Zones = append(t.Zones, z)
	}
	slices.SortFunc(t.Zones, func(a, b rules.ZoneSnapshot) int { return strings.Compare(a.Zone, b.Zone) })
	return metrics.Stats{Snapshot: t}
}

// addCounts adds the counts of from into to.
func addCounts(to, from map[string]uint64) {
	for k, n := range from {
		to[k] += n
	}
}

// addHistogram returns the sum of two histograms, bucket by bucket (the
// relays of a fleet share the bucket bounds; a longer list keeps its
// extra buckets).
func addHistogram(a, b rules.HistogramSnapshot) rules.HistogramSnapshot {
	sum := rules.HistogramSnapshot{Count: a.Count + b.Count, Sum: a.Sum + b.Sum}
	if n := max(len(a.Buckets), len(b.Buckets)); n > 0 {
		sum.Buckets = make([]uint64, n)
		for i := range sum.Buckets {
			if i < len(a.Buckets) {
				sum.Buckets[i] += a.Buckets[i]
			}
			if i < len(b.Buckets) {
				sum.Buckets[i] += b.Buckets[i]
			}
		}
	}
	return sum
}
