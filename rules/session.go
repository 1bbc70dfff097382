package rules

import (
	"net/netip"
	"time"
)

// Session is the state of one SMTP session as the engine sees it. An
// adapter creates one per SMTP connection (milter) or per Postfix instance
// (policy), fills in what the MTA reports and passes it to each stage. A
// Session is not safe for concurrent use; one SMTP session is sequential.
type Session struct {
	// ID names the session in logs: a queue id or the policy instance.
	ID string
	// ClientIP is the client's address, IPv4-mapped IPv6 unmapped.
	ClientIP netip.Addr
	// ClientName is the verified client host name, normalized (lower case,
	// no trailing dot); "" when the MTA could not verify one.
	ClientName string
	// ClientPTR is the client's reverse (PTR) name as the MTA looked it
	// up, verified or not (Postfix reverse_client_name, milter
	// {client_ptr}), normalized; "" when the MTA found none or did not say.
	// The deny lists match it as Domino does; allow lists never do, since
	// whoever owns an address sets its PTR.
	ClientPTR string
	// PTRKnown is true when the MTA reported its reverse lookup (ClientPTR
	// may still be "", meaning no PTR name). When false, verify_host_name
	// asks DNS itself.
	PTRKnown bool
	// Helo is the HELO/EHLO argument; "" before HELO or when empty.
	Helo string
	// MailFrom is the envelope sender of the current transaction.
	MailFrom string
	// Recipients are the recipients accepted so far in this transaction.
	Recipients []string
	// Refused are the recipients refused so far in this transaction.
	Refused []string
	// AuthUser is the SASL login name; "" when not authenticated.
	AuthUser string
	// Trace asks every verdict to carry the list of controls consulted.
	// explain turns it on; servers leave it off.
	Trace bool

	connect ConnectResult
	// heloRefusal is the refusal of the last HELO/EHLO, repeated at every
	// later command until a HELO/EHLO passes: a client cannot shrug off a
	// refused HELO by sending MAIL FROM anyway.
	heloRefusal *Verdict
	// heloHeld is set by HoldHelo: the HELO/EHLO (command heloCmd) is
	// judged at the next stage.
	heloHeld bool
	heloCmd  string
	// connectRefusalSent is set once the connect-time refusal was given;
	// later deliveries are marked Repeated.
	connectRefusalSent bool
	// outcome is the verdict that best says how the current message went
	// (see noteOutcome); mailSeen is set once MAIL FROM was given.
	outcome    Verdict
	hasOutcome bool
	mailSeen   bool
	// updated is the time of the latest verdict (kept when observed).
	updated time.Time
	// errors counts the refusals given in the SMTP session, for [server]
	// error_limit.
	errors int
	// hostChecked is set once verify_host_name has passed for the session.
	hostChecked bool
	// shadowPending is a shadowed connect-time or HELO refusal found by
	// the gate, to be reported with the stage's verdict if that accepts;
	// connectShadowSent is set once the connect-time one was reported.
	shadowPending     *Verdict
	connectShadowSent bool
	// wouldRefuse is the first shadowed refusal of the message, for the
	// session log.
	wouldRefuse *Verdict
	// cand is the session as the candidate engine sees it; candNoted says
	// how the candidate decided otherwise in this message ("" if not).
	cand      *Session
	candNoted string
	// dataSeen is set once the message reached DATA (or its end);
	// tagsAdded once the adapter added the tag headers to it.
	dataSeen, tagsAdded bool
	// greyHeader is the X-Greylist value of this message, once one of its
	// recipients passed greylisting after waiting; "" otherwise.
	greyHeader string
}

// NewSession starts a session for a client. ip is normalized (an
// IPv4-mapped address becomes IPv4) and name normalized as a host name.
func NewSession(ip netip.Addr, name string) *Session {
	return &Session{ClientIP: NormalizeIP(ip), ClientName: NormalizeName(name)}
}

// SetPTR records the MTA's reverse lookup of the client: name is its PTR
// name ("", "unknown" or an address literal when there is none).
func (s *Session) SetPTR(name string) {
	s.ClientPTR, s.PTRKnown = NormalizeName(name), true
}

