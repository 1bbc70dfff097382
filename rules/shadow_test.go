package rules

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/matryer/is"
)

// TestShadowMode: a shadowed refusal accepts the client, reports what
// would have been refused once, is counted with mode "shadow", and leaves
// the other (enforced) controls working.
func TestShadowMode(t *testing.T) {
	ctx := context.Background()
	newEngine := func(t *testing.T, cfg string) (*Engine, *recordingObserver) {
		parsed, err := Parse("test.toml", cfg)
		if err != nil {
			t.Fatal(err)
		}
		obs := new(recordingObserver)
		return NewEngine(parsed, EngineOptions{DNS: NewMemoryDNS(), Logger: testLogger(t), Observer: obs}), obs
	}
	shadowCount := func(e *Engine) (n uint64) {
		for _, v := range e.Counters().Snapshot().Verdicts {
			if v.Mode == "shadow" {
				n += v.Count
			}
		}
		return n
	}

	t.Run("blacklist in shadow, mail_from enforced", func(t *testing.T) {
		is := is.New(t)
		e, obs := newEngine(t, "[blacklist]\nmode = \"shadow\"\nhosts = [\"192.0.2.66\"]\n[mail_from]\ndeny = [\"@bad.test\"]")
		s := NewSession(mustAddr("192.0.2.66"), "")
		e.Prepare(ctx, s)
		e.HoldHelo(s, "EHLO", "mx")
		v := e.Mail(ctx, s, "a@good.test")
		is.Equal(v.Action, ActionAccept)
		is.True(v.Shadow)
		is.Equal(v.ShadowReply(), "550 5.7.1 Connection denied based on policy reason")
		is.Equal(v.Control, ControlBlacklist)
		is.Equal(v.Reply(), "") // nothing refused
		// Reported once; the enforced control still refuses.
		v = e.Mail(ctx, s, "a@good.test")
		is.True(!v.Shadow)
		v = e.Mail(ctx, s, "x@bad.test")
		is.Equal(v.Code, 550)
		is.Equal(v.Control, ControlMailFrom)
		is.Equal(shadowCount(e), uint64(1))
		is.Equal(obs.refusals, 1) // only the enforced one reached the observers as a refusal
	})
	t.Run("connect stage delivers the shadow at once", func(t *testing.T) {
		is := is.New(t)
		e, _ := newEngine(t, "[server]\nmode = \"shadow\"\n[blacklist]\nhosts = [\"192.0.2.66\"]")
		s := NewSession(mustAddr("192.0.2.66"), "")
		v := e.Connect(ctx, s)
		is.True(v.Shadow)
		is.Equal(v.Action, ActionAccept)
		v = e.Mail(ctx, s, "a@example.com")
		is.True(!v.Shadow) // already reported
		is.Equal(v.Action, ActionAccept)
	})
	t.Run("recipients in shadow: the recipient is accepted and counted", func(t *testing.T) {
		is := is.New(t)
		e, _ := newEngine(t, "[recipients]\nmode = \"shadow\"\nmax = 1\ndeny = [\"x@domino.test\"]")
		s := NewSession(mustAddr("192.0.2.1"), "")
		e.Helo(ctx, s, "EHLO", "mx")
		e.Mail(ctx, s, "a@example.com")
		is.True(e.Rcpt(ctx, s, "x@domino.test").Shadow)
		v := e.Rcpt(ctx, s, "y@domino.test")
		is.True(v.Shadow)
		is.Equal(v.ShadowReply(), "452 4.5.3 Too many recipients")
		is.Equal(len(s.Recipients), 2)
		is.Equal(len(s.Refused), 0)
	})
	t.Run("shadowed HELO is not sticky", func(t *testing.T) {
		is := is.New(t)
		e, _ := newEngine(t, "[helo]\nmode = \"shadow\"\ndeny = [\"bad\"]")
		s := NewSession(mustAddr("192.0.2.1"), "")
		is.True(e.Helo(ctx, s, "EHLO", "bad").Shadow)
		v := e.Mail(ctx, s, "a@example.com")
		is.Equal(v.Action, ActionAccept)
		is.True(!v.Shadow)
	})
	t.Run("tags still apply", func(t *testing.T) {
		is := is.New(t)
		e, _ := newEngine(t, "[server]\nmode = \"shadow\"\n[private_blacklist]\nenabled = true\naction = \"tag\"\nhosts = [\"192.0.2.0/24\"]\n[helo]\ndeny = [\"bad\"]")
		s := NewSession(mustAddr("192.0.2.1"), "")
		is.Equal(e.Connect(ctx, s).Action, ActionTag)
		v := e.Helo(ctx, s, "EHLO", "bad")
		is.True(v.Shadow)
		is.Equal(len(e.Tags(s)), 1)
	})
	t.Run("shadowed refusals do not count towards error_limit", func(t *testing.T) {
		is := is.New(t)
		e, _ := newEngine(t, "[server]\nerror_limit = 1\n[recipients]\nmode = \"shadow\"\ndeny = [\"@bad.test\"]")
		s := NewSession(mustAddr("192.0.2.1"), "")
		e.Helo(ctx, s, "EHLO", "mx")
		e.Mail(ctx, s, "a@example.com")
		for range 3 {
			v := e.Rcpt(ctx, s, "x@bad.test")
			is.True(v.Shadow)
			is.Equal(v.Action, ActionAccept)
		}
	})
	t.Run("bad mode", func(t *testing.T) {
		is := is.New(t)
		_, err := Parse("t.toml", "[helo]\nmode = \"dry-run\"")
		is.True(err != nil)
		is.True(containsSubstring([]string{err.Error()}, `helo.mode: unknown mode "dry-run"`))
	})
}

// TestDebugVerdictLine: at level debug every decision is one line with
// its control and reason (the entry).
func TestDebugVerdictLine(t *testing.T) {
	is := is.New(t)
	var buf strings.Builder
	cfg, err := Parse("", "[blacklist]\nhosts = [\"192.0.2.0/24\"]")
	is.NoErr(err)
	e := NewEngine(cfg, EngineOptions{Logger: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	e.Connect(context.Background(), NewSession(mustAddr("192.0.2.9"), ""))
	is.True(strings.Contains(buf.String(), `level=DEBUG msg=verdict session="" client=192.0.2.9 stage=connect action=reject control=blacklist code=550 shadow=false reason="blacklist entry \"192.0.2.0/24\""`))
}
