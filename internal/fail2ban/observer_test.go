package fail2ban

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/smtp-interceptor/smtp-interceptor/internal/logfile"
	"github.com/smtp-interceptor/smtp-interceptor/internal/testutil"
	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// clock is the settable clock the observer and the counters share.
type clock = testutil.Clock

// holdSetup is an engine with two DNS blacklists and a blacklist, whose
// fail2ban observer holds DNSBL refusals.
type holdSetup struct {
	e        *rules.Engine
	obs      *Observer
	out      *logfile.File
	buf      *testutil.SyncBuffer
	clock    *clock
	counters *rules.Counters
}

const holdConfig = `
[blacklist]
hosts = ["192.0.2.66"]
[dns_blacklist]
enabled = true
sites = ["bad.test", "good.test"]
action = "reject"
`

func newHoldSetup(t *testing.T, maxHeld int) *holdSetup {
	t.Helper()
	cfg, err := rules.Parse("", holdConfig)
	if err != nil {
		t.Fatal(err)
	}
	dns := rules.NewMemoryDNS()
	for i := 1; i < 20; i++ {
		dns.Set("bad.test", netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), "", netip.MustParseAddr("127.0.0.2"))
		dns.Set("good.test", netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}), "", netip.MustParseAddr("127.0.0.2"))
	}
	h := &holdSetup{buf: new(testutil.SyncBuffer), clock: testutil.NewClock(time.Date(2026, 11, 23, 10, 15, 2, 0, time.Local)),
		counters: new(rules.Counters)}
	h.counters.SetClock(h.clock.Now)
	h.out, err = logfile.New("-", h.buf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.out.Close() })
	h.obs = New(h.out, testutil.Logger(t), &Options{Now: h.clock.Now, Suspensions: h.counters, MaxHeld: maxHeld})
	h.e = rules.NewEngine(cfg, rules.EngineOptions{DNS: dns, Counters: h.counters, Observer: h.obs, Now: h.clock.Now})
	return h
}

// refuse connects a client that must be refused.
func (h *holdSetup) refuse(t *testing.T, ip string) {
	t.Helper()
	if v := h.e.Connect(context.Background(), rules.NewSession(netip.MustParseAddr(ip), "")); !v.Action.Refuses() {
		t.Fatalf("%s not refused: %+v", ip, v)
	}
}

// lines returns the lines written so far.
func (h *holdSetup) lines(t *testing.T) []string {
	t.Helper()
	if err := h.out.Flush(); err != nil {
		t.Fatal(err)
	}
	text := strings.TrimSuffix(h.buf.String(), "\n")
	if text == "" {
		return nil
	}
	return strings.Split(text, "\n")
}

func TestDNSBLRefusalsAreHeld(t *testing.T) {
	is := is.New(t)
	h := newHoldSetup(t, 0)
	refusedAt := h.clock.Now().Format(TimeLayout)

	h.refuse(t, "198.51.100.1") // bad.test, about to be suspended
	h.refuse(t, "203.0.113.1")  // good.test, stays healthy
	h.refuse(t, "192.0.2.66")   // the blacklist: written at once
	got := h.lines(t)
	is.Equal(len(got), 1)
	is.True(strings.Contains(got[0], "[192.0.2.66] rejected for policy reasons. blacklist:"))
	is.Equal(h.obs.Stats().Held, 2)

	// bad.test is suspended 30s later, and restored 20s after that: the
	// refusal it gave is never written.
	h.clock.Advance(30 * time.Second)
	h.counters.SetSuspended("bad.test", true)
	h.clock.Advance(20 * time.Second)
	h.counters.SetSuspended("bad.test", false)

	h.clock.Advance(DefaultDNSBLDelay - 51*time.Second)
	h.obs.Flush() // 89s after the refusals: not due yet
	is.Equal(len(h.lines(t)), 1)

	h.clock.Advance(time.Second)
	h.obs.Flush()
	got = h.lines(t)
	is.Equal(len(got), 2)
	t.Log(got[1])
	is.True(strings.HasPrefix(got[1], refusedAt+"   SMTP Server: Connection from [203.0.113.1] rejected")) // the refusal's own time
	is.True(!strings.Contains(strings.Join(got, "\n"), "198.51.100.1"))                                    // never written
	is.Equal(h.obs.Stats(), Stats{DroppedSuspended: 1})

	// A refusal after the list's restore is written after its delay.
	h.refuse(t, "198.51.100.2")
	h.clock.Advance(DefaultDNSBLDelay)
	h.obs.Flush()
	got = h.lines(t)
	is.Equal(len(got), 3)
	is.True(strings.Contains(got[2], "[198.51.100.2]"))
}

