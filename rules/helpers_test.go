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
