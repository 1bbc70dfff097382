package rules

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Counters are the engine's statistics, kept with plain atomics so the hot
// path never takes a lock once a site's counters exist. They survive
// configuration reloads. The Prometheus exporter and the stats command read
// them through Snapshot.
type Counters struct {
	whitelistHits        atomic.Uint64 // SMTP.PrivateWL.TotalHits
	blacklistHits        atomic.Uint64
	privateBlacklistHits atomic.Uint64 // SMTP.PrivateBL.TotalHits
	dnsblHits            atomic.Uint64 // SMTP.DNSBL.TotalHits
	dnswlHits            atomic.Uint64 // SMTP.DNSWL.TotalHits
	verdicts             [numStages][numActions][numControls]atomic.Uint64
	shadowVerdicts       [numStages][numActions][numControls]atomic.Uint64
	candidateDiffs       sync.Map // Control -> *atomic.Uint64
	controls             sync.Map // Control -> *atomic.Uint64: times a control fired
	sites                sync.Map // siteKey -> *SiteCounters
	suspended            sync.Map // zone -> *zoneSuspension
	dnsLatency           Histogram
	zoneLatency          sync.Map // zone -> *Histogram: per DNS list zone ("" for host questions)
	reloadsOK            atomic.Uint64
	// lastReloadFailed is set while the latest reload was refused;
	// lastLoaded is when a configuration was last applied (start or
	// reload), in Unix seconds.
	lastReloadFailed atomic.Bool
	lastLoaded       atomic.Int64
	reloadsFailed    atomic.Uint64
	expanded         expandedStats
	directory        directoryCounters
	dnsblScore       ScoreHistogram
	state            stateCounters
	now              func() time.Time // nil: time.Now
}

// SetClock sets the clock that times suspensions (SetSuspended,
// SuspendedSince); nil means time.Now. Call it before the counters are
// used.
func (c *Counters) SetClock(now func() time.Time) { c.now = now }

func (c *Counters) clock() time.Time {
	if c.now != nil {
		return c.now()
	}
	return time.Now()
}

// SetExpandedLimit bounds the expanded statistics table (default
// DefaultExpandedEntries). Call it before the counters are used.
func (c *Counters) SetExpandedLimit(n int) { c.expanded.max = n }

// ConfigReload counts a configuration reload, applied or refused.
func (c *Counters) ConfigReload(ok bool) {
	if ok {
		c.reloadsOK.Add(1)
		c.ConfigLoaded()
	} else {
		c.reloadsFailed.Add(1)
		c.lastReloadFailed.Store(true)
	}
}

// ConfigLoaded records that a configuration was applied now (at start,
// and by each successful reload).
func (c *Counters) ConfigLoaded() {
	c.lastReloadFailed.Store(false)
	c.lastLoaded.Store(c.clock().Unix())
}

// Expanded returns Domino's expanded statistics: hits per site per client
// IP, busiest first.
func (c *Counters) Expanded() []ExpandedHit { return c.expanded.snapshot() }

// SiteCounters count one DNS list's outcomes.
type SiteCounters struct {
	// Hits counts clients the site listed that counted (SMTP.DNSBL.<site>.TotalHits).
	Hits atomic.Uint64
	// Errors counts failed queries, error-code answers and answers outside
	// the site's filter.
	Errors atomic.Uint64
	// Queries counts lookups made.
	Queries atomic.Uint64
}

// ListKind tells DNS whitelists from DNS blacklists.
type ListKind string

// The two kinds of DNS list, named as in Domino's statistics.
const (
	DNSWL ListKind = "DNSWL"
	DNSBL ListKind = "DNSBL"
)

type siteKey struct {
	kind ListKind
	zone string
}

// Site returns the counters of a DNS list site (by zone), creating them if
// needed.
func (c *Counters) Site(kind ListKind, zone string) *SiteCounters {
	k := siteKey{kind, zone}
	if v, ok := c.sites.Load(k); ok {
		return v.(*SiteCounters)
	}
	v, _ := c.sites.LoadOrStore(k, new(SiteCounters))
	return v.(*SiteCounters)
}

