package rules

import (
	"context"
	"errors"
	"strconv"
	"strings"
)

// Mail applies the MAIL FROM controls and starts a new transaction: the
// sender is recorded and the recipient count starts again. In order: a
// session that gave no HELO/EHLO is refused when [helo] reject_empty is
// set; [connections] verify_host_name refuses a client without a PTR name
// (Domino accepts the connection and refuses at MAIL FROM); a sender
// matching [mail_from] deny is refused with 550 5.7.1, or with 421 4.7.1
// and the end of the session when disconnect is set; with [mail_from]
// allow, any other sender is refused; with verify_domain, a sender whose
// domain cannot receive mail is refused with 550 5.1.8 (450 4.1.8 when DNS
// cannot tell).
func (e *Engine) mailStage(ctx context.Context, s *Session, from string) Verdict {
	cfg := e.cfg.Load()
	v := Verdict{Stage: StageMail}
	s.ResetMessage()
	s.MailFrom = from
	s.mailSeen = true
	if e.gate(ctx, cfg, s, "MAIL", &v) {
		if !v.Action.Refuses() {
			// Exempt from the controls, not always from sasl_user
			// rate limits.
			e.rateLimit(ctx, cfg, s, RateCountMessages, &v)
		}
		return e.finish(s, v)
	}
	if s.Helo == "" && cfg.Helo.RejectEmpty {
		e.checkHelo(cfg, s, &v)
		return e.finish(s, v)
	}
	if e.verifyHostName(ctx, cfg, s, &v) {
		return e.finish(s, v)
	}
	m := &cfg.MailFrom
	if entry, ok := m.Deny.Match(from); ok {
		e.counters.control(ControlMailFrom)
		reason := "sender " + strconv.Quote(from) + " matches prohibited sender " + strconv.Quote(entry)
		text := FormatMessage(m.Message, s.fields())
		if m.Disconnect {
			v.refuse(ActionTempfail, 421, "4.7.1", text, ControlMailFrom, reason)
		} else {
			v.refuse(ActionReject, 550, "5.7.1", text, ControlMailFrom, reason)
		}
		v.trace(s, ControlMailFrom, v.Action.String(), reason)
		return e.finish(s, v)
	}
	if m.Allow.Len() > 0 {
		entry, ok := m.Allow.Match(from)
		if !ok {
			e.counters.control(ControlMailFrom)
			reason := "sender " + strconv.Quote(from) + " is not in [mail_from] allow"
			v.refuse(ActionReject, 550, "5.7.1", FormatMessage(m.Message, s.fields()), ControlMailFrom, reason)
			v.trace(s, ControlMailFrom, "reject", reason)
			return e.finish(s, v)
		}
		v.trace(s, ControlMailFrom, "match", strconv.Quote(from)+" is allowed by [mail_from] allow entry "+strconv.Quote(entry))
	}
	if m.VerifyDomain && e.verifyDomain(ctx, cfg, s, from, &v) {
		return e.finish(s, v)
	}
	if s.Trace {
		v.trace(s, ControlMailFrom, "no match", strconv.Quote(from)+" is not a prohibited sender")
	}
	e.rateLimit(ctx, cfg, s, RateCountMessages, &v)
	return e.finish(s, v)
}

// hostDNS returns the DNS client's HostDNS side, or nil.
func (e *Engine) hostDNS() HostDNS {
	h, _ := e.DNS().(HostDNS)
	return h
}

