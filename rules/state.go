package rules

import (
	"context"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// BanList answers whether a client is banned: the state backend's bans,
// read from its local replica, so the engine never waits on the network
// to learn them. cmd adapts the state package's backend to it.
type BanList interface {
	// Banned returns the ban covering ip, the longest prefix winning.
	Banned(ip netip.Addr) (Ban, bool)
}

// Ban is one dynamic deny entry, as the engine reports it.
type Ban struct {
	Prefix  netip.Prefix
	Reason  string
	Creator string
	// Expires is when the ban ends; zero: never.
	Expires time.Time
}

// RateLimiter takes units from fleet-wide rate limits (the state
// backend's GCRA). An error means the limit could not be asked: the
// engine then lets the request through (fail open).
type RateLimiter interface {
	Allow(ctx context.Context, key string, limit int, per time.Duration, cost int) (RateDecision, error)
}

// RateDecision is a rate limiter's answer.
type RateDecision struct {
	Allowed bool
	// RetryAfter is how long until one unit is available again.
	RetryAfter time.Duration
}

type stateHolder struct {
	bans    BanList
	limiter RateLimiter
	grey    Greylister
}

// SetState gives the engine the state backend's bans and rate limiter
// (either may be nil: no bans, no rate limits).
func (e *Engine) SetState(bans BanList, limiter RateLimiter) {
	e.SetStateGreylist(bans, limiter, nil)
}

// SetStateGreylist is SetState with greylisting's triplet store too (nil:
// no greylisting).
func (e *Engine) SetStateGreylist(bans BanList, limiter RateLimiter, grey Greylister) {
	e.state.Store(&stateHolder{bans: bans, limiter: limiter, grey: grey})
}

// banned applies the bans at connect, right after the whitelist: a banned
// client is refused with 550 5.7.1 and [bans] message.
func (e *Engine) banned(cfg *Config, s *Session, t *connectTracer) bool {
	list := e.state.Load().bans
	if list == nil {
		return false
	}
	b, ok := list.Banned(s.ClientIP)
	if !ok {
		if s.Trace {
			t.step(ControlBans, "no match", s.ClientIP.String()+" is not banned")
		}
		return false
	}
	e.counters.control(ControlBans)
	reason := "banned: " + b.Prefix.String() + " by " + b.Creator
	if b.Reason != "" {
		reason += " (" + b.Reason + ")"
	}
	if !b.Expires.IsZero() {
		reason += " until " + b.Expires.UTC().Format(time.RFC3339)
	}
	t.refuse(ControlBans, cfg.Bans.Message, reason)
	t.step(ControlBans, "reject", reason)
	return true
}

// rateExempt reports which rate limits a session is exempt from: all of
// them for a whitelisted client, all but sasl_user rules for an
// authenticated one (those rules are what they are for).
func rateExempt(cfg *Config, s *Session) (all, exceptSASL bool) {
	if s.connect.Whitelisted {
		return true, false
	}
	return false, s.Authenticated() && !cfg.Server.CheckAuthenticated
}

// rateLimit applies the [[ratelimit]] rules that count what (messages,
// recipients, connections) and reports whether one refused. A limiter
// that fails lets the request through.
func (e *Engine) rateLimit(ctx context.Context, cfg *Config, s *Session, what string, v *Verdict) bool {
	if len(cfg.RateLimits) == 0 {
		return false
	}
	lim := e.state.Load().limiter
	if lim == nil {
		return false
	}
	all, exceptSASL := rateExempt(cfg, s)
	if all {
		return false
	}
	for i := range cfg.RateLimits {
		r := &cfg.RateLimits[i]
		if r.Count != what || exceptSASL && r.Key != RateKeySASLUser {
			continue
		}
		key, ok := rateKey(r.Key, s)
		if !ok {
			continue
		}
		d, err := lim.Allow(ctx, "rl:"+r.Name+":"+key, r.Limit, r.Per, 1)
		if err != nil {
			e.counters.rateLimitError()
			if s.Trace {
				v.trace(s, ControlRateLimit, "error", r.Name+": "+err.Error()+"; not counted, let through")
			}
			continue
		}
		if d.Allowed {
			if s.Trace {
				v.trace(s, ControlRateLimit, "no match", r.Name+": "+key+" is within "+strconv.Itoa(r.Limit)+" "+r.Count+" per "+r.Per.String())
			}
			continue
		}
		e.counters.control(ControlRateLimit)
		e.counters.rateLimited(r.Name)
		reason := r.Name + ": " + r.Key + " " + key + " is over " + strconv.Itoa(r.Limit) + " " + r.Count + " per " + r.Per.String() +
			" (next in " + d.RetryAfter.Round(time.Second).String() + ")"
		if r.Reject {
			v.refuse(ActionReject, 550, "5.7.1", FormatMessage(r.Message, s.fields()), ControlRateLimit, reason)
		} else {
			v.refuse(ActionTempfail, 450, "4.7.1", FormatMessage(r.Message, s.fields()), ControlRateLimit, reason)
		}
		v.trace(s, ControlRateLimit, "limit", reason)
		return true
	}
	return false
}

// rateKey is the value a rule counts by, for this session; false when the
// session has none (no SASL login, no sender yet).
func rateKey(key string, s *Session) (string, bool) {
	switch key {
	case RateKeyClient:
		return s.ClientIP.String(), s.ClientIP.IsValid()
	case RateKeyClientNet:
		return ClientNetwork(s.ClientIP, 24, 64).String(), s.ClientIP.IsValid()
	case RateKeySender:
		a := strings.ToLower(bareAddress(s.MailFrom))
		return a, a != ""
	case RateKeySenderDomain:
		a := bareAddress(s.MailFrom)
		at := strings.LastIndexByte(a, '@')
		if at < 0 || at == len(a)-1 {
			return "", false
		}
		return strings.ToLower(a[at+1:]), true
	case RateKeySASLUser:
		return s.AuthUser, s.AuthUser != ""
	}
	return "", false
}
