package rules

import (
	"strconv"
	"strings"
	"testing"

	"github.com/matryer/is"
)

func TestAddressListMatch(t *testing.T) {
	tests := []struct {
		name  string
		entry string
		addr  string
		want  bool
	}{
		{"exact hit", "user@example.com", "user@example.com", true},
		{"exact hit in brackets", "user@example.com", "<user@example.com>", true},
		{"exact hit any case", "user@example.com", "<User@Example.COM>", true},
		{"exact entry any case", "User@EXAMPLE.com", "user@example.com", true},
		{"exact entry in brackets", "<user@example.com>", "user@example.com", true},
		{"exact miss other user", "user@example.com", "other@example.com", false},
		{"exact miss subdomain", "user@example.com", "user@a.example.com", false},
		{"exact miss prefix", "user@example.com", "xuser@example.com", false},
		{"exact with trailing dot", "user@example.com", "user@example.com.", true},
		{"exact with source route", "user@example.com", "<@relay.example.net:user@example.com>", true},
		{"exact with address literal", "user@[192.0.2.1]", "<user@[192.0.2.1]>", true},
		{"exact IPv6 literal", "user@[IPv6:2001:db8::1]", "user@[ipv6:2001:DB8::1]", true},
		{"quoted local part", `"john doe"@example.com`, `<"John Doe"@example.com>`, true},
		{"quoted local part with @", `"a@b"@example.com`, `"a@b"@example.com`, true},
		{"quoted local part is raw", `"john"@example.com`, `john@example.com`, false},
		{"at domain hit", "@example.com", "anyone@example.com", true},
		{"at domain any case", "@example.com", "<Anyone@EXAMPLE.COM>", true},
		{"at domain not subdomain", "@example.com", "anyone@a.example.com", false},
		{"at domain not lookalike", "@example.com", "anyone@badexample.com", false},
		{"star at domain hit", "*@example.com", "anyone@example.com", true},
		{"star at domain not subdomain", "*@example.com", "anyone@a.example.com", false},
		{"bare domain hit", "example.com", "anyone@example.com", true},
		{"bare domain not subdomain", "example.com", "anyone@a.example.com", false},
		{"bare domain trailing dot", "example.com.", "anyone@example.com", true},
		{"at domain address literal", "@[192.0.2.1]", "x@[192.0.2.1]", true},
		{"at star subdomain one level", "@*.example.com", "x@a.example.com", true},
		{"at star subdomain two levels", "@*.example.com", "x@a.b.example.com", true},
		{"at star subdomain not domain", "@*.example.com", "x@example.com", false},
		{"star star subdomain", "*@*.example.com", "x@a.example.com", true},
		{"bare star subdomain", "*.example.com", "x@a.example.com", true},
		{"bare star subdomain not domain", "*.example.com", "x@example.com", false},
		{"bare star subdomain not lookalike", "*.example.com", "x@a.badexample.com", false},
		{"null sender in brackets", "<>", "<>", true},
		{"null sender empty", "<>", "", true},
		{"null sender not an address", "<>", "user@example.com", false},
		{"address not null sender", "user@example.com", "<>", false},
		{"domain not null sender", "@example.com", "", false},
		{"no domain in address", "@example.com", "postmaster", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			a, errs := NewAddressList([]Entry{{Value: tt.entry, Key: "mail_from.deny"}})
			is.Equal(len(errs), 0) // entry accepted
			is.Equal(a.Len(), 1)
			got, ok := a.Match(tt.addr)
			is.Equal(ok, tt.want)
			if tt.want {
				is.Equal(got, tt.entry)
			} else {
				is.Equal(got, "")
			}
		})
	}
}

