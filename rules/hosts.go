package rules

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"net/netip"
	"strconv"
	"strings"

	"github.com/gaissmai/bart"
)

// HostList matches an SMTP client by IP address and verified host name.
//
// It accepts every entry syntax of DESIGN.md section 3: IPv4 and IPv6
// addresses, CIDRs, address ranges, Domino wildcards and octet ranges
// (with or without Domino's brackets), host names, and "*.domain" or
// ".domain" for every name below a domain. A bare name "example.com"
// matches that name and every name below it, as in Domino and in Postfix
// access maps (parent_domain_matches_subdomains).
//
// A HostList is immutable once built and safe for concurrent use. A nil
// *HostList is an empty list.
type HostList struct {
	// values holds every accepted entry as written; the int32 values of
	// the lookup structures below index it.
	values []string
	// ips holds every IP form, decomposed into prefixes.
	ips bart.Table[int32]
	// names holds exact host names, lowercase without trailing dot.
	names map[string]int32
	// suffixes holds the domains of "*.domain" and ".domain" entries.
	suffixes map[string]int32
	hits     entryHits
}

// NewHostList builds a HostList from configured entries. It reports every
// bad entry, each as a ConfigError located at the entry; the returned list
// holds the good entries even then, and callers that treat any error as
// fatal discard it.
func NewHostList(entries []Entry) (*HostList, []*ConfigError) {
	h := &HostList{values: make([]string, 0, len(entries))}
	var errs []*ConfigError
	var pfxs []netip.Prefix
	for _, e := range entries {
		if len(h.values) >= math.MaxInt32 {
			errs = append(errs, e.errorf("%q: too many entries in one list", e.Value))
			continue
		}
		idx := int32(len(h.values))
		var name string
		var suffix bool
		var err error
		pfxs, name, suffix, err = parseHostEntry(e.Value, pfxs[:0])
		if err != nil {
			errs = append(errs, e.errorf("%w", err))
			continue
		}
		h.values = append(h.values, e.Value)
		switch {
		case len(pfxs) > 0:
			for _, p := range pfxs {
				// The first entry to claim a prefix keeps it.
				if _, dup := h.ips.Get(p); !dup {
					h.ips.Insert(p, idx)
				}
			}
		case suffix:
			if h.suffixes == nil {
				h.suffixes = make(map[string]int32)
			}
			if _, dup := h.suffixes[name]; !dup {
				h.suffixes[name] = idx
			}
		default:
			if h.names == nil {
				h.names = make(map[string]int32)
			}
			if _, dup := h.names[name]; !dup {
				h.names[name] = idx
			}
		}
	}
	h.hits.grow(len(h.values))
	return h, errs
}

// Match reports whether the client matches an entry, and which one, as
// written. ip and name must already be normalized with [NormalizeIP] and
// [NormalizeName]. An invalid ip is not looked up (only the name is
// checked), and neither is an empty name. IP entries are checked first, and
// among them the longest prefix wins; among name entries an exact name wins
// over "*.domain", and a longer domain over a shorter one.
//
// Match does not allocate.
func (h *HostList) Match(ip netip.Addr, name string) (entry string, ok bool) {
	if h == nil {
		return "", false
	}
	if ip.IsValid() {
		if i, ok := h.ips.Lookup(ip); ok {
			h.hits.hit(i)
			return h.values[i], true
		}
	}
	if name == "" {
		return "", false
	}
	if i, ok := h.names[name]; ok {
		h.hits.hit(i)
		return h.values[i], true
	}
	if len(h.suffixes) == 0 && len(h.names) == 0 {
		return "", false
	}
	// Walk up the parents, longest first: "*.domain" and ".domain" match
	// every name below the domain, and so does a bare "domain" (Domino's
	// rule, and Postfix's parent_domain_matches_subdomains).
	for s := name; ; {
		dot := strings.IndexByte(s, '.')
		if dot < 0 {
			return "", false
		}
		s = s[dot+1:]
		if i, ok := h.suffixes[s]; ok {
			h.hits.hit(i)
			return h.values[i], true
		}
		if i, ok := h.names[s]; ok {
			h.hits.hit(i)
			return h.values[i], true
		}
	}
}

