package rules

import "strconv"

// whitelist applies [whitelist] (DESIGN §3 row 1), matching the address
// and the verified name only (never the unverified PTR name: whoever owns
// an address sets its PTR). A match with scope "all" bypasses every later
// control; with scope "lists" (Domino's private whitelist) only the
// private blacklist and the DNS lists. The action says whether the match
// is logged, and tagged with the DNSWL header "PrivateWhitelist" (Domino's
// $DNSWLSite value).
func (e *Engine) whitelist(cfg *Config, s *Session, t *connectTracer) bool {
	entry, ok := cfg.Whitelist.Hosts.Match(s.ClientIP, s.ClientName)
	if !ok {
		t.step(ControlWhitelist, "no match", "")
		return false
	}
	e.counters.whitelistHits.Add(1)
	e.counters.control(ControlWhitelist)
	t.r.Whitelisted = true
	t.r.Scope = cfg.Whitelist.Scope
	t.r.Reason = "whitelist entry " + strconv.Quote(entry) + " (scope " + cfg.Whitelist.Scope.String() + ")"
	switch cfg.Whitelist.Action {
	case ListTag:
		t.r.Headers = append(t.r.Headers, Header{Name: cfg.Tags.DNSWLHeader, Value: "PrivateWhitelist"})
		t.r.Logged = true
		e.logHit(s, ControlWhitelist, ListTag, t.r.Reason)
	case ListLog:
		t.r.Logged = true
		e.logHit(s, ControlWhitelist, ListLog, t.r.Reason)
	}
	t.step(ControlWhitelist, "match", t.r.Reason+", action "+cfg.Whitelist.Action.String())
	return true
}
