package rules

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"sync"
)

// siteStatus is what one DNS list's answer means for a client.
type siteStatus uint8

const (
	siteNotListed siteStatus = iota
	siteListed
	siteError
	siteSuspended // its health probe failed: not asked, not counted
)

// siteResult is one DNS list's answer, classified.
type siteResult struct {
	status siteStatus
	listed []netip.Addr // answers that count (inside the filter, not error codes)
	txt    string
	detail string // for errors: what went wrong
	err    error
}

// classify decides what a DNS list's answer means (DESIGN §3): answers
// inside the site's filter list the client; known error codes and answers
// outside the filter are list errors, never listings; a failed query is an
// error and the client counts as not listed.
func classify(site *DNSSite, ans DNSAnswer, err error) siteResult {
	if errors.Is(err, ErrSiteSuspended) {
		return siteResult{status: siteSuspended, detail: "suspended by its health probe", err: err}
	}
	if err != nil {
		return siteResult{status: siteError, detail: "query failed: " + err.Error(), err: err}
	}
	var listed []netip.Addr
	var bad []string
	for _, a := range ans.Addrs {
		switch {
		case IsDNSListErrorCode(a):
			bad = append(bad, "error code "+a.String())
		case site.Accepts(a):
			listed = append(listed, a)
		default:
			bad = append(bad, "answer "+a.String()+" outside the filter")
		}
	}
	switch {
	case len(listed) > 0:
		return siteResult{status: siteListed, listed: listed, txt: ans.TXT}
	case len(bad) > 0:
		return siteResult{status: siteError, detail: strings.Join(bad, ", ")}
	}
	return siteResult{status: siteNotListed}
}

// queryAll asks every site at once and waits for all answers: the connect
// stage takes as long as the slowest list, not the sum of them.
func (e *Engine) queryAll(ctx context.Context, dns DNSLists, ip netip.Addr, sites []*DNSSite) []siteResult {
	out := make([]siteResult, len(sites))
	if len(sites) == 1 {
		ans, err := dns.Query(ctx, sites[0].Zone, ip)
		out[0] = classify(sites[0], ans, err)
		return out
	}
	var wg sync.WaitGroup
	for i, site := range sites {
		wg.Go(func() {
			ans, err := dns.Query(ctx, site.Zone, ip)
			out[i] = classify(site, ans, err)
		})
	}
	wg.Wait()
	return out
}

// dnsLists applies [dns_whitelist] and [dns_blacklist] (DESIGN §3 rows 4
// and 5). The first whitelist in configured order that lists the client
// wins and the blacklists are not counted; otherwise the first blacklist in
// order that lists it decides.
func (e *Engine) dnsLists(ctx context.Context, cfg *Config, s *Session, t *connectTracer) {
	var sites []*DNSSite
	if cfg.DNSWhitelist.Enabled {
		for i := range cfg.DNSWhitelist.Sites {
			sites = append(sites, &cfg.DNSWhitelist.Sites[i])
		}
	} else {
		t.step(ControlDNSWhitelist, "skipped", "enabled = false")
	}
	nwl := len(sites)
	if cfg.DNSBlacklist.Enabled {
		for i := range cfg.DNSBlacklist.Sites {
			sites = append(sites, &cfg.DNSBlacklist.Sites[i])
		}
	} else {
		t.step(ControlDNSBlacklist, "skipped", "enabled = false")
	}
	if len(sites) == 0 {
		return
	}
	dns := e.DNS()
	if dns == nil || !s.ClientIP.IsValid() {
		detail := "no DNS client"
		if !s.ClientIP.IsValid() {
			detail = "no client IP address"
		}
		t.step(ControlDNSWhitelist, "skipped", detail)
		t.step(ControlDNSBlacklist, "skipped", detail)
		return
	}
	results := e.queryAll(ctx, dns, s.ClientIP, sites)
	if cfg.DNSBlacklist.Score && cfg.DNSBlacklist.Enabled {
		e.scoreLists(cfg, s, t, sites, nwl, results)
		return
	}

	for i := 0; i < nwl; i++ {
		if e.dnsSite(cfg, s, t, DNSWL, ControlDNSWhitelist, sites[i], results[i]) {
			if len(sites) > nwl {
				t.step(ControlDNSBlacklist, "skipped", "client is on a DNS whitelist")
			}
			return
		}
	}
	for i := nwl; i < len(sites); i++ {
		if e.dnsSite(cfg, s, t, DNSBL, ControlDNSBlacklist, sites[i], results[i]) {
			return
		}
	}
}