// Len returns the number of entries in the list.
func (h *HostList) Len() int {
	if h == nil {
		return 0
	}
	return len(h.values)
}

// NormalizeIP returns ip in the form HostList matches: an IPv4-mapped IPv6
// address becomes the IPv4 address, and an IPv6 zone is dropped.
func NormalizeIP(ip netip.Addr) netip.Addr {
	return ip.Unmap().WithZone("")
}

// NormalizeName returns a client host name in the form HostList matches:
// lowercase, without a trailing dot. It returns "" for "unknown", Postfix's
// value for a client whose name could not be verified, and for an address
// literal such as "[192.0.2.1]".
func NormalizeName(name string) string {
	name = strings.TrimSuffix(name, ".")
	if name == "" || name[0] == '[' || strings.EqualFold(name, "unknown") {
		return ""
	}
	return lowerASCII(name)
}

// lowerASCII lowercases ASCII letters, returning s itself when it has no
// upper-case letter.
func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// parseHostEntry parses one host list entry. An IP form is returned as
// prefixes appended to dst; a name form as name (lowercase, no trailing
// dot), with suffix set for "*.domain" and ".domain".
func parseHostEntry(v string, dst []netip.Prefix) (pfxs []netip.Prefix, name string, suffix bool, err error) {
	s := strings.TrimSpace(v)
	if s == "" {
		return dst, "", false, fmt.Errorf("%q: empty entry", v)
	}
	if s[0] == '[' {
		if s[len(s)-1] != ']' {
			return dst, "", false, fmt.Errorf(`%q: missing closing "]"`, v)
		}
		inner := s[1 : len(s)-1]
		// An SMTP address literal: [IPv6:2001:db8::1].
		if len(inner) > 5 && strings.EqualFold(inner[:5], "IPv6:") {
			inner = inner[5:]
		}
		if inner == "" || !looksLikeAddress(inner) {
			return dst, "", false, fmt.Errorf("%q: brackets may only hold an address, CIDR, range or wildcard, not a host name", v)
		}
		s = inner
	}
	if s == "*" {
		return dst, "", false, fmt.Errorf("%q would match every host; write 0.0.0.0/0 and ::/0 if that is meant", v)
	}
	if looksLikeAddress(s) {
		pfxs, err = parseHostIP(v, s, dst)
		return pfxs, "", false, err
	}
	name, suffix, err = parseHostName(v, s)
	return dst, name, suffix, err
}

// looksLikeAddress reports whether s is meant as an IP form rather than a
// host name: it contains a colon (IPv6) or a slash (CIDR), or only digits,
// dots, "*" and "-". A host name always has a letter in its top-level label.
func looksLikeAddress(s string) bool {
	if strings.IndexByte(s, ':') >= 0 || strings.IndexByte(s, '/') >= 0 {
		return true
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case '0' <= c && c <= '9', c == '.', c == '*', c == '-', c == '/':
		default:
			return false
		}
	}
	return true
}

