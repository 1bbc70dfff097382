package rules

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/matryer/is"
)

// hostEntries turns values into entries of a test key.
func hostEntries(values ...string) []Entry {
	es := make([]Entry, len(values))
	for i, v := range values {
		es[i] = Entry{Value: v, Key: "test.hosts", File: "test.toml", Line: i + 1}
	}
	return es
}

func TestHostListMatch(t *testing.T) {
	tests := []struct {
		name  string
		entry string
		ip    string // "" for no IP
		host  string // client name, not yet normalized
		want  bool
	}{
		{"IPv4 address hit", "192.0.2.1", "192.0.2.1", "", true},
		{"IPv4 address miss", "192.0.2.1", "192.0.2.2", "", false},
		{"IPv6 address hit", "2001:db8::1", "2001:db8::1", "", true},
		{"IPv6 address miss", "2001:db8::1", "2001:db8::2", "", false},
		{"IPv6 address, other spelling", "2001:DB8:0:0::1", "2001:db8::1", "", true},
		{"IPv4-mapped client matches IPv4 entry", "192.0.2.1", "::ffff:192.0.2.1", "", true},
		{"IPv4-mapped entry matches IPv4 client", "::ffff:192.0.2.1", "192.0.2.1", "", true},
		{"IPv4-mapped CIDR matches IPv4 client", "::ffff:192.0.2.0/120", "192.0.2.77", "", true},
		{"IPv6 client with zone", "fe80::1", "fe80::1%eth0", "", true},
		{"IPv4 CIDR hit", "192.0.2.0/24", "192.0.2.200", "", true},
		{"IPv4 CIDR miss", "192.0.2.0/24", "192.0.3.1", "", false},
		{"IPv4 CIDR /0", "0.0.0.0/0", "203.0.113.9", "", true},
		{"IPv4 CIDR /0 is not IPv6", "0.0.0.0/0", "2001:db8::1", "", false},
		{"IPv4 CIDR /32", "192.0.2.7/32", "192.0.2.7", "", true},
		{"IPv6 CIDR hit", "2001:db8::/32", "2001:db8:ffff::1", "", true},
		{"IPv6 CIDR miss", "2001:db8::/32", "2001:db9::1", "", false},
		{"IPv4 range start", "192.0.2.10-192.0.2.50", "192.0.2.10", "", true},
		{"IPv4 range inside", "192.0.2.10-192.0.2.50", "192.0.2.33", "", true},
		{"IPv4 range end", "192.0.2.10-192.0.2.50", "192.0.2.50", "", true},
		{"IPv4 range below", "192.0.2.10-192.0.2.50", "192.0.2.9", "", false},
		{"IPv4 range above", "192.0.2.10-192.0.2.50", "192.0.2.51", "", false},
		{"IPv4 range across octets", "10.0.0.250-10.0.1.5", "10.0.1.2", "", true},
		{"IPv4 range of one", "192.0.2.5-192.0.2.5", "192.0.2.5", "", true},
		{"IPv6 range inside", "2001:db8::1-2001:db8::ff", "2001:db8::80", "", true},
		{"IPv6 range below", "2001:db8::1-2001:db8::ff", "2001:db8::", "", false},
		{"IPv6 range above", "2001:db8::1-2001:db8::ff", "2001:db8::100", "", false},
		{"wildcard last octet", "192.0.2.*", "192.0.2.99", "", true},
		{"wildcard last octet miss", "192.0.2.*", "192.0.3.99", "", false},
		{"wildcard three octets", "10.*.*.*", "10.20.30.40", "", true},
		{"wildcard three octets miss", "10.*.*.*", "11.20.30.40", "", false},
		{"wildcard short form", "192.168.*", "192.168.77.1", "", true},
		{"wildcard short form miss", "192.168.*", "192.169.0.1", "", false},
		{"wildcard all octets", "*.*.*.*", "198.51.100.1", "", true},
		{"bracketed address", "[192.0.2.1]", "192.0.2.1", "", true},
		{"bracketed CIDR", "[192.0.2.0/27]", "192.0.2.31", "", true},
		{"bracketed CIDR miss", "[192.0.2.0/27]", "192.0.2.32", "", false},
		{"bracketed wildcard", "[192.0.2.*]", "192.0.2.250", "", true},
		{"bracketed octet range start", "[192.0.2.1-3]", "192.0.2.1", "", true},
		{"bracketed octet range end", "[192.0.2.1-3]", "192.0.2.3", "", true},
		{"bracketed octet range miss", "[192.0.2.1-3]", "192.0.2.4", "", false},
		{"bracketed range and wildcard low", "[192.168.1-10.*]", "192.168.1.0", "", true},
		{"bracketed range and wildcard high", "[192.168.1-10.*]", "192.168.10.255", "", true},
		{"bracketed range and wildcard miss", "[192.168.1-10.*]", "192.168.11.0", "", false},
		{"octet range without brackets", "192.0.2.1-3", "192.0.2.2", "", true},
		{"bracketed IPv6", "[2001:db8::1]", "2001:db8::1", "", true},
		{"bracketed IPv6 address literal", "[IPv6:2001:db8::1]", "2001:db8::1", "", true},
		{"bracketed IPv6 CIDR", "[2001:db8::/32]", "2001:db8::5", "", true},
		{"exact name", "mail.example.com", "", "mail.example.com", true},
		{"exact name case-insensitive", "Mail.Example.COM", "", "MAIL.example.com.", true},
		{"exact name entry trailing dot", "mail.example.com.", "", "mail.example.com", true},
		{"bare name matches below (Domino, parent_domain_matches_subdomains)", "mail.example.com", "", "a.mail.example.com", true},
		{"bare domain matches deep below", "example.com", "", "a.b.c.example.com", true},
		{"bare name is no suffix match of a longer label", "example.com", "", "badexample.com", false},
		{"dot form not the name itself", ".example.com", "", "example.com", false},
		{"star form not the name itself", "*.example.com", "", "example.com", false},
		{"exact name not above", "mail.example.com", "", "example.com", false},
		{"exact name with underscore", "my_host.example.com", "", "my_host.example.com", true},
		{"star domain one level", "*.example.com", "", "a.example.com", true},
		{"star domain two levels", "*.example.com", "", "a.b.example.com", true},
		{"star domain not itself", "*.example.com", "", "example.com", false},
		{"star domain not lookalike", "*.example.com", "", "badexample.com", false},
		{"star domain case-insensitive", "*.Example.Com", "", "A.EXAMPLE.com", true},
		{"leading dot domain", ".example.com", "", "a.b.example.com", true},
		{"leading dot domain not itself", ".example.com", "", "example.com", false},
		{"name entry ignores IP", "mail.example.com", "192.0.2.1", "", false},
		{"name entry, unverified client", "mail.example.com", "192.0.2.1", "unknown", false},
		{"IP entry, client with name", "192.0.2.1", "192.0.2.1", "mail.example.com", true},
		{"name checked when IP misses", "mail.example.com", "192.0.2.1", "mail.example.com", true},
		{"name checked without IP", "*.example.com", "", "x.example.com", true},
		{"address literal name is not a name", "*.example.com", "", "[192.0.2.1]", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			h, errs := NewHostList(hostEntries(tt.entry))
			is.Equal(len(errs), 0) // entry accepted
			is.Equal(h.Len(), 1)
			var ip netip.Addr
			if tt.ip != "" {
				ip = NormalizeIP(netip.MustParseAddr(tt.ip))
			}
			got, ok := h.Match(ip, NormalizeName(tt.host))
			is.Equal(ok, tt.want)
			if tt.want {
				is.Equal(got, tt.entry) // the entry as written
			} else {
				is.Equal(got, "")
			}
		})
	}
}

