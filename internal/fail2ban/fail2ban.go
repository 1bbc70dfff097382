// Package fail2ban writes the fail2ban log ([log] fail2ban): one line per
// refusal in HCL Domino's console format, which the stock fail2ban
// domino-smtp filter and contrib/fail2ban's filter match:
//
//	2026-11-23 10:15:02   SMTP Server: Connection from [192.0.2.7] rejected for policy reasons. <reason>
//
// Client-supplied text in the reason is escaped (control characters, '['
// and ']', non-ASCII as \xNN), so a crafted HELO or address can never make
// a line that names another IP in brackets.
//
// A refusal by a DNS blacklist is held for a while (Options.DNSBLDelay)
// before it is written, and dropped if its list was suspended meanwhile:
// a list that starts listing the world refuses clients until its hit rate
// or its health probe suspends it, and those clients must not be banned.
// Every other refusal is written at once. A held line keeps the time of
// its refusal, which is the time fail2ban reads.
package fail2ban

import (
	"strings"
	"time"
)

// TimeLayout is Domino's console timestamp.
const TimeLayout = "2006-01-02 15:04:05"

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
