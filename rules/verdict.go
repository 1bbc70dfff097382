package rules

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Action is what a verdict tells the MTA to do.
type Action uint8

// The actions a verdict can carry. ActionTag accepts and adds headers.
const (
	ActionAccept Action = iota
	ActionTag
	ActionReject
	ActionTempfail
	numActions
)

var actionNames = [numActions]string{"accept", "tag", "reject", "tempfail"}

// String returns the action's name: accept, tag, reject or tempfail.
func (a Action) String() string {
	if a < numActions {
		return actionNames[a]
	}
	return fmt.Sprintf("action(%d)", a)
}

// MarshalText implements encoding.TextMarshaler.
func (a Action) MarshalText() ([]byte, error) { return []byte(a.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (a *Action) UnmarshalText(b []byte) error {
	for i, n := range actionNames {
		if n == string(b) {
			*a = Action(i)
			return nil
		}
	}
	return fmt.Errorf("unknown action %q", b)
}

// Refuses reports whether the action refuses the command (reject or tempfail).
func (a Action) Refuses() bool { return a == ActionReject || a == ActionTempfail }

// Stage is the point of the SMTP session a verdict was reached at.
type Stage uint8

// The SMTP stages the engine decides at, in session order. StageCommand is
// any other command (VRFY, ETRN, EXPN, an unknown command).
const (
	StageConnect Stage = iota
	StageHelo
	StageMail
	StageRcpt
	StageData
	StageCommand
	numStages
)

var stageNames = [numStages]string{"connect", "helo", "mail", "rcpt", "data", "command"}

// String returns the stage's name.
func (s Stage) String() string {
	if s < numStages {
		return stageNames[s]
	}
	return fmt.Sprintf("stage(%d)", s)
}

// MarshalText implements encoding.TextMarshaler.
func (s Stage) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *Stage) UnmarshalText(b []byte) error {
	for i, n := range stageNames {
		if n == string(b) {
			*s = Stage(i)
			return nil
		}
	}
	return fmt.Errorf("unknown stage %q", b)
}

// Control names a configured control. Its value is the configuration
// section that sets it up.
type Control string

// The controls, named after their configuration sections.
const (
	ControlNone             Control = ""
	ControlAuthenticated    Control = "authenticated"
	ControlWhitelist        Control = "whitelist"
	ControlBlacklist        Control = "blacklist"
	ControlConnections      Control = "connections"
	ControlErrorLimit       Control = "error_limit"
	ControlPrivateBlacklist Control = "private_blacklist"
	ControlDNSWhitelist     Control = "dns_whitelist"
	ControlDNSBlacklist     Control = "dns_blacklist"
	ControlHelo             Control = "helo"
	ControlMailFrom         Control = "mail_from"
	ControlRecipients       Control = "recipients"
	ControlCommands         Control = "commands"
	// ControlBans refuses a client the state backend has a ban for.
	ControlBans Control = "bans"
	// ControlRateLimit tempfails (or refuses) past a [[ratelimit]] rule.
	ControlRateLimit Control = "ratelimit"
	// ControlGreylist tempfails a recipient's first attempt ([greylist]).
	ControlGreylist Control = "greylist"
)

// Header is a header field the MTA is asked to add to the message.
type Header struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// String formats the header as "Name: value".
func (h Header) String() string { return h.Name + ": " + h.Value }

// TraceStep records one control consulted while reaching a verdict.
type TraceStep struct {
	Stage   Stage   `json:"stage"`
	Control Control `json:"control"`
	// Result is a short outcome: "match", "no match", "skipped", "listed",
	// "not listed", "error", "accept", "reject", ...
	Result string `json:"result"`
	// Detail says why: the entry that matched, the DNS answer, the limit.
	Detail string `json:"detail,omitempty"`
}

// String formats the step for people.
func (t TraceStep) String() string {
	s := string(t.Control) + ": " + t.Result
	if t.Detail != "" {
		s += " (" + t.Detail + ")"
	}
	return s
}

// Verdict is the engine's answer for one stage of a session. The adapters
// translate it to the wire; logs and metrics observe it.
type Verdict struct {
	Action Action
	// Code and EnhancedCode are the SMTP reply (e.g. 550 and "5.7.1"); zero
	// for accept and tag.
	Code         int
	EnhancedCode string
	// Text is the reply text, with %s already replaced by the client IP.
	Text string
	// Headers are the header fields to add to the message (tag actions).
	Headers []Header
	// Stage is where the verdict was reached. A connect-time refusal
	// delivered later keeps StageConnect.
	Stage Stage
	// Control is the control that decided; ControlNone when none fired.
	Control Control
	// Disconnect asks the MTA to end the session (421 replies).
	Disconnect bool
	// Logged is true when a control with the log action matched: accepted,
	// but worth a log line.
	Logged bool
	// Repeated is true when this refusal was already given earlier in the
	// session (a connect-time or HELO refusal repeated at a later command),
	// so that a log of refusals can count each once.
	Repeated bool
	// Shadow is true when a control's refusal was shadowed (mode =
	// "shadow"): Action is accept (or tag), and Code, EnhancedCode, Text,
	// Control and Reason say what would have been refused. The policy
	// server answers WARN with it, so it appears in Postfix's maillog.
	Shadow bool
	// Reason is a short, log-safe explanation of the decision, e.g.
	// `private blacklist entry "192.0.2.0/24"`.
	Reason string
	// Trace lists every control consulted, when the session asked for a
	// trace (Session.Trace); nil otherwise.
	Trace []TraceStep
}

// ShadowReply formats the reply a shadowed refusal would have given;
// "" when the verdict is not shadowed.
func (v Verdict) ShadowReply() string {
	if !v.Shadow {
		return ""
	}
	return fmt.Sprintf("%d %s %s", v.Code, v.EnhancedCode, v.Text)
}

// Reply formats the SMTP reply line as "550 5.7.1 text"; "" for verdicts
// that do not refuse.
func (v Verdict) Reply() string {
	if !v.Action.Refuses() {
		return ""
	}
	return fmt.Sprintf("%d %s %s", v.Code, v.EnhancedCode, v.Text)
}

// verdictJSON is the stable JSON form of a verdict (explain --json).
type verdictJSON struct {
	Action       Action      `json:"action"`
	Code         int         `json:"code"`
	EnhancedCode string      `json:"enhanced_code"`
	Text         string      `json:"text"`
	Stage        Stage       `json:"stage"`
	Control      Control     `json:"control"`
	Disconnect   bool        `json:"disconnect,omitempty"`
	Shadow       bool        `json:"shadow,omitempty"`
	Reason       string      `json:"reason,omitempty"`
	Headers      []Header    `json:"headers"`
	Trace        []TraceStep `json:"trace"`
}

// MarshalJSON writes the verdict with snake_case keys.
func (v Verdict) MarshalJSON() ([]byte, error) {
	j := verdictJSON{
		Action: v.Action, Code: v.Code, EnhancedCode: v.EnhancedCode, Text: v.Text,
		Stage: v.Stage, Control: v.Control, Disconnect: v.Disconnect, Shadow: v.Shadow, Reason: v.Reason,
		Headers: v.Headers, Trace: v.Trace,
	}
	if j.Headers == nil {
		j.Headers = []Header{}
	}
	if j.Trace == nil {
		j.Trace = []TraceStep{}
	}
	return json.Marshal(j)
}

// MessageFields are the values of a configured message's placeholders.
type MessageFields struct {
	// IP is the client address: %s (the first), {ip}.
	IP string
	// Site is the DNS list that listed the client: the second %s of a
	// [dns_blacklist] message (Domino's "Your IP, %s, was found in the %s
	// block list."), {site}; "" elsewhere.
	Site string
	// Reason is the list's TXT record for the client (Postfix's
	// $rbl_reason): {reason}; "" when there is none. FormatMessage makes it
	// printable ASCII and cuts it to 200 characters.
	Reason string
}

// maxReasonText is the longest {reason} put into a reply.
const maxReasonText = 200

// FormatMessage expands a configured message: each %s in turn takes the
// client IP, then the site (only [dns_blacklist] messages may hold two; the
// configuration checks it); {ip}, {site} and {reason} take theirs; %%
// is a percent sign. A list's TXT record cannot inject anything: it is
// reduced to printable ASCII and 200 characters, and the whole reply text
// is cut to what an RFC 5321 reply line holds.
func FormatMessage(msg string, f MessageFields) string {
	if !strings.ContainsAny(msg, "%{") {
		return msg
	}
	var b strings.Builder
	b.Grow(len(msg) + len(f.IP))
	verbs := 0
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		switch {
		case c == '%' && i+1 < len(msg) && msg[i+1] == 's':
			if verbs == 0 {
				b.WriteString(f.IP)
			} else {
				b.WriteString(f.Site)
			}
			verbs++
			i++
			continue
		case c == '%' && i+1 < len(msg) && msg[i+1] == '%':
			b.WriteByte('%')
			i++
			continue
		case c == '{':
			if name, ok := placeholderAt(msg[i:]); ok {
				switch name {
				case "ip":
					b.WriteString(f.IP)
				case "site":
					b.WriteString(f.Site)
				case "reason":
					b.WriteString(ReplyText(f.Reason, maxReasonText))
				}
				i += len(name) + 1
				continue
			}
		}
		b.WriteByte(c)
	}
	out := b.String()
	if len(out) > maxReplyText {
		out = out[:maxReplyText]
	}
	return out
}

