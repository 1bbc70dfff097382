package sessionstore_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/smtp-interceptor/smtp-interceptor/internal/sessionstore"
	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// sample is a record of the filter tests; the sessions are stored in
// this order, a minute apart, so newest first is s7 ... s1.
type sample struct {
	id      string
	ip      string
	from    *string // nil: no MAIL FROM
	rcpts   []string
	refused []string
	action  rules.Action
	control rules.Control
}

func addr(s string) *string { return &s }

var samples = []sample{
	{id: "s1", ip: "192.0.2.7", from: addr("Alice@Example.com"), rcpts: []string{"bob@domino.test"}, action: rules.ActionAccept},
	{id: "s2", ip: "192.0.2.200", from: addr(""), refused: []string{"Postmaster@domino.test"}, action: rules.ActionReject, control: rules.ControlRecipients},
	{id: "s3", ip: "198.51.100.9", action: rules.ActionReject, control: rules.ControlBlacklist},
	{id: "s4", ip: "2001:db8::1", from: addr("carol@other.test"), rcpts: []string{"Bob@Domino.test", "dave@domino.test"}, action: rules.ActionTag, control: rules.ControlDNSBlacklist},
	{id: "s5", ip: "2001:db8:1::5", from: addr("eve@example.com"), refused: []string{"x@domino.test"}, action: rules.ActionTempfail, control: rules.ControlGreylist},
	{id: "s6", ip: "192.0.2.7", from: addr("mallory@example.org"), rcpts: []string{"erin@domino.test"}, action: rules.ActionAccept},
	{id: "s7", ip: "203.0.113.4", from: addr("what?[1]@example.net"), rcpts: []string{"frank@elsewhere.test"}, action: rules.ActionAccept},
}

// storeSamples writes the samples and returns the store.
func storeSamples(t *testing.T) *sessionstore.Store {
	t.Helper()
	s := openStore(t, sessionstore.Options{})
	for i, x := range samples {
		r := &rules.MessageRecord{
			Time: base.Add(time.Duration(i+1) * time.Minute), Session: x.id, ClientIP: x.ip, MailFrom: x.from,
			Recipients: x.rcpts, Refused: x.refused, Action: x.action, Control: x.control, Stage: rules.StageRcpt,
		}
		if x.action.Refuses() {
			r.Code = 550
		}
		s.Message(r)
	}
	waitWritten(t, s, uint64(len(samples)))
	return s
}

func TestQueryFilters(t *testing.T) {
	s := storeSamples(t)
	minute := func(n int) time.Time { return base.Add(time.Duration(n) * time.Minute) }
	tests := []struct {
		name string
		f    sessionstore.Filter
		want []string
	}{
		{name: "all", want: []string{"s7", "s6", "s5", "s4", "s3", "s2", "s1"}},
		{name: "ip", f: sessionstore.Filter{IP: "192.0.2.7"}, want: []string{"s6", "s1"}},
		{name: "ip v6", f: sessionstore.Filter{IP: "2001:db8::1"}, want: []string{"s4"}},
		{name: "ip v4-mapped", f: sessionstore.Filter{IP: "::ffff:192.0.2.7"}, want: []string{"s6", "s1"}},
		{name: "cidr v4", f: sessionstore.Filter{IP: "192.0.2.0/24"}, want: []string{"s6", "s2", "s1"}},
		{name: "cidr v4 host bits", f: sessionstore.Filter{IP: "192.0.2.130/25"}, want: []string{"s2"}},
		{name: "cidr v4 /0", f: sessionstore.Filter{IP: "0.0.0.0/0"}, want: []string{"s7", "s6", "s3", "s2", "s1"}},
		{name: "cidr v6", f: sessionstore.Filter{IP: "2001:db8::/32"}, want: []string{"s5", "s4"}},
		{name: "cidr v6 /48", f: sessionstore.Filter{IP: "2001:db8::/48"}, want: []string{"s4"}},
		{name: "cidr none", f: sessionstore.Filter{IP: "10.0.0.0/8"}},
		{name: "from exact, any case", f: sessionstore.Filter{From: "ALICE@example.com"}, want: []string{"s1"}},
		{name: "from in brackets", f: sessionstore.Filter{From: "<alice@example.com>"}, want: []string{"s1"}},
		{name: "from wildcard", f: sessionstore.Filter{From: "*@example.com"}, want: []string{"s5", "s1"}},
		{name: "from wildcards", f: sessionstore.Filter{From: "*@EXAMPLE.*"}, want: []string{"s7", "s6", "s5", "s1"}},
		{name: "from null sender", f: sessionstore.Filter{From: "<>"}, want: []string{"s2"}},
		{name: "from ? and [ are literal", f: sessionstore.Filter{From: "what?[1]@*"}, want: []string{"s7"}},
		{name: "from ? is no wildcard", f: sessionstore.Filter{From: "wha??[1]@*"}},
		{name: "from no match", f: sessionstore.Filter{From: "alice@example"}},
		{name: "rcpt", f: sessionstore.Filter{Rcpt: "BOB@domino.test"}, want: []string{"s4", "s1"}},
		{name: "rcpt refused", f: sessionstore.Filter{Rcpt: "postmaster@domino.test"}, want: []string{"s2"}},
		{name: "rcpt wildcard", f: sessionstore.Filter{Rcpt: "*@domino.test"}, want: []string{"s6", "s5", "s4", "s2", "s1"}},
		{name: "control", f: sessionstore.Filter{Control: "greylist"}, want: []string{"s5"}},
		{name: "verdict reject", f: sessionstore.Filter{Verdict: "reject"}, want: []string{"s3", "s2"}},
		{name: "verdict refused", f: sessionstore.Filter{Verdict: "refused"}, want: []string{"s5", "s3", "s2"}},
		{name: "verdict tempfail", f: sessionstore.Filter{Verdict: "TempFail"}, want: []string{"s5"}},
		{name: "verdict tag", f: sessionstore.Filter{Verdict: "tag"}, want: []string{"s4"}},
		{name: "verdict accept", f: sessionstore.Filter{Verdict: "accept"}, want: []string{"s7", "s6", "s1"}},
		{name: "since", f: sessionstore.Filter{Since: minute(5)}, want: []string{"s7", "s6", "s5"}},
		{name: "until", f: sessionstore.Filter{Until: minute(3)}, want: []string{"s2", "s1"}},
		{name: "since and until", f: sessionstore.Filter{Since: minute(3), Until: minute(4)}, want: []string{"s3"}},
		{name: "combined", f: sessionstore.Filter{IP: "192.0.2.0/24", Verdict: "accept", Rcpt: "*@domino.test"}, want: []string{"s6", "s1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			p, err := s.Query(context.Background(), tc.f)
			is.NoErr(err)
			is.True(!p.More)
			var got []string
			for _, e := range p.Entries {
				got = append(got, e.Record.Session)
			}
			is.Equal(got, tc.want)
		})
	}
}

