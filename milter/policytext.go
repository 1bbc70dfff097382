package milter

import "strings"

// maxPolicyText caps the policy.txt of our Authentication-Results header.
const maxPolicyText = 200

// policyText makes a DNS list's TXT record safe as the RFC 8904 policy.txt
// value of our own Authentication-Results header: it keeps printable ASCII
// (0x20-0x7E) only and drops '"', '\' and ';', then trims spaces and cuts
// the text to maxPolicyText characters.
//
// Dropping, not escaping: authres.Format (go-msgauth v0.7.0) quotes a
// value with a space or special in it by putting it in quotes and
// escaping '"' as \" but leaving '\' alone, so a TXT record holding \"
// would become \\" and close the quoted-string early; and a quoted-pair
// we escaped ourselves would be escaped again. ';' goes too: readers
// such as authres.Parse split the field on every ';', quoted or not, so a
// ';' in the value would start a new result for them (spf=pass ...).
// Without these three a TXT record can put nothing into the header but
// the text of one parameter value.
func policyText(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == ';' {
			continue
		}
		b.WriteByte(c)
	}
	out := strings.TrimSpace(b.String())
	if len(out) > maxPolicyText {
		out = strings.TrimSpace(out[:maxPolicyText])
	}
	return out
}
