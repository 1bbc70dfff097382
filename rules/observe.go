package rules

import (
	"net/netip"
	"time"
)

// Observer watches the engine's decisions: the session log, the fail2ban
// log and the metrics are observers. An observer never changes a verdict.
// Implementations must be safe for concurrent use and quick: they run on
// the request path.
type Observer interface {
	// Verdict is called for every verdict, after it was counted. The
	// verdict is passed by value so that it does not escape to the heap.
	Verdict(s *Session, v Verdict)
	// MessagesWanted reports whether Message would do anything now; when
	// it is false the engine skips building the record.
	MessagesWanted() bool
	// Message is called once per message, and once per session refused
	// before it sent one (see Engine.EndMessage).
	Message(r *MessageRecord)
}

// Observers fans events out to several observers.
type Observers []Observer

// Verdict implements Observer.
func (o Observers) Verdict(s *Session, v Verdict) {
	for _, x := range o {
		x.Verdict(s, v)
	}
}

// MessagesWanted implements Observer: true when any observer wants them.
func (o Observers) MessagesWanted() bool {
	for _, x := range o {
		if x.MessagesWanted() {
			return true
		}
	}
	return false
}

// Message implements Observer.
func (o Observers) Message(r *MessageRecord) {
	for _, x := range o {
		x.Message(r)
	}
}

// MessageRecord is what the session log keeps of one message or refused
// session. It holds what the client sent in the envelope and what the
// engine decided; never a header value beyond the tags, never a body.
type MessageRecord struct {
	// Time is when the last decision about the message was made.
	Time         time.Time `json:"time"`
	Session      string    `json:"session"`
	ClientIP     string    `json:"client_ip"`
	ClientName   string    `json:"client_name,omitempty"`
	ClientPTR    string    `json:"client_ptr,omitempty"`
	Helo         string    `json:"helo,omitempty"`
	AuthUser     string    `json:"auth_user,omitempty"`
	MailFrom     *string   `json:"mail_from,omitempty"`
	Recipients   []string  `json:"recipients"`
	Refused      []string  `json:"refused_recipients,omitempty"`
	Stage        Stage     `json:"stage"`
	Action       Action    `json:"action"`
	Code         int       `json:"code,omitempty"`
	EnhancedCode string    `json:"enhanced_code,omitempty"`
	Text         string    `json:"text,omitempty"`
	Control      Control   `json:"control,omitempty"`
	// WouldRefuse is the message's first shadowed refusal (mode =
	// "shadow"): what would have been refused; the client was accepted.
	WouldRefuse *ShadowRecord `json:"would_refuse,omitempty"`
	// Candidate says how [server] candidate decided otherwise, e.g.
	// `reject by helo "*.invalid"`; "" when it agreed.
	Candidate     string      `json:"candidate,omitempty"`
	Reason        string      `json:"reason,omitempty"`
	Tags          []Header    `json:"tags,omitempty"`
	DNSLists      []DNSRecord `json:"dns_lists,omitempty"`
	DNSListErrors []string    `json:"dns_list_errors,omitempty"`
}

// DNSRecord is a DNS list answer in a MessageRecord.
type DNSRecord struct {
	Kind    ListKind     `json:"kind"`
	Site    string       `json:"site"`
	Answers []netip.Addr `json:"answers"`
	TXT     string       `json:"txt,omitempty"`
	Action  string       `json:"action"`
}

// noteOutcome keeps the verdict that best says how the message went: the
// first refusal, or else the latest tag.
func (s *Session) noteOutcome(v *Verdict) {
	if s.outcome.Action.Refuses() || !v.Action.Refuses() && v.Action != ActionTag {
		return
	}
	s.outcome = *v
	s.outcome.Trace = nil
	s.hasOutcome = true
}

// EndMessage tells the observers that a message, or a session refused
// before it sent one, is over; the adapters call it when the MTA ends a
// transaction (end of message, abort, a new message, the connection's
// end). It records nothing when there is nothing to say (a session that
// neither sent a message nor was refused), and nothing twice: it forgets
// the transaction afterwards, as ResetMessage does.
func (e *Engine) endMessage(s *Session) {
	defer s.ResetMessage()
	if e.obs == nil || !s.hasOutcome && len(s.Recipients) == 0 || !e.obs.MessagesWanted() {
		return
	}
	when := s.updated
	if when.IsZero() {
		when = e.now()
	}
	r := &MessageRecord{
		Time:       when,
		Session:    s.ID,
		ClientIP:   addrString(s.ClientIP),
		ClientName: s.ClientName,
		ClientPTR:  s.ClientPTR,
		Helo:       s.Helo,
		AuthUser:   s.AuthUser,
		Recipients: append([]string{}, s.Recipients...),
		Refused:    append([]string(nil), s.Refused...),
	}
	if s.mailSeen {
		from := s.MailFrom
		r.MailFrom = &from
	}
	v := s.outcome
	if len(s.Recipients) > 0 {
		// Accepted for at least one recipient: the message went on to
		// DATA, or (RSET, QUIT, or an adapter not asked at DATA) it is
		// recorded at RCPT. Tags are recorded only when they were added.
		v = Verdict{Stage: StageRcpt, Action: ActionAccept}
		if s.dataSeen {
			v.Stage = StageData
		}
		if tags := e.Tags(s); len(tags) > 0 && s.tagsAdded {
			v.Action, v.Headers, v.Control, v.Reason = ActionTag, tags, tagControl(s), s.connect.Reason
		} else if s.connect.Logged && !e.Exempt(s) {
			v.Reason = s.connect.Reason
		}
	}
	r.Stage, r.Action, r.Code, r.EnhancedCode, r.Text = v.Stage, v.Action, v.Code, v.EnhancedCode, v.Text
	r.Control, r.Reason, r.Tags = v.Control, v.Reason, v.Headers
	if v.Shadow {
		// Accepted: the reply fields say what was given; would_refuse
		// says what was not.
		r.Code, r.EnhancedCode, r.Text, r.Control = 0, "", "", ControlNone
	}
	r.Candidate = s.candNoted
	if w := s.wouldRefuse; w != nil {
		r.WouldRefuse = &ShadowRecord{Stage: w.Stage, Code: w.Code, EnhancedCode: w.EnhancedCode, Text: w.Text, Control: w.Control, Reason: w.Reason}
	}
	c := &s.connect
	for _, l := range []struct {
		kind ListKind
		l    *DNSListing
	}{{DNSWL, c.DNSWL}, {DNSBL, c.DNSBL}} {
		if l.l != nil && len(c.Scored) == 0 {
			r.DNSLists = append(r.DNSLists, DNSRecord{Kind: l.kind, Site: l.l.Site, Answers: l.l.Answers, TXT: l.l.TXT, Action: l.l.Action.String()})
		}
	}
	for _, l := range c.Scored { // decision = "score": every listing that counted
		r.DNSLists = append(r.DNSLists, DNSRecord{Kind: l.Kind, Site: l.Listing.Site, Answers: l.Listing.Answers, TXT: l.Listing.TXT, Action: l.Listing.Action.String()})
	}
	r.DNSListErrors = c.DNSErrors
	e.obs.Message(r)
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// ShadowRecord is a shadowed refusal in the session log.
type ShadowRecord struct {
	Stage        Stage   `json:"stage"`
	Code         int     `json:"code"`
	EnhancedCode string  `json:"enhanced_code"`
	Text         string  `json:"text"`
	Control      Control `json:"control"`
	Reason       string  `json:"reason,omitempty"`
}
