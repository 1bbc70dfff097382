package rules

import (
	"context"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"
)

// Engine applies the controls of a configuration to sessions. It is safe
// for concurrent use by any number of sessions. The configuration is one
// immutable value behind an atomic pointer: SetConfig swaps it whole, and
// each stage call loads it once, so a stage sees one configuration, old or
// new, never a mix.
type Engine struct {
	cfg atomic.Pointer[Config]
	dns atomic.Pointer[dnsHolder]
	dir atomic.Pointer[directoryHolder]
	// state holds the bans and the rate limiter (SetState).
	state atomic.Pointer[stateHolder]
	// candidate decides every session too, never answering ([server]
	// candidate); nil when there is none.
	candidate atomic.Pointer[Engine]
	counters  *Counters
	log       *slog.Logger
	obs       Observer
	now       func() time.Time
}

// EngineOptions are an engine's collaborators; every field may be left
// zero.
type EngineOptions struct {
	// DNS queries DNS lists; nil skips them (a trace says so).
	DNS DNSLists
	// Logger receives list matches, refusals and DNS errors; nil discards.
	Logger *slog.Logger
	// Counters receive the statistics; nil makes new ones. Passing them in
	// lets a DNS client built before the engine report into them.
	Counters *Counters
	// Observer sees every verdict and every finished message (logs,
	// metrics); nil for none.
	Observer Observer
	// Now is the clock of message records; nil means time.Now.
	Now func() time.Time
	// Directory answers [recipients] verify; nil makes every verification
	// a directory error (tempfail, or accept with on_error = "accept").
	Directory Directory
	// Bans are the state backend's bans; nil: none.
	Bans BanList
	// Limiter counts [[ratelimit]] rules; nil: no rate limits.
	Limiter RateLimiter
	// Greylist stores [greylist]'s triplets; nil: no greylisting.
	Greylist Greylister
}