func TestHostListErrors(t *testing.T) {
	tests := []struct {
		value string
		want  string // part of the message besides the quoted value
	}{
		{"", "empty entry"},
		{"999.1.1.1", "out of range 0-255"},
		{"192.0.2.256", "out of range 0-255"},
		{"192.0.2.01", "leading zero"},
		{"192.0.2", "only 3 octets"},
		{"1.2.3.4.5", "more than 4 octets"},
		{"192..2.1", "empty octet"},
		{"192.0.2.0/33", "out of range 0-32"},
		{"2001:db8::/129", "out of range 0-128"},
		{"192.0.2.0/x", "not a number"},
		{"192.0.2.0/", "not a number"},
		{"192.0.2.0/+8", "not a number"},
		{"192.0.2.1/24", "has host bits set, did you mean 192.0.2.0/24?"},
		{"2001:db8::1/32", "has host bits set, did you mean 2001:db8::/32?"},
		{"192.0.2.*/24", "cannot contain a wildcard"},
		{"999.0.0.0/8", "not a valid IP address"},
		{"192.0.2.50-192.0.2.10", "range start 192.0.2.50 is after its end 192.0.2.10"},
		{"192.0.2.1-2001:db8::1", "cannot mix IPv4 and IPv6"},
		{"192.0.2.1-192.0.2.999", "range end"},
		{"2001:db8::1-2001:db8::zz", "range end"},
		{"2001:db8::g", "not a valid IPv6 address"},
		{"2001:db8::*", "only supported in IPv4"},
		{"fe80::1%eth0", "zone"},
		{"192.*.2.1", `"*" may only stand for the trailing octets`},
		{"*.0.2.1", `"*" may only stand for the trailing octets`},
		{"192.0.2.1*", "whole octet"},
		{"192.0.2.5-1", "starts after it ends"},
		{"192.168.1-10.5", "may only be followed by"},
		{"*", "every host"},
		{"-", "empty octet"},
		{"[192.0.2.1", `missing closing "]"`},
		{"[mail.example.com]", "brackets may only hold an address"},
		{"[]", "brackets may only hold an address"},
		{"hello world", `" " is not allowed`},
		{"mail*.example.com", "wildcard may only be the first label"},
		{"mail.*.example.com", "wildcard may only be the first label"},
		{"*example.com", "wildcard may only be the first label"},
		{"*.", "empty octet"},
		{"..example.com", "empty label"},
		{"a..example.com", "empty label"},
		{"-a.example.com", "hyphen"},
		{"bücher.example", "xn--"},
		{strings.Repeat("a", 64) + ".example.com", "longer than 63"},
		{strings.Repeat("abcdefghi.", 26) + "com", "longer than 253"},
		{"unknown", "placeholder"},
		{"UNKNOWN.", "placeholder"},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			is := is.New(t)
			h, errs := NewHostList([]Entry{
				{Value: "192.0.2.1", Key: "blacklist.hosts", File: "hosts.txt", Line: 1},
				{Value: tt.value, Key: "blacklist.hosts", File: "hosts.txt", Line: 2},
			})
			is.Equal(len(errs), 1)
			e := errs[0]
			is.Equal(e.Key, "blacklist.hosts")
			is.Equal(e.File, "hosts.txt")
			is.Equal(e.Line, 2)
			msg := e.Err.Error()
			is.True(strings.Contains(msg, strconv.Quote(tt.value))) // message quotes the value
			if !strings.Contains(msg, tt.want) {
				t.Errorf("message %q does not contain %q", msg, tt.want)
			}
			is.Equal(h.Len(), 1) // the good entry is kept
			_, ok := h.Match(netip.MustParseAddr("192.0.2.1"), "")
			is.True(ok)
		})
	}
}