func (c *Counters) control(ctl Control) {
	v, ok := c.controls.Load(ctl)
	if !ok {
		v, _ = c.controls.LoadOrStore(ctl, new(atomic.Uint64))
	}
	v.(*atomic.Uint64).Add(1)
}

// candidateDifference counts a message the candidate decided otherwise,
// by the control that made the difference.
func (c *Counters) candidateDifference(ctl Control) {
	v, ok := c.candidateDiffs.Load(ctl)
	if !ok {
		v, _ = c.candidateDiffs.LoadOrStore(ctl, new(atomic.Uint64))
	}
	v.(*atomic.Uint64).Add(1)
}

// shadowVerdict counts a shadowed refusal by the action it would have
// taken; a repeated one was counted when first seen.
func (c *Counters) shadowVerdict(v *Verdict) {
	if v.Stage < numStages && v.Action < numActions && !v.Repeated {
		c.shadowVerdicts[v.Stage][v.Action][controlIndex(v.Control)].Add(1)
	}
}

// verdict counts a verdict; a refusal repeated at a later command of the
// same session (Verdict.Repeated) was counted when first given.
func (c *Counters) verdict(v *Verdict) {
	if v.Stage < numStages && v.Action < numActions && !v.Repeated {
		c.verdicts[v.Stage][v.Action][controlIndex(v.Control)].Add(1)
	}
}

// DNSLatencyBuckets are the upper bounds, in seconds, of the DNS query
// latency histogram.
var DNSLatencyBuckets = [...]float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}

// Histogram counts observations into DNSLatencyBuckets with atomics.
type Histogram struct {
	buckets [len(DNSLatencyBuckets)]atomic.Uint64 // not cumulative
	count   atomic.Uint64
	sumNano atomic.Uint64
}

// Observe records one duration.
func (h *Histogram) Observe(d time.Duration) {
	sec := d.Seconds()
	for i, le := range DNSLatencyBuckets {
		if sec <= le {
			h.buckets[i].Add(1)
			break
		}
	}
	h.count.Add(1)
	if d > 0 {
		h.sumNano.Add(uint64(d))
	}
}

// HistogramSnapshot is a copy of a histogram: cumulative bucket counts
// (as Prometheus wants them), the total count and the sum in seconds.
type HistogramSnapshot struct {
	Buckets []uint64 `json:"buckets"`
	Count   uint64   `json:"count"`
	Sum     float64  `json:"sum_seconds"`
}

func (h *Histogram) snapshot() HistogramSnapshot {
	s := HistogramSnapshot{Buckets: make([]uint64, len(DNSLatencyBuckets))}
	var cum uint64
	for i := range h.buckets {
		cum += h.buckets[i].Load()
		s.Buckets[i] = cum
	}
	s.Count = h.count.Load()
	s.Sum = time.Duration(h.sumNano.Load()).Seconds()
	return s
}

// ScoreBuckets are the upper bounds of the DNS list score histogram.
var ScoreBuckets = [...]float64{-10, -5, -2, -1, 0, 1, 2, 3, 5, 10, 20}

// ScoreHistogram counts DNS list scores into ScoreBuckets.
type ScoreHistogram struct {
	buckets [len(ScoreBuckets)]atomic.Uint64
	count   atomic.Uint64
	sum     atomic.Int64
}

// Observe records one score.
func (h *ScoreHistogram) Observe(score int) {
	for i, le := range ScoreBuckets {
		if float64(score) <= le {
			h.buckets[i].Add(1)
			break
		}
	}
	h.count.Add(1)
	h.sum.Add(int64(score))
}