func TestAddressListErrors(t *testing.T) {
	tests := []struct {
		value string
		want  string
	}{
		{"", "empty entry"},
		{"user@", "missing domain"},
		{"@", "missing domain"},
		{"*@", "missing domain"},
		{"a@b@c", `more than one "@"`},
		{"@a@b", `more than one "@"`},
		{"us er@example.com", "white space"},
		{"user@exa mple.com", `" " is not allowed`},
		{"user@*.example.com", "wildcard may only"},
		{"us*er@example.com", "wildcard may only"},
		{"*user@example.com", "wildcard may only"},
		{"@mail*.example.com", "wildcard may only"},
		{"*example.com", "wildcard may only"},
		{"*", "wildcard may only"},
		{"user@example..com", "empty label"},
		{"user@[192.0.2.999]", "not a valid address literal"},
		{"user@[192.0.2.1", `missing closing "]"`},
		{"us(er@example.com", "not allowed in an unquoted local part"},
		{"\"a\x01\"@example.com", "control character"},
		{"<", `"<" is not allowed`},
		{"user@" + strings.Repeat("a", 64) + ".com", "longer than 63"},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			is := is.New(t)
			a, errs := NewAddressList([]Entry{
				{Value: "ok@example.com", Key: "recipients.deny", File: "rcpt.txt", Line: 1},
				{Value: tt.value, Key: "recipients.deny", File: "rcpt.txt", Line: 2},
			})
			is.Equal(len(errs), 1)
			is.Equal(errs[0].Key, "recipients.deny")
			is.Equal(errs[0].Line, 2)
			msg := errs[0].Err.Error()
			is.True(strings.Contains(msg, strconv.Quote(tt.value))) // message quotes the value
			if !strings.Contains(msg, tt.want) {
				t.Errorf("message %q does not contain %q", msg, tt.want)
			}
			is.Equal(a.Len(), 1) // the good entry is kept
		})
	}
}

func TestAddressListPrecedence(t *testing.T) {
	a, errs := NewAddressList([]Entry{
		{Value: "*.example.com"},
		{Value: "@*.sub.example.com"},
		{Value: "@example.com"},
		{Value: "boss@example.com"},
		{Value: "<>"},
	})
	if len(errs) != 0 {
		t.Fatal(errs)
	}
	tests := []struct{ addr, want string }{
		{"boss@example.com", "boss@example.com"},
		{"other@example.com", "@example.com"},
		{"x@a.example.com", "*.example.com"},
		{"x@a.sub.example.com", "@*.sub.example.com"},
		{"<>", "<>"},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			is := is.New(t)
			got, ok := a.Match(tt.addr)
			is.True(ok)
			is.Equal(got, tt.want)
		})
	}
}

func TestAddressListNil(t *testing.T) {
	is := is.New(t)
	var a *AddressList
	is.Equal(a.Len(), 0)
	_, ok := a.Match("user@example.com")
	is.True(!ok)
	_, ok = a.Match("")
	is.True(!ok)
	empty, errs := NewAddressList(nil)
	is.Equal(len(errs), 0)
	_, ok = empty.Match("<>")
	is.True(!ok)
}

func TestAddressListLongAddress(t *testing.T) {
	is := is.New(t)
	long := strings.Repeat("x", 400) + "@Example.com"
	a, errs := NewAddressList([]Entry{{Value: "@example.com"}, {Value: strings.ToLower(long)}})
	is.Equal(len(errs), 0)
	got, ok := a.Match(long) // longer than the stack buffer: still matches
	is.True(ok)
	is.Equal(got, strings.ToLower(long))
}

func TestAddressListMatchAllocs(t *testing.T) {
	a, errs := NewAddressList([]Entry{
		{Value: "user@example.com"}, {Value: "@example.org"}, {Value: "*.example.net"}, {Value: "<>"},
	})
	if len(errs) != 0 {
		t.Fatal(errs)
	}
	local := strings.Repeat("A", 64)
	dom := strings.Repeat("b", 60) + "." + strings.Repeat("c", 60) + "." + strings.Repeat("d", 60) + "." + strings.Repeat("e", 60) + ".EXAMPLE.net"
	max := local + "@" + dom
	max = max[len(max)-maxStackAddress:]
	addrs := []string{
		"<User@Example.COM>", "x@EXAMPLE.org", "x@a.b.example.net", "<>", "",
		"nobody@nowhere.invalid", max, "<" + max + ">",
	}
	if len(max) != maxStackAddress {
		t.Fatal(len(max))
	}
	allocs := testing.AllocsPerRun(1000, func() {
		for _, s := range addrs {
			a.Match(s)
		}
	})
	is.New(t).Equal(allocs, 0.0)
}
