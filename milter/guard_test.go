package milter

import (
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	gomilter "github.com/d--j/go-milter"
	"github.com/matryer/is"

	"github.com/smtp-interceptor/smtp-interceptor/internal/testutil"
	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// malformedCounter counts Options.OnMalformed calls, as the integrator's
// Prometheus counter does.
type malformedCounter struct {
	mu      sync.Mutex
	reasons []string
}

func (c *malformedCounter) add(reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reasons = append(c.reasons, reason)
}

func (c *malformedCounter) get() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.reasons...)
}

// startGuarded starts a milter whose malformed packets are counted.
func startGuarded(t *testing.T, network string) (*testServer, *malformedCounter) {
	t.Helper()
	var mc malformedCounter
	ts := startMilterWith(t, network, "", serverSetup{opts: Options{OnMalformed: mc.add}})
	return ts, &mc
}

// goodSession runs a whole transaction with go-milter's client, which
// plays Postfix, and fails the test unless the milter accepts it.
func (ts *testServer) goodSession(t testing.TB) {
	t.Helper()
	m := ts.session(t, postfixMacros("192.0.2.1", "mail.good.test"))
	defer m.s.Close()
	if r := m.connect("192.0.2.1", "mail.good.test") + m.helo("mail.good.test") + m.mail("a@good.test") +
		m.rcpt("b@domino.test") + m.data(); r != "" {
		t.Fatalf("good session refused: %s", r)
	}
	if res, _ := m.message([2]string{"Subject", "hi"}); res != "" {
		t.Fatalf("good message refused: %s", res)
	}
}

// The packets that crashed go-milter v0.10.1 (and their kin): each ends
// its own connection, is logged once and counted once, and the server
// goes on serving.
func TestMalformedPackets(t *testing.T) {
	// The SMFIC_CONNECT of Postfix for an IPv4 client: "host\0", family
	// '4', port 25, "address\0".
	const port = "\x00\x19"
	tests := []struct {
		name      string
		negotiate bool // send Postfix's SMFIC_OPTNEG first
		send      []byte
		reason    string
	}{
		{"zero length first packet", false, header(0), reasonEmpty},
		{"zero length after negotiation", true, header(0), reasonEmpty},
		{"first packet not a negotiation", false, pkt(cmdConnect, "h\x00U"), reasonNegotiationExpected},
		{"short negotiation", false, pkt(cmdOptNeg, "\x00\x00\x00\x06\x00\x00"), reasonNegotiationShort},
		{"negotiation too large", false, header(maxNegotiationLen + 1), reasonTooLarge},
		{"negotiation repeated", true, optneg(0), reasonNegotiationRepeated},
		{"huge length first packet", false, header(0x1FFFFFFF), reasonTooLarge},
		{"huge length after negotiation", true, header(0x1FFFFFFF), reasonTooLarge},
		{"one byte over the 64K cap", true, header(64<<10 - 1 + 1 + headerHeadroom + 1), reasonTooLarge},
		{"connect without NUL", true, pkt(cmdConnect, "mail.example"), reasonConnectHost},
		{"connect with host only", true, pkt(cmdConnect, "mail.example\x00"), reasonConnectFamily},
		{"connect unknown family", true, pkt(cmdConnect, "mail.example\x00X"), reasonConnectBadFamily},
		{"connect without port", true, pkt(cmdConnect, "mail.example\x004\x00"), reasonConnectPort},
		{"connect address without NUL", true, pkt(cmdConnect, "mail.example\x004"+port+"192.0.2.1"), reasonConnectAddress},
		{"helo without NUL", true, pkt(cmdHelo, "mail.example"), reasonHelo},
		{"mail without NUL", true, pkt(cmdMail, "<a@example.com>"), reasonMail},
		{"empty mail", true, pkt(cmdMail, ""), reasonMail},
		{"rcpt without NUL", true, pkt(cmdRcpt, "<b@example.com>"), reasonRcpt},
		{"header with one string", true, pkt(cmdHeader, "Subject\x00hi"), reasonHeader},
		{"header with three strings", true, pkt(cmdHeader, "Subject\x00hi\x00x\x00"), reasonHeader},
		{"macro without code", true, pkt(cmdMacro, ""), reasonMacroCode},
		{"macro value without NUL", true, pkt(cmdMacro, "C{client_addr}\x00192.0.2.1"), reasonMacroStrings},
		{"macro name without value", true, pkt(cmdMacro, "C{client_addr}\x00"), reasonMacroStrings},
		{"unknown command", true, pkt('Z', "x"), reasonUnknownCommand},
		{"crash after good packets", true, append(pkt(cmdConnect, "mail.example\x004"+port+"192.0.2.1\x00"),
			pkt(cmdMail, "<a@example.com>")...), reasonMail},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			ts, mc := startGuarded(t, "tcp")
			r := ts.dialRaw(t)
			if tt.negotiate {
				r.negotiate()
			}
			r.write(tt.send)
			is.True(r.closedByServer())             // the server closed the connection
			is.Equal(mc.get(), []string{tt.reason}) // counted once, with its reason
			warns := ts.logLines("WARN", "malformed milter packet")
			is.Equal(len(warns), 1)                                // one warn line...
			is.True(strings.Contains(warns[0], "peer=127.0.0.1:")) // ...naming the peer...
			is.True(strings.Contains(warns[0], "reason="))         // ...and the reason
			ts.goodSession(t)                                      // the server goes on
			is.Equal(len(mc.get()), 1)
			is.Equal(len(ts.logLines("WARN", "")), 1) // nothing else was logged at warn level
		})
	}
}