func (h *ScoreHistogram) snapshot() HistogramSnapshot {
	s := HistogramSnapshot{Buckets: make([]uint64, len(ScoreBuckets))}
	var cum uint64
	for i := range h.buckets {
		cum += h.buckets[i].Load()
		s.Buckets[i] = cum
	}
	s.Count = h.count.Load()
	s.Sum = float64(h.sum.Load())
	return s
}

// ObserveDNSQuery records one DNS list query sent to the network: its
// latency goes to the histogram. A DNS client calls it (see
// dnsclient.Options.Observe); failures are counted by the engine, which
// sees them in context.
func (c *Counters) ObserveDNSQuery(zone string, d time.Duration, err error) {
	c.dnsLatency.Observe(d)
	h, ok := c.zoneLatency.Load(zone)
	if !ok {
		h, _ = c.zoneLatency.LoadOrStore(zone, new(Histogram))
	}
	h.(*Histogram).Observe(d)
}

// zoneSuspension is one DNS list zone's suspension state and when it
// last changed.
type zoneSuspension struct {
	mu        sync.Mutex
	suspended bool
	since     time.Time // start of the last suspension; zero if never
	restored  time.Time // end of the last suspension; zero if never
}

func (c *Counters) suspension(zone string) *zoneSuspension {
	v, ok := c.suspended.Load(zone)
	if !ok {
		v, _ = c.suspended.LoadOrStore(zone, new(zoneSuspension))
	}
	return v.(*zoneSuspension)
}

// SetSuspended records whether a DNS list zone is suspended
// (dnsclient.Options.OnSuspend), and when: a suspension's start and end
// are kept for SuspendedSince. Repeating the current state changes
// nothing.
func (c *Counters) SetSuspended(zone string, suspended bool) {
	z := c.suspension(zone)
	now := c.clock()
	z.mu.Lock()
	defer z.mu.Unlock()
	switch {
	case suspended && !z.suspended:
		z.since = now
	case !suspended && z.suspended:
		z.restored = now
	}
	z.suspended = suspended
}

// Suspended reports whether zone is suspended now.
func (c *Counters) Suspended(zone string) bool {
	v, ok := c.suspended.Load(zone)
	if !ok {
		return false
	}
	z := v.(*zoneSuspension)
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.suspended
}

// SuspendedSince reports whether zone was suspended at any time from t
// until now: it is suspended now, or its last suspension started or ended
// at t or later. The fail2ban log asks it before writing a DNS blacklist
// refusal it held, so that a refusal by a list found broken a moment
// later bans nobody.
func (c *Counters) SuspendedSince(zone string, t time.Time) bool {
	v, ok := c.suspended.Load(zone)
	if !ok {
		return false
	}
	z := v.(*zoneSuspension)
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.suspended || !z.since.IsZero() && !z.since.Before(t) || !z.restored.IsZero() && !z.restored.Before(t)
}

// SuspendedZones returns the zones suspended now, sorted: what a DNS
// client built by a reload takes as dnsclient.Options.InitialSuspended.
func (c *Counters) SuspendedZones() []string {
	var out []string
	c.suspended.Range(func(k, v any) bool {
		z := v.(*zoneSuspension)
		z.mu.Lock()
		if z.suspended {
			out = append(out, k.(string))
		}
		z.mu.Unlock()
		return true
	})
	sort.Strings(out)
	return out
}

