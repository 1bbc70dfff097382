package rules

import (
	"context"
	"encoding/json"
)

// Transaction is a simulated SMTP session for Explain. Fields left empty
// are steps the simulated client does not take.
type Transaction struct {
	// HeloCmd is "HELO" or "EHLO"; Helo its argument. Without HeloCmd the
	// client sends no HELO at all.
	HeloCmd, Helo string
	// From is the MAIL FROM address ("<>" for the null sender); without
	// it the session ends after HELO.
	From string
	// Rcpts are the RCPT TO addresses, in order.
	Rcpts []string
	// AuthUser simulates a SASL login before MAIL FROM.
	AuthUser string
	// Via is the adapter the simulation speaks for: ViaPolicy (the
	// default) or ViaMilter. They differ in when a connect-time or HELO
	// refusal is given and whether AUTH is known by then.
	Via Via
}

// Via names the adapter Explain simulates.
type Via string

// The adapters.
const (
	// ViaPolicy: Postfix asks the policy server at RCPT (and DATA), with
	// smtpd_delay_reject = yes as by default, so every request already
	// carries sasl_username and every stage sees the login.
	ViaPolicy Via = "policy"
	// ViaMilter: the MTA calls the milter at connect, HELO, MAIL FROM
	// ({auth_authen} known from here), RCPT and DATA. With [server]
	// delay_reject = true connect-time and HELO refusals are held until
	// MAIL FROM; with false they are given at connect and HELO, before
	// any AUTH.
	ViaMilter Via = "milter"
)

// Explanation is every stage's verdict for a simulated session, and the
// outcome: the first refusal of a connect, HELO or MAIL stage ends the
// session as a real MTA would; refused recipients do not.
type Explanation struct {
	Stages []Verdict
	// Final is the outcome: the DATA stage's verdict when the message was
	// accepted for at least one recipient; otherwise the first refusal,
	// else the stage that added headers, else the last stage. Its Trace
	// holds every stage's steps.
	Final Verdict
	// Accepted and Refused are the recipients accepted and refused.
	Accepted, Refused []string
	// Via is the adapter simulated.
	Via Via
}

// Explain runs one simulated session through the engine with tracing on
// and reports every stage's decision. It uses the engine's DNS lists, so
// with a real DNS client it asks the real lists.
func (e *Engine) Explain(ctx context.Context, s *Session, tx Transaction) Explanation {
	s.Trace = true
	var x Explanation
	add := func(v Verdict) bool {
		x.Stages = append(x.Stages, v)
		return v.Action.Refuses()
	}
	if tx.Via == "" {
		tx.Via = ViaPolicy
	}
	x.Via = tx.Via
	held := false
	switch tx.Via {
	case ViaMilter:
		held = e.cfg.Load().Server.DelayReject
	default:
		s.AuthUser = tx.AuthUser // sasl_username is in every request asked
	}
	var stopped bool
	if held {
		add(e.Prepare(ctx, s))
		if tx.HeloCmd != "" {
			add(e.HoldHelo(s, tx.HeloCmd, tx.Helo))
		}
	} else {
		stopped = add(e.Connect(ctx, s))
		if !stopped && tx.HeloCmd != "" {
			stopped = add(e.Helo(ctx, s, tx.HeloCmd, tx.Helo))
		}
	}
	if !stopped && tx.From != "" {
		s.AuthUser = tx.AuthUser
		stopped = add(e.Mail(ctx, s, tx.From))
		if !stopped {
			for _, r := range tx.Rcpts {
				if v := e.Rcpt(ctx, s, r); add(v) && v.Disconnect {
					stopped = true
					break
				}
			}
			if !stopped && len(s.Recipients) > 0 {
				add(e.Data(ctx, s))
			}
		}
	}

	x.Accepted = append([]string(nil), s.Recipients...)
	x.Refused = append([]string(nil), s.Refused...)
	final := -1
	if last := x.Stages[len(x.Stages)-1]; last.Stage == StageData {
		final = len(x.Stages) - 1
	}
	for i, v := range x.Stages {
		if final >= 0 {
			break
		}
		if v.Action.Refuses() {
			final = i
			break
		}
	}
	if final < 0 {
		final = len(x.Stages) - 1
		for i, v := range x.Stages {
			if v.Action == ActionTag {
				final = i
			}
		}
	}
	x.Final = x.Stages[final]
	x.Final.Trace = nil
	for _, v := range x.Stages {
		x.Final.Trace = append(x.Final.Trace, v.Trace...)
	}
	return x
}

// MarshalJSON writes the final verdict's fields (action, code,
// enhanced_code, text, stage, control, headers, trace), a "stages" array
// with each stage's verdict, and "via", the adapter simulated.
func (x Explanation) MarshalJSON() ([]byte, error) {
	type stage struct {
		Action       Action   `json:"action"`
		Code         int      `json:"code"`
		EnhancedCode string   `json:"enhanced_code"`
		Text         string   `json:"text"`
		Stage        Stage    `json:"stage"`
		Control      Control  `json:"control"`
		Reason       string   `json:"reason,omitempty"`
		Headers      []Header `json:"headers,omitempty"`
	}
	stages := make([]stage, len(x.Stages))
	for i, v := range x.Stages {
		stages[i] = stage{v.Action, v.Code, v.EnhancedCode, v.Text, v.Stage, v.Control, v.Reason, v.Headers}
	}
	final, err := json.Marshal(x.Final)
	if err != nil {
		return nil, err
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(final, &obj); err != nil {
		return nil, err
	}
	if obj["stages"], err = json.Marshal(stages); err != nil {
		return nil, err
	}
	if obj["via"], err = json.Marshal(x.Via); err != nil {
		return nil, err
	}
	return json.Marshal(obj)
}
