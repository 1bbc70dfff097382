package rules

import "strconv"

// whitelist applies [whitelist] (DESIGN §3 row 1). A match bypasses the
// black and DNS lists in both scopes; with scope "all" the engine's gate
// also bypasses every later control.
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
	t.step(ControlWhitelist, "match", t.r.Reason)
	return true
}