// TestQueryErrors: a filter that cannot be applied is an error naming
// its field, from Query and from Validate.
func TestQueryErrors(t *testing.T) {
	s := storeSamples(t)
	tests := []struct {
		name  string
		f     sessionstore.Filter
		field string
	}{
		{"not an address", sessionstore.Filter{IP: "300.1.1.1"}, "ip"},
		{"prefix too long", sessionstore.Filter{IP: "192.0.2.0/33"}, "ip"},
		{"a name", sessionstore.Filter{IP: "example.com"}, "ip"},
		{"unknown verdict", sessionstore.Filter{Verdict: "bounce"}, "verdict"},
		{"null recipient", sessionstore.Filter{Rcpt: "<>"}, "rcpt"},
		{"negative limit", sessionstore.Filter{Limit: -1}, "limit"},
		{"negative before", sessionstore.Filter{Before: -5}, "before"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			_, err := s.Query(context.Background(), tc.f)
			var fe *sessionstore.FilterError
			is.True(errors.As(err, &fe))
			is.Equal(fe.Field, tc.field)
			is.Equal(tc.f.Validate(), err)
		})
	}
}

// TestPaging: pages of Limit sessions, newest first, through Before,
// with More on every page but the last; no session twice, none missed.
func TestPaging(t *testing.T) {
	is := is.New(t)
	s := openStore(t, sessionstore.Options{})
	const n = 25
	for i := range n {
		s.Message(record(fmt.Sprintf("p%02d", i), base.Add(time.Duration(i)*time.Second)))
	}
	waitWritten(t, s, n)
	var got []string
	var sizes []int
	var more []bool
	f := sessionstore.Filter{Limit: 10}
	last := int64(1 << 62)
	for {
		p, err := s.Query(context.Background(), f)
		is.NoErr(err)
		sizes, more = append(sizes, len(p.Entries)), append(more, p.More)
		for _, e := range p.Entries {
			is.True(e.ID < last) // ids go down
			last = e.ID
			got = append(got, e.Record.Session)
		}
		if !p.More {
			break
		}
		f.Before = p.Entries[len(p.Entries)-1].ID
	}
	is.Equal(sizes, []int{10, 10, 5})
	is.Equal(more, []bool{true, true, false})
	var want []string
	for i := n - 1; i >= 0; i-- {
		want = append(want, fmt.Sprintf("p%02d", i))
	}
	is.Equal(got, want)

	for _, tc := range []struct{ limit, want int }{{0, n}, {5000, n}, {n, n}, {1, 1}} {
		p, err := s.Query(context.Background(), sessionstore.Filter{Limit: tc.limit})
		is.NoErr(err)
		is.Equal(len(p.Entries), tc.want)
		is.Equal(p.More, tc.want < n)
	}
	p, err := s.Query(context.Background(), sessionstore.Filter{Before: 1})
	is.NoErr(err)
	is.Equal(len(p.Entries), 0)
}
