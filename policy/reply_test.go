package policy

import (
	"bufio"
	"strings"
	"testing"

	"github.com/matryer/is"

	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// TestReplyLeavesOutWhatPostfixAdds: at RCPT Postfix writes
// "<rcpt>: Recipient address rejected: " before the policy server's text
// (e2e "directory-unknown-refused-known-delivered" shows the client sees
// it once), so a text written whole for the milter loses that part;
// other texts and other stages go as written.
func TestReplyLeavesOutWhatPostfixAdds(t *testing.T) {
	tests := []struct {
		stage rules.Stage
		text  string
		want  string
	}{
		{rules.StageRcpt, "<nobody@acme.example>: Recipient address rejected: User unknown", "action=550 5.1.1 User unknown"},
		{rules.StageRcpt, "Recipient refused", "action=550 5.1.1 Recipient refused"},
		{rules.StageRcpt, "<odd> text", "action=550 5.1.1 <odd> text"},
		{rules.StageMail, "<a@b>: Recipient address rejected: x", "action=550 5.1.1 <a@b>: Recipient address rejected: x"},
	}
	for _, tt := range tests {
		is := is.New(t)
		var b strings.Builder
		w := bufio.NewWriter(&b)
		v := rules.Verdict{Stage: tt.stage, Action: rules.ActionReject, Code: 550, EnhancedCode: "5.1.1", Text: tt.text}
		is.NoErr(writeReply(w, &v, nil))
		is.Equal(b.String(), tt.want+"\n\n")
	}
}
