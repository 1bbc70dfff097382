package rules

import (
	"context"
	"testing"

	"github.com/matryer/is"
)

// recordingObserver counts the verdicts it sees, by whether they refuse.
type recordingObserver struct{ refusals, others int }

func (o *recordingObserver) Verdict(_ *Session, v Verdict) {
	if v.Action.Refuses() {
		o.refusals++
	} else {
		o.others++
	}
}
func (o *recordingObserver) MessagesWanted() bool   { return false }
func (o *recordingObserver) Message(*MessageRecord) {}

func TestPrepareAndHoldHelo(t *testing.T) {
	const cfg = "[blacklist]\nhosts = [\"192.0.2.66\"]\n[helo]\ndeny = [\"*.dynamic.test\"]\n[commands]\ndeny = [\"HELO\"]\n"
	ctx := context.Background()
	newEngine := func(t *testing.T) (*Engine, *recordingObserver) {
		parsed, err := Parse("test.toml", cfg)
		if err != nil {
			t.Fatal(err)
		}
		obs := new(recordingObserver)
		return NewEngine(parsed, EngineOptions{DNS: NewMemoryDNS(), Logger: testLogger(t), Observer: obs}), obs
	}
	refused := func(e *Engine) uint64 {
		var n uint64
		for _, v := range e.Counters().Snapshot().Verdicts {
			if v.Action.Refuses() {
				n += v.Count
			}
		}
		return n
	}

	t.Run("held connect refusal, authenticated: never given nor recorded", func(t *testing.T) {
		is := is.New(t)
		e, obs := newEngine(t)
		s := NewSession(mustAddr("192.0.2.66"), "")
		is.Equal(e.Prepare(ctx, s).Action, ActionAccept)
		is.True(s.ConnectResult().Refusal != nil) // worked out, kept
		is.Equal(e.HoldHelo(s, "EHLO", "pc.dynamic.test").Action, ActionAccept)
		s.AuthUser = "roaming"
		is.Equal(e.Mail(ctx, s, "a@example.com").Action, ActionAccept)
		is.Equal(e.Rcpt(ctx, s, "b@domino.test").Action, ActionAccept)
		is.Equal(refused(e), uint64(0))
		is.Equal(obs.refusals, 0)
	})
	t.Run("held connect refusal given at MAIL, counted once", func(t *testing.T) {
		is := is.New(t)
		e, obs := newEngine(t)
		s := NewSession(mustAddr("192.0.2.66"), "")
		e.Prepare(ctx, s)
		e.HoldHelo(s, "EHLO", "mail.example.com")
		v := e.Mail(ctx, s, "a@example.com")
		is.Equal(v.Code, 550)
		is.Equal(v.Stage, StageConnect) // the control's stage, delivered at MAIL
		is.True(!v.Repeated)
		v = e.Mail(ctx, s, "a@example.com")
		is.True(v.Repeated)
		is.Equal(obs.refusals, 2)
		is.Equal(refused(e), uint64(1)) // a repeated refusal is counted once
	})
	t.Run("held HELO judged at MAIL, then repeated until a good one", func(t *testing.T) {
		is := is.New(t)
		e, _ := newEngine(t)
		s := NewSession(mustAddr("192.0.2.1"), "")
		e.Prepare(ctx, s)
		is.Equal(e.HoldHelo(s, "EHLO", "pc.dynamic.test").Action, ActionAccept)
		v := e.Mail(ctx, s, "a@example.com")
		is.Equal(v.Control, ControlHelo)
		is.Equal(v.Stage, StageHelo)
		is.True(!v.Repeated)
		v = e.Rcpt(ctx, s, "b@domino.test")
		is.Equal(v.Control, ControlHelo)
		is.True(v.Repeated)
		e.HoldHelo(s, "EHLO", "mail.example.com")
		is.Equal(e.Mail(ctx, s, "a@example.com").Action, ActionAccept)
	})
	t.Run("held HELO command denied by [commands]", func(t *testing.T) {
		is := is.New(t)
		e, _ := newEngine(t)
		s := NewSession(mustAddr("192.0.2.1"), "")
		e.HoldHelo(s, "HELO", "mail.example.com")
		v := e.Mail(ctx, s, "a@example.com")
		is.Equal(v.Control, ControlCommands)
		is.Equal(v.Code, 502)
	})
	t.Run("trace says what is held", func(t *testing.T) {
		is := is.New(t)
		e, _ := newEngine(t)
		s := NewSession(mustAddr("192.0.2.66"), "")
		s.Trace = true
		v := e.Prepare(ctx, s)
		is.Equal(v.Trace[len(v.Trace)-1].Result, "held")
	})
}

func TestParseClientIP(t *testing.T) {
	tests := []struct {
		raw, want string // want "" means an error
	}{
		{"192.0.2.1", "192.0.2.1"},
		{" 192.0.2.1 ", "192.0.2.1"},
		{"[192.0.2.1]", "192.0.2.1"},
		{"::ffff:192.0.2.1", "192.0.2.1"},
		{"::1", "::1"},
		{"0:0:0:0:0:0:0:1", "::1"},
		{"IPv6:0:0:0:0:0:0:0:1", "::1"}, // Sendmail {client_addr}
		{"ipv6:2001:DB8::7", "2001:db8::7"},
		{"[IPv6:2001:db8::7]", "2001:db8::7"},
		{"fe80::1%eth0", "fe80::1"},
		{"IPv6:192.0.2.1", ""},
		{"IPv6:", ""},
		{"unknown", ""},
		{"", ""},
		{"[::1", ""},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			is := is.New(t)
			ip, err := ParseClientIP(tt.raw)
			if tt.want == "" {
				is.True(err != nil)
				return
			}
			is.NoErr(err)
			is.Equal(ip.String(), tt.want)
		})
	}
}