func TestMalformedLogLine(t *testing.T) {
	is := is.New(t)
	ts, _ := startGuarded(t, "tcp")
	r := ts.dialRaw(t)
	r.negotiate()
	r.write(pkt(0x01, "x")) // an unprintable code is escaped
	is.True(r.closedByServer())
	warns := ts.logLines("WARN", "malformed milter packet")
	is.Equal(len(warns), 1)
	is.True(strings.Contains(warns[0], `code="\"\\x01\""`)) // slog quotes the quoted code
	is.True(strings.Contains(warns[0], "length=2"))
	is.True(strings.Contains(warns[0], `reason="unknown command code"`))
}

// A unix-socket peer is named too, and treated the same.
func TestMalformedUnixSocket(t *testing.T) {
	is := is.New(t)
	ts, mc := startGuarded(t, "unix")
	r := ts.dialRaw(t)
	r.negotiate()
	r.write(pkt(cmdRcpt, "<b@example.com>"))
	is.True(r.closedByServer())
	is.Equal(mc.get(), []string{reasonRcpt})
	warns := ts.logLines("WARN", "malformed milter packet")
	is.Equal(len(warns), 1)
	is.True(strings.Contains(warns[0], "peer=unix:"+ts.addr+" "))
	ts.goodSession(t)
}

