package milter

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	gomilter "github.com/d--j/go-milter"
	"github.com/emersion/go-msgauth/authres"

	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// session handles one MTA milter connection, normally one SMTP session.
type session struct {
	gomilter.NoOpMilter
	srv  *Server
	sess *rules.Session
	id   uint64
	// forged lists incoming headers to delete at end of message: copies of
	// our tag headers, and Authentication-Results claiming our authserv-id.
	forged []forgedHeader
	seen   map[string]int // header name (lower case) -> occurrences so far
}

// forgedHeader locates a header for Modifier.ChangeHeader: its name and
// its 1-based index among the headers of that name.
type forgedHeader struct {
	name  string
	index int
}

func newSession(s *Server) *session { return &session{srv: s} }

// NewConnection starts (or, when the MTA reuses the connection, restarts)
// the SMTP session.
func (m *session) NewConnection(mod gomilter.Modifier) (err error) {
	defer m.recoverPanic("new connection", nil, &err)
	if m.sess != nil {
		m.srv.engine.EndMessage(m.sess)
	}
	m.sess, m.id = nil, mod.MilterId()
	m.resetMessage()
	return nil
}

func (m *session) resetMessage() {
	m.forged = m.forged[:0]
	m.seen = nil
	if m.sess != nil {
		m.sess.ResetMessage()
	}
}

// macro returns a macro, logging at debug level when the MTA did not send
// it (the caller then falls back to the callback's arguments).
func (m *session) macro(mod gomilter.Modifier, name string) (string, bool) {
	v, ok := mod.GetEx(name)
	if !ok {
		m.srv.log.Debug("milter macro not sent by the MTA; using the callback arguments",
			slog.String("macro", name), slog.Uint64("milter_id", m.id))
	}
	return v, ok
}

// Connect starts the engine session and runs the connect-time controls.
// Their refusal is given here only with [server] delay_reject = false.
// Otherwise it is held (Engine.Prepare) and given first at MAIL FROM,
// where {auth_authen} tells whether the client authenticated: Postfix and
// Sendmail both keep a milter's connect or HELO reject for the whole
// session and then offer no AUTH, so an earlier reply would lock out the
// authenticated users the exemption is for (e2e
// sasl-milter-privbl-auth-delivered, sendmail-auth-exempt).
func (m *session) Connect(host, family string, port uint16, addr string, mod gomilter.Modifier) (resp *gomilter.Response, err error) {
	defer m.srv.observe(time.Now())
	defer m.recoverPanic("connect", &resp, &err)
	ip := m.clientIP(mod, family, addr)
	name, ok := m.macro(mod, macroClientName)
	if !ok {
		// Postfix and Sendmail pass the verified name as host, or the
		// address in brackets when there is none.
		name = host
	}
	m.sess = rules.NewSession(ip, name)
	// Ids an admin finds in the MTA's log: the queue id once known (MAIL,
	// end of message), until then the client's address and port.
	m.sess.ID = "milter-" + strconv.FormatUint(m.id, 10)
	if ip.IsValid() && port != 0 {
		m.sess.ID = net.JoinHostPort(ip.String(), strconv.Itoa(int(port)))
	}
	if ptr, ok := mod.GetEx(macroClientPtr); ok {
		// The MTA's PTR name, verified or not; the deny lists match it,
		// as Domino does.
		m.sess.SetPTR(ptr)
	}
	if m.srv.engine.Config().Server.DelayReject {
		m.srv.engine.Prepare(context.Background(), m.sess)
		return gomilter.RespContinue, nil
	}
	v := m.srv.engine.Connect(context.Background(), m.sess)
	return response(&v)
}

// clientIP returns the client's address: from {client_addr}, else the
// connect callback's address, in any form an MTA sends (Sendmail:
// "IPv6:0:0:0:0:0:0:0:1"; see rules.ParseClientIP). An address that is
// there but does not parse is logged at warn with its raw value and
// reported to OnBadAddress; the session then has no address (host lists
// do not apply to it). A connection without one (a unix socket, family
// "unknown") is not an error.
func (m *session) clientIP(mod gomilter.Modifier, family, addr string) netip.Addr {
	raw, _ := m.macro(mod, macroClientAddr)
	if ip, err := rules.ParseClientIP(raw); err == nil {
		return ip
	}
	if ip, err := rules.ParseClientIP(addr); err == nil {
		return ip
	}
	if strings.TrimSpace(raw) == "" && (addr == "" || family == "unix" || family == "unknown") {
		return netip.Addr{}
	}
	m.srv.log.Warn("milter client address cannot be parsed; host lists do not apply to this session",
		slog.String("client_addr", strconv.QuoteToASCII(truncate(raw, 100))),
		slog.String("connect_addr", strconv.QuoteToASCII(truncate(addr, 100))),
		slog.String("family", family), slog.Uint64("milter_id", m.id))
	if m.srv.onBadAddress != nil {
		m.srv.onBadAddress()
	}
	return netip.Addr{}
}