// parseHostIP parses the IP forms of a host entry; v is the entry as
// written, for messages.
func parseHostIP(v, s string, dst []netip.Prefix) ([]netip.Prefix, error) {
	if strings.IndexByte(s, '%') >= 0 {
		return dst, fmt.Errorf("%q: an IPv6 zone is not allowed in a host list", v)
	}
	if slash := strings.IndexByte(s, '/'); slash >= 0 {
		p, err := parseCIDR(v, s[:slash], s[slash+1:])
		if err != nil {
			return dst, err
		}
		return append(dst, p), nil
	}
	if strings.IndexByte(s, ':') >= 0 {
		if strings.IndexByte(s, '*') >= 0 {
			return dst, fmt.Errorf("%q: wildcards are only supported in IPv4 addresses; use a CIDR such as 2001:db8::/32", v)
		}
		if lo, hi, ok := strings.Cut(s, "-"); ok {
			return parseAddrRange(v, lo, hi, dst)
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return dst, fmt.Errorf("%q is not a valid IPv6 address", v)
		}
		a = a.Unmap()
		return append(dst, netip.PrefixFrom(a, a.BitLen())), nil
	}
	// IPv4: a whole-address range "a.b.c.d-e.f.g.h", or an octet pattern
	// (a plain address, wildcards, octet ranges).
	if lo, hi, ok := strings.Cut(s, "-"); ok && strings.Count(lo, ".") == 3 && strings.Count(hi, ".") == 3 {
		return parseAddrRange(v, lo, hi, dst)
	}
	lo, hi, err := parseOctetPattern(v, s)
	if err != nil {
		return dst, err
	}
	return appendRange(dst, lo, hi), nil
}

// parseCIDR parses "addr/bits", refusing host bits set.
func parseCIDR(v, addr, bitsStr string) (netip.Prefix, error) {
	if strings.IndexByte(addr, '*') >= 0 || strings.IndexByte(addr, '-') >= 0 {
		return netip.Prefix{}, fmt.Errorf("%q: a CIDR cannot contain a wildcard or range", v)
	}
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q: %q is not a valid IP address", v, addr)
	}
	n, err := strconv.Atoi(bitsStr)
	if err != nil || bitsStr == "" || bitsStr[0] == '+' || bitsStr[0] == '-' || (len(bitsStr) > 1 && bitsStr[0] == '0') {
		return netip.Prefix{}, fmt.Errorf("%q: prefix length %q is not a number", v, bitsStr)
	}
	if n > a.BitLen() {
		return netip.Prefix{}, fmt.Errorf("%q: prefix length %d is out of range 0-%d", v, n, a.BitLen())
	}
	p := netip.PrefixFrom(a, n)
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Errorf("%q has host bits set, did you mean %s?", v, m)
	}
	if a.Is4In6() && n >= 96 {
		p = netip.PrefixFrom(a.Unmap(), n-96)
	}
	return p, nil
}

// parseAddrRange parses the two ends of a whole-address range.
func parseAddrRange(v, loStr, hiStr string, dst []netip.Prefix) ([]netip.Prefix, error) {
	lo, err := netip.ParseAddr(loStr)
	if err != nil {
		return dst, fmt.Errorf("%q: range start %q is not a valid IP address", v, loStr)
	}
	hi, err := netip.ParseAddr(hiStr)
	if err != nil {
		return dst, fmt.Errorf("%q: range end %q is not a valid IP address", v, hiStr)
	}
	lo, hi = lo.Unmap(), hi.Unmap()
	if lo.Is4() != hi.Is4() {
		return dst, fmt.Errorf("%q: a range cannot mix IPv4 and IPv6", v)
	}
	if hi.Less(lo) {
		return dst, fmt.Errorf("%q: range start %s is after its end %s", v, lo, hi)
	}
	return appendRange(dst, lo, hi), nil
}