// A length prefix of 0x1FFFFFFF made go-milter allocate 512 MiB up front;
// the guard refuses it before allocating anything.
func TestHugeLengthAllocatesNothing(t *testing.T) {
	for _, negotiate := range []bool{false, true} {
		is := is.New(t)
		ts, mc := startGuarded(t, "tcp")
		r := ts.dialRaw(t)
		if negotiate {
			r.negotiate()
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		r.write(header(0x1FFFFFFF))
		is.True(r.closedByServer())
		runtime.ReadMemStats(&after)
		const announced = 0x1FFFFFFF
		grown := after.TotalAlloc - before.TotalAlloc
		if grown > announced/64 { // 8 MiB: far less than the 512 MiB announced
			t.Errorf("negotiated %v: allocated %d bytes for a packet announcing %d", negotiate, grown, announced)
		}
		is.Equal(mc.get(), []string{reasonTooLarge})
	}
}

// Postfix sends each header whole, up to header_size_limit (102400 bytes
// by default, name, colon and value together), whatever data size was
// negotiated: such a header must reach the milter. go-milter's client
// plays Postfix here, offering the default 64 KiB.
func TestPostfixSizedHeaderPasses(t *testing.T) {
	is := is.New(t)
	ts, mc := startGuarded(t, "tcp")
	m := ts.session(t, postfixMacros("192.0.2.1", "unknown"))
	is.Equal(m.connect("192.0.2.1", "unknown")+m.helo("x.example")+m.mail("a@example.com")+m.rcpt("b@domino.test")+m.data(), "")
	const name = "X-DNSWL-Site" // a forged tag header: its removal shows the milter saw it
	value := strings.Repeat("a", 102400-len(name)-len(": "))
	res, changes := m.message([2]string{"Subject", "big"}, [2]string{name, value})
	is.Equal(res, "")
	is.Equal(changes, []string{"-X-DNSWL-Site#1"})
	is.Equal(len(mc.get()), 0)
}

// A connection waiting for its next packet holds no packet buffer, even
// after a 100 KiB header went through it.
func TestIdleConnectionHoldsNoBuffer(t *testing.T) {
	is := is.New(t)
	ts, _ := startGuarded(t, "tcp")
	r := ts.dialRaw(t)
	r.negotiate()
	r.write(pkt(cmdConnect, "mail.example\x00U"))
	code, _ := r.readPacket()
	is.Equal(code, byte('c'))
	r.write(pkt(cmdUnknown, strings.Repeat("x", 100<<10)+"\x00")) // a big packet with a reply
	code, _ = r.readPacket()
	is.Equal(code, byte('c'))
	waitFor(t, "the connection to wait for its next packet", func() bool {
		_, waiting := ts.srv.guard.idleBuffers()
		return waiting == 1
	})
	held, _ := ts.srv.guard.idleBuffers()
	is.Equal(held, 0)
}

func TestMaxDataSize(t *testing.T) {
	is := is.New(t)
	is.Equal(maxDataSize(0x1FFFFF), uint32(65535))
	is.Equal(maxDataSize(protoMDS256K), uint32(256<<10-1))
	is.Equal(maxDataSize(protoMDS1M), uint32(1<<20-1))
	is.Equal(maxDataSize(protoMDS1M|protoMDS256K), uint32(1<<20-1))
}

// With a 1 MiB offer (SMFIP_MDS_1M, Sendmail's MilterMaxDataSize) a packet
// of that size passes and one past the headroom is refused.
func TestNegotiatedSizeRaisesTheCap(t *testing.T) {
	is := is.New(t)
	ts, mc := startGuarded(t, "tcp")
	r := ts.dialRaw(t)
	r.write(optneg(protoMDS1M))
	code, _ := r.readPacket()
	is.Equal(code, byte(cmdOptNeg))
	r.write(pkt(cmdConnect, "mail.example\x00U"))
	code, _ = r.readPacket()
	is.Equal(code, byte('c')) // continue
	r.write(pkt(cmdUnknown, strings.Repeat("x", 1<<20-2)+"\x00"))
	code, _ = r.readPacket()
	is.Equal(code, byte('c'))
	is.Equal(len(mc.get()), 0)
	r.write(header(1<<20 + headerHeadroom + 1))
	is.True(r.closedByServer())
	is.Equal(mc.get(), []string{reasonTooLarge})
}

// What Postfix and Sendmail really send passes the checks.
func TestCheckPacketAcceptsMTAPackets(t *testing.T) {
	tests := []struct {
		name string
		code byte
		data string
	}{
		{"connect ipv4", cmdConnect, "mail.example\x004\x00\x19192.0.2.1\x00"},
		{"connect ipv6", cmdConnect, "[2001:db8::1]\x006\x00\x19IPv6:2001:db8::1\x00"},
		{"connect unix", cmdConnect, "localhost\x00L\x00\x00/run/smtp\x00"},
		{"connect unknown family", cmdConnect, "localhost\x00U"},
		{"helo", cmdHelo, "mail.example\x00"},
		{"mail with esmtp args", cmdMail, "<a@example.com>\x00SIZE=100\x00BODY=8BITMIME\x00"},
		{"null sender", cmdMail, "<>\x00"},
		{"rcpt", cmdRcpt, "<b@example.com>\x00"},
		{"header", cmdHeader, "Subject\x00hi\x00"},
		{"empty header value", cmdHeader, "X-Empty\x00\x00"},
		{"macros", cmdMacro, "C{client_addr}\x00192.0.2.1\x00{client_name}\x00unknown\x00"},
		{"no macros", cmdMacro, "M"},
		{"empty macro value", cmdMacro, "Mi\x00\x00"},
		{"data", cmdData, ""},
		{"eoh", cmdEOH, ""},
		{"body", cmdBody, "line\r\n"},
		{"eob", cmdBodyEOB, ""},
		{"abort", cmdAbort, ""},
		{"quit", cmdQuit, ""},
		{"quit new connection", cmdQuitNewConn, ""},
		{"unknown command", cmdUnknown, "XFOO bar\x00"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if r := checkPacket(true, tt.code, []byte(tt.data)); r != "" {
				t.Errorf("refused: %s", r)
			}
		})
	}
}

