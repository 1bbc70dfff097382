package policy

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// recorder is an observer that keeps what the logs would write.
type recorder struct {
	mu       sync.Mutex
	refusals []string // client IPs of refusals given for the first time
	messages []*rules.MessageRecord
}

func (r *recorder) Verdict(s *rules.Session, v rules.Verdict) {
	if v.Action.Refuses() && !v.Repeated {
		r.mu.Lock()
		r.refusals = append(r.refusals, s.ClientIP.String())
		r.mu.Unlock()
	}
}

func (r *recorder) MessagesWanted() bool { return true }

func (r *recorder) Message(m *rules.MessageRecord) {
	r.mu.Lock()
	r.messages = append(r.messages, m)
	r.mu.Unlock()
}

func (r *recorder) counts() (int, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.refusals), len(r.messages)
}

func startRecorded(t *testing.T, config string) (*Server, string, *recorder) {
	t.Helper()
	cfg, err := rules.Parse("", config)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	srv := New(rules.NewEngine(cfg, rules.EngineOptions{Observer: rec}), Options{Logger: testLogger(t)})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return srv, ln.Addr().String(), rec
}

func req(state, client, port, instance, rcpt string) string {
	return "request=smtpd_access_policy\nprotocol_state=" + state + "\nclient_address=" + client + "\nclient_port=" + port +
		"\nclient_name=unknown\nhelo_name=x.example\nsender=a@example.com\nrecipient=" + rcpt + "\ninstance=" + instance
}

// Postfix gives each message of an SMTP session its own instance; the
// client's address and port tell that they are one session, so a
// connect-time refusal is given (logged, counted by fail2ban) once per
// SMTP session, as the milter does.
func TestConnectRefusalOncePerSMTPSession(t *testing.T) {
	is := is.New(t)
	_, addr, rec := startRecorded(t, "[blacklist]\nhosts = [\"192.0.2.66\"]")
	ts := &testServer{addr: addr}
	c := ts.dial(t)
	for _, inst := range []string{"s.1", "s.2", "s.3"} { // RSET, MAIL again
		got, err := c.send(req("RCPT", "192.0.2.66", "40001", inst, "b@domino.test"))
		is.NoErr(err)
		is.Equal(got, "550 5.7.1 Connection denied based on policy reason")
	}
	n, _ := rec.counts()
	is.Equal(n, 1) // one SMTP session, one refusal in the logs

	got, err := c.send(req("RCPT", "192.0.2.66", "40002", "s.4", "b@domino.test")) // the next SMTP session
	is.NoErr(err)
	is.Equal(got, "550 5.7.1 Connection denied based on policy reason")
	n, _ = rec.counts()
	is.Equal(n, 2)
}

// A message whose DATA was answered is recorded when the connection
// closes, without waiting for the next message or the instance to expire.
func TestCompleteMessageRecordedOnClose(t *testing.T) {
	is := is.New(t)
	_, addr, rec := startRecorded(t, "")
	ts := &testServer{addr: addr}
	c := ts.dial(t)
	got, err := c.send(req("RCPT", "192.0.2.1", "40003", "d.1", "b@domino.test"))
	is.NoErr(err)
	is.Equal(got, "DUNNO")
	got, err = c.send(req("DATA", "192.0.2.1", "40003", "d.1", ""))
	is.NoErr(err)
	is.Equal(got, "DUNNO")
	_, m := rec.counts()
	is.Equal(m, 0) // not yet: END-OF-MESSAGE could still come
	c.c.Close()
	waitFor(t, "the record", func() bool { _, m := rec.counts(); return m == 1 })
	is.Equal(rec.messages[0].Recipients, []string{"b@domino.test"})
}
