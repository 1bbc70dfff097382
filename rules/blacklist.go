package rules

import "strconv"

// blacklist applies [blacklist] (DESIGN §3 row 2): a match refuses the
// client with 550 5.7.1 and the configured message. It applies to clients
// whitelisted with scope "lists" too, as Domino's "Deny connections from"
// does.
func (e *Engine) blacklist(cfg *Config, s *Session, t *connectTracer) bool {
	entry, ok := matchDeny(cfg.Blacklist.Hosts, s)
	if !ok {
		t.step(ControlBlacklist, "no match", "")
		return false
	}
	e.counters.blacklistHits.Add(1)
	e.counters.control(ControlBlacklist)
	reason := "blacklist entry " + strconv.Quote(entry)
	t.refuse(ControlBlacklist, cfg.Blacklist.Message, reason)
	t.step(ControlBlacklist, "reject", reason)
	return true
}
