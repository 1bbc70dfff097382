package sessionlog

import (
	"bytes"
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/matryer/is"

	"github.com/smtp-interceptor/smtp-interceptor/internal/logfile"
	"github.com/smtp-interceptor/smtp-interceptor/internal/testutil"
	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

func TestRecords(t *testing.T) {
	is := is.New(t)
	var buf bytes.Buffer
	out, err := logfile.New("-", &buf)
	is.NoErr(err)
	cfg, err := rules.Parse("", "[recipients]\ndeny = [\"nobody@domino.test\"]\n[private_blacklist]\nenabled = true\nhosts = [\"203.0.113.0/24\"]\naction = \"tag\"")
	is.NoErr(err)
	obs := New(out, testutil.Logger(t))
	e := rules.NewEngine(cfg, rules.EngineOptions{Observer: obs})
	ctx := context.Background()

	s := rules.NewSession(netip.MustParseAddr("203.0.113.5"), "")
	s.ID = "Q1"
	e.Helo(ctx, s, "EHLO", "evil\r\n{\"forged\":true}")
	e.Mail(ctx, s, "a@example.com")
	e.Rcpt(ctx, s, "b@domino.test")
	e.Rcpt(ctx, s, "nobody@domino.test")
	e.Data(ctx, s)
	s.NoteTagsAdded() // as the adapter does once it added them
	e.EndMessage(s)
	e.EndMessage(s) // nothing twice

	out.SetPath("") // off: no record, nothing built
	e.Mail(ctx, s, "a@example.com")
	e.Rcpt(ctx, s, "b@domino.test")
	e.EndMessage(s)

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	is.Equal(len(lines), 1) // one line, however the HELO tried to break it
	var r rules.MessageRecord
	is.NoErr(json.Unmarshal([]byte(lines[0]), &r))
	is.Equal(r.Session, "Q1")
	is.Equal(r.Helo, "evil\r\n{\"forged\":true}")
	is.Equal(r.Recipients, []string{"b@domino.test"})
	is.Equal(r.Refused, []string{"nobody@domino.test"})
	is.Equal(r.Action, rules.ActionTag)
	is.Equal(r.Tags, []rules.Header{{Name: "X-DNSBL-Site", Value: "PrivateBlacklist"}})
	is.Equal(*r.MailFrom, "a@example.com")

	is.Equal(r.Stage, rules.StageData)
}

// TestRecordsSayWhatHappened: a transaction that ended after RCPT (RSET,
// QUIT) is recorded at RCPT, not as data accepted, and tags that were
// never added are not recorded.
func TestRecordsSayWhatHappened(t *testing.T) {
	is := is.New(t)
	var buf testutil.SyncBuffer
	cfg, err := rules.Parse("", "[private_blacklist]\nenabled = true\nhosts = [\"203.0.113.0/24\"]\naction = \"tag\"")
	is.NoErr(err)
	out, err := logfile.New("-", &buf)
	is.NoErr(err)
	e := rules.NewEngine(cfg, rules.EngineOptions{Observer: New(out, testutil.Logger(t))})
	ctx := context.Background()
	s := rules.NewSession(netip.MustParseAddr("203.0.113.5"), "")
	e.Helo(ctx, s, "EHLO", "mx")
	e.Mail(ctx, s, "a@example.com")
	e.Rcpt(ctx, s, "b@domino.test")
	e.EndMessage(s) // RSET
	is.NoErr(out.Flush())
	var r rules.MessageRecord
	is.NoErr(json.Unmarshal([]byte(strings.TrimSpace(buf.String())), &r))
	is.Equal(r.Stage, rules.StageRcpt)
	is.Equal(r.Action, rules.ActionAccept)
	is.Equal(len(r.Tags), 0)
}
