package rules

import (
	"context"
	"strconv"
	"strings"
)

// Helo applies [helo] to a HELO or EHLO command (cmd "HELO" or "EHLO"; ""
// means HELO) with its argument: an empty name when reject_empty is set, or
// a name matching a deny pattern, is refused with 550 5.7.1.
func (e *Engine) heloStage(ctx context.Context, s *Session, cmd, helo string) Verdict {
	cfg := e.cfg.Load()
	v := Verdict{Stage: StageHelo}
	if cmd == "" {
		cmd = "HELO"
	}
	s.Helo = strings.TrimSpace(helo)
	s.heloRefusal = nil // a new HELO/EHLO is judged afresh
	s.heloHeld = false
	if !e.gate(ctx, cfg, s, strings.ToUpper(cmd), &v) && e.checkHelo(cfg, s, &v) && !cfg.Shadowed(ControlHelo) {
		refusal := v
		refusal.Trace = nil
		s.heloRefusal = &refusal
	}
	return e.finish(s, v)
}

// HoldHelo notes a HELO or EHLO for an adapter that delivers HELO
// refusals late (the milter with [server] delay_reject = true): the name
// is recorded and judged at the next stage (MAIL FROM), where an
// authenticated session is exempt, because Postfix and Sendmail both keep
// a HELO reject for the whole session and then hide AUTH. The verdict
// returned never refuses.
func (e *Engine) holdHeloStage(s *Session, cmd, helo string) Verdict {
	v := Verdict{Stage: StageHelo}
	if cmd == "" {
		cmd = "HELO"
	}
	s.Helo = strings.TrimSpace(helo)
	s.heloRefusal = nil
	s.heloHeld, s.heloCmd = true, strings.ToUpper(cmd)
	v.trace(s, ControlHelo, "held", "HELO/EHLO judged at MAIL FROM (delay_reject = true)")
	return e.finish(s, v)
}

// checkHelo applies the [helo] controls to s.Helo.
func (e *Engine) checkHelo(cfg *Config, s *Session, v *Verdict) bool {
	h := &cfg.Helo
	if s.Helo == "" {
		if h.RejectEmpty {
			e.counters.control(ControlHelo)
			v.refuse(ActionReject, 550, "5.7.1", h.Message, ControlHelo, "no or empty HELO/EHLO")
			v.trace(s, ControlHelo, "reject", "no or empty HELO/EHLO and reject_empty = true")
			return true
		}
		v.trace(s, ControlHelo, "no match", "empty HELO/EHLO allowed (reject_empty = false)")
		return false
	}
	if entry, ok := h.Deny.Match(s.Helo); ok {
		e.counters.control(ControlHelo)
		reason := "HELO " + strconv.Quote(s.Helo) + " matches prohibited name " + strconv.Quote(entry)
		v.refuse(ActionReject, 550, "5.7.1", FormatMessage(h.Message, s.fields()), ControlHelo, reason)
		v.trace(s, ControlHelo, "reject", reason)
		return true
	}
	if s.Trace {
		v.trace(s, ControlHelo, "no match", strconv.Quote(s.Helo)+" is not a prohibited name")
	}
	return false
}
