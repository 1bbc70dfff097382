package sessionstore_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/smtp-interceptor/smtp-interceptor/internal/sessionstore"
	"github.com/smtp-interceptor/smtp-interceptor/internal/testutil"
	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// benchRecord is a typical record: a message accepted for two
// recipients, or (every fifth) refused at RCPT by the DNS blacklist.
func benchRecord(i int, at time.Time) *rules.MessageRecord {
	from := fmt.Sprintf("sender%d@domain%d.example", i%997, i%500)
	r := &rules.MessageRecord{
		Time:       at,
		Session:    fmt.Sprintf("%08X", i),
		ClientIP:   fmt.Sprintf("198.51.%d.%d", i%64, i%251),
		ClientName: fmt.Sprintf("mx%d.domain%d.example", i%7, i%500),
		Helo:       fmt.Sprintf("mx%d.domain%d.example", i%7, i%500),
		MailFrom:   &from,
		Recipients: []string{fmt.Sprintf("user%d@domino.test", i%50), fmt.Sprintf("user%d@domino.test", (i+1)%50)},
		Stage:      rules.StageData,
		Action:     rules.ActionAccept,
	}
	if i%5 == 0 {
		r.Recipients = nil
		r.Refused = []string{fmt.Sprintf("user%d@domino.test", i%50)}
		r.Stage, r.Action, r.Control = rules.StageRcpt, rules.ActionReject, rules.ControlDNSBlacklist
		r.Code, r.EnhancedCode, r.Text = 550, "5.7.1", "Access denied: listed by bl.test"
		r.DNSLists = []rules.DNSRecord{{Kind: rules.DNSBL, Site: "bl.test", Action: "reject"}}
	}
	return r
}

func benchStore(b *testing.B, o sessionstore.Options) *sessionstore.Store {
	b.Helper()
	o.Path = filepath.Join(b.TempDir(), "sessions.db")
	o.Logger = slog.New(slog.DiscardHandler)
	if o.Now == nil {
		o.Now = testutil.NewClock(base).Now
	}
	s, err := sessionstore.Open(o)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// BenchmarkMessage is the cost of Message on the request path, from
// every core at once, with the default queue and the writer running:
// the records it cannot take in time are dropped (dropped/op says how
// many); "full" is the cost of a drop alone.
func BenchmarkMessage(b *testing.B) {
	r := benchRecord(1, base)
	b.Run("default", func(b *testing.B) {
		s := benchStore(b, sessionstore.Options{})
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				s.Message(r)
			}
		})
		b.StopTimer()
		b.ReportMetric(float64(s.Stats().Dropped)/float64(b.N), "dropped/op")
	})
	b.Run("full", func(b *testing.B) {
		s := benchStore(b, sessionstore.Options{QueueSize: 1, BatchSize: 1, FlushEvery: time.Hour})
		for s.Stats().Dropped == 0 { // the writer holds one, the queue one
			s.Message(r)
		}
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				s.Message(r)
			}
		})
	})
}

// BenchmarkWrite is how many records a second the writer stores, resting
// to keep to WriterShare: b.N records are queued at once, and the time is
// until the last is written.
func BenchmarkWrite(b *testing.B) {
	s := benchStore(b, sessionstore.Options{QueueSize: b.N})
	records := make([]*rules.MessageRecord, b.N)
	for i := range records {
		records[i] = benchRecord(i, base.Add(time.Duration(i)*time.Millisecond))
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for _, r := range records {
		s.Message(r)
	}
	testutil.WaitFor(b, "the records written", func() bool {
		st := s.Stats()
		return st.Written+st.Failed >= uint64(b.N)
	})
	elapsed := time.Since(start)
	b.StopTimer()
	if st := s.Stats(); st.Dropped+st.Failed > 0 {
		b.Fatalf("records lost: %+v", st)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "records/s")
}

// BenchmarkQuery runs the log command's kinds of query on a store of
// 100,000 sessions spread over 30 days.
func BenchmarkQuery(b *testing.B) {
	const n = 100000
	span := 30 * 24 * time.Hour
	now := base.Add(span)
	s := benchStore(b, sessionstore.Options{QueueSize: n, Now: testutil.NewClock(now).Now})
	for i := range n {
		s.Message(benchRecord(i, base.Add(span/n*time.Duration(i))))
	}
	testutil.WaitFor(b, "the sessions written", func() bool { return s.Stats().Written >= n })
	if st := s.Stats(); st.Written != n || st.Pruned != 0 {
		b.Fatalf("the store holds %+v, want %d sessions", st, n)
	}
	day := now.Add(-24 * time.Hour)
	for _, bc := range []struct {
		name string
		f    sessionstore.Filter
	}{
		{"newest", sessionstore.Filter{}},
		{"last day", sessionstore.Filter{Since: day, Limit: 100}},
		{"deep page", sessionstore.Filter{Before: n / 2}},
		{"ip", sessionstore.Filter{IP: "198.51.7.100"}},
		{"cidr /24", sessionstore.Filter{IP: "198.51.7.0/24"}},
		{"from", sessionstore.Filter{From: "sender5@domain5.example"}},
		{"from *@domain", sessionstore.Filter{From: "*@domain7.example"}},
		{"rcpt", sessionstore.Filter{Rcpt: "user3@domino.test"}},
		{"rcpt *@domain", sessionstore.Filter{Rcpt: "*@domino.test"}},
		{"refused last day", sessionstore.Filter{Verdict: "refused", Since: day, Limit: 100}},
		{"control", sessionstore.Filter{Control: "dns_blacklist"}},
		{"rare: ip and rcpt", sessionstore.Filter{IP: "198.51.7.0/24", Rcpt: "user49@domino.test", Verdict: "reject"}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			got := 0
			for b.Loop() {
				p, err := s.Query(context.Background(), bc.f)
				if err != nil {
					b.Fatal(err)
				}
				got = len(p.Entries)
			}
			b.ReportMetric(float64(got), "entries")
		})
	}
}
