package rules

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/matryer/is"
)

func TestParseDNSSite(t *testing.T) {
	tests := []struct {
		value string
		zone  string
		hits  []string // answers the site accepts
		miss  []string // answers it does not
	}{
		{"zen.spamhaus.org", "zen.spamhaus.org", []string{"127.0.0.2", "127.0.0.11", "127.1.2.3", "192.0.2.1"}, nil},
		{"Zen.Spamhaus.ORG.", "zen.spamhaus.org", []string{"127.0.0.2"}, nil},
		{"bl.example=127.0.0.2", "bl.example", []string{"127.0.0.2", "::ffff:127.0.0.2"}, []string{"127.0.0.3", "127.0.1.2", "128.0.0.2", "::1"}},
		{"zen.spamhaus.org=127.0.0.[2..11]", "zen.spamhaus.org", []string{"127.0.0.2", "127.0.0.4", "127.0.0.11"}, []string{"127.0.0.1", "127.0.0.12", "127.0.1.2"}},
		{"list.dnswl.org=127.0.[0..255].[1..3]", "list.dnswl.org", []string{"127.0.0.1", "127.0.15.3", "127.0.255.2"}, []string{"127.0.15.0", "127.0.15.4", "127.1.15.1"}},
		{"bl.example=127.0.0.[2;4;10..11]", "bl.example", []string{"127.0.0.2", "127.0.0.4", "127.0.0.10", "127.0.0.11"}, []string{"127.0.0.3", "127.0.0.5", "127.0.0.9", "127.0.0.12"}},
		{"bl.example=[126;127].0.0.[0..255]", "bl.example", []string{"126.0.0.0", "127.0.0.255"}, []string{"125.0.0.1", "128.0.0.1"}},
		{"bl.example=127.0.0.[7]", "bl.example", []string{"127.0.0.7"}, []string{"127.0.0.8"}},
		{"  bl.example=127.0.0.2  ", "bl.example", []string{"127.0.0.2"}, nil},
		{"bl_test.example", "bl_test.example", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			is := is.New(t)
			s, err := ParseDNSSite(Entry{Value: tt.value, Key: "dns_blacklist.sites"})
			is.Equal(err, nil)
			is.Equal(s.Name, strings.TrimSpace(tt.value))
			is.Equal(s.Zone, tt.zone)
			for _, a := range tt.hits {
				is.True(s.Accepts(netip.MustParseAddr(a))) // answer accepted
			}
			for _, a := range tt.miss {
				is.True(!s.Accepts(netip.MustParseAddr(a))) // answer refused
			}
			is.True(!s.Accepts(netip.Addr{})) // never an invalid answer
		})
	}
}

func TestParseDNSSiteErrors(t *testing.T) {
	tests := []struct {
		value string
		want  string
	}{
		{"", "empty DNS list site"},
		{"zen.spamhaus.org*3000", "between -1000 and 1000"},
		{"*.spamhaus.org", "not a valid DNS zone"},
		{"zen spamhaus.org", "not a valid DNS zone"},
		{"zen..spamhaus.org", "empty label"},
		{"=127.0.0.2", "missing zone"},
		{"bl.example=", "empty filter"},
		{"bl.example=127.0.0.2=3", `more than one "="`},
		{"bl.example=127.0.0", "four dot-separated octet patterns"},
		{"bl.example=127.0.0.2.5", "four dot-separated octet patterns"},
		{"bl.example=127.0.0.2..3", "four dot-separated octet patterns"},
		{"bl.example=127.0.0.[2..11", `missing closing "]"`},
		{"bl.example=127.0.0.[]", `empty "[]"`},
		{"bl.example=127.0.0.[2;]", "empty octet value"},
		{"bl.example=127.0.0.[2..300]", "300 is out of range 0-255"},
		{"bl.example=127.0.0.256", "256 is out of range 0-255"},
		{"bl.example=127.0.0.[11..2]", "range 11..2 starts after it ends"},
		{"bl.example=127.0.0.x", `"x" is not a number`},
		{"bl.example=127.0.0.2;3", "go in brackets"},
		{"bl.example=127.0.0.*", `"*" is not a number`},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			is := is.New(t)
			_, err := ParseDNSSite(Entry{Value: tt.value, Key: "dns_blacklist.sites", File: "c.toml", Line: 7})
			is.True(err != nil)
			is.Equal(err.Key, "dns_blacklist.sites")
			is.Equal(err.Line, 7)
			msg := err.Err.Error()
			is.True(strings.Contains(msg, strconv.Quote(tt.value))) // message quotes the value
			if !strings.Contains(msg, tt.want) {
				t.Errorf("message %q does not contain %q", msg, tt.want)
			}
		})
	}
}

func TestIsDNSListErrorCode(t *testing.T) {
	tests := []struct {
		answer string
		want   bool
	}{
		{"127.255.255.252", true},
		{"127.255.255.253", true},
		{"127.255.255.254", true},
		{"127.255.255.255", true},
		{"::ffff:127.255.255.254", true},
		{"127.0.0.255", true},
		{"127.255.255.251", false},
		{"127.0.0.2", false},
		{"127.0.0.254", false},
		{"127.0.1.255", false},
		{"2001:db8::1", false},
	}
	for _, tt := range tests {
		t.Run(tt.answer, func(t *testing.T) {
			is.New(t).Equal(IsDNSListErrorCode(netip.MustParseAddr(tt.answer)), tt.want)
		})
	}
	is.New(t).True(!IsDNSListErrorCode(netip.Addr{}))
}

// TestParseDNSSiteWeights: postscreen's weights, for decision = "score".
func TestParseDNSSiteWeights(t *testing.T) {
	is := is.New(t)
	for _, tt := range []struct {
		v, zone string
		weight  int
		written bool
	}{
		{"zen.spamhaus.org*3", "zen.spamhaus.org", 3, true},
		{"zen.spamhaus.org=127.0.0.[2..11]*2", "zen.spamhaus.org", 2, true},
		{"list.dnswl.org=127.0.[0..255].[1..3]*-5", "list.dnswl.org", -5, true},
		{"bl.spamcop.net", "bl.spamcop.net", 1, false},
	} {
		s, err := ParseDNSSite(Entry{Value: tt.v})
		is.True(err == nil)
		is.Equal(s.Zone, tt.zone)
		is.Equal(s.Weight, tt.weight)
		is.Equal(s.Weighted, tt.written)
		is.Equal(s.Name, tt.v)
	}
	s, _ := ParseDNSSite(Entry{Value: "bl.example=127.0.0.[2..3]*4"})
	is.True(s.Accepts(netip.MustParseAddr("127.0.0.3")) && !s.Accepts(netip.MustParseAddr("127.0.0.4"))) // the filter without the weight
}
