package rules

import (
	"fmt"
	"math"
	"strings"
)

// maxStackName is the longest HELO name that Match lowercases on the stack.
const maxStackName = 255

// NamePatterns matches HELO/EHLO names against wildcard patterns.
//
// A pattern matches the whole name, ignoring ASCII case and a trailing dot
// on either side. "*" matches any run of characters, dots included, and
// "?" exactly one byte; every other character, brackets included, stands
// for itself, so "[192.0.2.1]" matches that address literal.
//
// NamePatterns is immutable once built and safe for concurrent use. A nil
// *NamePatterns matches nothing.
type NamePatterns struct {
	// values holds every accepted pattern as written; the int32 values
	// below index it.
	values []string
	// exact holds the patterns without wildcards, normalized.
	exact map[string]int32
	// globs holds the patterns with wildcards, normalized, in the order
	// they were configured.
	globs []namePattern
	hits  entryHits
}

// namePattern is one normalized pattern with wildcards, with the literal
// text before its first wildcard and after its last, which let Match
// reject most names without running the glob matcher.
type namePattern struct {
	pat, prefix, suffix string
	idx                 int32
}

// newNamePattern prepares a normalized pattern that has a wildcard.
func newNamePattern(pat string, idx int32) namePattern {
	first := strings.IndexAny(pat, "*?")
	last := strings.LastIndexAny(pat, "*?")
	return namePattern{pat: pat, prefix: pat[:first], suffix: pat[last+1:], idx: idx}
}

// match reports whether the lowercase name s matches the pattern.
func (g *namePattern) match(s []byte) bool {
	if len(s) < len(g.prefix)+len(g.suffix) ||
		string(s[:len(g.prefix)]) != g.prefix ||
		string(s[len(s)-len(g.suffix):]) != g.suffix {
		return false
	}
	return globMatch(g.pat, s)
}

// NewNamePatterns builds NamePatterns from configured entries. It reports
// every bad entry, each as a ConfigError located at the entry; the result
// holds the good entries even then.
func NewNamePatterns(entries []Entry) (*NamePatterns, []*ConfigError) {
	n := &NamePatterns{values: make([]string, 0, len(entries))}
	var errs []*ConfigError
	for _, e := range entries {
		if len(n.values) >= math.MaxInt32 {
			errs = append(errs, e.errorf("%q: too many entries in one list", e.Value))
			continue
		}
		pat, err := parseNamePattern(e.Value)
		if err != nil {
			errs = append(errs, e.errorf("%w", err))
			continue
		}
		idx := int32(len(n.values))
		n.values = append(n.values, e.Value)
		if strings.ContainsAny(pat, "*?") {
			n.globs = append(n.globs, newNamePattern(pat, idx))
			continue
		}
		if n.exact == nil {
			n.exact = make(map[string]int32)
		}
		if _, dup := n.exact[pat]; !dup {
			n.exact[pat] = idx
		}
	}
	n.hits.grow(len(n.values))
	return n, errs
}

// Match reports whether helo matches a pattern, and which one, as written.
// Patterns without wildcards are tried first, then the others in the order
// they were configured.
//
// Match does not allocate for names of up to 255 bytes.
func (n *NamePatterns) Match(helo string) (entry string, ok bool) {
	if n == nil {
		return "", false
	}
	helo = strings.TrimSuffix(helo, ".")
	var buf [maxStackName]byte
	var b []byte
	if len(helo) <= len(buf) {
		b = buf[:len(helo)]
	} else {
		b = make([]byte, len(helo))
	}
	for i := 0; i < len(helo); i++ {
		c := helo[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b[i] = c
	}
	if i, ok := n.exact[string(b)]; ok {
		n.hits.hit(i)
		return n.values[i], true
	}
	for i := range n.globs {
		if g := &n.globs[i]; g.match(b) {
			n.hits.hit(g.idx)
			return n.values[g.idx], true
		}
	}
	return "", false
}

// Len returns the number of patterns.
func (n *NamePatterns) Len() int {
	if n == nil {
		return 0
	}
	return len(n.values)
}

// parseNamePattern validates a HELO pattern and returns it normalized:
// lowercase, without trailing dot.
func parseNamePattern(v string) (string, error) {
	s := strings.TrimSpace(v)
	if s == "" {
		return "", fmt.Errorf("%q: empty pattern", v)
	}
	s = strings.TrimSuffix(s, ".")
	if s == "" {
		return "", fmt.Errorf("%q: empty pattern", v)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c == 0x7f {
			return "", fmt.Errorf("%q: white space or control character in a HELO pattern", v)
		}
	}
	return lowerASCII(s), nil
}

// globMatch reports whether the lowercase name s matches the whole of pat,
// where "*" matches any run of bytes and "?" one byte. It backtracks only
// to the last "*", so it runs in O(len(pat)·len(s)) at worst.
func globMatch(pat string, s []byte) bool {
	p, i := 0, 0
	starP, starI := -1, 0
	for i < len(s) {
		if p < len(pat) {
			switch c := pat[p]; {
			case c == '*':
				starP, starI = p, i
				p++
				continue
			case c == '?' || c == s[i]:
				p++
				i++
				continue
			}
		}
		if starP < 0 {
			return false
		}
		// Let the last "*" swallow one more byte and retry after it.
		starI++
		p, i = starP+1, starI
	}
	for p < len(pat) && pat[p] == '*' {
		p++
	}
	return p == len(pat)
}