// placeholders are the names FormatMessage replaces in braces.
var placeholders = [...]string{"ip", "site", "reason"}

// placeholderAt reports whether s starts with a known placeholder such as
// "{ip}", and its name.
func placeholderAt(s string) (string, bool) {
	for _, name := range placeholders {
		if len(s) >= len(name)+2 && s[len(name)+1] == '}' && s[1:len(name)+1] == name {
			return name, true
		}
	}
	return "", false
}

// ReplyText makes text from outside (a DNS list's TXT record) fit for an
// SMTP reply: printable ASCII only (anything else becomes a space, runs of
// spaces one), trimmed, and at most max bytes.
func ReplyText(text string, max int) string {
	var b strings.Builder
	space := false
	for i := 0; i < len(text) && b.Len() < max; i++ {
		c := text[i]
		if c <= ' ' || c >= 0x7f {
			space = b.Len() > 0
			continue
		}
		if space {
			if b.Len()+1 >= max {
				break
			}
			b.WriteByte(' ')
			space = false
		}
		b.WriteByte(c)
	}
	return b.String()
}

// validateMessage checks a configured message: at most maxVerbs %s (one,
// the client IP; two in [dns_blacklist] message, IP then site), no other
// format verb (%% is a literal percent sign), no control character (an
// SMTP reply is one line), and a length that fits a reply line. Unknown
// names in braces are kept as written; unknownPlaceholders finds them for
// a warning.
func validateMessage(msg string, maxVerbs int) error {
	if strings.TrimSpace(msg) == "" {
		return fmt.Errorf("message is empty")
	}
	verbs := 0
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c < 0x20 || c == 0x7f {
			return fmt.Errorf("message %q holds a control character", msg)
		}
		if c != '%' {
			continue
		}
		if i+1 >= len(msg) {
			return fmt.Errorf("message %q ends with a lone %%; write %%%% for a percent sign", msg)
		}
		switch msg[i+1] {
		case 's':
			verbs++
			if verbs > maxVerbs {
				if maxVerbs == 1 {
					return fmt.Errorf("message %q has more than one %%s; only one, the client IP, is allowed (or write {ip})", msg)
				}
				return fmt.Errorf("message %q has more than %d %%s; the first is the client IP, the second the DNS list", msg, maxVerbs)
			}
		case '%':
		default:
			return fmt.Errorf("message %q has format verb %%%c; only %%s and %%%% are allowed", msg, msg[i+1])
		}
		i++
	}
	// RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets with its
	// code and CRLF. The longest reply is "550 5.7.1 " + text + CRLF, with
	// the client IP as the longest IPv6 address. Site and reason are cut
	// at run time to what is left.
	n := len(msg) + min(verbs, 1)*(maxIPText-2) + strings.Count(msg, "{ip}")*(maxIPText-4)
	if n > maxReplyText {
		return fmt.Errorf("message is %d characters long (with the client IP as the longest IPv6 address); an SMTP reply line holds at most %d", n, maxReplyText)
	}
	return nil
}

// unknownPlaceholders returns the names in braces in msg that are not
// placeholders ("{IP}" for "{ip}", say), which FormatMessage keeps as
// written.
func unknownPlaceholders(msg string) []string {
	var out []string
	for i := 0; i < len(msg); i++ {
		if msg[i] != '{' {
			continue
		}
		end := strings.IndexByte(msg[i:], '}')
		if end < 0 {
			break
		}
		name := msg[i+1 : i+end]
		if _, ok := placeholderAt(msg[i:]); !ok && name != "" && !strings.ContainsAny(name, " {") {
			out = append(out, "{"+name+"}")
		}
		i += end
	}
	return out
}

// maxReplyText is the longest reply text that fits RFC 5321's 512-octet
// reply line after "550 5.7.1 " and before CRLF; maxIPText is the longest
// text form of a client address ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff").
const (
	maxReplyText = 512 - len("550 5.7.1 ") - len("\r\n")
	maxIPText    = 39
)