func TestHostListAllErrorsReported(t *testing.T) {
	is := is.New(t)
	h, errs := NewHostList(hostEntries("999.1.1.1", "192.0.2.0/24", "hello world", "", "mail*.example.com"))
	is.Equal(len(errs), 4)
	lines := []int{errs[0].Line, errs[1].Line, errs[2].Line, errs[3].Line}
	is.Equal(lines, []int{1, 3, 4, 5})
	is.Equal(h.Len(), 1)
	is.True(strings.HasPrefix(errs[0].Error(), "test.toml:1: test.hosts: "))
}

func TestHostListLongestPrefixWins(t *testing.T) {
	h, errs := NewHostList(hostEntries(
		"10.0.0.0/8",
		"10.1.*",
		"10.1.2.0/24",
		"10.1.2.3",
		"2001:db8::/32",
		"2001:db8:1::/48",
		"mail.example.com",
		"*.example.com",
		"*.sub.example.com",
	))
	if len(errs) != 0 {
		t.Fatal(errs)
	}
	tests := []struct {
		ip, name, want string
	}{
		{"10.9.9.9", "", "10.0.0.0/8"},
		{"10.1.9.9", "", "10.1.*"},
		{"10.1.2.9", "", "10.1.2.0/24"},
		{"10.1.2.3", "", "10.1.2.3"},
		{"2001:db8:2::1", "", "2001:db8::/32"},
		{"2001:db8:1::1", "", "2001:db8:1::/48"},
		{"192.0.2.1", "mail.example.com", "mail.example.com"},
		{"192.0.2.1", "x.example.com", "*.example.com"},
		{"192.0.2.1", "x.sub.example.com", "*.sub.example.com"},
		{"10.1.2.3", "mail.example.com", "10.1.2.3"},
	}
	for _, tt := range tests {
		t.Run(tt.ip+"/"+tt.name, func(t *testing.T) {
			is := is.New(t)
			got, ok := h.Match(netip.MustParseAddr(tt.ip), tt.name)
			is.True(ok)
			is.Equal(got, tt.want)
		})
	}
}

