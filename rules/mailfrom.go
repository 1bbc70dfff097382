package rules

import (
	"context"
	"strconv"
)

// Mail applies the MAIL FROM controls and starts a new transaction: the
// sender is recorded and the recipient count starts again. A session that
// gave no HELO/EHLO is refused here when [helo] reject_empty is set. A
// sender matching [mail_from] deny is refused with 550 5.7.1, or with
// 421 4.7.1 and the end of the session when disconnect is set.
func (e *Engine) Mail(ctx context.Context, s *Session, from string) Verdict {
	cfg := e.cfg.Load()
	v := Verdict{Stage: StageMail}
	s.ResetMessage()
	s.MailFrom = from
	s.mailSeen = true
	if e.gate(ctx, cfg, s, "MAIL", &v) {
		return e.finish(s, v)
	}
	if s.Helo == "" && cfg.Helo.RejectEmpty {
		e.checkHelo(cfg, s, &v)
		return e.finish(s, v)
	}
	m := &cfg.MailFrom
	if entry, ok := m.Deny.Match(from); ok {
		e.counters.control(ControlMailFrom)
		reason := "sender " + strconv.Quote(from) + " matches prohibited sender " + strconv.Quote(entry)
		text := FormatMessage(m.Message, s.ClientIP.String())
		if m.Disconnect {
			v.refuse(ActionTempfail, 421, "4.7.1", text, ControlMailFrom, reason)
		} else {
			v.refuse(ActionReject, 550, "5.7.1", text, ControlMailFrom, reason)
		}
		v.trace(s, ControlMailFrom, v.Action.String(), reason)
		return e.finish(s, v)
	}
	if s.Trace {
		v.trace(s, ControlMailFrom, "no match", strconv.Quote(from)+" is not a prohibited sender")
	}
	return e.finish(s, v)
}
