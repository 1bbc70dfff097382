package rules

import (
	"bytes"
	"fmt"
	"math"
	"net/netip"
	"strings"
)

// maxStackAddress is the longest address that Match lowercases on the
// stack: 64 bytes of local part, "@", 255 of domain (RFC 5321).
const maxStackAddress = 320

// AddressList matches envelope addresses: the MAIL FROM sender or an RCPT
// TO recipient.
//
// Entries are "user@example.com" (that address), "@example.com",
// "*@example.com" or a bare "example.com" (every address of that domain,
// not of its subdomains), "@*.example.com" or "*.example.com" (every
// address of a subdomain, not of the domain itself), and "<>" (the null
// sender). An entry may be enclosed in angle brackets. All comparisons
// ignore ASCII case; a quoted local part is compared as written, quotes
// included.
//
// An AddressList is immutable once built and safe for concurrent use. A nil
// *AddressList is an empty list.
type AddressList struct {
	// values holds every accepted entry as written; the int32 values of
	// the maps below index it.
	values []string
	// addrs holds exact addresses, "local@domain", lowercase.
	addrs map[string]int32
	// domains holds the domains of whole-domain entries.
	domains map[string]int32
	// suffixes holds the domains of subdomain entries.
	suffixes map[string]int32
	// null is the index of the "<>" entry, -1 when there is none.
	null int32
	hits entryHits
}

// NewAddressList builds an AddressList from configured entries. It reports
// every bad entry, each as a ConfigError located at the entry; the returned
// list holds the good entries even then.
func NewAddressList(entries []Entry) (*AddressList, []*ConfigError) {
	a := &AddressList{values: make([]string, 0, len(entries)), null: -1}
	var errs []*ConfigError
	for _, e := range entries {
		if len(a.values) >= math.MaxInt32 {
			errs = append(errs, e.errorf("%q: too many entries in one list", e.Value))
			continue
		}
		kind, key, err := parseAddressEntry(e.Value)
		if err != nil {
			errs = append(errs, e.errorf("%w", err))
			continue
		}
		idx := int32(len(a.values))
		a.values = append(a.values, e.Value)
		var m *map[string]int32
		switch kind {
		case addrNull:
			if a.null < 0 {
				a.null = idx
			}
			continue
		case addrExact:
			m = &a.addrs
		case addrDomain:
			m = &a.domains
		case addrSuffix:
			m = &a.suffixes
		}
		if *m == nil {
			*m = make(map[string]int32)
		}
		if _, dup := (*m)[key]; !dup {
			(*m)[key] = idx
		}
	}
	a.hits.grow(len(a.values))
	return a, errs
}

// Match reports whether addr matches an entry, and which one, as written.
// addr is the address as the MTA hands it: with or without angle brackets,
// in any case; "<>" and "" are the null sender. A source route
// ("<@relay:user@example.com>") is ignored, and so is a trailing dot after
// the domain. An exact address entry wins over a domain entry, and a
// longer subdomain entry over a shorter one.
//
// Match does not allocate for addresses of up to 320 bytes.
func (a *AddressList) Match(addr string) (entry string, ok bool) {
	if a == nil {
		return "", false
	}
	addr = bareAddress(addr)
	if addr == "" {
		if a.null >= 0 {
			a.hits.hit(a.null)
			return a.values[a.null], true
		}
		return "", false
	}

	var buf [maxStackAddress]byte
	var b []byte
	if len(addr) <= len(buf) {
		b = buf[:len(addr)]
	} else {
		b = make([]byte, len(addr))
	}
	for i := 0; i < len(addr); i++ {
		c := addr[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b[i] = c
	}

	if i, ok := a.addrs[string(b)]; ok {
		a.hits.hit(i)
		return a.values[i], true
	}
	at := bytes.LastIndexByte(b, '@')
	if at < 0 {
		return "", false
	}
	dom := b[at+1:]
	if i, ok := a.domains[string(dom)]; ok {
		a.hits.hit(i)
		return a.values[i], true
	}
	if len(a.suffixes) == 0 {
		return "", false
	}
	for j, c := range dom {
		if c == '.' {
			if i, ok := a.suffixes[string(dom[j+1:])]; ok {
				a.hits.hit(i)
				return a.values[i], true
			}
		}
	}
	return "", false
}

// Len returns the number of entries in the list.
func (a *AddressList) Len() int {
	if a == nil {
		return 0
	}
	return len(a.values)
}

// addressKind is what an address list entry matches.
type addressKind int

const (
	addrExact  addressKind = iota // one address
	addrDomain                    // every address of one domain
	addrSuffix                    // every address below a domain
	addrNull                      // the null sender
)

// parseAddressEntry parses one address list entry into its kind and its
// map key (lowercase address or domain).
func parseAddressEntry(v string) (addressKind, string, error) {
	s := strings.TrimSpace(v)
	if s == "" {
		return 0, "", fmt.Errorf("%q: empty entry", v)
	}
	if s == "<>" {
		return addrNull, "", nil
	}
	if len(s) >= 2 && s[0] == '<' && s[len(s)-1] == '>' {
		s = s[1 : len(s)-1]
	}
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		// A bare domain: "example.com" or "*.example.com".
		dom, suffix, err := parseAddressDomain(v, s, true)
		if err != nil {
			return 0, "", err
		}
		if suffix {
			return addrSuffix, dom, nil
		}
		return addrDomain, dom, nil
	}
	local, domain := s[:at], s[at+1:]
	if domain == "" {
		return 0, "", fmt.Errorf("%q: missing domain after \"@\"", v)
	}
	if local == "" || local == "*" {
		dom, suffix, err := parseAddressDomain(v, domain, true)
		if err != nil {
			return 0, "", err
		}
		if suffix {
			return addrSuffix, dom, nil
		}
		return addrDomain, dom, nil
	}
	if err := checkLocalPart(v, local); err != nil {
		return 0, "", err
	}
	dom, _, err := parseAddressDomain(v, domain, false)
	if err != nil {
		return 0, "", err
	}
	return addrExact, lowerASCII(local) + "@" + dom, nil
}

