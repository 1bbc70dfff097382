package rules

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"unicode"
)

// Change is what a reload changed in one configuration key: a list's
// entries added and removed, with its size before and after, or a setting
// that changed value.
type Change struct {
	// Key is "section.key", e.g. "blacklist.hosts".
	Key string
	// List changes: entries added and removed, and the list sizes.
	Added, Removed []string
	Before, After  int
	// Setting changes: the value before and after, in Go's %v form.
	From, To string
}

// String says the change in a few words, e.g. `blacklist.hosts: +2 -1
// (10 → 11 entries)` or `helo.reject_empty: false → true`.
func (c Change) String() string {
	if c.From != "" || c.To != "" {
		return c.Key + ": " + c.From + " → " + c.To
	}
	return fmt.Sprintf("%s: +%d -%d (%d → %d entries)", c.Key, len(c.Added), len(c.Removed), c.Before, c.After)
}

// Diff lists what changed from old to cfg, section by section in the
// order of Config, lists first by entry (as written), then settings. The
// Path, Files and Warnings fields are not compared.
func Diff(old, cfg *Config) []Change {
	var out []Change
	ov, nv := reflect.ValueOf(old).Elem(), reflect.ValueOf(cfg).Elem()
	t := ov.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() || f.Type.Kind() != reflect.Struct {
			continue
		}
		section := snake(f.Name)
		out = diffStruct(out, section, ov.Field(i), nv.Field(i))
	}
	return out
}

func diffStruct(out []Change, section string, o, n reflect.Value) []Change {
	t := o.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		key := section + "." + snake(f.Name)
		if k := f.Tag.Get("key"); k != "" {
			key = section + "." + k // a field not named as its key
		}
		a, b := o.Field(i), n.Field(i)
		if oe, ok := entriesOf(a); ok {
			ne, _ := entriesOf(b)
			added, removed := setDiff(oe, ne), setDiff(ne, oe)
			if len(added) > 0 || len(removed) > 0 {
				out = append(out, Change{Key: key, Added: added, Removed: removed, Before: len(oe), After: len(ne)})
			}
			continue
		}
		if !reflect.DeepEqual(a.Interface(), b.Interface()) {
			out = append(out, Change{Key: key, From: fmt.Sprintf("%v", a.Interface()), To: fmt.Sprintf("%v", b.Interface())})
		}
	}
	return out
}

// entriesOf returns the entries of a list-valued field, as written.
func entriesOf(v reflect.Value) ([]string, bool) {
	switch x := v.Interface().(type) {
	case *HostList:
		if x == nil {
			return nil, true
		}
		return x.values, true
	case *AddressList:
		if x == nil {
			return nil, true
		}
		return x.values, true
	case *NamePatterns:
		if x == nil {
			return nil, true
		}
		return x.values, true
	case []DNSSite:
		names := make([]string, len(x))
		for i, s := range x {
			names[i] = s.Name
		}
		return names, true
	case map[string]bool:
		names := make([]string, 0, len(x))
		for k := range x {
			names = append(names, k)
		}
		slices.Sort(names)
		return names, true
	case []string:
		return x, true
	}
	return nil, false
}

// setDiff returns the entries of b not in a, in b's order.
func setDiff(a, b []string) []string {
	in := make(map[string]bool, len(a))
	for _, s := range a {
		in[s] = true
	}
	var out []string
	for _, s := range b {
		if !in[s] {
			out = append(out, s)
		}
	}
	return out
}

// snake turns a Go field name into its TOML key: "MaxConnectionsPerIP" →
// "max_connections_per_ip", "DNSBlacklist" → "dns_blacklist".
func snake(name string) string {
	var b strings.Builder
	r := []rune(name)
	for i, c := range r {
		if unicode.IsUpper(c) {
			if i > 0 && (unicode.IsLower(r[i-1]) || i+1 < len(r) && unicode.IsLower(r[i+1]) && unicode.IsUpper(r[i-1])) {
				b.WriteByte('_')
			}
			b.WriteRune(unicode.ToLower(c))
		} else {
			b.WriteRune(c)
		}
	}
	return b.String()
}