func TestHostListDuplicatesKeepFirst(t *testing.T) {
	is := is.New(t)
	h, errs := NewHostList(hostEntries("192.0.2.0/24", "[192.0.2.*]", "a.example.com", "A.Example.Com.", ".example.com", "*.example.com"))
	is.Equal(len(errs), 0)
	is.Equal(h.Len(), 6)
	got, _ := h.Match(netip.MustParseAddr("192.0.2.1"), "")
	is.Equal(got, "192.0.2.0/24")
	got, _ = h.Match(netip.Addr{}, "a.example.com")
	is.Equal(got, "a.example.com")
	got, _ = h.Match(netip.Addr{}, "b.example.com")
	is.Equal(got, ".example.com")
}

func TestHostListNilAndEmpty(t *testing.T) {
	is := is.New(t)
	var nilList *HostList
	is.Equal(nilList.Len(), 0)
	_, ok := nilList.Match(netip.MustParseAddr("192.0.2.1"), "mail.example.com")
	is.True(!ok)

	empty, errs := NewHostList(nil)
	is.Equal(len(errs), 0)
	is.Equal(empty.Len(), 0)
	_, ok = empty.Match(netip.MustParseAddr("192.0.2.1"), "mail.example.com")
	is.True(!ok)
	_, ok = empty.Match(netip.Addr{}, "")
	is.True(!ok)

	h, _ := NewHostList(hostEntries("0.0.0.0/0", "::/0", "*.example.com"))
	_, ok = h.Match(netip.Addr{}, "") // invalid IP, no name
	is.True(!ok)
	got, ok := h.Match(netip.Addr{}, "a.example.com") // invalid IP: names only
	is.True(ok)
	is.Equal(got, "*.example.com")
}