// truncate cuts s to at most n bytes.
func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// ensure makes a session when the MTA skipped the connect event.
func (m *session) ensure() {
	if m.sess == nil {
		m.sess = rules.NewSession(netip.Addr{}, "")
		m.sess.ID = "milter-" + strconv.FormatUint(m.id, 10)
	}
}

// Helo runs the HELO/EHLO controls. The milter protocol does not tell HELO
// from EHLO. With delay_reject the name is only noted (Engine.HoldHelo)
// and judged at MAIL FROM, for the reason Connect gives (e2e
// sasl-milter-helo-refused-auth-delivered, sasl-milter-helo-refused-at-mail).
func (m *session) Helo(name string, mod gomilter.Modifier) (resp *gomilter.Response, err error) {
	defer m.srv.observe(time.Now())
	defer m.recoverPanic("helo", &resp, &err)
	m.ensure()
	if m.srv.engine.Config().Server.DelayReject {
		m.srv.engine.HoldHelo(m.sess, "HELO", name)
		return gomilter.RespContinue, nil
	}
	v := m.srv.engine.Helo(context.Background(), m.sess, "HELO", name)
	return response(&v)
}

// MailFrom starts a transaction and runs, unless the session is exempt by
// authentication, a held connect-time or HELO refusal and the MAIL FROM
// controls. {auth_authen} is sent at MAIL only after a successful AUTH,
// by Postfix and Sendmail alike.
func (m *session) MailFrom(from, esmtpArgs string, mod gomilter.Modifier) (resp *gomilter.Response, err error) {
	defer m.srv.observe(time.Now())
	defer m.recoverPanic("mail", &resp, &err)
	m.ensure()
	m.resetMessage()
	if id, ok := m.macro(mod, macroQueueID); ok && id != "" {
		m.sess.ID = id
	}
	m.sess.AuthUser, _ = m.macro(mod, macroAuthAuthen)
	v := m.srv.engine.Mail(context.Background(), m.sess, from)
	return response(&v)
}

// RcptTo runs the recipient controls for one recipient.
func (m *session) RcptTo(rcpt, esmtpArgs string, mod gomilter.Modifier) (resp *gomilter.Response, err error) {
	defer m.srv.observe(time.Now())
	defer m.recoverPanic("rcpt", &resp, &err)
	m.ensure()
	v := m.srv.engine.Rcpt(context.Background(), m.sess, rcpt)
	return response(&v)
}

// Data runs the DATA command control.
func (m *session) Data(mod gomilter.Modifier) (resp *gomilter.Response, err error) {
	defer m.srv.observe(time.Now())
	defer m.recoverPanic("data", &resp, &err)
	m.ensure()
	v := m.srv.engine.Data(context.Background(), m.sess)
	return response(&v)
}

// Header notes copies of our own headers that came with the message, to
// remove them at end of message, so a sender cannot forge a tag.
func (m *session) Header(name, value string, mod gomilter.Modifier) (resp *gomilter.Response, err error) {
	defer m.recoverPanic("header", &resp, &err)
	if m.seen == nil {
		m.seen = make(map[string]int)
	}
	key := strings.ToLower(name)
	m.seen[key]++
	if m.isForged(key, value) {
		m.forged = append(m.forged, forgedHeader{name: name, index: m.seen[key]})
	}
	return gomilter.RespContinue, nil
}

// isForged reports whether an incoming header pretends to be ours: a tag
// header, or an Authentication-Results header with our authserv-id
// (RFC 8601 §5: remove such headers from outside).
func (m *session) isForged(lowerName, value string) bool {
	cfg := m.srv.engine.Config()
	switch lowerName {
	case strings.ToLower(cfg.Tags.DNSBLHeader), strings.ToLower(cfg.Tags.DNSWLHeader):
		return true
	case "authentication-results":
		// Whatever follows the id: a field that starts with our id is
		// removed even when the rest of it does not parse.
		id, _, _ := parseAuthservID(value)
		return id != "" && strings.EqualFold(strings.TrimSuffix(id, "."), strings.TrimSuffix(cfg.Server.Hostname, "."))
	}
	return false
}

