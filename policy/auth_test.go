package policy

import (
	"fmt"
	"testing"

	"github.com/matryer/is"
)

// Only a real login name exempts a session from the controls: a
// sasl_username of spaces is no login.
func TestSASLUsername(t *testing.T) {
	const refused = "550 5.7.1 Connection denied based on policy reason"
	tests := []struct {
		name string
		user string
		want string
	}{
		{"none", "", refused},
		{"one space", " ", refused},
		{"spaces", "     ", refused},
		{"tab and spaces", " \t ", refused},
		{"a login", "roaming", "DUNNO"},
		{"a login with spaces around it", "  roaming ", "DUNNO"},
	}
	ts := startServer(t, "tcp", "[blacklist]\nhosts = [\"192.0.2.66\"]")
	c := ts.dial(t)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			for _, state := range []string{"MAIL", "RCPT"} {
				got, err := c.send(fmt.Sprintf("request=smtpd_access_policy\nprotocol_state=%s\nprotocol_name=ESMTP\n"+
					"client_address=192.0.2.66\nclient_name=unknown\nhelo_name=x.example\nsender=a@example.com\n"+
					"recipient=b@domino.test\nsasl_username=%s\ninstance=auth.%d.%s", state, tt.user, i, state))
				is.NoErr(err)
				is.Equal(got, tt.want)
			}
		})
	}
}