// NoteTagsAdded records that the adapter added the tag headers to the
// current message (the milter at end of message, the policy server with
// PREPEND), so the session log lists them; tags never added are not.
func (s *Session) NoteTagsAdded() { s.tagsAdded = true }

// NoteEndOfData records that the current message's data was received (the
// policy server's END-OF-MESSAGE request), as DATA does.
func (s *Session) NoteEndOfData() { s.dataSeen = true }

// fields are the placeholders of a message about the client.
func (s *Session) fields() MessageFields { return MessageFields{IP: s.ClientIP.String()} }

// Authenticated reports whether the client authenticated with SASL.
func (s *Session) Authenticated() bool { return s.AuthUser != "" }

// ConnectResult returns the outcome of the connect-time controls; its Done
// field is false until a stage has worked it out.
func (s *Session) ConnectResult() *ConnectResult { return &s.connect }

// ContinueFrom carries the connection's state over from prev, the
// session of the previous message of the same SMTP session (an adapter
// that sees each message as a session of its own, as Postfix's policy
// protocol does, knows them by the client's address and port): the
// connect-time outcome, so DNS lists are not asked again and a
// connect-time refusal already given is not logged again, and the HELO.
func (s *Session) ContinueFrom(prev *Session) {
	s.ClientName = prev.ClientName
	s.ClientPTR, s.PTRKnown = prev.ClientPTR, prev.PTRKnown
	s.errors = prev.errors
	s.connectShadowSent = prev.connectShadowSent
	s.Helo = prev.Helo
	s.connect = prev.connect
	s.heloRefusal = prev.heloRefusal
	s.heloHeld, s.heloCmd = prev.heloHeld, prev.heloCmd
	s.connectRefusalSent = prev.connectRefusalSent
}

// ResetMessage forgets the current transaction (sender and recipients),
// keeping the connection's state: client, HELO and connect-time outcome.
// Adapters call it when a transaction ends or is aborted (RSET).
func (s *Session) ResetMessage() {
	s.MailFrom = ""
	s.Recipients = s.Recipients[:0]
	s.Refused = s.Refused[:0]
	s.outcome, s.hasOutcome, s.mailSeen = Verdict{}, false, false
	s.wouldRefuse = nil
	s.dataSeen, s.tagsAdded = false, false
	s.greyHeader = ""
}

// ConnectResult is what the connect-time controls (rows 1–5 of DESIGN §3)
// found for a client. It is worked out once per session, so later stages
// never repeat the list and DNS lookups.
type ConnectResult struct {
	// Done is true once the connect-time controls have run.
	Done bool
	// Whitelisted is true when [whitelist] matched; Scope says what it
	// bypasses.
	Whitelisted bool
	Scope       WhitelistScope
	// Refusal is a connect-time refusal, delivered at the first stage the
	// adapter asks about (Postfix's smtpd_delay_reject); nil when none.
	Refusal *Verdict
	// Headers are the tag headers to add to every message of the session.
	Headers []Header
	// Logged is true when a list with the log or tag action matched.
	Logged bool
	// Greylist is true when a list with the greylist action matched
	// ([greylist] apply_to = "listed").
	Greylist bool
	// Reason explains the outcome in a few words.
	Reason string
	// DNSWL and DNSBL hold the DNS list answers that counted: the listing
	// whitelist and the listing blacklist, if any.
	DNSWL, DNSBL *DNSListing
	// Scored lists every listing site of decision = "score" (whitelists
	// first), for the session log: replay adds them up again.
	Scored []ScoredListing
	// DNSErrors lists the sites whose answer was an error.
	DNSErrors []string
	// Trace is the connect stage's trace (when Session.Trace is set).
	Trace []TraceStep
}

// ScoredListing is one listing that counted in a DNS list score.
type ScoredListing struct {
	Kind    ListKind
	Listing *DNSListing
}

// DNSListing is a DNS list's answer for a client that counted as listed.
type DNSListing struct {
	// Site is the site as configured; Zone its zone.
	Site, Zone string
	// Answers are the A records that matched the site's filter.
	Answers []netip.Addr
	// TXT is the list's TXT record for the client, when it has one.
	TXT string
	// Action is the configured action of the list section.
	Action ListAction
}
