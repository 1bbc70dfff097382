package rules

import (
	"net/netip"
	"reflect"
)

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// schemaKeys lists every "section.key" of the raw schema.
func schemaKeys(raw *rawConfig) []string {
	var out []string
	rv := reflect.ValueOf(raw).Elem()
	for i := range rv.NumField() {
		section := rv.Type().Field(i).Tag.Get("toml")
		st := rv.Field(i).Type()
		if st.Kind() == reflect.Slice { // an array of tables: see tableKeys
			continue
		}
		for j := range st.NumField() {
			out = append(out, section+"."+st.Field(j).Tag.Get("toml"))
		}
	}
	return out
}

// rawKind returns the Go kind of a raw key's field.
func rawKind(raw *rawConfig, section, key string) string {
	s, _ := fieldByTag(reflect.ValueOf(raw).Elem(), section)
	f, _ := fieldByTag(s, key)
	return f.Kind().String()
}

// tableKeys lists, for each array of tables of the raw schema
// ([[ratelimit]]), its name and keys.
func tableKeys(raw *rawConfig) map[string][]string {
	out := map[string][]string{}
	rv := reflect.ValueOf(raw).Elem()
	for i := range rv.NumField() {
		st := rv.Field(i).Type()
		if st.Kind() != reflect.Slice {
			continue
		}
		name := rv.Type().Field(i).Tag.Get("toml")
		for j := range st.Elem().NumField() {
			out[name] = append(out[name], st.Elem().Field(j).Tag.Get("toml"))
		}
	}
	return out
}