// EndOfMessage removes forged headers and adds the tag headers and the
// RFC 8904 Authentication-Results header.
func (m *session) EndOfMessage(mod gomilter.Modifier) (resp *gomilter.Response, err error) {
	defer m.srv.observe(time.Now())
	defer m.recoverPanic("end of message", &resp, &err)
	m.ensure()
	if id, ok := mod.GetEx(macroQueueID); ok && id != "" {
		m.sess.ID = id
	}
	// Highest index first, so deleting one does not move the others.
	for i := len(m.forged) - 1; i >= 0; i-- {
		f := m.forged[i]
		if err := mod.ChangeHeader(f.index, f.name, ""); err != nil {
			return nil, err
		}
	}
	if len(m.forged) > 0 {
		m.srv.log.Info("removed forged headers", slog.String("session", m.sess.ID),
			slog.String("client", m.sess.ClientIP.String()), slog.Int("count", len(m.forged)))
	}
	for _, h := range m.srv.engine.Tags(m.sess) {
		if err := mod.AddHeader(h.Name, h.Value); err != nil {
			return nil, err
		}
		m.sess.NoteTagsAdded()
	}
	m.sess.NoteEndOfData()
	if ar := m.authResults(); ar != "" {
		if err := mod.AddHeader("Authentication-Results", ar); err != nil {
			return nil, err
		}
	}
	m.srv.engine.EndMessage(m.sess) // the session log's record
	m.resetMessage()
	return gomilter.RespAccept, nil
}

// authResults formats the RFC 8904 dnswl result for a client a DNS
// whitelist lists (whatever its action: the header states a fact), or ""
// when there is none to add.
func (m *session) authResults() string {
	cfg := m.srv.engine.Config()
	r := m.sess.ConnectResult()
	if !cfg.Tags.AuthenticationResults || r.DNSWL == nil {
		return ""
	}
	params := map[string]string{
		"dns.zone": r.DNSWL.Zone,
		// RFC 8904 §3: DNSSEC validation status of the answer; we do not
		// validate.
		"dns.sec": "na",
	}
	if len(r.DNSWL.Answers) > 0 {
		params["policy.ip"] = r.DNSWL.Answers[0].String()
	}
	if txt := policyText(r.DNSWL.TXT); txt != "" {
		params["policy.txt"] = txt
	}
	return authres.Format(cfg.Server.Hostname, []authres.Result{
		&authres.GenericResult{Method: "dnswl", Value: authres.ResultPass, Params: params},
	})
}

// Abort ends the current message (recording a refused one); the
// connection's state stays.
func (m *session) Abort(mod gomilter.Modifier) (err error) {
	defer m.recoverPanic("abort", nil, &err)
	if m.sess != nil {
		m.srv.engine.EndMessage(m.sess)
	}
	m.resetMessage()
	return nil
}

// Cleanup ends the session: a session refused before it sent a message is
// recorded now.
func (m *session) Cleanup(mod gomilter.Modifier) {
	var err error
	defer m.recoverPanic("cleanup", nil, &err) // go-milter closes the connection anyway
	if m.sess != nil {
		m.srv.engine.EndMessage(m.sess)
	}
}

// Unknown runs the command controls for a command the MTA does not know.
func (m *session) Unknown(cmd string, mod gomilter.Modifier) (resp *gomilter.Response, err error) {
	defer m.srv.observe(time.Now())
	defer m.recoverPanic("unknown", &resp, &err)
	m.ensure()
	verb, _, _ := strings.Cut(strings.TrimSpace(cmd), " ")
	v := m.srv.engine.Command(context.Background(), m.sess, verb)
	return response(&v)
}

// response turns a verdict into a milter response: a refusal carries its
// code and enhanced code (of the same class: Postfix drops a reply whose
// classes differ); anything else continues.
func response(v *rules.Verdict) (*gomilter.Response, error) {
	if !v.Action.Refuses() {
		return gomilter.RespContinue, nil
	}
	return gomilter.RejectWithCodeAndReason(uint16(v.Code), v.EnhancedCode+" "+v.Text)
}