// scoreLists is [dns_blacklist] decision = "score" (postscreen's
// weights): every site's listing adds its weight (a DNS whitelist's
// subtracts it; an error or a suspended list adds nothing); a sum at or
// above threshold applies the blacklist action, with the score and the
// sites in the reason and the tag header; a sum at or below a negative
// allow_threshold counts as DNS-whitelisted.
func (e *Engine) scoreLists(cfg *Config, s *Session, t *connectTracer, sites []*DNSSite, nwl int, results []siteResult) {
	score := 0
	var bl, wl []string
	var firstBL, firstWL *DNSListing
	for i, site := range sites {
		kind, ctl := DNSBL, ControlDNSBlacklist
		if i < nwl {
			kind, ctl = DNSWL, ControlDNSWhitelist
		}
		listing := e.countSite(s, t, kind, ctl, site, results[i])
		if listing == nil {
			continue
		}
		w := site.Weight
		if kind == DNSWL {
			if w > 0 {
				w = -w
			}
			wl = append(wl, site.Zone)
			if firstWL == nil {
				firstWL = listing
			}
		} else {
			bl = append(bl, site.Zone)
			if firstBL == nil {
				firstBL = listing
			}
		}
		score += w
		t.r.Scored = append(t.r.Scored, ScoredListing{Kind: kind, Listing: listing})
		t.step(ctl, "listed", site.Name+" lists "+s.ClientIP.String()+": "+strconv.Itoa(w)+", score "+strconv.Itoa(score))
	}
	e.counters.dnsblScore.Observe(score)
	db := &cfg.DNSBlacklist
	names := strings.Join(append(append([]string(nil), bl...), wl...), ", ")
	switch {
	case score >= db.Threshold:
		reason := "DNS list score " + strconv.Itoa(score) + " reaches threshold " + strconv.Itoa(db.Threshold) + " (" + names + ")"
		e.applyDNSBL(cfg, s, t, firstBL, Header{Name: ScoreHeader, Value: strconv.Itoa(score) + " (" + names + ")"}, strings.Join(bl, ", "), reason)
	case db.AllowThreshold < 0 && score <= db.AllowThreshold && firstWL != nil:
		reason := "DNS list score " + strconv.Itoa(score) + " at or below allow_threshold " + strconv.Itoa(db.AllowThreshold) + " (" + names + ")"
		e.applyDNSWL(cfg, s, t, firstWL, strings.Join(wl, ", "), reason)
	default:
		t.step(ControlDNSBlacklist, "below threshold", "score "+strconv.Itoa(score)+" is below threshold "+strconv.Itoa(db.Threshold))
	}
}

// ScoreHeader is the tag header of decision = "score": the score and the
// sites that listed the client.
const ScoreHeader = "X-DNSBL-Score"

// countSite counts one site's result (queries, errors, hits) and returns
// its listing, or nil when it did not list the client (an error counts
// as not listed).
func (e *Engine) countSite(s *Session, t *connectTracer, kind ListKind, ctl Control, site *DNSSite, res siteResult) *DNSListing {
	sc := e.counters.Site(kind, site.Zone)
	switch res.status {
	case siteSuspended:
		// The prober logged it as an error when it suspended the list.
		t.step(ctl, "skipped", site.Name+": "+res.detail)
		return nil
	}
	sc.Queries.Add(1)
	switch res.status {
	case siteNotListed:
		t.step(ctl, "not listed", site.Name)
		return nil
	case siteError:
		sc.Errors.Add(1)
		t.r.DNSErrors = append(t.r.DNSErrors, site.Zone)
		level := slog.LevelWarn
		if errors.Is(res.err, context.Canceled) {
			level = slog.LevelDebug
		}
		e.log.Log(context.Background(), level, "dns list error",
			slog.String("session", s.ID),
			slog.String("client", s.ClientIP.String()),
			slog.String("site", site.Name),
			slog.String("error", res.detail))
		t.step(ctl, "error", site.Name+": "+res.detail+"; counted as not listed")
		return nil
	}
	sc.Hits.Add(1)
	if kind == DNSWL {
		e.counters.dnswlHits.Add(1)
	} else {
		e.counters.dnsblHits.Add(1)
	}
	e.counters.expanded.hit(kind, site.Zone, s.ClientIP)
	return &DNSListing{Site: site.Name, Zone: site.Zone, Answers: res.listed, TXT: res.txt}
}