func TestObserverCloseDrains(t *testing.T) {
	is := is.New(t)
	h := newHoldSetup(t, 0)
	h.refuse(t, "198.51.100.1")
	h.refuse(t, "203.0.113.1")
	h.clock.Advance(10 * time.Second)
	h.counters.SetSuspended("bad.test", true)

	h.obs.Close() // before their delay: the valid one is written
	got := h.lines(t)
	is.Equal(len(got), 1)
	is.True(strings.Contains(got[0], "[203.0.113.1]"))
	is.Equal(h.obs.Stats(), Stats{DroppedSuspended: 1})

	h.refuse(t, "203.0.113.2") // after Close: written at once
	is.Equal(len(h.lines(t)), 2)
	h.obs.Close() // twice is fine
	is.Equal(len(h.lines(t)), 2)
}

func TestObserverBound(t *testing.T) {
	is := is.New(t)
	h := newHoldSetup(t, 3)
	for i := 1; i <= 5; i++ {
		h.refuse(t, "203.0.113."+string(rune('0'+i)))
	}
	is.Equal(h.obs.Stats(), Stats{Held: 3, DroppedOverflow: 2})
	h.obs.Close()
	got := h.lines(t)
	is.Equal(len(got), 3)
	for i, ip := range []string{"203.0.113.3", "203.0.113.4", "203.0.113.5"} { // the oldest went first
		is.True(strings.Contains(got[i], "["+ip+"]"))
	}
}

func TestObserverRun(t *testing.T) {
	is := is.New(t)
	h := newHoldSetup(t, 0)
	h.obs.tick = time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.obs.Run(ctx)
	}()
	h.refuse(t, "203.0.113.1")
	h.clock.Advance(DefaultDNSBLDelay)
	testutil.WaitFor(t, "the held line written", func() bool { return len(h.lines(t)) == 1 })
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return when ctx ended")
	}
	is.Equal(h.obs.Stats().Held, 0)
}

func TestObserverWithoutSuspensionsWritesAtOnce(t *testing.T) {
	is := is.New(t)
	h := newHoldSetup(t, 0)
	h.obs = New(h.out, nil, nil)
	cfg, err := rules.Parse("", holdConfig)
	is.NoErr(err)
	dns := rules.NewMemoryDNS()
	dns.Set("bad.test", netip.MustParseAddr("198.51.100.1"), "", netip.MustParseAddr("127.0.0.2"))
	h.e = rules.NewEngine(cfg, rules.EngineOptions{DNS: dns, Observer: h.obs})
	h.refuse(t, "198.51.100.1")
	is.Equal(len(h.lines(t)), 1)
}

// TestShadowedRefusalsWriteNoLine: with mode = "shadow" the blacklisted
// client is accepted, and nothing reaches the fail2ban log.
func TestShadowedRefusalsWriteNoLine(t *testing.T) {
	is := is.New(t)
	h := newHoldSetup(t, 0)
	cfg, err := rules.Parse("", "[server]\nmode = \"shadow\"\n"+holdConfig)
	is.NoErr(err)
	h.e.SetConfig(cfg)
	s := rules.NewSession(netip.MustParseAddr("192.0.2.66"), "")
	v := h.e.Connect(context.Background(), s)
	is.True(v.Shadow)
	is.True(!v.Action.Refuses())
	h.clock.Advance(2 * time.Minute) // past the DNSBL hold, too
	h.obs.release(true)
	is.Equal(len(h.lines(t)), 0)
}

// TestOnlyBlameworthyRefusalsAreLines: 5xx and 421 are fail2ban lines; a
// 452 over [recipients] max and a 450 for a DNS failure are not.
func TestOnlyBlameworthyRefusalsAreLines(t *testing.T) {
	is := is.New(t)
	h := newHoldSetup(t, 0)
	s := rules.NewSession(netip.MustParseAddr("192.0.2.7"), "")
	for _, v := range []rules.Verdict{
		{Action: rules.ActionTempfail, Code: 452, EnhancedCode: "4.5.3", Control: rules.ControlRecipients, Reason: "too many"},
		{Action: rules.ActionTempfail, Code: 450, EnhancedCode: "4.1.8", Control: rules.ControlMailFrom, Reason: "dns failed"},
		{Action: rules.ActionTempfail, Code: 421, EnhancedCode: "4.7.1", Control: rules.ControlMailFrom, Reason: "disconnect"},
		{Action: rules.ActionReject, Code: 550, EnhancedCode: "5.7.1", Control: rules.ControlRecipients, Reason: "denied"},
	} {
		h.obs.Verdict(s, v)
	}
	got := h.lines(t)
	is.Equal(len(got), 2)
	is.True(strings.HasSuffix(got[0], "mail_from: disconnect"))
	is.True(strings.HasSuffix(got[1], "recipients: denied"))
}