// Snapshot is a point-in-time copy of the counters.
type Snapshot struct {
	WhitelistHits        uint64            `json:"whitelist_hits"`
	BlacklistHits        uint64            `json:"blacklist_hits"`
	PrivateBlacklistHits uint64            `json:"private_blacklist_hits"`
	DNSBLHits            uint64            `json:"dnsbl_hits"`
	DNSWLHits            uint64            `json:"dnswl_hits"`
	Controls             map[string]uint64 `json:"controls"`
	Verdicts             []VerdictCount    `json:"verdicts"`
	Sites                []SiteSnapshot    `json:"sites"`
	// Suspended lists the DNS list zones suspended now (by their health
	// probe or their hit rate), sorted.
	Suspended []string `json:"suspended"`
	// Zones lists every DNS list zone known (counted as a site, or ever
	// reported by SetSuspended) with its state, sorted by zone: what the
	// dns_site_suspended gauge reports, 0 or 1.
	Zones      []ZoneSnapshot    `json:"zones"`
	DNSLatency HistogramSnapshot `json:"dns_latency"`
	// ZoneLatency is DNSLatency per zone asked: each DNS list's zone,
	// in-addr.arpa / ip6.arpa for PTR questions, "" for sender domains.
	ZoneLatency map[string]HistogramSnapshot `json:"dns_latency_by_zone"`
	// ConfigReloads counts reloads by result: "ok" and "error".
	ConfigReloads map[string]uint64 `json:"config_reloads"`
	// LastReloadOK is false while the latest reload was refused (the
	// previous configuration serving); LastLoaded is when a configuration
	// was last applied, in Unix seconds (0: never said).
	LastReloadOK bool  `json:"config_last_reload_success"`
	LastLoaded   int64 `json:"config_last_reload_success_timestamp_seconds"`
	// CandidateDifferences counts the messages the candidate
	// configuration decided otherwise, by control.
	CandidateDifferences map[string]uint64 `json:"candidate_differences"`
	// Directory is [recipients] verify's lookups; nil with no
	// [directory].
	Directory *DirectorySnapshot `json:"directory,omitempty"`
	// State is the state backend's: bans, rate limits, reachability.
	State StateSnapshot `json:"state"`
	// DNSBLScore is the distribution of DNS list scores ([dns_blacklist]
	// decision = "score"); empty otherwise.
	DNSBLScore HistogramSnapshot `json:"dnsbl_score"`
}

// VerdictCount is the number of verdicts with one stage, action and
// mode: "enforce" for the verdicts given, "shadow" for shadowed refusals
// (counted by the action they would have taken).
type VerdictCount struct {
	Stage  Stage  `json:"stage"`
	Action Action `json:"action"`
	// Control decided the verdict; ControlNone ("") when none fired.
	Control Control `json:"control"`
	Mode    string  `json:"mode"`
	Count   uint64  `json:"count"`
}

// countedControls are the controls verdicts are counted by, in index
// order (controlIndex); any other counts as ControlNone.
var countedControls = [...]Control{ControlNone, ControlAuthenticated, ControlWhitelist, ControlBlacklist,
	ControlConnections, ControlPrivateBlacklist, ControlDNSWhitelist, ControlDNSBlacklist, ControlHelo,
	ControlMailFrom, ControlRecipients, ControlCommands, ControlErrorLimit, ControlBans, ControlRateLimit, ControlGreylist}

const numControls = len(countedControls)

// controlIndex returns ctl's index in countedControls, 0 for unknown. A
// switch rather than a loop of comparisons: it runs at every verdict.
func controlIndex(ctl Control) int {
	switch ctl {
	case ControlAuthenticated:
		return 1
	case ControlWhitelist:
		return 2
	case ControlBlacklist:
		return 3
	case ControlConnections:
		return 4
	case ControlPrivateBlacklist:
		return 5
	case ControlDNSWhitelist:
		return 6
	case ControlDNSBlacklist:
		return 7
	case ControlHelo:
		return 8
	case ControlMailFrom:
		return 9
	case ControlRecipients:
		return 10
	case ControlCommands:
		return 11
	case ControlErrorLimit:
		return 12
	case ControlBans:
		return 13
	case ControlRateLimit:
		return 14
	case ControlGreylist:
		return 15
	}
	return 0
}

// ZoneSnapshot is one DNS list zone's suspension state.
type ZoneSnapshot struct {
	Zone      string `json:"zone"`
	Suspended bool   `json:"suspended"`
	// LastSuspended is when its last suspension started; zero if never.
	LastSuspended time.Time `json:"last_suspended,omitzero"`
}