// dnsSite counts and applies one site's result (decision = "first"); it
// reports whether the site listed the client (and so decided).
func (e *Engine) dnsSite(cfg *Config, s *Session, t *connectTracer, kind ListKind, ctl Control, site *DNSSite, res siteResult) bool {
	listing := e.countSite(s, t, kind, ctl, site, res)
	if listing == nil {
		return false
	}
	reason := string(kind) + " " + site.Zone + " lists " + s.ClientIP.String() + " (" + joinAddrs(res.listed) + ")"
	if res.txt != "" {
		reason += ": " + res.txt
	}
	if kind == DNSWL {
		e.applyDNSWL(cfg, s, t, listing, site.Zone, reason)
	} else {
		e.applyDNSBL(cfg, s, t, listing, Header{Name: cfg.Tags.DNSBLHeader, Value: site.Zone}, site.Zone, reason)
	}
	return true
}

// applyDNSWL applies [dns_whitelist] action for a client its listing (or
// a score at or below allow_threshold) whitelists; sites is the header
// value of the tag action.
func (e *Engine) applyDNSWL(cfg *Config, s *Session, t *connectTracer, listing *DNSListing, sites, reason string) {
	e.counters.control(ControlDNSWhitelist)
	r := t.r
	listing.Action = cfg.DNSWhitelist.Action
	r.DNSWL, r.Reason = listing, reason
	switch cfg.DNSWhitelist.Action {
	case ListTag:
		r.Headers = append(r.Headers, Header{Name: cfg.Tags.DNSWLHeader, Value: sites})
		r.Logged = true
		e.logHit(s, ControlDNSWhitelist, ListTag, reason)
	case ListLog:
		r.Logged = true
		e.logHit(s, ControlDNSWhitelist, ListLog, reason)
	}
	t.step(ControlDNSWhitelist, cfg.DNSWhitelist.Action.String(), reason)
}

// applyDNSBL applies [dns_blacklist] action for a client its listing (or
// its score) condemns: tag adds header, reject refuses with the message
// (sites is its second %s).
func (e *Engine) applyDNSBL(cfg *Config, s *Session, t *connectTracer, listing *DNSListing, header Header, sites, reason string) {
	e.counters.control(ControlDNSBlacklist)
	r := t.r
	db := &cfg.DNSBlacklist
	listing.Action = db.Action
	r.DNSBL, r.Reason = listing, reason
	switch db.Action {
	case ListReject:
		t.refuseWith(ControlDNSBlacklist, db.Message, MessageFields{IP: s.ClientIP.String(), Site: sites, Reason: listing.TXT}, reason)
	case ListTag:
		r.Headers = append(r.Headers, header)
		r.Logged = true
		e.logHit(s, ControlDNSBlacklist, ListTag, reason)
	case ListGreylist:
		r.Greylist, r.Logged = true, true
		e.logHit(s, ControlDNSBlacklist, ListGreylist, reason)
	default:
		r.Logged = true
		e.logHit(s, ControlDNSBlacklist, ListLog, reason)
	}
	t.step(ControlDNSBlacklist, db.Action.String(), reason)
}

func joinAddrs(addrs []netip.Addr) string {
	parts := make([]string, len(addrs))
	for i, a := range addrs {
		parts[i] = a.String()
	}
	return strings.Join(parts, ", ")
}
