package milter

import (
	"testing"

	"github.com/matryer/is"
)

func TestParseAuthservID(t *testing.T) {
	tests := []struct {
		in, id, version string
		ok              bool
	}{
		{"relay.example.com; dnswl=pass", "relay.example.com", "", true},
		{"relay.example.com", "relay.example.com", "", true},
		{"  relay.example.com ;spf=pass", "relay.example.com", "", true},
		{"(trusted) relay.example.com; dnswl=pass", "relay.example.com", "", true},
		{"relay.example.com (ours); spf=pass", "relay.example.com", "", true},
		{"relay.example.com(x); spf=pass", "relay.example.com", "", true},
		{`"relay.example.com"; spf=pass`, "relay.example.com", "", true},
		{`"relay\.example.com"; spf=pass`, "relay.example.com", "", true},
		{"relay.example.com 2; spf=pass", "relay.example.com", "2", true},
		{"relay.example.com 1 (v1); none", "relay.example.com", "1", true},
		{"relay.example.com (a) 1; none", "relay.example.com", "1", true},
		{"(a (nested \\) comment) here)\r\n\trelay.example.com;", "relay.example.com", "", true},
		{"\r\n relay.example.com\r\n ; spf=pass", "relay.example.com", "", true},
		{"other.example; spf=pass", "other.example", "", true},
		{"relaé.example; none", "relaé.example", "", true},
		// Not RFC 8601 syntax after the id: the id is still read.
		{"relay.example.com garbage; spf=pass", "relay.example.com", "", false},
		{"relay.example.com 2x; spf=pass", "relay.example.com", "2", false},
		{"relay.example.com2; none", "relay.example.com2", "", true},
		{`"relay.example.com`, "relay.example.com", "", false},
		{`"relay.example.com\`, "relay.example.com", "", false},
		// No id.
		{"", "", "", false},
		{"   ", "", "", false},
		{"; spf=pass", "", "", false},
		{"(unterminated relay.example.com; spf=pass", "", "", false},
		{"(x\\", "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			is := is.New(t)
			id, version, err := parseAuthservID(tt.in)
			is.Equal(id, tt.id)
			is.Equal(version, tt.version)
			is.Equal(err == nil, tt.ok)
		})
	}
}
