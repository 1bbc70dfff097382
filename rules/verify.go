package rules

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
)

// errNoDirectory is the lookup error of an engine given no directory
// client while [recipients] verify is on.
var errNoDirectory = errors.New("no directory client")

// The replies of [recipients] verify. The address is put in front, as
// Postfix's own recipient checks do ("<addr>: Recipient address
// rejected: ..."), so the sender's bounce names it.
const (
	replyUserUnknown = "Recipient address rejected: User unknown"
	replyAmbiguous   = "Recipient address rejected: Ambiguous name in the Domino Directory"
	replyGroup       = "Recipient address rejected: Mail to groups is not accepted"
	replyUnavailable = "Recipient address rejected: Directory unavailable, try again later"
)

// verifyRecipient applies [recipients] verify to a recipient in one of
// [directory] domains: not in the directory is 550 5.1.1; more than one
// entry is 550 5.1.4 with reject_ambiguous; a group is 550 5.7.1 with
// deny_groups; a directory that cannot answer is 451 4.4.3, or an
// accepted recipient with on_error = "accept" — never a 5xx. It reports
// whether it refused the recipient.
func (e *Engine) verifyRecipient(ctx context.Context, cfg *Config, s *Session, rcpt string, v *Verdict) bool {
	addr := bareAddress(rcpt)
	d := &cfg.Directory
	if !d.Local(addr) {
		if s.Trace {
			v.trace(s, ControlRecipients, "not verified", strconv.Quote(addr)+" is not in a [directory] domain")
		}
		return false
	}
	ans, err := DirectoryAnswer{}, errNoDirectory
	if dir := e.Directory(); dir != nil {
		ans, err = dir.LookupRecipient(ctx, addr)
	}
	// Nothing below allocates for a recipient found, unless traced: the
	// replies and reasons are built only for a refusal.
	if err != nil {
		reason := "directory lookup of " + strconv.Quote(addr) + " failed: " + err.Error()
		if d.OnErrorAccept {
			e.log.Info("recipient accepted unverified",
				slog.String("session", s.ID),
				slog.String("client", s.ClientIP.String()),
				slog.String("recipient", addr),
				slog.String("error", err.Error()))
			v.trace(s, ControlRecipients, "unverified", reason+`; accepted (on_error = "accept")`)
			return false
		}
		e.counters.control(ControlRecipients)
		v.refuse(ActionTempfail, 451, "4.4.3", shownAddress(addr)+replyUnavailable, ControlRecipients, reason)
		v.trace(s, ControlRecipients, "tempfail", reason)
		return true
	}
	if s.Trace {
		v.trace(s, ControlRecipients, "lookup", describeAnswer(ans))
	}
	switch ans.Result() {
	case DirectoryUnknown:
		e.counters.control(ControlRecipients)
		reason := "recipient " + strconv.Quote(addr) + " is not in the Domino Directory"
		v.refuse(ActionReject, 550, "5.1.1", shownAddress(addr)+replyUserUnknown, ControlRecipients, reason)
		v.trace(s, ControlRecipients, "reject", reason)
		return true
	case DirectoryAmbiguous:
		if !cfg.Recipients.RejectAmbiguous {
			if s.Trace {
				v.trace(s, ControlRecipients, "match", strconv.Quote(addr)+" names more than one entry; accepted (reject_ambiguous = false)")
			}
			return false
		}
		e.counters.control(ControlRecipients)
		reason := "recipient " + strconv.Quote(addr) + " names more than one entry in the Domino Directory: " + ans.Entries[0].DN + ", " + ans.Entries[1].DN
		v.refuse(ActionReject, 550, "5.1.4", shownAddress(addr)+replyAmbiguous, ControlRecipients, reason)
		v.trace(s, ControlRecipients, "reject", reason)
		return true
	case DirectoryGroup:
		if !cfg.Recipients.DenyGroups {
			if s.Trace {
				v.trace(s, ControlRecipients, "match", strconv.Quote(addr)+" is the group "+ans.Entries[0].DN+"; accepted (deny_groups = false)")
			}
			return false
		}
		e.counters.control(ControlRecipients)
		reason := "recipient " + strconv.Quote(addr) + " is the group " + ans.Entries[0].DN
		v.refuse(ActionReject, 550, "5.7.1", shownAddress(addr)+replyGroup, ControlRecipients, reason)
		v.trace(s, ControlRecipients, "reject", reason)
		return true
	}
	if s.Trace {
		v.trace(s, ControlRecipients, "match", strconv.Quote(addr)+" is "+ans.Entries[0].DN+" in the Domino Directory")
	}
	return false
}

// shownAddress is the recipient as a reply names it: "<addr>: ", made fit
// for a reply line.
func shownAddress(addr string) string { return "<" + ReplyText(addr, 256) + ">: " }

// describeAnswer says what a lookup asked and found, for explain.
func describeAnswer(a DirectoryAnswer) string {
	var b strings.Builder
	b.WriteString("LDAP filter ")
	b.WriteString(a.Query)
	b.WriteString(": ")
	switch len(a.Entries) {
	case 0:
		b.WriteString("no entry")
	case 1:
		b.WriteString("1 entry")
	default:
		b.WriteString(strconv.Itoa(len(a.Entries)) + " entries")
	}
	for i, en := range a.Entries {
		if i == 0 {
			b.WriteString(" (")
		} else {
			b.WriteString("; ")
		}
		b.WriteString(en.DN)
		if en.Group {
			b.WriteString(", a group")
		}
		if i == len(a.Entries)-1 {
			b.WriteString(")")
		}
	}
	if a.Cached {
		b.WriteString("; from the cache")
	} else {
		b.WriteString("; from the directory")
	}
	return b.String()
}

// bareAddress returns a recipient as the directory is asked for it:
// without angle brackets, source route or trailing dot in the domain.
// It does not allocate.
func bareAddress(addr string) string {
	addr = strings.TrimSpace(addr)
	if len(addr) >= 2 && addr[0] == '<' && addr[len(addr)-1] == '>' {
		addr = addr[1 : len(addr)-1]
	}
	if len(addr) > 0 && addr[0] == '@' {
		if colon := strings.IndexByte(addr, ':'); colon >= 0 {
			addr = addr[colon+1:]
		}
	}
	return strings.TrimSuffix(addr, ".")
}
