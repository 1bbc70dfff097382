// Package fail2ban writes the fail2ban log ([log] fail2ban): one line per
// refusal in HCL Domino's console format, which the stock fail2ban
// domino-smtp filter and contrib/fail2ban's filter match:
//
//	2026-11-23 10:15:02   SMTP Server: Connection from [192.0.2.7] rejected for policy reasons. <reason>
//
// Client-supplied text in the reason is escaped (control characters, '['
// and ']', non-ASCII as \xNN), so a crafted HELO or address can never make
// a line that names another IP in brackets.
package fail2ban

import (
	"log/slog"
	"strings"
	"time"

	"github.com/smtp-interceptor/smtp-interceptor/internal/logfile"
	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// TimeLayout is Domino's console timestamp.
const TimeLayout = "2006-01-02 15:04:05"

// Observer writes a line for every refusal a client is given, once per
// refusal: a connect-time or HELO refusal repeated at later commands is
// written once.
type Observer struct {
	out *logfile.File
	log *slog.Logger
	now func() time.Time
}

var _ rules.Observer = (*Observer)(nil)

// New returns an observer writing to out; now may be nil (time.Now).
func New(out *logfile.File, log *slog.Logger, now func() time.Time) *Observer {
	if now == nil {
		now = time.Now
	}
	return &Observer{out: out, log: log, now: now}
}

// Verdict writes a line for a refusal.
func (o *Observer) Verdict(s *rules.Session, v rules.Verdict) {
	if !v.Action.Refuses() || v.Repeated || !s.ClientIP.IsValid() || !o.out.Enabled() {
		return
	}
	if _, err := o.out.Write([]byte(Line(o.now(), s.ClientIP.String(), string(v.Control)+": "+v.Reason))); err != nil {
		o.log.Error("fail2ban log: write", slog.Any("error", err))
	}
}

// Message implements rules.Observer; the fail2ban log keeps refusals only.
func (o *Observer) Message(*rules.MessageRecord) {}

// MessagesWanted implements rules.Observer: never.
func (o *Observer) MessagesWanted() bool { return false }

// Line formats one log line (with its newline). ip is the client address
// as the MTA reported it; reason is escaped.
func Line(t time.Time, ip, reason string) string {
	return t.Format(TimeLayout) + "   SMTP Server: Connection from [" + ip + "] rejected for policy reasons. " + Escape(reason) + "\n"
}

// Escape makes text safe for one log line: control characters, DEL, '[',
// ']', '\' and every byte outside printable ASCII become \xNN.
func Escape(s string) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if needsEscape(s[i]) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	const hex = "0123456789abcdef"
	var b strings.Builder
	b.Grow(len(s) + 16)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if needsEscape(c) {
			b.WriteString(`\x`)
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

func needsEscape(c byte) bool {
	return c < 0x20 || c >= 0x7f || c == '[' || c == ']' || c == '\\'
}
