package rules

import (
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/BurntSushi/toml"
)

// decodeRaw decodes TOML text over the defaults in raw, key by key, so that
// a key of the wrong type does not hide the errors of the keys after it.
// Unknown sections and keys are errors. Every error names its key and, where
// it can be found, its line. parsed is false when the text is not TOML at
// all, in which case nothing was decoded.
func decodeRaw(file, text string, raw *rawConfig, lines *lineIndex) (errs []*ConfigError, parsed bool) {
	var sections map[string]toml.Primitive
	md, err := toml.Decode(text, &sections)
	if err != nil {
		ce := &ConfigError{File: file, Err: err}
		var pe toml.ParseError
		if errors.As(err, &pe) {
			ce.Line = pe.Position.Line
			ce.Err = errors.New(pe.Message)
			ce.Key = pe.LastKey
		}
		return []*ConfigError{ce}, false
	}

	rv := reflect.ValueOf(raw).Elem()
	for _, name := range sortedKeys(sections) {
		field, ok := fieldByTag(rv, name)
		if ok && field.Kind() == reflect.Slice && field.Type().Elem().Kind() == reflect.Struct {
			errs = append(errs, decodeTables(file, name, md, sections[name], field, lines)...)
			continue
		}
		if !ok || field.Kind() != reflect.Struct {
			errs = append(errs, &ConfigError{Key: name, File: file, Line: lines.key(name),
				Err: fmt.Errorf("unknown %s; known sections: %s", describeTOML(md.Type(name), "key"), strings.Join(tagNames(rv.Type()), ", "))})
			continue
		}
		var keys map[string]toml.Primitive
		if md.Type(name) != "Hash" || md.PrimitiveDecode(sections[name], &keys) != nil {
			errs = append(errs, &ConfigError{Key: name, File: file, Line: lines.key(name),
				Err: fmt.Errorf("must be a table ([%s]), not %s", name, strings.ToLower(md.Type(name)))})
			continue
		}
		errs = append(errs, decodeKeys(file, name, []string{name}, md, keys, field, lines)...)
	}
	return errs, true
}

// decodeKeys decodes a table's keys into the fields of a struct, each on
// its own, so a bad key does not hide the others. section names the table
// in errors ("server", "ratelimit[0]"); path is its TOML path, for types.
func decodeKeys(file, section string, path []string, md toml.MetaData, keys map[string]toml.Primitive, field reflect.Value, lines *lineIndex) []*ConfigError {
	var errs []*ConfigError
	for _, key := range sortedKeys(keys) {
		full := section + "." + key
		kf, ok := fieldByTag(field, key)
		if !ok {
			errs = append(errs, &ConfigError{Key: full, File: file, Line: lines.key(full),
				Err: fmt.Errorf("unknown key; keys of [%s] are: %s", section, strings.Join(tagNames(field.Type()), ", "))})
			continue
		}
		// Decode into a fresh value so a failed decode leaves the default.
		dst := reflect.New(kf.Type())
		if err := md.PrimitiveDecode(keys[key], dst.Interface()); err != nil {
			got := strings.ToLower(md.Type(append(append([]string(nil), path...), key)...))
			if got == "" {
				got = "another type"
			}
			errs = append(errs, &ConfigError{Key: full, File: file, Line: lines.key(full),
				Err: fmt.Errorf("wrong type: want %s, got %s", goTypeName(kf.Type()), got)})
			continue
		}
		kf.Set(dst.Elem())
	}
	return errs
}

// decodeTables decodes an array of tables ([[ratelimit]]) into a slice of
// structs, each table key by key; table i is named "name[i]" in errors.
func decodeTables(file, name string, md toml.MetaData, prim toml.Primitive, field reflect.Value, lines *lineIndex) []*ConfigError {
	var tables []map[string]toml.Primitive
	if md.Type(name) != "ArrayHash" || md.PrimitiveDecode(prim, &tables) != nil {
		return []*ConfigError{{Key: name, File: file, Line: lines.key(name),
			Err: fmt.Errorf("must be an array of tables ([[%s]]), not %s", name, strings.ToLower(md.Type(name)))}}
	}
	var errs []*ConfigError
	out := reflect.MakeSlice(field.Type(), len(tables), len(tables))
	for i, keys := range tables {
		section := fmt.Sprintf("%s[%d]", name, i)
		errs = append(errs, decodeKeys(file, section, nil, md, keys, out.Index(i), lines)...)
	}
	field.Set(out)
	return errs
}

func describeTOML(tomlType, fallback string) string {
	if tomlType == "Hash" {
		return "section"
	}
	return fallback
}

