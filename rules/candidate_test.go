package rules

import (
	"context"
	"testing"

	"github.com/matryer/is"
)

// TestCandidate: the candidate decides beside the live configuration,
// never answers, and a difference is noted once per message: in the
// session log record and the counter.
func TestCandidate(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	live, err := Parse("", "[blacklist]\nhosts = [\"192.0.2.66\"]")
	is.NoErr(err)
	candCfg, err := Parse("", "[helo]\ndeny = [\"*.invalid\"]")
	is.NoErr(err)
	obs := &recordsObserver{}
	e := NewEngine(live, EngineOptions{DNS: NewMemoryDNS(), Logger: testLogger(t), Observer: obs})
	e.SetCandidate(NewEngine(candCfg, EngineOptions{DNS: NewMemoryDNS()}))

	s := NewSession(mustAddr("192.0.2.1"), "")
	is.Equal(e.Connect(ctx, s).Action, ActionAccept)
	is.Equal(e.Helo(ctx, s, "EHLO", "pc.invalid").Action, ActionAccept) // live accepts: the candidate never answers
	is.Equal(e.Mail(ctx, s, "a@example.com").Action, ActionAccept)
	is.Equal(e.Rcpt(ctx, s, "b@domino.test").Action, ActionAccept)
	e.EndMessage(s)

	b := NewSession(mustAddr("192.0.2.66"), "")
	is.Equal(e.Connect(ctx, b).Code, 550) // live refuses; the candidate would accept
	e.EndMessage(b)

	is.Equal(len(obs.recs), 2)
	is.Equal(obs.recs[0].Candidate, `reject by helo "*.invalid"`)
	is.Equal(obs.recs[1].Candidate, "accept (live: reject by blacklist)")
	is.Equal(e.Counters().Snapshot().CandidateDifferences, map[string]uint64{"helo": 1, "blacklist": 1})

	// Without a candidate nothing is noted.
	e.SetCandidate(nil)
	c := NewSession(mustAddr("192.0.2.66"), "")
	e.Connect(ctx, c)
	e.EndMessage(c)
	is.Equal(obs.recs[2].Candidate, "")
}

type recordsObserver struct{ recs []MessageRecord }

func (o *recordsObserver) Verdict(*Session, Verdict) {}
func (o *recordsObserver) MessagesWanted() bool      { return true }
func (o *recordsObserver) Message(r *MessageRecord)  { o.recs = append(o.recs, *r) }
