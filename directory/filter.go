package directory

import (
	"errors"
	"fmt"
	"strings"

	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"
)

// matcher is a group filter, evaluated on the attributes of the entries a
// search returned. It has only the operators that need no matching rule
// of the schema: &, |, !, equality and presence. Attribute names and
// values are compared without case (caseIgnoreMatch, which the
// attributes a group filter tests, objectClass and the like, use).
type matcher struct {
	op    ber.Tag
	attr  string
	value string
	kids  []matcher
}

// compileMatcher parses a group filter.
func compileMatcher(filter string) (matcher, error) {
	p, err := ldap.CompileFilter(filter)
	if err != nil {
		return matcher{}, fmt.Errorf("group filter %q: %w", filter, err)
	}
	m, err := toMatcher(p)
	if err != nil {
		return matcher{}, fmt.Errorf("group filter %q: %w", filter, err)
	}
	return m, nil
}

func toMatcher(p *ber.Packet) (matcher, error) {
	m := matcher{op: p.Tag}
	switch p.Tag {
	case ldap.FilterAnd, ldap.FilterOr, ldap.FilterNot:
		for _, c := range p.Children {
			k, err := toMatcher(c)
			if err != nil {
				return matcher{}, err
			}
			m.kids = append(m.kids, k)
		}
		if p.Tag == ldap.FilterNot && len(m.kids) != 1 {
			return matcher{}, errors.New("! takes one filter")
		}
	case ldap.FilterEqualityMatch:
		if len(p.Children) != 2 {
			return matcher{}, errors.New("malformed equality")
		}
		m.attr, m.value = p.Children[0].Data.String(), p.Children[1].Data.String()
	case ldap.FilterPresent:
		m.attr = p.Data.String()
	default:
		name := ldap.FilterMap[uint64(p.Tag)]
		if name == "" {
			name = fmt.Sprintf("filter type %d", p.Tag)
		}
		return matcher{}, fmt.Errorf("%s is not supported: it is evaluated on the entries found, with &, |, !, = and =* only", strings.ToLower(name))
	}
	return m, nil
}

// attributes returns the attribute names m tests, each once (compared
// without case), in the order they appear.
func (m matcher) attributes() []string {
	var out []string
	var walk func(m matcher)
	walk = func(m matcher) {
		if m.attr != "" {
			for _, a := range out {
				if strings.EqualFold(a, m.attr) {
					return
				}
			}
			out = append(out, m.attr)
		}
		for _, k := range m.kids {
			walk(k)
		}
	}
	walk(m)
	return out
}

// match evaluates m on e's attributes.
func (m matcher) match(e *ldap.Entry) bool {
	switch m.op {
	case ldap.FilterAnd:
		for _, k := range m.kids {
			if !k.match(e) {
				return false
			}
		}
		return true
	case ldap.FilterOr:
		for _, k := range m.kids {
			if k.match(e) {
				return true
			}
		}
		return false
	case ldap.FilterNot:
		return !m.kids[0].match(e)
	case ldap.FilterEqualityMatch:
		for _, a := range e.Attributes {
			if strings.EqualFold(a.Name, m.attr) {
				for _, v := range a.Values {
					if strings.EqualFold(v, m.value) {
						return true
					}
				}
			}
		}
		return false
	case ldap.FilterPresent:
		for _, a := range e.Attributes {
			if strings.EqualFold(a.Name, m.attr) && len(a.Values) > 0 {
				return true
			}
		}
		return false
	}
	return false
}
