package rules

import "strconv"

// privateBlacklist applies [private_blacklist] (DESIGN §3 row 3) with its
// log, tag or reject action. A match ends the connect-time walk: a host in
// the private blacklist is never looked up in DNS lists, so a DNS whitelist
// cannot override it.
func (e *Engine) privateBlacklist(cfg *Config, s *Session, t *connectTracer) bool {
	pb := &cfg.PrivateBlacklist
	if !pb.Enabled {
		t.step(ControlPrivateBlacklist, "skipped", "enabled = false")
		return false
	}
	entry, ok := matchDeny(pb.Hosts, s)
	if !ok {
		t.step(ControlPrivateBlacklist, "no match", "")
		return false
	}
	e.counters.privateBlacklistHits.Add(1)
	e.counters.control(ControlPrivateBlacklist)
	reason := "private blacklist entry " + strconv.Quote(entry)
	switch pb.Action {
	case ListReject:
		t.refuse(ControlPrivateBlacklist, pb.Message, reason)
	case ListTag:
		t.r.Headers = append(t.r.Headers, Header{Name: cfg.Tags.DNSBLHeader, Value: "PrivateBlacklist"})
		t.r.Logged = true
		t.r.Reason = reason
		e.logHit(s, ControlPrivateBlacklist, pb.Action, reason)
	case ListGreylist:
		t.r.Greylist, t.r.Logged = true, true
		t.r.Reason = reason
		e.logHit(s, ControlPrivateBlacklist, pb.Action, reason)
	default: // ListLog
		t.r.Logged = true
		t.r.Reason = reason
		e.logHit(s, ControlPrivateBlacklist, pb.Action, reason)
	}
	t.step(ControlPrivateBlacklist, pb.Action.String(), reason)
	return true
}
