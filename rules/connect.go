package rules

import (
	"context"
	"log/slog"
)

// runConnect works out the connect-time controls for a session, in
// Domino's order (DESIGN §3): this function is the one place that order is
// written. The first control that decides ends the walk.
func (e *Engine) runConnect(ctx context.Context, cfg *Config, s *Session) {
	r := &s.connect
	*r = ConnectResult{Done: true}
	t := connectTracer{s: s, r: r}
	switch {
	case e.whitelist(cfg, s, &t): // 1: bypasses rows 2–5 in both scopes
	case e.blacklist(cfg, s, &t): // 2
	case e.privateBlacklist(cfg, s, &t): // 3: overrides the DNS whitelists
	default:
		e.dnsLists(ctx, cfg, s, &t) // 4 and 5
	}
}

// connectTracer records connect-stage trace steps in the session.
type connectTracer struct {
	s *Session
	r *ConnectResult
}

func (t *connectTracer) step(ctl Control, result, detail string) {
	if t.s.Trace {
		t.r.Trace = append(t.r.Trace, TraceStep{Stage: StageConnect, Control: ctl, Result: result, Detail: detail})
	}
}

// refuse records a connect-time refusal with a 550 5.7.1 reply.
func (t *connectTracer) refuse(ctl Control, message, reason string) {
	v := &Verdict{Stage: StageConnect}
	v.refuse(ActionReject, 550, "5.7.1", FormatMessage(message, t.s.ClientIP.String()), ctl, reason)
	t.r.Refusal = v
	t.r.Reason = reason
}

// logHit logs a list match that did not refuse (the log and tag actions).
func (e *Engine) logHit(s *Session, ctl Control, action ListAction, reason string) {
	e.log.Info("list match",
		slog.String("session", s.ID),
		slog.String("client", s.ClientIP.String()),
		slog.String("client_name", s.ClientName),
		slog.String("control", string(ctl)),
		slog.String("action", action.String()),
		slog.String("reason", reason))
}