// verifyHostName applies [connections] verify_host_name: a client whose
// address has no PTR name is refused with 550 5.7.25. The MTA's own
// reverse lookup decides when it found a name; when it reports none (or
// nothing), the engine asks DNS itself, and only a definite "no such
// name" refuses: a DNS failure answers 450 4.7.25, never 550. It runs
// once per session; a passed check is remembered.
func (e *Engine) verifyHostName(ctx context.Context, cfg *Config, s *Session, v *Verdict) bool {
	c := &cfg.Connections
	if !c.VerifyHostName || s.hostChecked {
		return false
	}
	if s.ClientName != "" || s.ClientPTR != "" {
		s.hostChecked = true
		v.trace(s, ControlConnections, "pass", "verify_host_name: the MTA found the name "+strconv.Quote(firstNonEmpty(s.ClientName, s.ClientPTR)))
		return false
	}
	if !s.ClientIP.IsValid() {
		v.trace(s, ControlConnections, "skipped", "verify_host_name: no client address")
		return false
	}
	hd := e.hostDNS()
	var names []string
	err := errNoHostDNS
	if hd != nil {
		names, err = hd.ReverseNames(ctx, s.ClientIP)
	}
	if err != nil {
		e.counters.control(ControlConnections)
		reason := "verify_host_name: reverse DNS lookup of " + s.ClientIP.String() + " failed: " + err.Error()
		v.refuse(ActionTempfail, 450, "4.7.25", FormatMessage("Reverse DNS lookup of {ip} failed; try again later", s.fields()), ControlConnections, reason)
		v.trace(s, ControlConnections, "tempfail", reason)
		return true
	}
	if len(names) == 0 {
		e.counters.control(ControlConnections)
		reason := "verify_host_name: " + s.ClientIP.String() + " has no PTR name"
		v.refuse(ActionReject, 550, "5.7.25", FormatMessage(c.VerifyMessage, s.fields()), ControlConnections, reason)
		v.trace(s, ControlConnections, "reject", reason)
		return true
	}
	s.hostChecked = true
	s.ClientPTR = names[0]
	v.trace(s, ControlConnections, "pass", "verify_host_name: "+s.ClientIP.String()+" has the PTR name "+strconv.Quote(names[0]))
	return false
}

// errNoHostDNS stands for the answer when no DNS client is configured.
var errNoHostDNS = errors.New("no DNS client")

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// verifyDomain applies [mail_from] verify_domain: the sender's domain
// must have an MX, A or AAAA record. None → 550 5.1.8; DNS cannot tell →
// 450 4.1.8. The null sender, a sender without a domain and an address
// literal are not checked.
func (e *Engine) verifyDomain(ctx context.Context, cfg *Config, s *Session, from string, v *Verdict) bool {
	domain := senderDomain(from)
	if domain == "" || domain[0] == '[' {
		v.trace(s, ControlMailFrom, "skipped", "verify_domain: "+strconv.Quote(from)+" has no domain name to check")
		return false
	}
	hd := e.hostDNS()
	exists, err := false, errNoHostDNS
	if hd != nil {
		exists, err = hd.DomainExists(ctx, domain)
	}
	m := &cfg.MailFrom
	switch {
	case err != nil:
		e.counters.control(ControlMailFrom)
		reason := "verify_domain: DNS lookup of " + strconv.Quote(domain) + " failed: " + err.Error()
		v.refuse(ActionTempfail, 450, "4.1.8", FormatMessage(m.VerifyMessage, s.fields()), ControlMailFrom, reason)
		v.trace(s, ControlMailFrom, "tempfail", reason)
		return true
	case !exists:
		e.counters.control(ControlMailFrom)
		reason := "verify_domain: sender domain " + strconv.Quote(domain) + " has no MX, A or AAAA record"
		v.refuse(ActionReject, 550, "5.1.8", FormatMessage(m.VerifyMessage, s.fields()), ControlMailFrom, reason)
		v.trace(s, ControlMailFrom, "reject", reason)
		return true
	}
	v.trace(s, ControlMailFrom, "pass", "verify_domain: "+strconv.Quote(domain)+" can receive mail")
	return false
}

// senderDomain returns the domain of an envelope sender as the MTA hands
// it (angle brackets, a source route, a trailing dot allowed), lower
// case; "" for the null sender or an address without "@".
func senderDomain(from string) string {
	from = strings.TrimSpace(from)
	if len(from) >= 2 && from[0] == '<' && from[len(from)-1] == '>' {
		from = from[1 : len(from)-1]
	}
	at := strings.LastIndexByte(from, '@')
	if at < 0 {
		return ""
	}
	return strings.ToLower(strings.TrimSuffix(from[at+1:], "."))
}
