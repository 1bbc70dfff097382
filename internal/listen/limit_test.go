package listen

import (
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/smtp-interceptor/smtp-interceptor/internal/testutil"
)

func TestLimits(t *testing.T) {
	type step struct {
		op   string // "dial" from from; "close" the oldest open from from; "limits" sets lim
		from string
		want Reason // for dial: "" served, else the refusal
		lim  Limits
	}
	dial := func(from string, want Reason) step { return step{op: "dial", from: from, want: want} }
	closeOne := func(from string) step { return step{op: "close", from: from} }
	const one, two = "127.0.0.1", "127.0.0.2"
	tests := []struct {
		name    string
		network string
		limits  Limits
		deflt   int
		steps   []step
	}{
		{"total", "tcp", Limits{MaxConnections: 3}, 0, []step{
			dial(one, ""), dial(one, ""), dial(two, ""),
			dial(one, ReasonMaxConnections), dial(two, ReasonMaxConnections),
			closeOne(one),
			dial(two, ""), // a slot freed by a close is taken again
			dial(two, ReasonMaxConnections),
		}},
		{"per IP", "tcp", Limits{MaxConnections: 100, MaxConnectionsPerIP: 2}, 0, []step{
			dial(one, ""), dial(one, ""),
			dial(one, ReasonMaxConnectionsPerIP),
			dial(two, ""), dial(two, ""), // another address is counted on its own
			dial(two, ReasonMaxConnectionsPerIP),
			closeOne(one),
			dial(one, ""),
			dial(one, ReasonMaxConnectionsPerIP),
		}},
		{"total before per IP", "tcp", Limits{MaxConnections: 2, MaxConnectionsPerIP: 2}, 0, []step{
			dial(one, ""), dial(one, ""),
			dial(one, ReasonMaxConnections),
		}},
		{"0 is the default", "tcp", Limits{}, 2, []step{
			dial(one, ""), dial(two, ""),
			dial(two, ReasonMaxConnections),
		}},
		{"reload", "tcp", Limits{MaxConnections: 1}, 0, []step{
			dial(one, ""),
			dial(one, ReasonMaxConnections),
			{op: "limits", lim: Limits{MaxConnections: 2, MaxConnectionsPerIP: 1}},
			dial(one, ReasonMaxConnectionsPerIP),
			dial(two, ""),
			{op: "limits", lim: Limits{MaxConnections: 1}}, // lowered: open ones stay, new ones wait
			closeOne(one),
			dial(one, ReasonMaxConnections),
			closeOne(two),
			dial(one, ""),
		}},
		{"unix sockets count toward the total only", "unix", Limits{MaxConnections: 2, MaxConnectionsPerIP: 1}, 0, []step{
			dial("", ""), dial("", ""),
			dial("", ReasonMaxConnections),
			closeOne(""),
			dial("", ""),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			var lim atomic.Pointer[Limits]
			lim.Store(&tt.limits)
			var h hookRecorder
			opts := h.options()
			opts.Limits = func() Limits { return *lim.Load() }
			opts.DefaultMaxConnections = tt.deflt
			g := NewGuard(opts)
			dialFrom, _ := echoServer(t, g, tt.network)
			open := map[string][]net.Conn{}
			defer func() {
				for _, cs := range open {
					for _, c := range cs {
						c.Close()
					}
				}
			}()
			refusals := 0
			for i, s := range tt.steps {
				switch s.op {
				case "limits":
					lim.Store(&s.lim)
				case "close":
					before := g.Connections("echo")
					open[s.from][0].Close()
					open[s.from] = open[s.from][1:]
					testutil.WaitFor(t, "the slot to be released", func() bool { return g.Connections("echo") == before-1 })
				case "dial":
					c, err := dialFrom(s.from)
					is.NoErr(err)
					ok := served(c)
					if s.want == "" {
						if !ok {
							t.Fatalf("step %d: connection from %q refused, want served", i, s.from)
						}
						open[s.from] = append(open[s.from], c)
						continue
					}
					c.Close()
					if ok {
						t.Fatalf("step %d: connection from %q served, want refused for %s", i, s.from, s.want)
					}
					refusals++
					testutil.WaitFor(t, "the refusal hook", func() bool { _, n := h.counts(); return n == refusals })
					h.mu.Lock()
					got := h.refused[refusals-1]
					h.mu.Unlock()
					is.Equal(got, "echo: "+string(s.want)) // refused for the right reason
				}
				n := 0
				for _, cs := range open {
					n += len(cs)
				}
				is.Equal(g.Connections("echo"), n) // the gauge follows
			}
		})
	}
}

// The allow list is checked first: a refused peer takes no slot and is
// refused as not allowed even when the limit is reached.
func TestAllowBeforeLimits(t *testing.T) {
	is := is.New(t)
	var h hookRecorder
	opts := h.options()
	opts.Allow = func(ip netip.Addr) bool { return ip != netip.MustParseAddr("127.0.0.2") }
	opts.Limits = func() Limits { return Limits{MaxConnections: 1} }
	g := NewGuard(opts)
	dial, _ := echoServer(t, g, "tcp")
	for _, from := range []string{"127.0.0.2", "127.0.0.1", "127.0.0.2", "127.0.0.1"} {
		c, err := dial(from)
		is.NoErr(err)
		defer c.Close()
		served(c)
	}
	testutil.WaitFor(t, "three refusals", func() bool { _, n := h.counts(); return n == 3 })
	is.Equal(h.refused, []string{"echo: not_allowed", "echo: not_allowed", "echo: max_connections"})
	is.Equal(g.Connections("echo"), 1)
}

func TestCloseReleasesOnce(t *testing.T) {
	is := is.New(t)
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	is.NoErr(err)
	g := NewGuard(GuardOptions{Limits: func() Limits { return Limits{MaxConnections: 2} }})
	policyLn, milterLn := g.Wrap(inner, "policy"), g.Wrap(newFakeListener(nil, pipeEnd(t)), "milter")
	defer policyLn.Close()
	defer milterLn.Close()
	for range 2 { // queued in the backlog until accepted
		c, err := net.DialTimeout("tcp", inner.Addr().String(), 5*time.Second)
		is.NoErr(err)
		defer c.Close()
	}
	p1, err := accept(t, policyLn)
	is.NoErr(err)
	m1, err := accept(t, milterLn) // a unix-like peer (no TCP address)
	is.NoErr(err)
	is.Equal(g.Connections("policy"), 1) // one gauge per protocol
	is.Equal(g.Connections("milter"), 1)
	is.NoErr(p1.Close())
	p1.Close() // again, as go-milter and the policy server may
	p1.Close()
	is.Equal(g.Connections("policy"), 0)
	is.Equal(g.Connections("milter"), 1) // released once, not three times
	p2, err := accept(t, policyLn)
	is.NoErr(err) // the slot is free again
	defer p2.Close()
	is.Equal(g.Connections("policy"), 1)
	m1.Close()
	is.Equal(g.Connections("milter"), 0)
}