// idleBuffers counts the connections waiting for a packet, and those of
// them that hold a packet buffer. The waiting flag is read under the
// connection's lock, which the reader took after its last buffer
// change, so reading pkt then is safe.
func (g *guard) idleBuffers() (held, waiting int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for c := range g.conns {
		c.mu.Lock()
		if c.waiting {
			waiting++
			if c.pkt != nil {
				held++
			}
		}
		c.mu.Unlock()
	}
	return held, waiting
}

// go-milter's read deadlines pass through the guard: the hard-coded wait
// for the negotiation, and [server] milter_idle_timeout between two packets.
// Without them a silent peer would hold its connection forever.
func TestDeadlinesPassThrough(t *testing.T) {
	is := is.New(t)
	var mc malformedCounter
	ts := startMilterWith(t, "tcp", "[server]\nmilter_idle_timeout = \"300ms\"", serverSetup{opts: Options{OnMalformed: mc.add}})
	silent := ts.dialRaw(t) // never negotiates
	is.True(silent.closedByServer())
	idle := ts.dialRaw(t)
	idle.negotiate()
	idle.write(pkt(cmdConnect, "mail.example\x00U"))
	code, _ := idle.readPacket()
	is.Equal(code, byte('c'))
	is.True(idle.closedByServer()) // milter_idle_timeout
	is.Equal(len(mc.get()), 0)     // a timeout is not a malformed packet
	ts.goodSession(t)
}

// waitDeadline returns the read deadline of the one guarded connection
// waiting for its next packet; false when none waits (or several do).
func (g *guard) waitDeadline() (time.Time, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var d time.Time
	n := 0
	for c := range g.conns {
		c.mu.Lock()
		if c.waiting {
			d, n = c.deadline, n+1
		}
		c.mu.Unlock()
	}
	return d, n == 1
}

// TestMilterIdleTimeoutReloads: the idle limit is read before every
// packet, so a reload applies it to connections already open; and the
// policy idle_timeout does not close a milter session (Sendmail keeps one
// milter connection for a whole SMTP session; e2e sendmail-idle-checked).
func TestMilterIdleTimeoutReloads(t *testing.T) {
	is := is.New(t)
	ts := startMilter(t, "tcp", "[server]\nidle_timeout = \"100ms\"\nmilter_idle_timeout = \"1h\"")
	idle := ts.dialRaw(t)
	idle.negotiate()
	idle.write(pkt(cmdConnect, "mail.example\x00U"))
	code, _ := idle.readPacket()
	is.Equal(code, byte('c'))
	// Waiting for the next packet, the connection's deadline is the
	// milter's hour, not the policy server's 100ms.
	waitFor(t, "the connection to wait with the milter idle deadline", func() bool {
		d, ok := ts.srv.guard.waitDeadline()
		return ok && time.Until(d) > 30*time.Minute
	})
	idle.write(pkt(cmdHelo, "mail.example\x00"))
	code, _ = idle.readPacket()
	is.Equal(code, byte('c'))

	cfg, err := rules.Parse("test.toml", "[server]\nmilter_idle_timeout = \"200ms\"")
	is.NoErr(err)
	ts.engine.SetConfig(cfg)
	// The wait in progress keeps its old deadline; the next one is short.
	idle.write(pkt(cmdHelo, "mail.example\x00"))
	code, _ = idle.readPacket()
	is.Equal(code, byte('c'))
	is.True(idle.closedByServer())
	is.Equal(len(ts.logLines("INFO", "milter connection idle too long")), 1)
}

// TestLibraryWarningsRouted: go-milter's warnings reach the slog logger.
func TestLibraryWarningsRouted(t *testing.T) {
	is := is.New(t)
	old := gomilter.LogWarning
	t.Cleanup(func() { gomilter.LogWarning = old })
	var buf testutil.SyncBuffer
	RouteLibraryWarnings(slog.New(slog.NewJSONHandler(&buf, nil)))
	gomilter.LogWarning("Error writing packet: %v", "broken pipe")
	is.True(strings.Contains(buf.String(), `"level":"WARN","msg":"milter library warning","detail":"Error writing packet: broken pipe"`))
}