// SiteSnapshot is one DNS list site's counters.
type SiteSnapshot struct {
	Kind    ListKind `json:"kind"`
	Site    string   `json:"site"`
	Hits    uint64   `json:"hits"`
	Errors  uint64   `json:"errors"`
	Queries uint64   `json:"queries"`
}

// Snapshot copies the counters. Sites are sorted by kind and zone.
func (c *Counters) Snapshot() Snapshot {
	s := Snapshot{
		WhitelistHits:        c.whitelistHits.Load(),
		BlacklistHits:        c.blacklistHits.Load(),
		PrivateBlacklistHits: c.privateBlacklistHits.Load(),
		DNSBLHits:            c.dnsblHits.Load(),
		DNSWLHits:            c.dnswlHits.Load(),
		Controls:             map[string]uint64{},
		ConfigReloads:        map[string]uint64{"ok": c.reloadsOK.Load(), "error": c.reloadsFailed.Load()},
		LastReloadOK:         !c.lastReloadFailed.Load(),
		LastLoaded:           c.lastLoaded.Load(),
	}
	s.CandidateDifferences = map[string]uint64{}
	s.Directory = c.directorySnapshot()
	s.State = c.stateSnapshot()
	s.DNSBLScore = c.dnsblScore.snapshot()
	c.candidateDiffs.Range(func(k, v any) bool {
		s.CandidateDifferences[string(k.(Control))] = v.(*atomic.Uint64).Load()
		return true
	})
	c.controls.Range(func(k, v any) bool {
		s.Controls[string(k.(Control))] = v.(*atomic.Uint64).Load()
		return true
	})
	for st := range numStages {
		for a := range numActions {
			for ci, ctl := range countedControls {
				if n := c.verdicts[st][a][ci].Load(); n > 0 {
					s.Verdicts = append(s.Verdicts, VerdictCount{Stage: st, Action: a, Control: ctl, Mode: "enforce", Count: n})
				}
				if n := c.shadowVerdicts[st][a][ci].Load(); n > 0 {
					s.Verdicts = append(s.Verdicts, VerdictCount{Stage: st, Action: a, Control: ctl, Mode: "shadow", Count: n})
				}
			}
		}
	}
	c.sites.Range(func(k, v any) bool {
		sc, key := v.(*SiteCounters), k.(siteKey)
		s.Sites = append(s.Sites, SiteSnapshot{Kind: key.kind, Site: key.zone, Hits: sc.Hits.Load(), Errors: sc.Errors.Load(), Queries: sc.Queries.Load()})
		return true
	})
	zones := map[string]ZoneSnapshot{}
	for _, site := range s.Sites {
		zones[site.Site] = ZoneSnapshot{Zone: site.Site}
	}
	c.suspended.Range(func(k, v any) bool {
		z := v.(*zoneSuspension)
		z.mu.Lock()
		zs := ZoneSnapshot{Zone: k.(string), Suspended: z.suspended, LastSuspended: z.since}
		z.mu.Unlock()
		zones[zs.Zone] = zs
		if zs.Suspended {
			s.Suspended = append(s.Suspended, zs.Zone)
		}
		return true
	})
	sort.Strings(s.Suspended)
	for _, zs := range zones {
		s.Zones = append(s.Zones, zs)
	}
	sort.Slice(s.Zones, func(i, j int) bool { return s.Zones[i].Zone < s.Zones[j].Zone })
	s.DNSLatency = c.dnsLatency.snapshot()
	s.ZoneLatency = map[string]HistogramSnapshot{}
	c.zoneLatency.Range(func(k, v any) bool {
		s.ZoneLatency[k.(string)] = v.(*Histogram).snapshot()
		return true
	})
	sort.Slice(s.Sites, func(i, j int) bool {
		if s.Sites[i].Kind != s.Sites[j].Kind {
			return s.Sites[i].Kind < s.Sites[j].Kind
		}
		return s.Sites[i].Site < s.Sites[j].Site
	})
	return s
}