func fieldByTag(v reflect.Value, tag string) (reflect.Value, bool) {
	t := v.Type()
	for i := range t.NumField() {
		if t.Field(i).Tag.Get("toml") == tag {
			return v.Field(i), true
		}
	}
	return reflect.Value{}, false
}

func tagNames(t reflect.Type) []string {
	names := make([]string, 0, t.NumField())
	for i := range t.NumField() {
		names = append(names, t.Field(i).Tag.Get("toml"))
	}
	return names
}

func goTypeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Int:
		return "an integer"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice:
		return "an array of strings"
	}
	return t.String()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	// Insertion sort keeps this dependency-free and the maps are tiny.
	for i := 1; i < len(keys); i++ {
		for j := i; j > 0 && keys[j] < keys[j-1]; j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
	return keys
}

// lineIndex finds the lines of keys and array values in a TOML text. The
// TOML library reports positions only for syntax errors, so validation
// errors are located by this light scan of the same text. It understands
// [table] headers and key = value lines, which is all this schema uses; a
// key it cannot find gets line 0 (unknown).
type lineIndex struct {
	lines  []string
	keys   map[string]int            // "section.key" -> 1-based line
	values map[string]map[string]int // "section.key" -> quoted value -> line
}

func newLineIndex(text string) *lineIndex {
	li := &lineIndex{lines: strings.Split(text, "\n"), keys: map[string]int{}}
	section := ""
	var tables map[string]int // arrays of tables seen so far, by name
	for i, line := range li.lines {
		t := strings.TrimSpace(line)
		if t == "" || t[0] == '#' {
			continue
		}
		if strings.HasPrefix(t, "[[") {
			// An array of tables: its n-th table is "name[n]".
			if end := strings.Index(t, "]]"); end > 2 {
				name := strings.Trim(strings.TrimSpace(t[2:end]), `"'`)
				if _, ok := li.keys[name]; !ok {
					li.keys[name] = i + 1
				}
				if tables == nil {
					tables = map[string]int{}
				}
				section = fmt.Sprintf("%s[%d]", name, tables[name])
				tables[name]++
				li.keys[section] = i + 1
			}
			continue
		}
		if t[0] == '[' {
			if end := strings.IndexByte(t, ']'); end > 0 {
				section = strings.Trim(strings.TrimSpace(t[1:end]), `"'`)
				if _, ok := li.keys[section]; !ok {
					li.keys[section] = i + 1
				}
			}
			continue
		}
		eq := strings.IndexByte(t, '=')
		if eq <= 0 {
			continue
		}
		key := strings.Trim(strings.TrimSpace(t[:eq]), `"'`)
		if !isBareKey(key) {
			continue
		}
		full := key
		if section != "" {
			full = section + "." + key
		}
		if _, ok := li.keys[full]; !ok {
			li.keys[full] = i + 1
		}
	}
	return li
}

func isBareKey(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !(c == '_' || c == '-' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// key returns the line of a "section.key" (or "section"), 0 if unknown.
func (li *lineIndex) key(full string) int {
	if li == nil {
		return 0
	}
	return li.keys[full]
}

// value returns the line holding the quoted value v of an array key, or
// the key's line when the value is not found between the key and the next
// key or table. The values of a key are indexed on first use, so a list of
// a hundred thousand inline entries costs one pass, not one per entry.
func (li *lineIndex) value(full, v string) int {
	start := li.key(full)
	if start == 0 {
		return 0
	}
	if li.values == nil {
		li.values = map[string]map[string]int{}
	}
	idx, ok := li.values[full]
	if !ok {
		idx = li.indexValues(start)
		li.values[full] = idx
	}
	if line, ok := idx[v]; ok {
		return line
	}
	return start
}

// indexValues maps each quoted string from line start (1-based) up to the
// next key or table to the first line it appears on.
func (li *lineIndex) indexValues(start int) map[string]int {
	idx := map[string]int{}
	for i := start - 1; i < len(li.lines); i++ {
		line := li.lines[i]
		if i > start-1 {
			t := strings.TrimSpace(line)
			if strings.HasPrefix(t, "[") && !strings.HasPrefix(t, `["`) && !strings.HasPrefix(t, `['`) {
				break
			}
			if eq := strings.IndexByte(t, '='); eq > 0 && isBareKey(strings.TrimSpace(t[:eq])) {
				break
			}
		}
		for rest := line; ; {
			q := strings.IndexAny(rest, `"'#`)
			if q < 0 || rest[q] == '#' {
				break
			}
			end := strings.IndexByte(rest[q+1:], rest[q])
			if end < 0 {
				break
			}
			val := rest[q+1 : q+1+end]
			if _, seen := idx[val]; !seen {
				idx[val] = i + 1
			}
			rest = rest[q+1+end+1:]
		}
	}
	return idx
}
