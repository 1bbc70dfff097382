package rules

import (
	"context"
	"strings"
)

// Command applies [commands] to an SMTP command that has no stage of its
// own (VRFY, ETRN, EXPN, an unknown command): a denied command, or one
// missing from a non-empty allow list, gets 502 5.5.1. The commands with
// stages (HELO, EHLO, MAIL, RCPT, DATA) are checked by their stage.
func (e *Engine) commandStage(ctx context.Context, s *Session, cmd string) Verdict {
	cfg := e.cfg.Load()
	v := Verdict{Stage: StageCommand}
	e.gate(ctx, cfg, s, strings.ToUpper(cmd), &v)
	return e.finish(s, v)
}

// Data runs the DATA stage: the command controls, then the connect-time
// tags. It returns ActionTag with the headers to add once to the message
// (the adapter adds them at DATA or at end of message), or accept.
func (e *Engine) dataStage(ctx context.Context, s *Session) Verdict {
	cfg := e.cfg.Load()
	v := Verdict{Stage: StageData}
	s.dataSeen = true
	if e.gate(ctx, cfg, s, "DATA", &v) {
		return e.finish(s, v)
	}
	if h := s.connect.Headers; len(h) > 0 {
		v.Action = ActionTag
		v.Headers = h
		v.Control = tagControl(s)
		v.Reason = s.connect.Reason
		v.trace(s, v.Control, "tag", s.connect.Reason)
	}
	return e.finish(s, v)
}

// tagControl names the control whose tag a session carries.
func tagControl(s *Session) Control {
	switch {
	case s.connect.DNSBL != nil:
		return ControlDNSBlacklist
	case s.connect.DNSWL != nil:
		return ControlDNSWhitelist
	}
	return ControlPrivateBlacklist
}

// policyCommands are the SMTP commands Postfix hands the policy service
// (SMTPD_POLICY_README: protocol_state), mapped to the main.cf setting
// that brings them there.
var policyCommands = map[string]string{
	"HELO": "smtpd_helo_restrictions", "EHLO": "smtpd_helo_restrictions",
	"MAIL": "smtpd_sender_restrictions", "RCPT": "smtpd_recipient_restrictions",
	"DATA": "smtpd_data_restrictions", "VRFY": "smtpd_recipient_restrictions",
	"ETRN": "smtpd_etrn_restrictions",
}

// milterCommands are the commands a milter sees: its own callbacks, plus
// any command the MTA does not know (the unknown callback).
var milterCommands = map[string]bool{"HELO": true, "EHLO": true, "MAIL": true, "RCPT": true, "DATA": true}

// mtaCommands are commands the MTA implements itself and shows neither
// protocol, with the Postfix setting that controls each.
var mtaCommands = map[string]string{
	"VRFY":     "disable_vrfy_command = yes",
	"ETRN":     "smtpd_etrn_restrictions = reject",
	"EXPN":     "nothing: Postfix does not implement EXPN",
	"AUTH":     "smtpd_sasl_auth_enable = no",
	"STARTTLS": "smtpd_tls_security_level = none (or smtpd_discard_ehlo_keywords = starttls)",
	"BDAT":     "smtpd_discard_ehlo_keywords = chunking",
	"XCLIENT":  "smtpd_authorized_xclient_hosts",
	"XFORWARD": "smtpd_authorized_xforward_hosts",
	"RSET":     "nothing: RSET cannot be refused",
	"NOOP":     "nothing: NOOP cannot be refused",
	"QUIT":     "nothing: QUIT cannot be refused",
	"HELP":     "nothing: Postfix does not implement HELP",
}

// commandWarnings names every configured command that a configured
// protocol cannot see, and the MTA setting that covers it (DESIGN §3).
func commandWarnings(cfg *Config) []string {
	var out []string
	cmds := make(map[string]bool)
	for c := range cfg.Commands.Deny {
		cmds[c] = true
	}
	for _, c := range sortedKeys(cmds) {
		if len(cfg.Server.Policy) > 0 {
			if _, ok := policyCommands[c]; !ok {
				out = append(out, "commands.deny: the policy protocol never sees "+c+"; "+mtaHint(c))
			}
		}
		if len(cfg.Server.Milter) > 0 && (c == "EHLO" || c == "HELO") && !cmds["EHLO"] != !cmds["HELO"] {
			out = append(out, "commands.deny lists "+c+" but not the other greeting: the milter protocol does not tell HELO from EHLO, and the milter checks every greeting as HELO")
		}
		if len(cfg.Server.Milter) > 0 && !milterCommands[c] {
			if hint, known := mtaCommands[c]; known {
				out = append(out, "commands.deny: the milter protocol never sees "+c+" (the MTA answers it itself); use "+hint)
			}
		}
	}
	return out
}

func mtaHint(c string) string {
	if hint, ok := mtaCommands[c]; ok {
		return "use " + hint
	}
	return "Postfix refuses commands it does not know with 502 by itself"
}
