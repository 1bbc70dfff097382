package milter

import (
	"bytes"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"
)

// errorLines counts the log lines at error level (a recovered panic in a
// callback) and forgets the rest.
type errorLines struct{ n atomic.Int64 }

func (e *errorLines) Write(p []byte) (int, error) {
	e.n.Add(int64(bytes.Count(p, []byte("level=ERROR "))))
	return len(p), nil
}

// postfixStream is what Postfix sends the milter for one message after
// negotiation (milter8.c): connect, HELO, MAIL, RCPT, DATA, a header,
// end of headers, end of message, quit, with macros before the events.
func postfixStream() []byte {
	var b []byte
	for _, p := range [][]byte{
		pkt(cmdMacro, "C{client_addr}\x00192.0.2.1\x00{client_name}\x00unknown\x00"),
		pkt(cmdConnect, "unknown\x004\x00\x19192.0.2.1\x00"),
		pkt(cmdHelo, "mail.example\x00"),
		pkt(cmdMacro, "Mi\x004ABC123\x00"),
		pkt(cmdMail, "<a@example.com>\x00SIZE=100\x00"),
		pkt(cmdRcpt, "<b@domino.test>\x00"),
		pkt(cmdData, ""),
		pkt(cmdHeader, "Subject\x00hi\x00"),
		pkt(cmdHeader, "X-DNSWL-Site\x00forged\x00"),
		pkt(cmdEOH, ""),
		pkt(cmdBodyEOB, ""),
		pkt(cmdAbort, ""),
		pkt(cmdUnknown, "XFOO\x00"),
		pkt(cmdQuitNewConn, ""),
		pkt(cmdQuit, ""),
	} {
		b = append(b, p...)
	}
	return b
}

// FuzzRawInput negotiates as Postfix does, then writes the fuzzer's
// bytes raw to a running milter, reads whatever comes back until the
// server closes the connection, and checks that the server still
// completes a good session and logged no recovered panic. One server
// serves every input; each input's connections must be closed before the
// next one (no goroutine or fd left behind).
//
//	go test ./milter -run '^$' -fuzz '^FuzzRawInput$' -fuzztime 15s
func FuzzRawInput(f *testing.F) {
	for _, seed := range [][]byte{
		header(0),                             // zero-length packet
		pkt(cmdConnect, "mail.example"),       // connect without NUL
		pkt(cmdConnect, "mail.example\x00"),   // connect with host only
		pkt(cmdMail, "<a@example.com>"),       // mail without NUL
		pkt(cmdRcpt, "<b@example.com>"),       // rcpt without NUL
		header(0x1FFFFFFF),                    // 512 MiB announced
		header(64<<10 + headerHeadroom + 1),   // one byte over the cap
		pkt(cmdMacro, ""),                     // macro without code
		pkt(cmdHeader, "Subject\x00hi"),       // header with one string
		optneg(0),                             // negotiation repeated
		postfixStream(),                       // a whole good message
		append(postfixStream()[:40], 0, 0, 0), // cut short
	} {
		f.Add(seed)
	}
	var errs errorLines
	// A unix socket: tens of thousands of loopback TCP connections would
	// run through the ephemeral ports (TIME_WAIT) and stall the fuzzer.
	ts := startMilterWith(f, "unix", "[dns_whitelist]\nenabled = true\nsites = [\"wl.test\"]\naction = \"tag\"",
		serverSetup{logOut: &errs, logLevel: slog.LevelWarn})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := ts.dialRaw(t)
		r.negotiate()
		r.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		r.c.Write(in)                                      // the server may close before all is written
		r.c.(interface{ CloseWrite() error }).CloseWrite() // the MTA has sent all
		r.c.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.Copy(io.Discard, r.c)
		r.c.Close()

		ts.goodSession(t)
		// Polled finely: the test helper's 5 ms tick would cap the fuzzer
		// at 200 inputs a second.
		for deadline := time.Now().Add(20 * time.Second); ts.srv.guard.active() > 0; time.Sleep(50 * time.Microsecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d connections still open after the input", ts.srv.guard.active())
			}
		}
		if n := errs.n.Load(); n > 0 {
			t.Fatalf("%d error lines logged (a callback panicked)", n)
		}
	})
}
