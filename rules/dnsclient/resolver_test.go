package dnsclient

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"
	"github.com/miekg/dns"

	"github.com/smtp-interceptor/smtp-interceptor/internal/testutil"
)

func TestResolverDown(t *testing.T) {
	// A step changes the server or the clock, or runs one query of a new
	// client and checks how it failed, how many questions the server got
	// for it (never how long it took) and the resolver's state after it.
	type step struct {
		do      string // "query", "silent", "answer", "servfail", "advance"
		wantErr string // query: "", "timeout", "down", "servfail"
		sent    int    // query: questions the server got
		up      bool   // query: ResolverUp after it
	}
	healthy := step{do: "query", sent: 3, up: true} // the zone's probe (2) and the query
	timeout := step{do: "query", wantErr: "timeout", sent: 1}
	q := func(wantErr string, sent int, up bool) step {
		return step{do: "query", wantErr: wantErr, sent: sent, up: up}
	}
	tests := []struct {
		name             string
		steps            []step
		wantDown, wantUp int // log lines
	}{
		{
			name: "dead from the start: the probe's 2 timeouts and the query's mark it down",
			steps: []step{{do: "silent"},
				q("timeout", 3, false),
				q("down", 0, false), q("down", 0, false)},
			wantDown: 1,
		},
		{
			name: "stops answering, then comes back after the hold",
			steps: []step{healthy, {do: "silent"},
				q("timeout", 1, true), q("timeout", 1, true), timeout,
				q("down", 0, false), {do: "answer"}, q("down", 0, false), // still held
				{do: "advance"}, q("", 1, true), // the half-open query is answered
				q("", 1, true)},
			wantDown: 1, wantUp: 1,
		},
		{
			name: "the half-open query times out: held again",
			steps: []step{healthy, {do: "silent"}, q("timeout", 1, true), q("timeout", 1, true), timeout,
				{do: "advance"}, timeout, q("down", 0, false),
				{do: "answer"}, {do: "advance"}, q("", 1, true)},
			wantDown: 1, wantUp: 1,
		},
		{
			name: "an answer in between resets the count",
			steps: []step{healthy, {do: "silent"}, q("timeout", 1, true), q("timeout", 1, true),
				{do: "answer"}, q("", 1, true), {do: "silent"}, q("timeout", 1, true), q("timeout", 1, true)},
		},
		{
			name: "SERVFAIL answers do not count",
			steps: []step{healthy, {do: "servfail"},
				q("servfail", 1, true), q("servfail", 1, true), q("servfail", 1, true), q("servfail", 1, true)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			f := NewFake()
			addr, queries := StartServer(t, f)
			clock := NewFakeClock()
			var logs testutil.SyncBuffer
			c := newTestClient(t, addr, Options{Timeout: 100 * time.Millisecond, CacheEntries: 100, Now: clock.Now,
				Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			n := 0
			for i, st := range tt.steps {
				switch st.do {
				case "silent":
					f.SetSilent(true)
				case "answer":
					f.SetSilent(false)
					f.SetDefault(nil)
				case "servfail":
					f.SetDefault(&Entry{Rcode: dns.RcodeServerFailure})
				case "advance":
					clock.Advance(ResolverDownHold)
				case "query":
					n++
					before := queries.Total()
					_, err := c.Query(context.Background(), zone, nthClient(n))
					switch st.wantErr {
					case "":
						is.NoErr(err)
					case "timeout":
						is.True(isTimeout(err)) // a timeout
					case "down":
						is.True(errors.Is(err, ErrResolverDown)) // failed at once
					case "servfail":
						var re *RcodeError
						is.True(errors.As(err, &re))
					}
					is.Equal(queries.Total()-before, st.sent) // questions sent
					is.Equal(c.ResolverUp(), st.up)
				default:
					t.Fatalf("step %d: unknown %q", i, st.do)
				}
			}
			is.Equal(strings.Count(logs.String(), "dns resolver down"), tt.wantDown)
			is.Equal(strings.Count(logs.String(), "dns resolver answers again"), tt.wantUp)
		})
	}
}
