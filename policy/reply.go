package policy

import (
	"bufio"
	"strconv"
	"strings"

	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// writeReply writes one policy reply (SMTPD_POLICY_README: "action=...",
// then an empty line). A refusal becomes its SMTP reply ("550 5.7.1 text",
// "452 4.5.3 text", "421 4.7.1 text", "502 5.5.1 text"); a header to add
// becomes "PREPEND Name: value"; a shadowed refusal "WARN smtp-interceptor
// would refuse: 550 5.7.1 text"; anything else is DUNNO, never OK: OK
// would let the client past the MTA's own relay checks.
func writeReply(w *bufio.Writer, v *rules.Verdict, prepend *rules.Header) error {
	w.WriteString("action=")
	switch {
	case v.Action.Refuses():
		w.WriteString(strconv.Itoa(v.Code))
		w.WriteByte(' ')
		w.WriteString(v.EnhancedCode)
		w.WriteByte(' ')
		w.WriteString(policyText(v))
	case v.Shadow:
		// Postfix logs WARN's text in its maillog and goes on
		// (access(5)): the shadowed refusal shows where admins look.
		w.WriteString("WARN smtp-interceptor would refuse: ")
		w.WriteString(strconv.Itoa(v.Code))
		w.WriteByte(' ')
		w.WriteString(v.EnhancedCode)
		w.WriteByte(' ')
		w.WriteString(policyText(v))
	case prepend != nil:
		w.WriteString("PREPEND ")
		w.WriteString(prepend.Name)
		w.WriteString(": ")
		w.WriteString(prepend.Value)
	default:
		w.WriteString("DUNNO")
	}
	w.WriteString("\n\n")
	return w.Flush()
}

// rcptRejected is what Postfix puts after "<recipient>: " before a policy
// server's text at RCPT TO.
const rcptRejected = ">: Recipient address rejected: "

// policyText is a refusal's text as the policy server sends it: at RCPT,
// Postfix itself puts "<recipient>: Recipient address rejected: " before
// it, so a text that starts so ([recipients] verify's, written whole for
// the milter) loses that part, and the client sees it once (e2e
// "directory-unknown-refused-known-delivered").
func policyText(v *rules.Verdict) string {
	t := v.Text
	if v.Stage == rules.StageRcpt && strings.HasPrefix(t, "<") {
		if i := strings.Index(t, rcptRejected); i > 0 {
			return t[i+len(rcptRejected):]
		}
	}
	return t
}