// NewEngine returns an engine serving cfg.
func NewEngine(cfg *Config, opts EngineOptions) *Engine {
	e := &Engine{counters: opts.Counters, log: opts.Logger, obs: opts.Observer, now: opts.Now}
	e.SetDNS(opts.DNS)
	e.SetDirectory(opts.Directory)
	e.SetStateGreylist(opts.Bans, opts.Limiter, opts.Greylist)
	if e.now == nil {
		e.now = time.Now
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	if e.counters == nil {
		e.counters = new(Counters)
	}
	e.cfg.Store(cfg)
	return e
}

// Config returns the configuration in force.
func (e *Engine) Config() *Config { return e.cfg.Load() }

// SetConfig swaps in a new configuration. Sessions in flight keep their
// connect-time outcome and go on under the new configuration.
func (e *Engine) SetConfig(cfg *Config) {
	cfg.carryHits(e.cfg.Load())
	e.cfg.Store(cfg)
}

// dnsHolder lets an interface value sit behind an atomic pointer.
type dnsHolder struct{ lists DNSLists }

// SetDNS swaps the DNS list client (a reload that changed [dns]); nil
// turns DNS lists off. Lookups in flight finish with the old client.
func (e *Engine) SetDNS(d DNSLists) { e.dns.Store(&dnsHolder{lists: d}) }

// DNS returns the DNS list client in use, or nil.
func (e *Engine) DNS() DNSLists { return e.dns.Load().lists }

// directoryHolder lets an interface value sit behind an atomic pointer.
type directoryHolder struct{ dir Directory }

// SetDirectory swaps the directory client (a reload that changed
// [directory]); lookups in flight finish with the old one.
func (e *Engine) SetDirectory(d Directory) { e.dir.Store(&directoryHolder{dir: d}) }

// Directory returns the directory client in use, or nil.
func (e *Engine) Directory() Directory { return e.dir.Load().dir }

// Counters returns the engine's statistics.
func (e *Engine) Counters() *Counters { return e.counters }

// Connect runs the connect-time controls (whitelist, blacklist, private
// blacklist, DNS whitelists and blacklists, in Domino's order) and returns
// their verdict: a refusal, a tag, or accept. The outcome is kept in the
// session, so calling Connect again, or any later stage first, does not
// repeat the work. An adapter that delays connect-time refusals (milter
// delay_reject, Postfix's smtpd_delay_reject) ignores a refusal here: every
// later stage returns it again unless the client has authenticated.
func (e *Engine) connectStage(ctx context.Context, s *Session) Verdict {
	cfg := e.cfg.Load()
	v := Verdict{Stage: StageConnect}
	if !s.connect.Done {
		e.runConnect(ctx, cfg, s)
	}
	r := &s.connect
	switch {
	case r.Refusal != nil && !e.exempt(cfg, s):
		v = *r.Refusal
	case len(r.Headers) > 0 && !authExempt(cfg, s):
		v.Action = ActionTag
		v.Headers = r.Headers
		v.Control = tagControl(s)
		v.Reason = r.Reason
	default:
		v.Reason = r.Reason
	}
	v.Logged = r.Logged
	if s.Trace {
		v.Trace = append([]TraceStep(nil), r.Trace...)
	}
	return e.finish(s, v)
}

// Prepare runs the connect-time controls for an adapter that delivers
// their refusal later (the milter with [server] delay_reject = true): a
// refusal is kept in the session, and neither counted, logged nor
// observed, until a later stage delivers it. That stage is MAIL FROM or
// after, where the MTA has told whether the client authenticated: an
// authenticated session (with check_authenticated = false) never gets it,
// and nothing records a refusal nobody saw. A verdict that does not
// refuse (accept, tag) is finished as Connect finishes it. The verdict
// returned never refuses; its trace says when a refusal is held.
func (e *Engine) prepareStage(ctx context.Context, s *Session) Verdict {
	cfg := e.cfg.Load()
	if !s.connect.Done {
		e.runConnect(ctx, cfg, s)
	}
	r := &s.connect
	if r.Refusal == nil || e.exempt(cfg, s) {
		return e.connectStage(ctx, s)
	}
	v := Verdict{Stage: StageConnect, Reason: r.Reason, Logged: r.Logged}
	if s.Trace {
		v.Trace = append([]TraceStep(nil), r.Trace...)
		v.trace(s, r.Refusal.Control, "held", "refusal held until MAIL FROM (delay_reject = true): "+r.Refusal.Reply())
	}
	return v
}

// authExempt reports whether the session is exempt by authentication.
// Tags are dropped only then: a whitelisted client keeps the whitelist's
// own tag (action "tag"), the only tag it can have.
func authExempt(cfg *Config, s *Session) bool {
	return s.Authenticated() && !cfg.Server.CheckAuthenticated
}

// exempt reports whether the session bypasses every control: a client
// whitelisted with scope "all", or an authenticated client while
// check_authenticated is off.
func (e *Engine) exempt(cfg *Config, s *Session) bool {
	return s.connect.Whitelisted && s.connect.Scope == ScopeAll ||
		s.Authenticated() && !cfg.Server.CheckAuthenticated
}

// gate runs what every SMTP command stage checks first: the exemptions, a
// pending connect-time refusal, and the command controls. It reports
// whether it decided the verdict.
func (e *Engine) gate(ctx context.Context, cfg *Config, s *Session, cmd string, v *Verdict) bool {
	if !s.connect.Done {
		e.runConnect(ctx, cfg, s)
	}
	r := &s.connect
	if r.Whitelisted && r.Scope == ScopeAll {
		v.Reason = r.Reason
		v.trace(s, ControlWhitelist, "bypass", "whitelisted with scope all: no control applies")
		return true
	}
	if s.Authenticated() && !cfg.Server.CheckAuthenticated {
		v.Reason = "authenticated as " + s.AuthUser
		v.trace(s, ControlAuthenticated, "exempt", "SASL-authenticated sessions are exempt (check_authenticated = false)")
		return true
	}
	if r.Refusal != nil && cfg.Shadowed(r.Refusal.Control) {
		// Shadowed: reported once, with this stage's verdict, and the
		// stage's own controls still run.
		if !s.connectShadowSent {
			s.connectShadowSent = true
			p := *r.Refusal
			s.shadowPending = &p
		}
	} else if r.Refusal != nil {
		stage := v.Stage
		*v = *r.Refusal
		v.Trace = nil
		if s.Trace {
			v.trace(s, r.Refusal.Control, "reject", "connect-time refusal delivered at "+stage.String()+": "+r.Refusal.Reason)
		}
		return true
	}
	if s.heloHeld {
		// A HELO/EHLO noted by HoldHelo is judged now, at the first
		// command after it; its refusal is then repeated as any other.
		s.heloHeld = false
		hv := Verdict{Stage: StageHelo}
		if !e.denyCommand(cfg, s, s.heloCmd, &hv) {
			e.checkHelo(cfg, s, &hv)
		}
		if hv.Action.Refuses() && cfg.Shadowed(hv.Control) {
			hv.Trace = nil
			s.shadowPending = &hv
		} else if hv.Action.Refuses() {
			stage := v.Stage
			refusal := hv
			refusal.Trace = nil
			s.heloRefusal = &refusal
			*v = hv
			v.trace(s, ControlHelo, "reject", "HELO/EHLO refusal delivered at "+stage.String()+" (delay_reject = true)")
			return true
		}
		v.Trace = append(v.Trace, hv.Trace...)
	}
	if s.heloRefusal != nil && v.Stage != StageHelo {
		stage := v.Stage
		*v = *s.heloRefusal
		v.Trace = nil
		v.Repeated = true
		if s.Trace {
			v.trace(s, ControlHelo, "reject", "HELO/EHLO refused earlier, at "+stage.String()+": "+s.heloRefusal.Reason)
		}
		return true
	}
	return cmd != "" && e.denyCommand(cfg, s, cmd, v)
}

// denyCommand applies [commands] to cmd: a command not permitted is
// refused with 502 5.5.1.
func (e *Engine) denyCommand(cfg *Config, s *Session, cmd string, v *Verdict) bool {
	if !cfg.Commands.Permitted(cmd) {
		e.counters.control(ControlCommands)
		v.refuse(ActionReject, 502, "5.5.1", "Command not permitted", ControlCommands, "command "+cmd+" is not permitted")
		if s.Trace {
			v.trace(s, ControlCommands, "reject", cmd+" is denied by [commands]")
		}
		return true
	}
	if s.Trace && (len(cfg.Commands.Deny) > 0 || len(cfg.Commands.Allow) > 0) {
		v.trace(s, ControlCommands, "no match", cmd+" is permitted")
	}
	return false
}

// finish counts, logs and observes a verdict on its way out. It also
// applies [server] error_limit (Domino's SMTPErrorLimit): once the session
// has had that many refusals, the next one becomes 421 4.7.0 and ends it.
// A tempfail of a recipient (452 for too many, 451 when the directory
// could not answer, 450 greylisted) is not an error of the client's and
// does not count.
func (e *Engine) finish(s *Session, v Verdict) Verdict {
	cfg := e.cfg.Load()
	if v.Action.Refuses() && cfg.Shadowed(v.Control) {
		e.shadow(s, &v, v)
		if v.Stage == StageConnect {
			s.connectShadowSent = true
		}
	} else if p := s.shadowPending; p != nil && !v.Action.Refuses() {
		s.shadowPending = nil
		e.shadow(s, &v, *p)
	}
	limited := false
	if v.Action.Refuses() && !(v.Action == ActionTempfail && (v.Control == ControlRecipients || v.Control == ControlGreylist)) {
		if limit := cfg.Server.ErrorLimit; limit > 0 {
			if s.errors >= limit && v.Code != 421 {
				e.counters.control(ControlErrorLimit)
				prev := v.Reason
				v.refuse(ActionTempfail, 421, "4.7.0", "Too many errors; closing the connection", ControlErrorLimit,
					"error limit of "+strconv.Itoa(limit)+" reached; this refusal was: "+prev)
				v.Repeated, limited = false, true
				v.trace(s, ControlErrorLimit, "disconnect", v.Reason)
			}
			s.errors++
		}
	}
	if v.Stage == StageConnect && v.Action.Refuses() && !limited {
		v.Repeated = s.connectRefusalSent
		s.connectRefusalSent = true
	}
	e.counters.verdict(&v)
	s.noteOutcome(&v)
	if e.obs != nil {
		s.updated = e.now()
		e.obs.Verdict(s, v)
	}
	if e.log.Enabled(context.Background(), slog.LevelDebug) {
		// [log] level = "debug": one line per decision, with the deciding
		// control and its reason (which names the entry).
		e.log.Debug("verdict",
			slog.String("session", s.ID),
			slog.String("client", s.ClientIP.String()),
			slog.String("stage", v.Stage.String()),
			slog.String("action", v.Action.String()),
			slog.String("control", string(v.Control)),
			slog.Int("code", v.Code),
			slog.Bool("shadow", v.Shadow),
			slog.String("reason", v.Reason))
	}
	if v.Action.Refuses() && !v.Repeated && e.log.Enabled(context.Background(), slog.LevelInfo) {
		e.log.Info("refused",
			slog.String("session", s.ID),
			slog.String("client", s.ClientIP.String()),
			slog.String("stage", v.Stage.String()),
			slog.String("control", string(v.Control)),
			slog.Int("code", v.Code),
			slog.String("reason", v.Reason))
	}
	return v
}

// refuse sets a refusal on the verdict.
func (v *Verdict) refuse(a Action, code int, enh, text string, ctl Control, reason string) {
	v.Action, v.Code, v.EnhancedCode, v.Text, v.Control, v.Reason = a, code, enh, text, ctl, reason
	v.Disconnect = code == 421
}

// trace appends a step when the session asks for a trace.
func (v *Verdict) trace(s *Session, ctl Control, result, detail string) {
	if s.Trace {
		v.Trace = append(v.Trace, TraceStep{Stage: v.Stage, Control: ctl, Result: result, Detail: detail})
	}
}

// Exempt reports whether the session bypasses every control now: a client
// whitelisted with scope "all", or an authenticated client while
// check_authenticated is off. Adapters that remember a refusal across
// requests ask it before repeating one, since a client may authenticate
// after it was refused.
func (e *Engine) Exempt(s *Session) bool {
	if !s.connect.Done {
		return s.Authenticated() && !e.cfg.Load().Server.CheckAuthenticated
	}
	return e.exempt(e.cfg.Load(), s)
}

// Tags returns the tag headers the session's messages carry: the
// connect-time tags, unless the session is exempt by authentication.
// Adapters add them once per message.
func (e *Engine) Tags(s *Session) []Header {
	if s.greyHeader != "" {
		// A message that waited in greylisting says so (postgrey's
		// X-Greylist), after the session's own tags.
		h := make([]Header, 0, len(s.connect.Headers)+1)
		if !authExempt(e.cfg.Load(), s) {
			h = append(h, s.connect.Headers...)
		}
		return append(h, Header{Name: "X-Greylist", Value: s.greyHeader})
	}
	if len(s.connect.Headers) == 0 || authExempt(e.cfg.Load(), s) {
		return nil
	}
	return s.connect.Headers
}

// shadow turns v into the accepting verdict that reports the shadowed
// refusal r: v keeps its stage, headers and trace, becomes accept (tag
// when it carries headers) and takes r's reply, control and reason with
// Shadow set. The refusal is logged ("would refuse") and counted with
// mode "shadow" once (a repeated one is not counted again), and
// remembered for the session log. fail2ban never sees it: it only logs
// refusals given.
func (e *Engine) shadow(s *Session, v *Verdict, r Verdict) {
	e.counters.shadowVerdict(&r)
	if !r.Repeated && e.log.Enabled(context.Background(), slog.LevelInfo) {
		e.log.Info("would refuse",
			slog.String("session", s.ID),
			slog.String("client", s.ClientIP.String()),
			slog.String("stage", r.Stage.String()),
			slog.String("control", string(r.Control)),
			slog.Int("code", r.Code),
			slog.String("reason", r.Reason))
	}
	v.Action = ActionAccept
	if len(v.Headers) > 0 {
		v.Action = ActionTag
	}
	v.Code, v.EnhancedCode, v.Text, v.Control, v.Reason = r.Code, r.EnhancedCode, r.Text, r.Control, r.Reason
	v.Disconnect, v.Shadow = false, true
	v.trace(s, r.Control, "shadow", "would refuse with "+r.Reply()+" (mode = \"shadow\"); accepted")
	if s.wouldRefuse == nil {
		w := r
		w.Trace = nil
		s.wouldRefuse = &w
	}
	if !s.hasOutcome {
		s.outcome, s.hasOutcome = *v, true
		s.outcome.Trace = nil
	}
}
