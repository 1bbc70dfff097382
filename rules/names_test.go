package rules

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"
)

func TestNamePatternsMatch(t *testing.T) {
	tests := []struct {
		name    string
		pattern string
		helo    string
		want    bool
	}{
		{"exact", "localhost", "localhost", true},
		{"exact any case", "LocalHost", "LOCALHOST", true},
		{"exact trailing dot on name", "mail.example.com", "mail.example.com.", true},
		{"exact trailing dot on pattern", "mail.example.com.", "mail.example.com", true},
		{"exact miss", "localhost", "localhost.localdomain", false},
		{"exact address literal", "[192.0.2.1]", "[192.0.2.1]", true},
		{"exact address literal miss", "[192.0.2.1]", "192.0.2.1", false},
		{"exact IPv6 literal any case", "[IPv6:2001:DB8::1]", "[ipv6:2001:db8::1]", true},
		{"star suffix", "*.example.com", "mail.example.com", true},
		{"star spans dots", "*.example.com", "a.b.c.example.com", true},
		{"star suffix needs the dot", "*.example.com", "example.com", false},
		{"star suffix lookalike", "*.example.com", "badexample.com", false},
		{"star prefix", "localhost*", "localhost.localdomain", true},
		{"star matches empty", "localhost*", "localhost", true},
		{"star in the middle", "mail*.example.com", "mail42.example.com", true},
		{"star in the middle miss", "mail*.example.com", "smtp.example.com", false},
		{"several stars", "*dsl*.*", "host-12.adsl.isp.example", true},
		{"several stars miss", "*dsl*.*", "host-12.cable", false},
		{"star alone", "*", "anything.at.all", true},
		{"question mark", "mx?.example.com", "mx1.example.com", true},
		{"question mark exactly one", "mx?.example.com", "mx12.example.com", false},
		{"question mark not zero", "mx?.example.com", "mx.example.com", false},
		{"question and star", "??*.example.com", "ab.example.com", true},
		{"question and star too short", "??*.example.com", "a.example.com", false},
		{"wildcard any case", "*.EXAMPLE.com", "Mail.Example.COM.", true},
		{"wildcard address literal", "[192.0.2.*]", "[192.0.2.77]", true},
		{"wildcard address literal miss", "[192.0.2.*]", "[192.0.3.77]", false},
		{"backtracking", "*a*b", "aaaaxaaab", true},
		{"backtracking miss", "*a*b", "aaaaxaaabc", false},
		{"trailing stars", "ab**", "ab", true},
		{"prefix and suffix overlap", "ab*ba", "aba", false},
		{"prefix and suffix adjoin", "ab*ba", "abba", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			n, errs := NewNamePatterns([]Entry{{Value: tt.pattern, Key: "helo.deny"}})
			is.Equal(len(errs), 0) // pattern accepted
			is.Equal(n.Len(), 1)
			got, ok := n.Match(tt.helo)
			is.Equal(ok, tt.want)
			if tt.want {
				is.Equal(got, tt.pattern)
			} else {
				is.Equal(got, "")
			}
		})
	}
}

func TestNamePatternsErrors(t *testing.T) {
	tests := []struct {
		value string
		want  string
	}{
		{"", "empty pattern"},
		{"   ", "empty pattern"},
		{".", `".": empty pattern`},
		{"mail example", `"mail example": white space`},
		{"mail\x00", "control character"},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			is := is.New(t)
			n, errs := NewNamePatterns([]Entry{
				{Value: "localhost", Key: "helo.deny", Line: 1},
				{Value: tt.value, Key: "helo.deny", Line: 2},
			})
			is.Equal(len(errs), 1)
			is.Equal(errs[0].Line, 2)
			msg := errs[0].Err.Error()
			is.True(strings.Contains(msg, strconv.Quote(tt.value))) // message quotes the value
			if !strings.Contains(msg, tt.want) {
				t.Errorf("message %q does not contain %q", msg, tt.want)
			}
			is.Equal(n.Len(), 1)
		})
	}
}

func TestNamePatternsOrder(t *testing.T) {
	n, errs := NewNamePatterns([]Entry{
		{Value: "*.example.com"},
		{Value: "mail.*"},
		{Value: "mail.example.com"},
	})
	if len(errs) != 0 {
		t.Fatal(errs)
	}
	tests := []struct{ helo, want string }{
		{"mail.example.com", "mail.example.com"}, // exact first
		{"smtp.example.com", "*.example.com"},
		{"mail.example.org", "mail.*"},
		{"mail.a.example.com", "*.example.com"}, // first wildcard in order
	}
	for _, tt := range tests {
		t.Run(tt.helo, func(t *testing.T) {
			is := is.New(t)
			got, ok := n.Match(tt.helo)
			is.True(ok)
			is.Equal(got, tt.want)
		})
	}
}

func TestNamePatternsNil(t *testing.T) {
	is := is.New(t)
	var n *NamePatterns
	is.Equal(n.Len(), 0)
	_, ok := n.Match("localhost")
	is.True(!ok)
}

func TestNamePatternsLongName(t *testing.T) {
	is := is.New(t)
	n, _ := NewNamePatterns([]Entry{{Value: "*.example.com"}})
	_, ok := n.Match(strings.Repeat("A", 1000) + ".EXAMPLE.COM") // longer than the stack buffer
	is.True(ok)
}

func TestNamePatternsNoBlowUp(t *testing.T) {
	is := is.New(t)
	n, _ := NewNamePatterns([]Entry{{Value: strings.Repeat("*a", 30) + "*b"}})
	start := time.Now()
	_, ok := n.Match(strings.Repeat("a", 255))
	is.True(!ok)
	is.True(time.Since(start) < time.Second) // linear backtracking, not exponential
}

func TestNamePatternsMatchAllocs(t *testing.T) {
	n, errs := NewNamePatterns([]Entry{
		{Value: "localhost"}, {Value: "*.dynamic.example.com"}, {Value: "mx?.example.org"}, {Value: "[192.0.2.*]"},
	})
	if len(errs) != 0 {
		t.Fatal(errs)
	}
	helos := []string{
		"LOCALHOST", "host1.Dynamic.Example.com.", "mx1.example.org", "[192.0.2.1]",
		"mail.example.net", strings.Repeat("X", maxStackName),
	}
	allocs := testing.AllocsPerRun(1000, func() {
		for _, h := range helos {
			n.Match(h)
		}
	})
	is.New(t).Equal(allocs, 0.0)
}