// parseOctetPattern parses an IPv4 address written with Domino wildcards
// and octet ranges ("192.0.2.*", "10.*", "192.0.2.1-3", "192.168.1-10.*")
// into the first and last address it covers.
func parseOctetPattern(v, s string) (netip.Addr, netip.Addr, error) {
	var lo, hi [4]byte
	n := 0
	star, ranged := false, false
	for rest := s; ; {
		part, tail, more := strings.Cut(rest, ".")
		if n == 4 {
			return netip.Addr{}, netip.Addr{}, fmt.Errorf("%q is not a valid IPv4 address: more than 4 octets", v)
		}
		switch {
		case part == "":
			return netip.Addr{}, netip.Addr{}, fmt.Errorf("%q is not a valid IPv4 address: empty octet", v)
		case part == "*":
			star = true
			lo[n], hi[n] = 0, 255
		case star:
			return netip.Addr{}, netip.Addr{}, fmt.Errorf("%q: \"*\" may only stand for the trailing octets, as in 192.0.2.* or 10.*.*.*", v)
		case ranged:
			return netip.Addr{}, netip.Addr{}, fmt.Errorf("%q: an octet range may only be followed by \"*\" octets, as in 192.168.1-10.*", v)
		default:
			a, b, isRange := strings.Cut(part, "-")
			x, err := parseOctet(v, a)
			if err != nil {
				return netip.Addr{}, netip.Addr{}, err
			}
			y := x
			if isRange {
				if y, err = parseOctet(v, b); err != nil {
					return netip.Addr{}, netip.Addr{}, err
				}
				if y < x {
					return netip.Addr{}, netip.Addr{}, fmt.Errorf("%q: octet range %s starts after it ends", v, part)
				}
				ranged = x != y
			}
			lo[n], hi[n] = x, y
		}
		n++
		if !more {
			break
		}
		rest = tail
	}
	if n < 4 {
		if !star {
			return netip.Addr{}, netip.Addr{}, fmt.Errorf("%q is not a valid IPv4 address: only %d octets (end it with \".*\" for a wildcard)", v, n)
		}
		for ; n < 4; n++ {
			lo[n], hi[n] = 0, 255
		}
	}
	return netip.AddrFrom4(lo), netip.AddrFrom4(hi), nil
}

// parseOctet parses one decimal octet, without leading zeros.
func parseOctet(v, s string) (byte, error) {
	if s == "" {
		return 0, fmt.Errorf("%q is not a valid IPv4 address: empty octet", v)
	}
	if strings.IndexByte(s, '*') >= 0 {
		return 0, fmt.Errorf("%q: \"*\" must stand for a whole octet, as in 192.0.2.*", v)
	}
	if len(s) > 1 && s[0] == '0' {
		return 0, fmt.Errorf("%q: octet %q has a leading zero", v, s)
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("%q is not a valid IPv4 address: bad octet %q", v, s)
		}
		n = n*10 + int(s[i]-'0')
		if n > 255 {
			return 0, fmt.Errorf("%q: octet %s is out of range 0-255", v, s)
		}
	}
	return byte(n), nil
}

// parseHostName parses the name forms of a host entry.
func parseHostName(v, s string) (name string, suffix bool, err error) {
	switch {
	case strings.HasPrefix(s, "*."):
		s, suffix = s[2:], true
	case strings.HasPrefix(s, "."):
		s, suffix = s[1:], true
	}
	s = strings.TrimSuffix(s, ".")
	if strings.IndexByte(s, '*') >= 0 {
		return "", false, fmt.Errorf("%q: a wildcard may only be the first label of a name, as in *.example.com (or .example.com)", v)
	}
	if p := dnsNameProblem(s); p != "" {
		return "", false, fmt.Errorf("%q is not a valid host name: %s", v, p)
	}
	name = lowerASCII(s)
	if !suffix && name == "unknown" {
		return "", false, fmt.Errorf("%q is Postfix's placeholder for a client without a verified name and never matches", v)
	}
	return name, suffix, nil
}

// dnsNameProblem validates a DNS name (no trailing dot): labels of
// letters, digits, hyphens and underscores, at most 63 characters each and
// 253 in all. It returns what is wrong, or "" when nothing is.
func dnsNameProblem(s string) string {
	if s == "" {
		return "empty"
	}
	if len(s) > 253 {
		return "longer than 253 characters"
	}
	for rest := s; ; {
		label, tail, more := strings.Cut(rest, ".")
		switch {
		case label == "":
			return "empty label"
		case len(label) > 63:
			return fmt.Sprintf("label %q is longer than 63 characters", label)
		case label[0] == '-' || label[len(label)-1] == '-':
			return fmt.Sprintf("label %q starts or ends with a hyphen", label)
		}
		for i := 0; i < len(label); i++ {
			switch c := label[i]; {
			case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
			case c >= 0x80:
				return "write internationalized names in their xn-- (punycode) form"
			default:
				return fmt.Sprintf("%q is not allowed (names are letters, digits, \"-\", \"_\" and dots)", string(c))
			}
		}
		if !more {
			return ""
		}
		rest = tail
	}
}

