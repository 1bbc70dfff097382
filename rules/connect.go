package rules

import (
	"context"
	"log/slog"
	"net/netip"
	"strconv"
)

// runConnect works out the connect-time controls for a session, in
// Domino's order (DESIGN §3): this function is the one place that order is
// written. The first control that decides ends the walk.
func (e *Engine) runConnect(ctx context.Context, cfg *Config, s *Session) {
	r := &s.connect
	*r = ConnectResult{Done: true}
	t := connectTracer{s: s, r: r}
	wl := e.whitelist(cfg, s, &t) // 1
	switch {
	case wl && cfg.Whitelist.Scope == ScopeAll: // bypasses everything
	case e.banned(cfg, s, &t): // 1a: the bans of [state], right after the whitelist
	case e.blacklist(cfg, s, &t): // 2: Domino's "Deny connections from"
	case e.connectionsAllow(cfg, s, &t): // 2a: "Allow connections only from"
	case wl: // scope lists: Domino's private whitelist skips rows 3–5 only
		t.step(ControlWhitelist, "skip", "scope lists: the private blacklist and the DNS lists are skipped")
	case e.privateBlacklist(cfg, s, &t): // 3: overrides the DNS whitelists
	default:
		e.dnsLists(ctx, cfg, s, &t) // 4 and 5
	}
	if r.Refusal == nil && !wl {
		// [[ratelimit]] count = "connections": only connections that
		// the lists let in are counted.
		v := Verdict{Stage: StageConnect}
		limited := e.rateLimit(ctx, cfg, s, RateCountConnections, &v)
		r.Trace = append(r.Trace, v.Trace...)
		if limited {
			v.Trace = nil
			r.Refusal, r.Reason = &v, v.Reason
		}
	}
}

// matchDeny matches a deny list ([blacklist], [private_blacklist]) as
// Domino does: by address, verified name, and also the PTR name the MTA
// found, verified or not, so that pasted Domino lists hit what they hit
// in Domino.
func matchDeny(h *HostList, s *Session) (string, bool) {
	if entry, ok := h.Match(s.ClientIP, s.ClientName); ok {
		return entry, true
	}
	if s.ClientPTR != "" && s.ClientPTR != s.ClientName {
		return h.Match(netip.Addr{}, s.ClientPTR)
	}
	return "", false
}

// connectionsAllow applies [connections] allow: when the list is not
// empty, a client it does not match (by address or verified name) is
// refused as [blacklist] refuses, with its message.
func (e *Engine) connectionsAllow(cfg *Config, s *Session, t *connectTracer) bool {
	allow := cfg.Connections.Allow
	if allow.Len() == 0 {
		return false
	}
	if entry, ok := allow.Match(s.ClientIP, s.ClientName); ok {
		t.step(ControlConnections, "match", "allowed by [connections] allow entry "+strconv.Quote(entry))
		return false
	}
	e.counters.control(ControlConnections)
	reason := "not in [connections] allow"
	t.refuse(ControlConnections, cfg.Blacklist.Message, reason)
	t.step(ControlConnections, "reject", reason)
	return true
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
	t.refuseWith(ctl, message, t.s.fields(), reason)
}

// refuseWith is refuse with the message's placeholders given.
func (t *connectTracer) refuseWith(ctl Control, message string, f MessageFields, reason string) {
	v := &Verdict{Stage: StageConnect}
	v.refuse(ActionReject, 550, "5.7.1", FormatMessage(message, f), ctl, reason)
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