func TestHostListMatchAllocs(t *testing.T) {
	h, errs := NewHostList(hostEntries(
		"192.0.2.0/24", "2001:db8::/32", "10.0.0.1-10.0.0.200", "172.16.*",
		"mail.example.com", "*.example.org", ".example.net",
	))
	if len(errs) != 0 {
		t.Fatal(errs)
	}
	clients := []struct {
		ip   netip.Addr
		name string
	}{
		{netip.MustParseAddr("192.0.2.1"), ""},
		{netip.MustParseAddr("2001:db8::1"), ""},
		{netip.MustParseAddr("2001:db9::1"), "a.b.c.example.org"},
		{netip.MustParseAddr("10.0.0.100"), ""},
		{netip.MustParseAddr("198.51.100.1"), "mail.example.com"},
		{netip.MustParseAddr("198.51.100.1"), "x.y.z.example.invalid"},
		{netip.Addr{}, "a.example.net"},
	}
	allocs := testing.AllocsPerRun(1000, func() {
		for _, c := range clients {
			h.Match(c.ip, c.name)
		}
	})
	is.New(t).Equal(allocs, 0.0)
}

func TestNormalizeIP(t *testing.T) {
	tests := []struct{ in, want string }{
		{"192.0.2.1", "192.0.2.1"},
		{"::ffff:192.0.2.1", "192.0.2.1"},
		{"2001:db8::1", "2001:db8::1"},
		{"fe80::1%eth0", "fe80::1"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			is.New(t).Equal(NormalizeIP(netip.MustParseAddr(tt.in)), netip.MustParseAddr(tt.want))
		})
	}
	is.New(t).True(!NormalizeIP(netip.Addr{}).IsValid())
}

func TestNormalizeName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"mail.example.com", "mail.example.com"},
		{"Mail.Example.COM", "mail.example.com"},
		{"mail.example.com.", "mail.example.com"},
		{"unknown", ""},
		{"UNKNOWN", ""},
		{"[192.0.2.1]", ""},
		{"[IPv6:2001:db8::1]", ""},
		{"", ""},
		{".", ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			is.New(t).Equal(NormalizeName(tt.in), tt.want)
		})
	}
}

func TestAppendRange(t *testing.T) {
	tests := []struct {
		lo, hi string
		want   []string
	}{
		{"192.0.2.10", "192.0.2.50", []string{"192.0.2.10/31", "192.0.2.12/30", "192.0.2.16/28", "192.0.2.32/28", "192.0.2.48/31", "192.0.2.50/32"}},
		{"192.0.2.1", "192.0.2.3", []string{"192.0.2.1/32", "192.0.2.2/31"}},
		{"192.168.1.0", "192.168.10.255", []string{"192.168.1.0/24", "192.168.2.0/23", "192.168.4.0/22", "192.168.8.0/23", "192.168.10.0/24"}},
		{"0.0.0.0", "255.255.255.255", []string{"0.0.0.0/0"}},
		{"255.255.255.255", "255.255.255.255", []string{"255.255.255.255/32"}},
		{"::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", []string{"::/0"}},
		{"2001:db8::1", "2001:db8::ff", []string{"2001:db8::1/128", "2001:db8::2/127", "2001:db8::4/126", "2001:db8::8/125", "2001:db8::10/124", "2001:db8::20/123", "2001:db8::40/122", "2001:db8::80/121"}},
		{"::ffff:ffff:ffff:ffff", "::1:0:0:0:0", []string{"0:0:0:0:ffff:ffff:ffff:ffff/128", "0:0:0:1::/128"}},
	}
	for _, tt := range tests {
		t.Run(tt.lo+"-"+tt.hi, func(t *testing.T) {
			is := is.New(t)
			got := appendRange(nil, netip.MustParseAddr(tt.lo), netip.MustParseAddr(tt.hi))
			want := make([]netip.Prefix, len(tt.want))
			for i, w := range tt.want {
				want[i] = netip.MustParsePrefix(w)
			}
			is.Equal(got, want)
		})
	}
}