// parseAddressDomain validates the domain of an address entry: a host name,
// "*.name" when wild is set, or an address literal "[192.0.2.1]". It
// returns the domain lowercase without trailing dot.
func parseAddressDomain(v, d string, wild bool) (dom string, suffix bool, err error) {
	if strings.HasPrefix(d, "[") {
		if !strings.HasSuffix(d, "]") {
			return "", false, fmt.Errorf(`%q: missing closing "]" in the address literal`, v)
		}
		inner := d[1 : len(d)-1]
		if len(inner) > 5 && strings.EqualFold(inner[:5], "IPv6:") {
			inner = inner[5:]
		}
		if _, err := netip.ParseAddr(inner); err != nil || strings.IndexByte(inner, '%') >= 0 {
			return "", false, fmt.Errorf("%q: %s is not a valid address literal", v, d)
		}
		return lowerASCII(d), false, nil
	}
	if wild && strings.HasPrefix(d, "*.") {
		d, suffix = d[2:], true
	}
	d = strings.TrimSuffix(d, ".")
	if strings.IndexByte(d, '*') >= 0 {
		return "", false, fmt.Errorf("%q: a wildcard may only be written as *@example.com, @*.example.com or *.example.com", v)
	}
	if strings.IndexByte(d, '@') >= 0 {
		return "", false, fmt.Errorf("%q: more than one \"@\" (quote the local part if it really contains one)", v)
	}
	if p := dnsNameProblem(d); p != "" {
		return "", false, fmt.Errorf("%q: %q is not a valid domain: %s", v, d, p)
	}
	return lowerASCII(d), suffix, nil
}

// checkLocalPart validates the local part of an exact address entry. A
// quoted local part may hold anything but control characters; an unquoted
// one no white space, "@", "*" or RFC 5322 specials.
func checkLocalPart(v, local string) error {
	quoted := len(local) >= 2 && local[0] == '"' && local[len(local)-1] == '"'
	for i := 0; i < len(local); i++ {
		c := local[i]
		switch {
		case c < ' ' || c == 0x7f:
			return fmt.Errorf("%q: control character in the local part", v)
		case quoted:
		case c == ' ' || c == '\t':
			return fmt.Errorf("%q: white space in the local part (quote it if it really contains some)", v)
		case c == '@':
			return fmt.Errorf("%q: more than one \"@\" (quote the local part if it really contains one)", v)
		case c == '*':
			return fmt.Errorf("%q: a wildcard may only be written as *@example.com, @*.example.com or *.example.com", v)
		case strings.IndexByte(`<>()[]\,;:"`, c) >= 0:
			return fmt.Errorf("%q: %q is not allowed in an unquoted local part", v, string(c))
		}
	}
	return nil
}
