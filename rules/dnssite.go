package rules

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// DNSSite is one configured DNS list: a zone and an optional filter on the
// answers.
//
// The syntax is Postfix postscreen_dnsbl_sites': "zone" or "zone=filter",
// where the filter is four dot-separated octet patterns, each a number or
// "[...]" holding ";"-separated numbers and "a..b" ranges, for example
// "zen.spamhaus.org=127.0.0.[2..11]" or "list.dnswl.org=127.0.[0..255].[1..3]".
// A weight may follow, as in postscreen ("zen.spamhaus.org*3"): it counts
// only with [dns_blacklist] decision = "score".
type DNSSite struct {
	// Name is the site as configured, e.g. "zen.spamhaus.org=127.0.0.[2..11]".
	Name string
	// Zone is the DNS zone queried, lowercase without trailing dot, e.g.
	// "zen.spamhaus.org".
	Zone string
	// filter limits which answers count as a listing; nil: every answer.
	filter *answerFilter
	// Weight is what a listing adds to the score (decision = "score"); 1
	// unless written. A DNS whitelist's listing subtracts it.
	Weight int
	// Weighted says the weight was written.
	Weighted bool
}

// answerFilter holds, for each of the four octets of an answer, the set of
// values the filter accepts, as a 256-bit set.
type answerFilter [4][4]uint64

// ParseDNSSite parses a DNS list site entry.
func ParseDNSSite(e Entry) (DNSSite, *ConfigError) {
	s, err := parseDNSSite(e.Value)
	if err != nil {
		return DNSSite{}, e.errorf("%w", err)
	}
	return s, nil
}

func parseDNSSite(v string) (DNSSite, error) {
	s := strings.TrimSpace(v)
	if s == "" {
		return DNSSite{}, fmt.Errorf("%q: empty DNS list site", v)
	}
	weight, weighted := 1, false
	if star := strings.LastIndexByte(s, '*'); star >= 0 && isWeight(s[star+1:]) {
		w, err := strconv.Atoi(strings.TrimPrefix(s[star+1:], "+"))
		if err != nil || w < -1000 || w > 1000 {
			return DNSSite{}, fmt.Errorf("%q: weight %q: want a whole number between -1000 and 1000", v, s[star+1:])
		}
		weight, weighted = w, true
		s = s[:star]
	}
	zone, filter, hasFilter := strings.Cut(s, "=")
	zone = strings.TrimSuffix(zone, ".")
	if zone == "" {
		return DNSSite{}, fmt.Errorf("%q: missing zone before \"=\"", v)
	}
	if p := dnsNameProblem(zone); p != "" {
		return DNSSite{}, fmt.Errorf("%q: %q is not a valid DNS zone: %s", v, zone, p)
	}
	site := DNSSite{Name: strings.TrimSpace(v), Zone: lowerASCII(zone), Weight: weight, Weighted: weighted}
	if !hasFilter {
		return site, nil
	}
	if strings.IndexByte(filter, '=') >= 0 {
		return DNSSite{}, fmt.Errorf("%q: more than one \"=\"", v)
	}
	if filter == "" {
		return DNSSite{}, fmt.Errorf("%q: empty filter after \"=\" (write a pattern such as 127.0.0.[2..11], or drop the \"=\")", v)
	}
	f, err := parseAnswerFilter(v, filter)
	if err != nil {
		return DNSSite{}, err
	}
	site.filter = f
	return site, nil
}

// isWeight reports whether s is a postscreen weight: an optionally signed
// decimal number.
func isWeight(s string) bool {
	s = strings.TrimPrefix(s, "-")
	s = strings.TrimPrefix(s, "+")
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// parseAnswerFilter parses the four octet patterns of a filter.
func parseAnswerFilter(v, f string) (*answerFilter, error) {
	var af answerFilter
	rest := f
	for k := range 4 {
		if k > 0 {
			if !strings.HasPrefix(rest, ".") {
				return nil, fmt.Errorf("%q: filter %q must have four dot-separated octet patterns, as in 127.0.0.[2..11]", v, f)
			}
			rest = rest[1:]
		}
		var pat string
		if strings.HasPrefix(rest, "[") {
			end := strings.IndexByte(rest, ']')
			if end < 0 {
				return nil, fmt.Errorf("%q: filter %q: missing closing \"]\"", v, f)
			}
			pat, rest = rest[1:end], rest[end+1:]
			if pat == "" {
				return nil, fmt.Errorf("%q: filter %q: empty \"[]\"", v, f)
			}
		} else {
			end := strings.IndexByte(rest, '.')
			if end < 0 {
				end = len(rest)
			}
			pat, rest = rest[:end], rest[end:]
			if strings.ContainsAny(pat, ";]") || strings.Contains(pat, "..") {
				return nil, fmt.Errorf("%q: filter %q: lists and ranges go in brackets, as in [2..11] or [2;4]", v, f)
			}
		}
		if err := af.addOctetPattern(k, pat); err != nil {
			return nil, fmt.Errorf("%q: filter %q: %w", v, f, err)
		}
	}
	if rest != "" {
		return nil, fmt.Errorf("%q: filter %q must have four dot-separated octet patterns, as in 127.0.0.[2..11]", v, f)
	}
	return &af, nil
}

// addOctetPattern adds the values of one octet pattern (numbers and
// "a..b" ranges separated by ";") to octet k of the filter.
func (af *answerFilter) addOctetPattern(k int, pat string) error {
	for item := range strings.SplitSeq(pat, ";") {
		loStr, hiStr, isRange := strings.Cut(item, "..")
		lo, err := filterNumber(loStr)
		if err != nil {
			return err
		}
		hi := lo
		if isRange {
			if hi, err = filterNumber(hiStr); err != nil {
				return err
			}
			if hi < lo {
				return fmt.Errorf("range %s starts after it ends", item)
			}
		}
		for o := lo; o <= hi; o++ {
			af[k][o>>6] |= 1 << (o & 63)
		}
	}
	return nil
}

// filterNumber parses one octet value of a filter.
func filterNumber(s string) (int, error) {
	if s == "" {
		return 0, errors.New("empty octet value")
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("%q is not a number", s)
		}
		n = n*10 + int(s[i]-'0')
		if n > 255 {
			return 0, fmt.Errorf("%s is out of range 0-255", s)
		}
	}
	return n, nil
}

// Accepts reports whether answer, an A record returned by the DNS list,
// counts as a listing: always when the site has no filter, otherwise when
// the answer matches the filter. An invalid answer is never accepted.
// Callers check [IsDNSListErrorCode] first: an error code is never a
// listing, whatever the filter.
func (s DNSSite) Accepts(answer netip.Addr) bool {
	if !answer.IsValid() {
		return false
	}
	if s.filter == nil {
		return true
	}
	answer = answer.Unmap()
	if !answer.Is4() {
		return false
	}
	for k, o := range answer.As4() {
		if s.filter[k][o>>6]&(1<<(o&63)) == 0 {
			return false
		}
	}
	return true
}

// IsDNSListErrorCode reports whether answer is one of the codes DNS lists
// return to signal an error rather than a listing: 127.255.255.252 to
// 127.255.255.255 (Spamhaus: typing error, public resolver, over quota)
// and 127.0.0.255 (DNSWL: over quota).
func IsDNSListErrorCode(answer netip.Addr) bool {
	answer = answer.Unmap()
	if !answer.Is4() {
		return false
	}
	a := answer.As4()
	return (a[0] == 127 && a[1] == 255 && a[2] == 255 && a[3] >= 252) ||
		(a[0] == 127 && a[1] == 0 && a[2] == 0 && a[3] == 255)
}