// u128 is an IP address as a 128-bit number; IPv4 addresses use the low
// 32 bits.
type u128 struct{ hi, lo uint64 }

func addrToU128(a netip.Addr) u128 {
	if a.Is4() {
		b := a.As4()
		return u128{lo: uint64(binary.BigEndian.Uint32(b[:]))}
	}
	b := a.As16()
	return u128{hi: binary.BigEndian.Uint64(b[:8]), lo: binary.BigEndian.Uint64(b[8:])}
}

func (u u128) addr(is4 bool) netip.Addr {
	if is4 {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], uint32(u.lo))
		return netip.AddrFrom4(b)
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], u.hi)
	binary.BigEndian.PutUint64(b[8:], u.lo)
	return netip.AddrFrom16(b)
}

// trailingZeros returns the number of trailing zero bits (128 for zero).
func (u u128) trailingZeros() int {
	if u.lo != 0 {
		return bits.TrailingZeros64(u.lo)
	}
	return 64 + bits.TrailingZeros64(u.hi)
}

// orMask sets the k low bits.
func (u u128) orMask(k int) u128 {
	switch {
	case k == 0:
	case k < 64:
		u.lo |= 1<<k - 1
	default:
		u.lo = math.MaxUint64
		u.hi |= 1<<(k-64) - 1
	}
	return u
}

func (u u128) plusOne() u128 {
	u.lo++
	if u.lo == 0 {
		u.hi++
	}
	return u
}

func (u u128) greater(o u128) bool {
	return u.hi > o.hi || (u.hi == o.hi && u.lo > o.lo)
}

// appendRange appends the minimal set of prefixes covering lo..hi (same
// family, lo <= hi) to dst.
func appendRange(dst []netip.Prefix, lo, hi netip.Addr) []netip.Prefix {
	is4 := lo.Is4()
	width := lo.BitLen()
	s, e := addrToU128(lo), addrToU128(hi)
	for {
		k := min(s.trailingZeros(), width)
		for k > 0 && s.orMask(k).greater(e) {
			k--
		}
		last := s.orMask(k)
		dst = append(dst, netip.PrefixFrom(s.addr(is4), width-k))
		if last == e {
			return dst
		}
		s = last.plusOne()
	}
}

// ParseClientIP parses a client address as an MTA reports it: plain IPv4
// or IPv6 (compressed or full form, such as 0:0:0:0:0:0:0:1), in brackets
// ("[192.0.2.1]", "[IPv6:2001:db8::1]"), or with the RFC 5321 "IPv6:"
// prefix that Sendmail puts in {client_addr} and the milter connect
// address ("IPv6:0:0:0:0:0:0:0:1"). The result is normalized
// (NormalizeIP). Surrounding white space is ignored.
func ParseClientIP(raw string) (netip.Addr, error) {
	s := strings.TrimSpace(raw)
	if len(s) >= 2 && s[0] == '[' && s[len(s)-1] == ']' {
		s = s[1 : len(s)-1]
	}
	if len(s) > 5 && strings.EqualFold(s[:5], "IPv6:") {
		s = s[5:]
		if strings.IndexByte(s, ':') < 0 {
			return netip.Addr{}, fmt.Errorf("client address %q: not an IPv6 address after IPv6:", raw)
		}
	}
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("client address %q: %w", raw, err)
	}
	return NormalizeIP(ip), nil
}
