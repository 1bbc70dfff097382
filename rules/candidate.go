package rules

import (
	"context"
	"log/slog"
	"strconv"
)

// The public stage methods: each runs the stage under the configuration
// in force and, when a candidate engine is set ([server] candidate), under
// the candidate too, on a session of its own that mirrors what the
// adapter put into s. The candidate never answers: where it decides
// otherwise, the difference is logged once per message, written to the
// session log and counted.

// Connect runs the connect-time controls (whitelist, blacklist, private
// blacklist, DNS whitelists and blacklists, in Domino's order) and returns
// their verdict: a refusal, a tag, or accept. The outcome is kept in the
// session, so calling Connect again, or any later stage first, does not
// repeat the work.
func (e *Engine) Connect(ctx context.Context, s *Session) Verdict {
	v := e.connectStage(ctx, s)
	if c := e.cand(s); c != nil {
		e.compare(s, v, c.connectStage(ctx, s.cand))
	}
	return v
}

// Prepare runs the connect-time controls for an adapter that delivers
// their refusal later (the milter with [server] delay_reject = true); see
// prepareStage.
func (e *Engine) Prepare(ctx context.Context, s *Session) Verdict {
	v := e.prepareStage(ctx, s)
	if c := e.cand(s); c != nil {
		e.compare(s, v, c.prepareStage(ctx, s.cand))
	}
	return v
}

// Helo applies [helo] to a HELO or EHLO command; see heloStage.
func (e *Engine) Helo(ctx context.Context, s *Session, cmd, helo string) Verdict {
	v := e.heloStage(ctx, s, cmd, helo)
	if c := e.cand(s); c != nil {
		e.compare(s, v, c.heloStage(ctx, s.cand, cmd, helo))
	}
	return v
}

// HoldHelo notes a HELO or EHLO to judge at MAIL FROM; see holdHeloStage.
func (e *Engine) HoldHelo(s *Session, cmd, helo string) Verdict {
	v := e.holdHeloStage(s, cmd, helo)
	if c := e.cand(s); c != nil {
		c.holdHeloStage(s.cand, cmd, helo)
	}
	return v
}

// Mail applies the MAIL FROM controls and starts a transaction; see
// mailStage.
func (e *Engine) Mail(ctx context.Context, s *Session, from string) Verdict {
	v := e.mailStage(ctx, s, from)
	if c := e.cand(s); c != nil {
		e.compare(s, v, c.mailStage(ctx, s.cand, from))
	}
	return v
}

// Rcpt applies the [recipients] controls to one RCPT TO; see rcptStage.
func (e *Engine) Rcpt(ctx context.Context, s *Session, rcpt string) Verdict {
	v := e.rcptStage(ctx, s, rcpt)
	if c := e.cand(s); c != nil {
		e.compare(s, v, c.rcptStage(ctx, s.cand, rcpt))
	}
	return v
}

// Data applies the DATA command control; see dataStage.
func (e *Engine) Data(ctx context.Context, s *Session) Verdict {
	v := e.dataStage(ctx, s)
	if c := e.cand(s); c != nil {
		e.compare(s, v, c.dataStage(ctx, s.cand))
	}
	return v
}

// Command applies [commands] to a command; see commandStage.
func (e *Engine) Command(ctx context.Context, s *Session, cmd string) Verdict {
	v := e.commandStage(ctx, s, cmd)
	if c := e.cand(s); c != nil {
		e.compare(s, v, c.commandStage(ctx, s.cand, cmd))
	}
	return v
}

// EndMessage tells the observers that a message, or a session refused
// before it sent one, is over; see endMessage.
func (e *Engine) EndMessage(s *Session) {
	e.endMessage(s)
	if s.cand != nil {
		s.cand.ResetMessage()
	}
	s.candNoted = ""
}

// SetCandidate sets (nil: removes) the candidate engine, which decides
// every session too but never answers. It gets no observer; its own
// counters are its business.
func (e *Engine) SetCandidate(c *Engine) { e.candidate.Store(c) }

// cand returns the candidate engine, with s.cand brought up to date with
// what the adapter set in s, or nil when there is none.
func (e *Engine) cand(s *Session) *Engine {
	c := e.candidate.Load()
	if c == nil {
		return nil
	}
	if s.cand == nil {
		s.cand = &Session{}
	}
	m := s.cand
	m.ID, m.ClientIP, m.ClientName, m.ClientPTR, m.PTRKnown, m.AuthUser = s.ID, s.ClientIP, s.ClientName, s.ClientPTR, s.PTRKnown, s.AuthUser
	return c
}

// compare notes where the candidate decided otherwise than the
// configuration in force: once per message, a log line, the session-log
// field and the counter.
func (e *Engine) compare(s *Session, v, cv Verdict) {
	if s.candNoted != "" || sameDecision(v, cv) {
		return
	}
	ctl := cv.Control
	how := decision(cv)
	if cv.Action.Refuses() {
		if entry := entryOf(cv.Reason); entry != "" {
			how += " " + strconv.Quote(entry)
		}
	} else {
		ctl = v.Control
		how += " (live: " + decision(v) + ")"
	}
	s.candNoted = how
	e.counters.candidateDifference(ctl)
	e.log.Info("candidate differs",
		slog.String("session", s.ID),
		slog.String("client", s.ClientIP.String()),
		slog.String("stage", v.Stage.String()),
		slog.String("candidate", how))
}

// sameDecision reports whether two verdicts do the same to the client:
// both accept (tags and shadowed refusals included), or both refuse the
// same way by the same control. It builds no string: it runs at every
// stage while a candidate is set.
func sameDecision(a, b Verdict) bool {
	if !a.Action.Refuses() || !b.Action.Refuses() {
		return a.Action.Refuses() == b.Action.Refuses()
	}
	return a.Action == b.Action && a.Control == b.Control
}
