package rules

import (
	"context"
	"strconv"
)

// Rcpt applies the [recipients] controls to one RCPT TO: a prohibited
// recipient is refused with 550 5.7.1; with verify, one the Domino
// Directory does not know with 550 5.1.1 (see verifyRecipient), before
// max is looked at, so unknown recipients do not count towards it; once
// max recipients have been
// accepted, each further one gets 452 4.5.3 (the client may send them in a
// later transaction). An accepted recipient is counted in the session.
// The deny list is checked first, so a prohibited recipient always gets
// the permanent answer; then, when [recipients] allow is not empty, a
// recipient it does not list is refused with 550 5.7.1 (Domino's "Allow
// messages intended only for").
func (e *Engine) rcptStage(ctx context.Context, s *Session, rcpt string) Verdict {
	cfg := e.cfg.Load()
	v := Verdict{Stage: StageRcpt}
	if e.gate(ctx, cfg, s, "RCPT", &v) {
		if !v.Action.Refuses() {
			e.rateLimit(ctx, cfg, s, RateCountRecipients, &v)
		}
		return e.rcptDone(s, rcpt, v)
	}
	r := &cfg.Recipients
	if entry, ok := r.Deny.Match(rcpt); ok {
		e.counters.control(ControlRecipients)
		reason := "recipient " + strconv.Quote(rcpt) + " matches prohibited recipient " + strconv.Quote(entry)
		v.refuse(ActionReject, 550, "5.7.1", FormatMessage(r.Message, s.fields()), ControlRecipients, reason)
		v.trace(s, ControlRecipients, "reject", reason)
		return e.rcptDone(s, rcpt, v)
	}
	if r.Allow.Len() > 0 {
		entry, ok := r.Allow.Match(rcpt)
		if !ok {
			e.counters.control(ControlRecipients)
			reason := "recipient " + strconv.Quote(rcpt) + " is not in [recipients] allow"
			v.refuse(ActionReject, 550, "5.7.1", FormatMessage(r.Message, s.fields()), ControlRecipients, reason)
			v.trace(s, ControlRecipients, "reject", reason)
			return e.rcptDone(s, rcpt, v)
		}
		v.trace(s, ControlRecipients, "match", strconv.Quote(rcpt)+" is allowed by [recipients] allow entry "+strconv.Quote(entry))
	}
	if r.Verify && e.verifyRecipient(ctx, cfg, s, rcpt, &v) {
		return e.rcptDone(s, rcpt, v)
	}
	if r.Max > 0 && len(s.Recipients) >= r.Max {
		e.counters.control(ControlRecipients)
		reason := "more than " + strconv.Itoa(r.Max) + " recipients"
		v.refuse(ActionTempfail, 452, "4.5.3", "Too many recipients", ControlRecipients, reason)
		v.trace(s, ControlRecipients, "tempfail", reason)
		return e.rcptDone(s, rcpt, v)
	}
	if s.Trace {
		detail := strconv.Quote(rcpt) + " is not a prohibited recipient"
		if r.Max > 0 {
			detail += "; recipient " + strconv.Itoa(len(s.Recipients)+1) + " of at most " + strconv.Itoa(r.Max)
		}
		v.trace(s, ControlRecipients, "no match", detail)
	}
	if e.greylist(ctx, cfg, s, rcpt, &v) {
		return e.rcptDone(s, rcpt, v)
	}
	e.rateLimit(ctx, cfg, s, RateCountRecipients, &v)
	return e.rcptDone(s, rcpt, v)
}

// rcptDone records the recipient as accepted or refused.
func (e *Engine) rcptDone(s *Session, rcpt string, v Verdict) Verdict {
	if v.Action.Refuses() && !e.cfg.Load().Shadowed(v.Control) {
		s.Refused = append(s.Refused, rcpt)
	} else {
		s.Recipients = append(s.Recipients, rcpt)
	}
	return e.finish(s, v)
}
